"""spaCy's Chinese tokenizer in linear time, registered as ``spacy-bilstm-crf.ChineseTokenizer.v1``.

spaCy's ``ChineseTokenizer`` aligns its words with the text through
``spacy.util.get_words_and_spaces``, which copies the rest of the text for every
word (``text[pos:].index(word)``): quadratic in the text's length. A 1,000,000
character text took 25 s to tokenize, longer than tagging it. This subclass
makes the same Docs (same words, same whitespace tokens and trailing spaces) in
linear time, and keeps everything else of spaCy's (settings, serialization).
"""
import re
from typing import Iterable, List, Tuple

from spacy.errors import Errors
from spacy.lang.zh import ChineseTokenizer as SpacyChineseTokenizer
from spacy.lang.zh import Segmenter
from spacy.tokens import Doc
from spacy.util import registry

# What str.isspace() and str.split() treat as whitespace.
_WHITESPACE = re.compile(r"\s")


def words_and_spaces(words: Iterable[str], text: str) -> Tuple[List[str], List[bool]]:
    """``spacy.util.get_words_and_spaces`` without copying the text for each word.

    words (Iterable[str]): The words, in order, as a segmenter found them.
    text (str): The original text.
    RETURNS (Tuple[List[str], List[bool]]): The words (whitespace between words as
        tokens of its own) and whether each is followed by a space.
    """
    words = list(words)
    if "".join("".join(words).split()) != "".join(text.split()):
        raise ValueError(Errors.E194.format(text=text, words=words))
    text_words: List[str] = []
    text_spaces: List[bool] = []
    text_pos = 0
    for word in words:
        if word.isspace():
            continue
        try:
            word_start = text.index(word, text_pos) - text_pos  # searches in place: no copy
        except ValueError:
            raise ValueError(Errors.E194.format(text=text, words=words)) from None
        if word_start > 0:
            text_words.append(text[text_pos : text_pos + word_start])
            text_spaces.append(False)
            text_pos += word_start
        text_words.append(word)
        text_spaces.append(False)
        text_pos += len(word)
        if text_pos < len(text) and text[text_pos] == " ":
            text_spaces[-1] = True
            text_pos += 1
    if text_pos < len(text):
        text_words.append(text[text_pos:])
        text_spaces.append(False)
    return text_words, text_spaces


class ChineseTokenizer(SpacyChineseTokenizer):
    """spaCy's Chinese tokenizer (char, jieba or pkuseg segmentation), in linear time."""

    def __call__(self, text: str) -> Doc:
        if self.segmenter == Segmenter.jieba:
            words = [x for x in self.jieba_seg.cut(text, cut_all=False) if x]  # type: ignore[union-attr]
        elif self.segmenter == Segmenter.pkuseg:
            if self.pkuseg_seg is None:
                raise ValueError(Errors.E1000)
            words = self.pkuseg_seg.cut(text)
        elif self.segmenter == Segmenter.char:
            if not _WHITESPACE.search(text):  # the common case: one token per character
                return Doc(self.vocab, words=list(text), spaces=[False] * len(text))
            words = list(text)
        else:  # spaCy warns and falls back to characters
            return super().__call__(text)
        words, spaces = words_and_spaces(words, text)
        return Doc(self.vocab, words=words, spaces=spaces)


@registry.tokenizers("spacy-bilstm-crf.ChineseTokenizer.v1")
def create_chinese_tokenizer(segmenter: Segmenter = Segmenter.char):
    """spaCy's ``spacy.zh.ChineseTokenizer``, with the same settings, in linear time."""

    def chinese_tokenizer_factory(nlp):
        return ChineseTokenizer(nlp.vocab, segmenter=segmenter)

    return chinese_tokenizer_factory
