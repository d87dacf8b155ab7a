"""Entities already on a Doc (e.g. from an entity_ruler) are kept and constrain decoding."""
import numpy
import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Span

from spacy_bilstm_crf.features.chars import doc_chars, preset_tags
from spacy_bilstm_crf.network.tags import TagScheme

from .conftest import train_small

TEXT = "马云在阿里巴巴杭州总部发表演讲"


@pytest.fixture(scope="module")
def nlp() -> Language:
    return train_small()


def _with_ruler(nlp: Language, patterns) -> Language:
    """The trained component behind an entity_ruler (the component object is shared
    with ``nlp``: its settings are reset here).
    """
    copy = spacy.blank("zh")
    ruler = copy.add_pipe("entity_ruler")
    ruler.add_patterns(patterns)
    ner = copy.add_pipe("bilstm_crf_ner", source=nlp)
    ner.preset_ents, ner.window_size, ner.window_overlap = "keep", 512, 64
    return copy


def _valid(ner, doc) -> bool:
    return ner.scheme.is_valid(list(ner.predict([doc])[0].tags))


def test_ruler_then_model_keeps_known_and_unknown_labels(nlp):
    assert [(e.text, e.label_) for e in nlp(TEXT).ents] == [("马云", "name"), ("阿里巴巴", "company"), ("杭州", "address")]
    patterns = [{"label": "CITY", "pattern": "杭州"}, {"label": "name", "pattern": "发表"}]
    piped = _with_ruler(nlp, patterns)
    doc = piped(TEXT)
    ents = [(e.text, e.label_) for e in doc.ents]
    # The ruler's spans, an unknown label and a known one, stay; the model finds the rest.
    assert ("杭州", "CITY") in ents and ("发表", "name") in ents
    assert ("马云", "name") in ents and ("阿里巴巴", "company") in ents
    assert ("杭州", "address") not in ents
    ner = piped.get_pipe("bilstm_crf_ner")
    ruled = piped.get_pipe("entity_ruler")(piped.make_doc(TEXT))
    assert _valid(ner, ruled)


def test_preset_entity_forces_its_tags_over_the_model(nlp):
    """A ruler span that cuts a predicted entity wins; what the model finds stays valid."""
    piped = _with_ruler(nlp, [{"label": "name", "pattern": "巴巴杭"}])
    doc = piped(TEXT)
    ents = [(e.start_char, e.end_char, e.label_) for e in doc.ents]
    assert (5, 8, "name") in ents
    assert all(not (s < 8 and e > 5) for s, e, _ in ents if (s, e) != (5, 8))
    ruled = piped.get_pipe("entity_ruler")(piped.make_doc(TEXT))
    ner = piped.get_pipe("bilstm_crf_ner")
    tags = ner.predict([ruled])[0].tags
    assert ner.scheme.is_valid(list(tags))
    assert [ner.scheme.tags[t] for t in tags[5:8]] == ["B-name", "I-name", "E-name"]


def test_overwrite_replaces_preset_entities(nlp):
    piped = _with_ruler(nlp, [{"label": "CITY", "pattern": "杭州"}])
    piped.get_pipe("bilstm_crf_ner").preset_ents = "overwrite"
    ents = [(e.text, e.label_) for e in piped(TEXT).ents]
    assert ents == [(e.text, e.label_) for e in nlp(TEXT).ents]


def test_blocked_tokens_stay_outside_and_outside_tokens_stay_free(nlp):
    ner = _with_ruler(nlp, []).get_pipe("bilstm_crf_ner")
    doc = nlp.make_doc(TEXT)
    doc.set_ents([], blocked=[doc[0:2]])  # 马云 is outside on purpose
    ner(doc)
    assert ("马云", "name") not in [(e.text, e.label_) for e in doc.ents]
    assert [(t.ent_iob_, t.ent_type_) for t in doc[0:2]] == [("B", ""), ("B", "")]  # still blocked
    assert ("阿里巴巴", "company") in [(e.text, e.label_) for e in doc.ents]
    # O set by another component (doc.ents = []) is not a constraint, as in spaCy's ner...
    doc = nlp.make_doc(TEXT)
    doc.ents = []
    ner(doc)
    assert ("马云", "name") in [(e.text, e.label_) for e in doc.ents]
    # ... unless asked: then tokens marked O stay O, and missing ones are predicted.
    ner.preset_ents = "keep_outside"
    doc = nlp.make_doc(TEXT)
    doc.set_ents([], outside=[doc[0:2]], default="unmodified")
    ner(doc)
    ents = [(e.text, e.label_) for e in doc.ents]
    assert ("马云", "name") not in ents and ("阿里巴巴", "company") in ents
    ner.preset_ents = "keep"


def test_preset_tags_encoding():
    nlp = spacy.blank("zh")
    scheme = TagScheme(["name"])
    doc = nlp.make_doc("马云在杭州")
    assert preset_tags(doc, doc_chars(doc), scheme) is None
    doc.set_ents([Span(doc, 0, 2, "name"), Span(doc, 3, 5, "CITY")])
    forced = preset_tags(doc, doc_chars(doc), scheme)
    assert [scheme.tags[t] if t >= 0 else None for t in forced] == ["B-name", "E-name", None, "O", "O"]


def test_preset_entity_cut_by_a_window_is_kept(nlp):
    piped = _with_ruler(nlp, [{"label": "CITY", "pattern": "阿里巴巴杭州总部"}])
    ner = piped.get_pipe("bilstm_crf_ner")
    ner.window_size, ner.window_overlap = 8, 2
    text = TEXT * 3
    doc = piped(text)
    cities = [e for e in doc.ents if e.label_ == "CITY"]
    assert len(cities) == 3
    ruled = piped.get_pipe("entity_ruler")(piped.make_doc(text))
    assert _valid(ner, ruled)
