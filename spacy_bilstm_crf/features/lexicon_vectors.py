"""Pretrained vectors for a lexicon's words: LAC-full's word table, by lexicon key.

LAC-full's vocabulary (``network/lac/word_vectors.py``) holds 50,000 multi-character
words with trained 128-wide vectors. Each is hashed to a lexicon key exactly as the
text is (``build_lexicon_keys``: the project's code point folding), so a lexicon word
gets the vector of the LAC word that the text would match as it; where several LAC
words fold to one key, the most frequent (the first row of ``word.dic``) wins.
"""
from dataclasses import dataclass

import numpy

from ..network.lac.word_vectors import LACVocab
from .lexicon_table import build_lexicon_keys


@dataclass
class LexiconVectors:
    """rows (numpy.ndarray): int32 (n_keys,): each lexicon key's row in ``vectors`` + 1,
        0 where LAC has no vector for it.
    vectors (numpy.ndarray): float32 (n_covered, dim): one row per covered key.
    """

    rows: numpy.ndarray
    vectors: numpy.ndarray

    @property
    def coverage(self) -> float:
        """RETURNS (float): the share of lexicon keys that have a vector."""
        return float((self.rows > 0).mean()) if len(self.rows) else 0.0


def build_lexicon_vectors(
    keys: numpy.ndarray, vocab: LACVocab, embeddings: numpy.ndarray, max_len: int
) -> LexiconVectors:
    """LAC-full's vectors for the lexicon keys it covers.

    keys (numpy.ndarray): The lexicon's sorted unique int64 keys (``LexiconTable.keys``).
    vocab (LACVocab): LAC-full's vocabulary.
    embeddings (numpy.ndarray): LAC-full's ``word_emb`` (vocab size, dim).
    max_len (int): The lexicon's longest word (longer LAC words are never matched).
    RETURNS (LexiconVectors): The rows per key and the covered vectors.
    """
    by_row = sorted((index, entry) for entry, index in vocab.ids.items() if vocab.is_word(entry))
    words = [entry for _, entry in by_row if len(entry) <= max_len]
    lac_rows = numpy.array([index for index, entry in by_row if len(entry) <= max_len], dtype="int64")
    rows = numpy.zeros(len(keys), dtype="int32")
    if not words or not len(keys):
        return LexiconVectors(rows, numpy.zeros((0, embeddings.shape[1]), dtype="float32"))
    if lac_rows.max() >= len(embeddings):
        raise ValueError(f"LAC word row {int(lac_rows.max())} is outside the embedding table of {len(embeddings)} rows")
    word_keys = build_lexicon_keys(words, max_len, unique=False)
    # The first (most frequent) LAC word of each key.
    unique_keys, first = numpy.unique(word_keys, return_index=True)
    position = numpy.searchsorted(keys, unique_keys).clip(max=len(keys) - 1)
    found = keys[position] == unique_keys
    covered_keys = position[found]
    order = numpy.argsort(covered_keys)
    covered_keys = covered_keys[order]
    sources = lac_rows[first[found]][order]
    rows[covered_keys] = numpy.arange(1, len(covered_keys) + 1, dtype="int32")
    vectors = numpy.ascontiguousarray(embeddings[sources], dtype="float32")
    return LexiconVectors(rows, vectors)
