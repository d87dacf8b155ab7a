"""The training-entity gazetteer: its table, its flags against a brute-force reference,
the k-fold exclusion in training, and a pipeline that uses it."""
import random

import numpy
import pytest
import spacy
import torch

from spacy_bilstm_crf.component.architectures import get_torch_module
from spacy_bilstm_crf.network.codepoints import normalize_codepoints
from spacy_bilstm_crf.network.gazetteer import GazetteerFeatures, sentence_folds
from spacy_bilstm_crf.features.gazetteer_table import build_gazetteer_table

from .conftest import SMALL_MODEL, TRAIN_DATA, ents_of, make_examples, train_small

ALPHABET = "甲乙丙丁戊己庚"
N_LABELS = 3


def codepoints_of(texts):
    lengths = torch.tensor([len(text) for text in texts])
    cp = torch.zeros(len(texts), max(int(lengths.max()), 1), dtype=torch.long)
    for row, text in enumerate(texts):
        cp[row, : len(text)] = torch.tensor([ord(c) for c in text], dtype=torch.long)
    return normalize_codepoints(cp), lengths


def brute_force_flags(text, sentences, max_len):
    """The gazetteer of ``sentences`` (text, spans) by enumeration. RETURNS: Bool
    (len(text), 4 * N_LABELS) B/M/E/S flags."""
    entities = {}
    for other, spans in sentences:
        for start, end, label in spans:
            if end - start <= max_len:
                entities.setdefault(other[start:end], set()).add(label)
    flags = numpy.zeros((len(text), 4 * N_LABELS), dtype=bool)
    for start in range(len(text)):
        for end in range(start + 1, len(text) + 1):
            for label in entities.get(text[start:end], ()):
                places = [(3, start)] if end - start == 1 else [(0, start), (2, end - 1)]
                places += [(1, inside) for inside in range(start + 1, end - 1)]
                for which, position in places:
                    flags[position, which * N_LABELS + label] = True
    return flags


def random_corpus(rng, n_sentences, max_len):
    """Sentences over a small alphabet, each with random non-overlapping entity spans."""
    sentences = []
    for _ in range(n_sentences):
        text = "".join(rng.choices(ALPHABET, k=rng.randint(0, 14)))
        spans, start = [], 0
        while start < len(text):
            length = rng.randint(1, max_len + 2)
            if start + length <= len(text) and rng.random() < 0.5:
                spans.append((start, start + length, rng.randrange(N_LABELS)))
            start += length
        sentences.append((text, spans))
    return sentences


def module_for(sentences, max_len, n_folds=3):
    table = build_gazetteer_table(
        ((numpy.array([ord(c) for c in text]), spans) for text, spans in sentences), N_LABELS, max_len, n_folds
    )
    module = GazetteerFeatures(len(table.keys), N_LABELS, max_len, n_folds)
    module.set_entries(torch.from_numpy(table.keys), torch.from_numpy(table.fold_labels))
    return module


def test_sentence_folds_ignore_padding_and_cover_every_fold():
    texts = ["".join(random.Random(i).choices(ALPHABET, k=1 + i % 9)) for i in range(200)]
    cp, lengths = codepoints_of(texts)
    folds = sentence_folds(cp, lengths, 5)
    assert set(folds.tolist()) == set(range(5))
    for row, text in enumerate(texts[:20]):
        alone, alone_lengths = codepoints_of([text])
        assert sentence_folds(alone, alone_lengths, 5)[0] == folds[row]


@pytest.mark.parametrize("seed", range(4))
def test_prediction_flags_equal_brute_force(seed):
    rng = random.Random(seed)
    max_len = 4
    corpus = random_corpus(rng, 30, max_len)
    module = module_for(corpus, max_len)
    texts = ["".join(rng.choices(ALPHABET, k=rng.randint(0, 16))) for _ in range(12)] + [""]
    cp, lengths = codepoints_of(texts)
    flags = module(cp, lengths)
    assert flags.shape == (len(texts), cp.shape[1], 4 * N_LABELS)
    for row, text in enumerate(texts):
        expected = brute_force_flags(text, corpus, max_len)
        assert numpy.array_equal(flags[row, : len(text)].numpy().astype(bool), expected), text
        assert not flags[row, len(text) :].any()
    assert flags.sum() > 0


@pytest.mark.parametrize("seed", range(3))
def test_training_flags_exclude_the_sentences_own_fold(seed):
    """In training a sentence sees only the entities of the other folds' sentences."""
    rng = random.Random(seed)
    max_len, n_folds = 5, 3
    corpus = random_corpus(rng, 40, max_len)
    texts = [text for text, _ in corpus if text]
    cp, lengths = codepoints_of(texts)
    folds = sentence_folds(cp, lengths, n_folds).tolist()
    fold_of = dict(zip(texts, folds))
    module = module_for(corpus, max_len, n_folds)
    flags = module(cp, lengths, exclude_own_fold=True)
    excluded_something = False
    for row, text in enumerate(texts):
        others = [(other, spans) for other, spans in corpus if not other or fold_of[other] != folds[row]]
        expected = brute_force_flags(text, others, max_len)
        assert numpy.array_equal(flags[row, : len(text)].numpy().astype(bool), expected), text
        excluded_something |= bool(module(cp[row : row + 1], lengths[row : row + 1]).sum() > expected.sum())
    assert excluded_something


