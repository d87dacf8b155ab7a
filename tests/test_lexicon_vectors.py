"""LAC-full's pretrained word vectors in SoftLexicon: the lookup by lexicon key, the
pooling against a brute-force reference, and a pipeline that stores them (saved,
loaded in a fresh process without the sdist, exported, quantized)."""
import json
import random
import subprocess
import sys

import numpy
import pytest
import spacy
import torch

from spacy_bilstm_crf.component.architectures import get_torch_module
from spacy_bilstm_crf.features.lexicon_table import build_lexicon_keys
from spacy_bilstm_crf.features.lexicon_vectors import build_lexicon_vectors
from spacy_bilstm_crf.network.lac.sdist import SdistError, tensor_shapes
from spacy_bilstm_crf.network.lac.word_vectors import LACVocab
from spacy_bilstm_crf.network.lexicon import LexiconFeatures
from spacy_bilstm_crf.serving.deploy import export_pipeline, quantize_pipeline
from spacy_bilstm_crf.serving.tagger import Tagger

from .conftest import SMALL_MODEL, TRAIN_DATA, ents_in_a_fresh_process, ents_of, make_examples, pipeline_trained_with_sdist
from .test_lac_full import N_TAGS, build_sdist, paddle_bytes
from .test_lexicon import _weighted_lexicon, random_batch

# LAC-full's vocabulary of the small archive: characters, words (by falling
# frequency), a letter string; "Ab" and "ab" fold to one key (the first row wins).
VOCAB = ["北", "京", "大", "学", "阿里巴巴", "北京", "大学", "北京大学", "Ab", "ab", "腾讯", "OOV"]


def _vocab() -> LACVocab:
    return LACVocab({entry: index for index, entry in enumerate(VOCAB)}, {})


def test_vectors_by_lexicon_key():
    embeddings = numpy.arange(len(VOCAB) * 4, dtype="float32").reshape(len(VOCAB), 4)
    lexicon = ["北京", "大学", "上海", "ab", "北", "北京大学"]
    keys = build_lexicon_keys(lexicon, 6)
    found = build_lexicon_vectors(keys, _vocab(), embeddings, max_len=6)
    assert found.rows.shape == (len(keys),) and found.vectors.shape == (4, 4)
    # Brute force: each lexicon word's vector is the first LAC word of the same key.
    for word in lexicon:
        row = found.rows[list(keys).index(build_lexicon_keys([word], 6)[0])]
        lac_words = [i for i, entry in enumerate(VOCAB) if len(entry) > 1 and entry != "OOV" and entry.lower() == word]
        if not lac_words:  # 上海 (not in LAC), 北 (a character: no word vector)
            assert row == 0, word
        else:
            numpy.testing.assert_array_equal(found.vectors[row - 1], embeddings[lac_words[0]])
    assert found.coverage == pytest.approx(4 / 6)
    # A shorter max_len leaves the 4-character word out.
    assert (build_lexicon_vectors(keys, _vocab(), embeddings, max_len=2).rows > 0).sum() == 3
    empty = build_lexicon_vectors(numpy.zeros(0, dtype="int64"), _vocab(), embeddings, 6)
    assert empty.rows.shape == (0,) and empty.vectors.shape == (0, 4)
    with pytest.raises(ValueError, match="outside the embedding table"):
        build_lexicon_vectors(keys, _vocab(), embeddings[:5], 6)


def _pooled_vectors_brute_force(text, words, table, max_len):
    """Per character, the weighted mean pretrained vector of its B/M/E sets' covered words."""
    dim = next(iter(table.values())).shape[0]
    out = torch.zeros(len(text), 3 * dim)
    for position in range(len(text)):
        sets = {0: [], 1: [], 2: []}
        for start in range(len(text)):
            for end in range(start + 2, min(start + max_len, len(text)) + 1):
                word = text[start:end]
                if word not in words or word not in table or not start <= position < end:
                    continue
                which = 0 if position == start else 2 if position == end - 1 else 1
                sets[which].append((words[word][0], table[word]))
        for which, members in sets.items():
            total = sum(weight for weight, _ in members)
            if members and total > 0:
                out[position, which * dim : (which + 1) * dim] = sum(w * v for w, v in members) / total
    return out


