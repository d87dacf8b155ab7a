"""The linear-time Chinese tokenizer makes exactly the Docs spaCy's own makes."""
import random

import pytest
import spacy
from spacy.util import get_words_and_spaces

from spacy_bilstm_crf.features.tokenizer import ChineseTokenizer, words_and_spaces

OURS = {"nlp": {"tokenizer": {"@tokenizers": "spacy-bilstm-crf.ChineseTokenizer.v1"}}}
TEXTS = [
    "",
    "马云在阿里巴巴杭州总部发表演讲",
    "  前面有空格，后面也有  ",
    "Apple 的 iPhone  15\t发布了\n\n新产品 \u3000全角空格",
    " ",
    "\n",
    "a  b   c",
]


def random_texts(n: int):
    rng = random.Random(0)
    alphabet = list("马云在杭州ab1。，") + [" ", " ", "  ", "\n", "\t", "\u3000"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def tokens(doc):
    return [(t.text, t.whitespace_) for t in doc]


@pytest.mark.parametrize("segmenter", ["char", "jieba"])
def test_same_docs_as_spacys_tokenizer(segmenter: str) -> None:
    settings = {"nlp": {"tokenizer": {"segmenter": segmenter}}}
    spacy_nlp = spacy.blank("zh", config=settings)
    ours = spacy.blank("zh", config={"nlp": {"tokenizer": {**OURS["nlp"]["tokenizer"], "segmenter": segmenter}}})
    assert isinstance(ours.tokenizer, ChineseTokenizer)
    for text in TEXTS + random_texts(300):
        doc = ours(text)
        assert tokens(doc) == tokens(spacy_nlp(text)), repr(text)
        assert doc.text == text


def test_words_and_spaces_equals_spacys_function() -> None:
    for text in TEXTS + random_texts(300):
        words = list(text)
        assert words_and_spaces(words, text) == get_words_and_spaces(words, text)
    with pytest.raises(ValueError):
        words_and_spaces(["不", "对"], "完全不同")


def test_pipeline_with_it_round_trips(tmp_path) -> None:
    nlp = spacy.blank("zh", config=OURS)
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    assert isinstance(loaded.tokenizer, ChineseTokenizer) and loaded.tokenizer.segmenter == "char"
    assert tokens(loaded("马云 在杭州")) == tokens(nlp("马云 在杭州"))
