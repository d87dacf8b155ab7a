"""The lexicon as the network stores it: word keys, and a weight and a word type per key."""
from dataclasses import dataclass
from typing import List

import numpy
import torch

from ..network.lexicon import LexiconEntries, padded_word_keys, pos_group
from ..network.model import normalize_codepoints


@dataclass
class LexiconTable:
    """The lexicon as the network stores it: sorted unique keys, a weight and a word type per key."""

    keys: numpy.ndarray  # int64
    weights: numpy.ndarray  # float32: log(1 + count); 1 where the lexicon has no counts
    pos: numpy.ndarray  # int64: 1 + index in POS_GROUPS, 0 for other or no tags


def build_lexicon_table(entries: LexiconEntries, max_len: int) -> LexiconTable:
    """Key, weight and word type of each lexicon word (see :class:`LexiconTable`).

    Words that are one after normalization (e.g. ``AT&T`` and ``at&t``) share a key;
    it keeps the largest count and that word's type.
    """
    keep = [i for i, word in enumerate(entries.words) if 0 < len(word) <= max_len]
    words = [entries.words[i] for i in keep]
    counts = numpy.ones(len(keep)) if entries.counts is None else entries.counts[keep]
    groups = numpy.array([pos_group(entries.tags[i]) for i in keep] if entries.tags else [0] * len(keep), dtype="int64")
    if not words:
        empty = numpy.zeros(0)
        return LexiconTable(empty.astype("int64"), empty.astype("float32"), empty.astype("int64"))
    keys = build_lexicon_keys(words, max_len, unique=False)
    # Sort by key, then by count descending: the first row of each key has its largest count.
    order = numpy.lexsort((-counts, keys))
    keys, counts, groups = keys[order], counts[order], groups[order]
    first = numpy.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    weights = numpy.log1p(numpy.maximum(counts[first], 0.0)).astype("float32")
    return LexiconTable(keys[first], weights, groups[first])


def build_lexicon_keys(words: List[str], max_len: int, unique: bool = True) -> numpy.ndarray:
    """Keys of lexicon words after the same normalization as the text (see ``lexicon.py``).

    words (List[str]): The lexicon.
    max_len (int): Longer words are left out (they are never matched).
    unique (bool): Sort and deduplicate; otherwise one key per word (none left out:
        every word must be 1..max_len characters).
    RETURNS (numpy.ndarray): int64 keys.
    """
    if not unique and any(not 0 < len(word) <= max_len for word in words):
        raise ValueError(f"Every word must have 1 to {max_len} characters.")
    words = [word for word in words if 0 < len(word) <= max_len]
    if not words:
        return numpy.zeros(0, dtype="int64")
    lengths = numpy.fromiter(map(len, words), dtype="int64", count=len(words))
    flat = numpy.frombuffer("".join(words).encode("utf-32-le"), dtype="<u4").astype("int64")
    normalized = normalize_codepoints(torch.from_numpy(flat)).numpy()
    # (n_words, max_len) without a loop over words: position j of word i is flat[start_i + j].
    starts = numpy.cumsum(lengths) - lengths
    index = numpy.minimum(starts[:, None] + numpy.arange(max_len), len(flat) - 1)
    padded = numpy.where(numpy.arange(max_len) < lengths[:, None], normalized[index], 0)
    return padded_word_keys(torch.from_numpy(padded), torch.from_numpy(lengths), unique).numpy()