@pytest.mark.parametrize("seed", range(4))
def test_pooled_word_vectors_match_brute_force(seed):
    rng = random.Random(seed)
    alphabet = "北京大学生活动中心人民银行𠮷"
    words = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))): None for _ in range(50)}
    words.update({"北京": None, "北京大学": None, "大学生": None})
    words = {w: (rng.choice([0.0, 0.5, 1.0, 7.0]), 0) for w in words}
    plain = _weighted_lexicon(words)
    covered = sorted(w for w in words if len(w) > 1 and rng.random() < 0.7)
    generator = torch.Generator().manual_seed(seed)
    table = {word: torch.randn(3, generator=generator).half().float() for word in covered}
    lexicon = LexiconFeatures(len(plain.keys) - 1, 6, weighted=True, n_vectors=len(covered), vector_dim=3)
    keys = plain.keys[1:]
    lexicon.set_keys(keys, plain.weights[1:])
    rows = torch.zeros(len(keys), dtype=torch.int32)
    for index, word in enumerate(covered):
        rows[int(torch.searchsorted(keys, word_key(word)))] = index + 1
    lexicon.set_word_vectors(rows, torch.stack([table[w] for w in covered]) if covered else torch.zeros(0, 3))
    texts, padded, lengths = random_batch(rng, alphabet)
    pooled = lexicon.pooled_word_vectors(lexicon.matches(padded, lengths))
    assert pooled.shape == (len(texts), padded.shape[1], 9)
    for row, text in enumerate(texts):
        expected = _pooled_vectors_brute_force(text, words, table, 6)
        torch.testing.assert_close(pooled[row, : len(text)], expected, atol=1e-5, rtol=1e-5)
        assert (pooled[row, len(text) :] == 0).all()
    assert pooled.abs().sum() > 0  # not vacuous
    scripted = torch.jit.script(lexicon)  # what the TorchScript export ships
    torch.testing.assert_close(scripted.pooled_word_vectors(lexicon.matches(padded, lengths)), pooled)


def word_key(word: str) -> int:
    return int(build_lexicon_keys([word], 6)[0])


