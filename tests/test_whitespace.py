"""Whitespace is never part of an entity: the decoder forces it to ``O`` (as spaCy's
``ner`` never starts or ends an entity on whitespace), in Viterbi and in the lattice
that confidence scores, whatever the network says."""
import itertools
import sys
from typing import List

import numpy
import pytest
import torch
from spacy.tokens import Doc

from spacy_bilstm_crf.component.architectures import get_torch_module
from spacy_bilstm_crf.features.chars import whitespace_mask
from spacy_bilstm_crf.prediction.plan import PredictionPlan

from .conftest import docs_with_ents, ents_of

ISSUE_TEXTS = ["张三\n", "\n\n王小明", "   "]
MORE_TEXTS = ["张\n王", "李四 \n 王五", "\u3000马云\t", "马云在阿里巴巴\r\n杭州总部"]


@pytest.fixture
def pushed(trained_nlp, monkeypatch):
    """The trained pipeline with emissions that favour one long ``name`` entity on every
    character, whitespace included: the model's own choice would swallow the spaces."""
    ner = trained_nlp.get_pipe("bilstm_crf_ner")
    module = get_torch_module(ner.model)
    tags = ner.scheme.tags
    bonus = torch.tensor(
        [{"B-name": 4.0, "I-name": 6.0, "E-name": 4.0, "S-name": 1.0}.get(tag, -6.0) for tag in tags]
    )
    original = module.emissions

    def emissions(*args, **kwargs):
        scores = original(*args, **kwargs)
        return torch.zeros_like(scores) + bonus.to(scores.dtype)

    monkeypatch.setattr(module, "emissions", emissions)
    yield trained_nlp
    ner.confidence, ner.threshold = False, None


def assert_no_whitespace_in_entities(doc: Doc, spans) -> None:
    for span in spans:
        assert not any(token.is_space or token.text.isspace() for token in span), (doc.text, span.text)
        assert span.text == span.text.strip(), (doc.text, span.text)


def test_the_issues_texts_give_no_entity_with_whitespace(pushed) -> None:
    docs = list(pushed.pipe(ISSUE_TEXTS + MORE_TEXTS))
    for doc in docs:
        assert_no_whitespace_in_entities(doc, doc.ents)
    by_text = {doc.text: ents_of(doc) for doc in docs}
    # A constraint, not a filter: the characters around the whitespace still form entities.
    assert by_text["张三\n"] == [(0, 2, "name")]
    assert by_text["\n\n王小明"] == [(2, 5, "name")]
    assert by_text["   "] == []
    assert by_text["张\n王"] == [(0, 1, "name"), (2, 3, "name")]


def test_whitespace_tokens_of_a_word_tokenizer_stay_outside(pushed) -> None:
    doc = Doc(pushed.vocab, words=["张三", "\n", "李四", "  ", "王五"], spaces=[False] * 5)
    doc = pushed(doc)
    assert_no_whitespace_in_entities(doc, doc.ents)
    assert [(e.start, e.end) for e in doc.ents] == [(0, 1), (2, 3), (4, 5)]


def test_scored_lattice_has_the_same_constraint(pushed) -> None:
    ner = pushed.get_pipe("bilstm_crf_ner")
    ner.confidence, ner.threshold = True, 1e-9
    for doc in pushed.pipe(ISSUE_TEXTS + MORE_TEXTS):
        group = doc.spans["bilstm_crf_ner"]
        assert_no_whitespace_in_entities(doc, group)
        scores = group.attrs["scores"]
        assert all(0.0 <= p <= 1.0 for p in scores)
        assert {(e.start, e.end, e.label_) for e in doc.ents} <= {(s.start, s.end, s.label_) for s in group}


def test_scores_equal_the_brute_force_constrained_distribution(pushed) -> None:
    """'张\\n王': every tag path with O on the newline, enumerated; the probability of
    each one-character entity is the share of the paths that tag it S-label."""
    ner = pushed.get_pipe("bilstm_crf_ner")
    ner.confidence, ner.threshold = True, 1e-12
    doc = pushed("张\n王")
    group = doc.spans["bilstm_crf_ner"]
    found = {(s.start, s.end, s.label_): p for s, p in zip(group, group.attrs["scores"])}
    module = get_torch_module(ner.model)
    tags = ner.scheme.tags
    with torch.no_grad():
        codepoints = torch.tensor([[ord(c) for c in "张\n王"]])
        emit = module.emissions(codepoints, torch.tensor([3]))[0].double().numpy()
        trans, start, end = (t.double().numpy() for t in module.crf._masked(float("-inf"), torch.float64))
    n_tags = len(tags)
    log_scores, paths = [], []
    for path in itertools.product(range(n_tags), [0], range(n_tags)):  # tag 0 (O) on the newline
        score = start[path[0]] + end[path[-1]] + sum(emit[t, k] for t, k in enumerate(path))
        score += sum(trans[a, b] for a, b in zip(path, path[1:]))
        if numpy.isfinite(score):
            log_scores.append(score)
            paths.append(path)
    log_scores = numpy.array(log_scores)
    probs = numpy.exp(log_scores - numpy.logaddexp.reduce(log_scores))
    for label in ner.labels:
        s_tag = tags.index(f"S-{label}")
        for position in (0, 2):
            expected = sum(p for p, path in zip(probs, paths) if path[position] == s_tag)
            if expected >= 1e-9:
                assert found[(position, position + 1, label)] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert not any(start <= 1 < end for start, end, _ in found)


def test_text_without_whitespace_takes_the_unconstrained_path(trained_nlp, monkeypatch) -> None:
    calls: List[int] = []
    original = PredictionPlan.decode_lattice

    def counting(plan, model, sequences, *args, **kwargs):
        calls.append(len(sequences))
        return original(plan, model, sequences, *args, **kwargs)

    monkeypatch.setattr(PredictionPlan, "decode_lattice", counting)
    trained_nlp("张伟担任华为公司总经理")
    assert calls == []
    trained_nlp("张伟担任华为公司总经理\n")
    assert calls == [1]


def test_a_preset_entity_keeps_its_whitespace(pushed) -> None:
    [doc] = docs_with_ents(pushed, [("张\n三说王五", [(0, 3, "person")])])
    doc = pushed(doc)
    assert ents_of(doc)[0] == (0, 3, "person")
    assert_no_whitespace_in_entities(doc, doc.ents[1:])


def test_whitespace_mask_is_str_isspace_for_every_code_point() -> None:
    codepoints = numpy.arange(sys.maxunicode + 1, dtype="int64")
    expected = numpy.array([chr(c).isspace() for c in range(sys.maxunicode + 1)])
    assert numpy.array_equal(whitespace_mask(codepoints), expected)
    assert whitespace_mask(numpy.array([ord(c) for c in "张三"], dtype="int64")) is None
    assert whitespace_mask(numpy.zeros(0, dtype="int64")) is None
