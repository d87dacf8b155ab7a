"""LAC-full's vocabulary: ids of its inputs, and its word vectors for a lexicon's words.

LAC-full's embedding table (``word_emb``) has a row per character (8,223), per
multi-character word (50,000: Chinese words, and digit/letter strings such as
``2019`` or ``iPhone``, case kept) and one ``OOV`` row. LAC reads a text as tokens
of its segmenter (``segmenter.py``): a token in the vocabulary is one id; any other
token is read character by character, each through ``q2b.dic`` and then looked
up, ``OOV`` if absent. ``q2b.dic`` maps 5,906 characters, once (158 of its targets
are keys too), to the form LAC's table keeps: full-width → half-width, A-Z → a-z,
most traditional → simplified, but some simplified characters to another form
(三 → 叁, 动 → 動, 创 → 創, 沈 → 渖). It maps single characters only, so a
multi-character token is looked up as it is (case kept: ``iPhone``).

LAC's 50,000 words are jieba's words: all but 2 Chinese ones are in jieba's
dictionary (folded alike); the other 8,855 are digit and letter strings.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy

from .sdist import LACFullFiles


def _fold(text: str) -> str:
    """The project's code point folding (``codepoints.normalize_codepoints``) on a string:
    full-width ASCII → half-width, the ideographic space → a space, A-Z → a-z.
    """
    out = []
    for char in text:
        cp = ord(char)
        if 0xFF01 <= cp <= 0xFF5E:
            cp -= 0xFEE0
        elif cp == 0x3000:
            cp = 0x20
        if 0x41 <= cp <= 0x5A:
            cp += 32
        out.append(chr(cp))
    return "".join(out)


@dataclass
class LACVocab:
    """LAC-full's ``word.dic`` and ``q2b.dic``.

    ids (Mapping[str, int]): entry → embedding row, ``"OOV"`` included.
    q2b (Mapping[str, str]): character → replacement character.
    """

    ids: Mapping[str, int]
    q2b: Mapping[str, str]
    _folded: Dict[str, int] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_files(cls, files: LACFullFiles) -> "LACVocab":
        """RETURNS (LACVocab): the vocabulary of files read by ``read_lac_full``."""
        return cls(files.vocab, files.q2b)

    @property
    def oov_id(self) -> int:
        """RETURNS (int): the row of characters LAC lacks."""
        return self.ids["OOV"]

    def words(self) -> List[str]:
        """RETURNS (List[str]): the multi-character entries (words, digit and letter
            strings), by row: by falling frequency.
        """
        return [entry for entry, _ in sorted(self.ids.items(), key=lambda item: item[1]) if self.is_word(entry)]

    def normalize(self, text: str) -> str:
        """RETURNS (str): ``text`` with ``q2b.dic`` applied once to each character."""
        return "".join(self.q2b.get(char, char) for char in text)

    def char_id(self, char: str) -> int:
        """RETURNS (int): a character's row as LAC reads it: ``q2b`` first, ``OOV`` if absent."""
        return self.ids.get(self.q2b.get(char, char), self.oov_id)

    def is_word(self, token: str) -> bool:
        """RETURNS (bool): whether LAC reads ``token`` (2+ characters) as one id."""
        return len(token) > 1 and token in self.ids and token != "OOV"

    def token_ids(self, token: str) -> List[int]:
        """RETURNS (List[int]): the ids LAC reads for one segmenter token: one for a
        vocabulary word, one per character otherwise (``reader.Dataset.text_to_ids``).
        """
        if self.is_word(token):
            return [self.ids[token]]
        return [self.char_id(char) for char in token]

    def word_id(self, word: str) -> Optional[int]:
        """The row of a lexicon word of 2+ characters, or None.

        Tried in order: the word as it is; with ``q2b`` applied (traditional or
        full-width forms); both sides through ``q2b`` and the project's folding
        (``q2b`` sends some simplified characters to traditional ones, so only a
        comparison of normalized forms finds ``动漫`` for ``動漫``; the folding finds
        ``iPhone`` for the project's folded ``iphone``). Among vocabulary words that
        normalize alike, the smallest row wins (``word.dic`` lists words by falling
        frequency).
        RETURNS (Optional[int]): The row, or None for single characters and words LAC lacks.
        """
        if len(word) < 2:
            return None
        for form in (word, self.normalize(word)):
            if self.is_word(form):
                return self.ids[form]
        return self.folded_index().get(_fold(self.normalize(word)))

    def folded_index(self) -> Dict[str, int]:
        """RETURNS (Dict[str, int]): folded (``q2b`` + project folding) word → smallest row. Built once."""
        if not self._folded:
            for entry, index in sorted(self.ids.items(), key=lambda item: item[1]):
                if len(entry) > 1 and entry != "OOV":
                    self._folded.setdefault(_fold(self.normalize(entry)), index)
        return self._folded


def lexicon_word_vectors(
    words: Sequence[str], vocab: LACVocab, embeddings: numpy.ndarray
) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """LAC-full's vectors for a lexicon's words (of 2+ characters; single characters get none).

    words (Sequence[str]): The lexicon's words.
    vocab (LACVocab): LAC-full's vocabulary.
    embeddings (numpy.ndarray): ``word_emb``, (vocab size, 128).
    RETURNS (Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]): ``rows`` int64
        (n_words,), -1 where not covered; ``vectors`` float32 (n_words, 128), zero
        where not covered; ``covered`` bool (n_words,).
    """
    rows = numpy.array([_row(vocab.word_id(word)) for word in words], dtype="int64").reshape(-1)
    covered = rows >= 0
    if len(rows) and rows.max() >= len(embeddings):
        raise ValueError(f"word row {int(rows.max())} is outside the embedding table of {len(embeddings)} rows")
    vectors = numpy.zeros((len(rows), embeddings.shape[1]), dtype="float32")
    vectors[covered] = embeddings[rows[covered]]
    return rows, vectors, covered


def _row(index: Optional[int]) -> int:
    return -1 if index is None else index


def coverage(words: Sequence[str], vocab: LACVocab) -> Dict[str, float]:
    """How many of a lexicon's multi-character words LAC-full has a vector for.

    RETURNS (Dict[str, float]): ``words`` (2+ characters), ``exact`` (as they are),
        ``covered`` (by :meth:`LACVocab.word_id`) and ``share`` (covered / words).
    """
    multi = [word for word in words if len(word) > 1]
    exact = sum(1 for word in multi if vocab.is_word(word))
    covered = sum(1 for word in multi if vocab.word_id(word) is not None)
    return {"words": len(multi), "exact": exact, "covered": covered, "share": covered / max(len(multi), 1)}