def test_word_vector_table_checks_its_input():
    lexicon = LexiconFeatures(3, 6, weighted=True, n_vectors=2, vector_dim=4)
    with pytest.raises(ValueError, match="a vector row for each of 3 keys"):
        lexicon.set_word_vectors(torch.zeros(2, dtype=torch.int32), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        lexicon.set_word_vectors(torch.zeros(3, dtype=torch.int32), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="0..2"):
        lexicon.set_word_vectors(torch.tensor([0, 3, 1], dtype=torch.int32), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="weighted lexicon"):
        LexiconFeatures(3, 6, weighted=False, n_vectors=2)


def _lac_sdist(folder):
    """A small LAC archive whose vocabulary holds words of the test sentences."""
    rng = numpy.random.default_rng(1)
    members = {
        f"model/{name}": paddle_bytes(rng.normal(size=shape).astype("float32"))
        for name, shape in tensor_shapes(len(VOCAB), N_TAGS).items()
    }
    members["conf/word.dic"] = "".join(f"{i}\t{w}\n" for i, w in enumerate(VOCAB)).encode("utf8")
    return build_sdist(folder, members)


VECTOR_MODEL = {**SMALL_MODEL, "lexicon_dim": 8}


@pytest.fixture(scope="module")
def vector_pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lac_vectors")
    sdist = _lac_sdist(folder)
    return pipeline_trained_with_sdist(folder, sdist, {**VECTOR_MODEL, "lexicon_vectors": str(sdist)})


def test_pipeline_stores_the_vectors_it_uses(vector_pipeline):
    nlp, _ = vector_pipeline
    pipe = nlp.get_pipe("bilstm_crf_ner")
    lexicon = get_torch_module(pipe.model).lexicon
    # jieba has 北京, 大学, 北京大学, 阿里巴巴, 腾讯 (and ab): their LAC rows are stored.
    assert pipe.cfg["n_lexicon_vectors"] == lexicon.n_vectors >= 5
    assert lexicon.word_vectors.dtype == torch.float16 and not lexicon.word_vectors.requires_grad
    key = word_key("北京大学")
    row = int(lexicon.vector_rows[int(torch.searchsorted(lexicon.keys, torch.tensor(key)))])
    assert row > 0
    # The fixture's archive is seeded: its 北京大学 row, rounded to float16.
    expected = numpy.random.default_rng(1).normal(size=(len(VOCAB), 128)).astype("float32")[VOCAB.index("北京大学")]
    numpy.testing.assert_allclose(lexicon.word_vectors[row].float().numpy(), expected, rtol=1e-3, atol=1e-3)
    assert [ents_of(nlp(text)) for text, _ in TRAIN_DATA] == [
        [(s, e, label) for s, e, label in ents] for _, ents in TRAIN_DATA
    ]


def test_loads_in_a_fresh_process_without_the_sdist(vector_pipeline, tmp_path):
    nlp, path = vector_pipeline
    texts = [text for text, _ in TRAIN_DATA]
    assert ents_in_a_fresh_process(path, texts, tmp_path) == [ents_of(nlp(text)) for text in texts]


def test_export_and_int8_find_the_pipelines_entities(vector_pipeline, tmp_path):
    nlp, path = vector_pipeline
    texts = [text for text, _ in TRAIN_DATA] + ["北京大学的阿里巴巴和腾讯", ""]
    expected = [ents_of(doc) for doc in nlp.pipe(texts)]
    export_pipeline(nlp, tmp_path / "export")
    assert Tagger.load(tmp_path / "export").batch(texts) == expected
    int8 = spacy.load(path)
    quantize_pipeline(int8)
    int8_ents = [ents_of(doc) for doc in int8.pipe(texts)]
    # INT8 may move a boundary on this tiny overfit model; most entities agree.
    same = sum(a == b for a, b in zip(int8_ents, expected))
    assert same >= len(texts) - 2
    export_pipeline(int8, tmp_path / "export_int8")
    assert Tagger.load(tmp_path / "export_int8", trust_torchscript=True).batch(texts) == [
        ents_of(doc) for doc in int8.pipe(texts, batch_size=256)
    ]


def test_a_wrong_sdist_is_a_clear_error_at_initialize(tmp_path):
    bad = tmp_path / "LAC-2.1.2.tar.gz"
    bad.write_bytes(b"not the archive")
    nlp = spacy.blank("zh")
    nlp.add_pipe("bilstm_crf_ner", config={"model": {**VECTOR_MODEL, "lexicon_vectors": str(bad)}})
    with pytest.raises(SdistError, match="LAC-2.1.2.tar.gz: SHA-256"):
        nlp.initialize(lambda: make_examples(nlp))
    nlp = spacy.blank("zh")
    missing = tmp_path / "nowhere" / "LAC-2.1.2.tar.gz"
    nlp.add_pipe("bilstm_crf_ner", config={"model": {**VECTOR_MODEL, "lexicon_vectors": str(missing)}})
    with pytest.raises(SdistError, match="LAC sdist not found"):
        nlp.initialize(lambda: make_examples(nlp))
    for model in ({**SMALL_MODEL, "lexicon_vectors": "lac"}, {**VECTOR_MODEL, "lexicon": None, "lexicon_vectors": "lac"}):
        with pytest.raises(ValueError, match="lexicon_vectors needs a lexicon and lexicon_dim"):
            spacy.blank("zh").add_pipe("bilstm_crf_ner", config={"model": model})


def test_fetch_lac_command_checks_the_copy_it_is_given(tmp_path):
    wrong = tmp_path / "copy.tar.gz"
    wrong.write_bytes(b"x" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "spacy_bilstm_crf", "fetch-lac", str(tmp_path / "assets"), "--source", str(wrong)],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert f"{wrong}: SHA-256" in result.stdout + result.stderr
    assert not (tmp_path / "assets" / "LAC-2.1.2.tar.gz").exists()


def test_onnx_export_finds_the_pipelines_entities(vector_pipeline, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from spacy_bilstm_crf.serving.onnx_export import export_onnx
    from spacy_bilstm_crf.serving.onnx_tagger import OnnxTagger

    nlp, _ = vector_pipeline
    texts = [text for text, _ in TRAIN_DATA] + ["北京大学的阿里巴巴和腾讯", ""]
    export_onnx(nlp, tmp_path / "onnx")
    tagger = OnnxTagger.load(tmp_path / "onnx")
    assert tagger.batch(texts) == [ents_of(doc) for doc in nlp.pipe(texts)]


@pytest.mark.parametrize("value", [1, 10**12])
def test_an_edited_vector_count_is_refused_before_anything_is_built(vector_pipeline, tmp_path, value):
    import shutil

    _, path = vector_pipeline
    copy = tmp_path / "edited"
    shutil.copytree(path, copy)
    cfg_path = copy / "bilstm_crf_ner" / "cfg"
    cfg = json.loads(cfg_path.read_text(encoding="utf8"))
    cfg["n_lexicon_vectors"] = value
    cfg_path.write_text(json.dumps(cfg), encoding="utf8")
    with pytest.raises(ValueError, match="n_lexicon_vectors"):
        spacy.load(copy)
