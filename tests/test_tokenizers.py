"""Any tokenizer: the component tags each token's characters and maps entities to tokens."""
from collections import Counter

import numpy
import pytest
import spacy
from spacy.training import Example

from spacy_bilstm_crf.features.chars import chars_to_tokens, doc_chars

from .conftest import SMALL_MODEL, TRAIN_DATA, train_small

TEXT = "马云在阿里巴巴杭州总部发表演讲"


@pytest.fixture(scope="module")
def char_nlp():
    return train_small()


def _jieba_nlp():
    return spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})


def test_doc_chars_of_word_tokens():
    doc = spacy.blank("en")("ab  cde f")
    chars = doc_chars(doc)
    assert "".join(chr(c) for c in chars.codepoints) == "".join(t.text for t in doc)
    assert chars.token_starts.tolist() == [0, 2, 3, 6] and chars.token_ends.tolist() == [2, 3, 6, 7]
    assert not chars.one_per_token
    zh = spacy.blank("zh")("马云 在")
    assert doc_chars(zh).one_per_token and doc_chars(zh).codepoints.tolist() == [ord(c) for c in "马云在"]


def test_boundary_rules_and_counts():
    doc = spacy.blank("en")("abc de fgh")  # characters: abc|de|fgh
    chars = doc_chars(doc)
    spans = [(0, 3, 0), (1, 5, 0), (3, 4, 0), (0, 7, 0)]  # abc, bcde, d, abcdef
    counts = Counter()
    assert chars_to_tokens(spans, chars, "expand", counts) == [(0, 1), (0, 2), (1, 2), (0, 3)]
    assert counts == Counter(aligned=1, expanded=3)
    counts = Counter()
    assert chars_to_tokens(spans, chars, "contract", counts) == [(0, 1), (1, 2), None, (0, 2)]
    assert counts == Counter(aligned=1, contracted=2, dropped=1)
    assert chars_to_tokens(spans, chars, "drop") == [(0, 1), None, None, None]
    with pytest.raises(ValueError, match="boundary rule"):
        chars_to_tokens(spans, chars, "split")


def test_word_tokens_get_entities_on_token_boundaries(char_nlp):
    """A model trained on characters, run behind jieba: whole-word entities, no first-character reading."""
    nlp = _jieba_nlp()
    ner = nlp.add_pipe("bilstm_crf_ner", source=char_nlp)
    doc = nlp(TEXT)
    assert len(doc) < len(TEXT)  # word tokens
    assert [(e.text, e.label_) for e in doc.ents] == [(e.text, e.label_) for e in char_nlp(TEXT).ents]
    for rule in ("expand", "contract", "drop"):
        ner.boundary = rule
        for ent in nlp("张伟担任华为公司总经理，李明去北京大学读书").ents:
            assert ent.start_char == ent[0].idx and ent.end_char == ent[-1].idx + len(ent[-1])
    ner.boundary = "expand"


def test_whitespace_tokens_find_entities(char_nlp):
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_crf_ner", source=char_nlp)
    doc = nlp("马云 在 阿里巴巴 杭州 总部")
    assert ("阿里巴巴", "company") in [(e.text, e.label_) for e in doc.ents]


def test_training_on_word_tokenized_docs():
    nlp = _jieba_nlp()
    nlp.add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": ents}) for t, ents in TRAIN_DATA]
    ner = nlp.get_pipe("bilstm_crf_ner")
    spacy.util.fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    # Gold tags are over characters: one per character of the tokens.
    tags = ner._gold_tags(examples[0])
    assert len(tags) == len(TEXT) and len(examples[0].predicted) < len(tags)
    assert [ner.scheme.tags[t] for t in tags[3:7]] == ["B-company", "I-company", "I-company", "E-company"]
    optimizer.learn_rate = 0.01
    for _ in range(120):
        nlp.update(examples, sgd=optimizer)
    scores = nlp.evaluate(examples)
    assert scores["ents_f"] > 0.9
    for doc in nlp.pipe([t for t, _ in TRAIN_DATA]):
        for ent in doc.ents:
            assert ent.start_char == ent[0].idx and ent.end_char == ent[-1].idx + len(ent[-1])
