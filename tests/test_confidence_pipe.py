"""Entity confidence in doc.spans: exact, batch-independent, only computed when asked."""
import pytest
import spacy
from spacy.language import Language

from .conftest import TRAIN_DATA, train_small

TEXTS = [text for text, _ in TRAIN_DATA] + ["北京和上海", "", "他在华为公司工作了三年"]


@pytest.fixture(scope="module")
def nlp() -> Language:
    trained = train_small(steps=60)
    trained.get_pipe("bilstm_crf_ner").confidence = True
    return trained


def _scored(doc, key="bilstm_crf_ner"):
    group = doc.spans[key]
    return [(s.start, s.end, s.label_, p) for s, p in zip(group, group.attrs["scores"])]


def test_every_entity_has_a_probability(nlp):
    for doc in nlp.pipe(TEXTS):
        scored = _scored(doc)
        assert [(s, e, label) for s, e, label, _ in scored] == [(e.start, e.end, e.label_) for e in doc.ents]
        assert all(0.0 <= p <= 1.0 for *_, p in scored)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_scores_do_not_depend_on_the_batch(nlp, batch_size):
    alone = [_scored(nlp(text)) for text in TEXTS]
    batched = [_scored(doc) for doc in nlp.pipe(TEXTS, batch_size=batch_size)]
    for one, many in zip(alone, batched):
        assert [s[:3] for s in one] == [s[:3] for s in many]
        assert [s[3] for s in one] == pytest.approx([s[3] for s in many], abs=1e-5)


def test_confidence_changes_no_entity_and_is_off_by_default(nlp):
    plain = train_small(steps=60)
    for text in TEXTS:
        doc = plain(text)
        assert "bilstm_crf_ner" not in doc.spans
        assert [(e.start, e.end, e.label_) for e in doc.ents] == [(e.start, e.end, e.label_) for e in nlp(text).ents]


def test_min_confidence_drops_entities_from_ents_only(nlp):
    ner = nlp.get_pipe("bilstm_crf_ner")
    text = "马云在阿里巴巴杭州总部发表演讲"
    scored = _scored(nlp(text))
    cut = sorted(p for *_, p in scored)[len(scored) // 2]
    ner.min_confidence = cut
    try:
        doc = nlp(text)
    finally:
        ner.min_confidence = 0.0
    assert _scored(doc) == scored  # every entity keeps its score in doc.spans
    assert [(e.start, e.end) for e in doc.ents] == [(s, e) for s, e, _, p in scored if p >= cut]


def test_threshold_adds_candidate_spans(nlp):
    ner = nlp.get_pipe("bilstm_crf_ner")
    ner.threshold = 1e-4
    try:
        doc = nlp("他在华为公司工作了三年")
    finally:
        ner.threshold = None
    scored = _scored(doc)
    ents = {(e.start, e.end, e.label_) for e in doc.ents}
    assert ents <= {s[:3] for s in scored}
    others = [s for s in scored if s[:3] not in ents]
    assert others and all(1e-4 <= p <= 1.0 for *_, p in others)


def test_spans_key_is_configurable():
    nlp = spacy.blank("zh")
    ner = nlp.add_pipe("bilstm_crf_ner", config={"confidence": True, "spans_key": "ner_scores"})
    assert ner.spans_key == "ner_scores" and ner.confidence
    with pytest.raises(ValueError, match="min_confidence"):
        spacy.blank("zh").add_pipe("bilstm_crf_ner", config={"min_confidence": 2.0})