def test_table_keeps_every_label_and_skips_long_entities():
    sentences = [
        (numpy.array([ord(c) for c in "北京大学在北京"]), [(0, 4, 1), (5, 7, 0)]),
        (numpy.array([ord(c) for c in "ＡＢ在北京"]), [(0, 2, 2), (3, 5, 2)]),  # full-width: normalized
        (numpy.array([ord(c) for c in "一二三四五六七"]), [(0, 7, 1)]),  # longer than max_len
    ]
    table = build_gazetteer_table(sentences, N_LABELS, 6, 4)
    assert len(table.keys) == 3  # 北京大学, 北京, AB
    assert table.labels.sum() == 4  # 北京: labels 0 and 2
    # Each entity is in the fold of its sentence.
    folds = [int(sentence_folds(*codepoints_of([text]), 4)[0]) for text in ["北京大学在北京", "ab在北京"]]
    assert sorted(map(tuple, numpy.argwhere(table.fold_labels)[:, 1:].tolist())) == sorted(
        [(folds[0], 1), (folds[0], 0), (folds[1], 2), (folds[1], 2)]
    )
    module = GazetteerFeatures(len(table.keys), N_LABELS, 6, 4)
    module.set_entries(torch.from_numpy(table.keys), torch.from_numpy(table.fold_labels))
    cp, lengths = codepoints_of(["ab北京"])  # half-width text finds the full-width entity
    assert module(cp, lengths)[0, 0].tolist()[2] == 1.0  # B- of label 2 on 'a'
    with pytest.raises(ValueError, match="label index 3"):
        build_gazetteer_table([(numpy.array([1, 2]), [(0, 2, 3)])], N_LABELS, 6, 4)
    empty = build_gazetteer_table([], N_LABELS, 6, 4)
    assert empty.keys.shape == (0,) and empty.fold_labels.shape == (0, 4, N_LABELS)


def test_pipeline_stores_the_training_entities(tmp_path):
    nlp = train_small(steps=60, model={**SMALL_MODEL, "gazetteer": True, "gazetteer_folds": 2})
    pipe = nlp.get_pipe("bilstm_crf_ner")
    n_entities = len({text[s:e] for text, ents in TRAIN_DATA for s, e, _ in ents})
    assert pipe.cfg["n_gazetteer_keys"] == n_entities
    gazetteer = get_torch_module(pipe.model).gazetteer
    assert gazetteer.has_folds and gazetteer.width == 4 * len(pipe.labels)
    for text, ents in TRAIN_DATA:
        assert ents_of(nlp(text)) == sorted(ents), text
    nlp.to_disk(tmp_path / "gazetteer")
    loaded = spacy.load(tmp_path / "gazetteer")
    loaded_gazetteer = get_torch_module(loaded.get_pipe("bilstm_crf_ner").model).gazetteer
    # The labels are saved; the fold assignment is for training only and is not.
    assert torch.equal(loaded_gazetteer.labels, gazetteer.labels)
    assert not loaded_gazetteer.has_folds
    texts = [text for text, _ in TRAIN_DATA] + ["马云去了华为公司"]
    assert [ents_of(d) for d in loaded.pipe(texts)] == [ents_of(d) for d in nlp.pipe(texts)]
    # Trained further, a loaded pipeline matches every entity, as predictions do.
    loaded.update(make_examples(loaded), sgd=loaded.resume_training())


def test_gazetteer_folds_must_be_two_or_more():
    with pytest.raises(ValueError, match="gazetteer_folds"):
        GazetteerFeatures(0, 2, 6, 1)


def test_pipeline_saved_before_the_gazetteer_loads(tmp_path):
    """A pipeline saved by a version without the gazetteer has no ``gazetteer`` setting in
    its config and no ``n_gazetteer_keys`` in cfg; spaCy fills the setting from the
    factory's default (on), and the pipeline must still load, without a gazetteer."""
    import json

    nlp = train_small(steps=40)
    nlp.to_disk(tmp_path / "old")
    config = (tmp_path / "old" / "config.cfg").read_text(encoding="utf8")
    lines = [line for line in config.splitlines() if not line.startswith("gazetteer")]
    (tmp_path / "old" / "config.cfg").write_text("\n".join(lines) + "\n", encoding="utf8")
    cfg_path = tmp_path / "old" / "bilstm_crf_ner" / "cfg"
    cfg = json.loads(cfg_path.read_text(encoding="utf8"))
    del cfg["n_gazetteer_keys"]
    cfg_path.write_text(json.dumps(cfg), encoding="utf8")
    loaded = spacy.load(tmp_path / "old")
    assert get_torch_module(loaded.get_pipe("bilstm_crf_ner").model).gazetteer is None
    texts = [text for text, _ in TRAIN_DATA]
    assert [ents_of(d) for d in loaded.pipe(texts)] == [ents_of(d) for d in nlp.pipe(texts)]
