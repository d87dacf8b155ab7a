"""Training with missing entity annotation: marginalized, not learned as O."""
import numpy
import pytest
import spacy
import torch
from spacy.tokens import Span
from spacy.training import Example

from spacy_bilstm_crf.component.architectures import featurize, get_torch_module
from spacy_bilstm_crf.training.gold import missing_tokens

from .conftest import SMALL_MODEL, TRAIN_DATA, make_examples, train_small


def _example(nlp, text, ents, missing=()):
    """An example whose reference has ``ents`` and the token ranges ``missing`` unannotated."""
    ref = nlp.make_doc(text)
    spans = [ref.char_span(s, e, label=label) for s, e, label in ents]
    ref.set_ents(spans, missing=[ref[a:b] for a, b in missing], default="outside")
    return Example(nlp.make_doc(text), ref)


def test_gold_tags_mark_missing_characters():
    nlp = train_small(steps=1)
    ner = nlp.get_pipe("bilstm_crf_ner")
    eg = _example(nlp, "马云在阿里巴巴杭州", [(0, 2, "name")], missing=[(3, 7)])
    tags = ner._gold_tags(eg)
    assert tags[3:7].tolist() == [-1] * 4
    assert [ner.scheme.tags[t] for t in tags[:3]] == ["B-name", "E-name", "O"]
    assert tags[7:].tolist() == [0, 0]
    # Nothing missing: no -1 at all.
    assert (ner._gold_tags(make_examples(nlp)[0]) >= 0).all()


def test_missing_tokens_through_an_alignment():
    chars = spacy.blank("zh")
    words = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})
    ref = chars.make_doc("马云在阿里巴巴杭州")
    ref.set_ents([Span(ref, 0, 2, "name")], missing=[ref[3:7]], default="outside")
    eg = Example(words.make_doc("马云在阿里巴巴杭州"), ref)
    tokens = [t.text for t in eg.predicted]
    missing = missing_tokens(eg)
    assert [t for t, m in zip(tokens, missing) if m] == ["阿里巴巴"]


def test_update_loss_is_the_marginalized_nll():
    nlp = train_small(steps=5)
    ner = nlp.get_pipe("bilstm_crf_ner")
    eg = _example(nlp, "马云在阿里巴巴杭州总部发表演讲", [(0, 2, "name")], missing=[(3, 9)])
    module = get_torch_module(ner.model)
    gold = [ner._gold_tags(eg)]
    batch = featurize(ner.model, [eg.predicted], gold)
    with torch.no_grad():
        emissions = module.emissions(torch.as_tensor(batch.codepoints), torch.as_tensor(batch.lengths))
        expected = module.crf.nll(emissions, torch.as_tensor(batch.gold), torch.as_tensor(batch.lengths))
        as_outside = module.crf.nll(emissions, torch.as_tensor(batch.gold).clamp_min(0), torch.as_tensor(batch.lengths))
    # The noise-free model (SMALL_MODEL has no dropout) gives the same loss through update.
    losses = nlp.update([eg], sgd=None)
    assert losses["bilstm_crf_ner"] == pytest.approx(float(expected[0]), rel=1e-5, abs=1e-4)
    assert float(expected[0]) < float(as_outside[0])


def test_missing_entities_are_not_unlearned():
    """Half the entities' tokens missing: the model still finds them, unlike with them as O."""

    def train(missing: bool):
        spacy.util.fix_random_seed(0)
        nlp = spacy.blank("zh")
        nlp.add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
        full = make_examples(nlp)
        examples = []
        for k, (text, ents) in enumerate(TRAIN_DATA * 2):
            # Copies with the company and address entities removed.
            kept = ents if k < len(TRAIN_DATA) else [e for e in ents if e[2] not in ("company", "address")]
            gone = [e for e in ents if e not in kept]
            doc = nlp.make_doc(text)
            examples.append(
                _example(nlp, text, kept, missing=[(doc.char_span(s, e).start, doc.char_span(s, e).end) for s, e, _ in gone] if missing else [])
            )
        optimizer = nlp.initialize(lambda: full)
        optimizer.learn_rate = 0.01
        for _ in range(100):
            nlp.update(examples, sgd=optimizer)
        return nlp.evaluate(full)["ents_r"]

    assert train(missing=True) > train(missing=False)
