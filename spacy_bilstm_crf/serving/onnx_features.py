"""The network's input features in numpy, for the ONNX graph (``onnx_tagger.py``).

Everything the network computes from code points that is table lookups, hashing and
bookkeeping rather than tensor math runs here, in a few vectorized numpy calls per
batch: normalization, character rows, bigram buckets, character classes, lexicon and
gazetteer matching (every window of up to ``max_len`` characters hashed as
``network/lexicon.py`` hashes it and searched in the sorted keys), the lexicon's
B/M/E/S and word-type flags, the gazetteer's flags, and LAC's vocabulary ids. The graph
(``serving/onnx_graph.py``) keeps the embeddings, the SoftLexicon means, LAC's BiGRUs,
the BiLSTM and the output layer: a few dozen operators, not the thousand small ones
that the same lookups cost inside a graph.

SoftLexicon is linear in the character vectors: the mean of a word's characters is a
difference of two prefix sums, and a set's weighted mean a sum of such differences.
So each (character, set, word) place is handed to the graph as two prefix-sum rows and
a coefficient (the word's weight over its length and over its set's total weight).

The tables come from ``features.npz`` (``numpy.load(allow_pickle=False)``), written by
``serving/onnx_graph.feature_tables`` from the trained network. This file imports
numpy and the standard library only: ``export --onnx`` copies it next to the export.
"""
import io
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

# The graph's inputs, in the order of its signature (``onnx_graph.FeatureEmissions``).
INPUT_NAMES = (
    "char_ids", "lengths", "left_bigrams", "right_bigrams", "classes", "word_flags",
    "place_target", "place_low", "place_high", "place_weight", "vector_target", "vector_row",
    "vector_weight", "entity_flags", "lac_ids",
)  # fmt: skip
# Places handed to the graph at least: a size-0 or size-1 axis would have been fixed
# at export; the padding places weigh nothing.
MIN_PLACES = 2
# Sets of SoftLexicon and of the gazetteer's flags: B, M, E, S.
N_SETS = 4

# Window hashing of ``network/lexicon.py``: two polynomial hashes modulo a prime,
# joined into one int64 key.
_MOD = 2**31 - 1
_BASES = (1_000_003, 911_382_323)
_SHIFT = 2**31
_BOUNDARY = -1  # the "code point" before the first and after the last character
_BIGRAM_BASE = 0x110003
_PAD_ID, _UNK_ID = 0, 1
_OTHER_CLASS = 6  # code points past the class table
# The lexicon's flags are B2 B3 B4+ M3 M4+ E2 E3 E4+ S: each set's first flag, to which a
# word's length bucket (2, 3, 4+; M from 3) is added.
_FIRST_FLAG = np.array([0, 2, 5, 8], dtype=np.int64)


def normalize(codepoints: np.ndarray) -> np.ndarray:
    """Full-width ASCII to half-width, the ideographic space to a space, A-Z to a-z
    (``network/codepoints.py``)."""
    cp = np.where((codepoints >= 0xFF01) & (codepoints <= 0xFF5E), codepoints - 0xFEE0, codepoints)
    cp = np.where(cp == 0x3000, 0x20, cp)
    return np.where((cp >= 0x41) & (cp <= 0x5A), cp + 32, cp)


def sorted_lookup(table: np.ndarray, values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """RETURNS (Tuple[np.ndarray, np.ndarray]): each value's index in the sorted
    ``table`` (clamped to its last entry) and whether it is there."""
    index = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return index, table[index] == values


class Windows:
    """The key of every window of 1 to ``max_len`` characters of a batch, as
    ``network/lexicon.py`` hashes it: one flat array, the windows of length L after
    those of length L - 1 (each length's (batch, starts) block flattened); -1 (no
    word) where a window's last character lies past its sentence's end.
    """

    def __init__(self, cp: np.ndarray, lengths: np.ndarray, max_len: int) -> None:
        batch, width = cp.shape
        n_lengths = min(max_len, width)
        self.n_starts = np.arange(width, width - n_lengths, -1, dtype=np.int64)
        # Where each length's block begins in ``keys`` (and where the last one ends).
        self.offsets = np.concatenate([[0], np.cumsum(self.n_starts * batch)])
        self.keys = np.empty(int(self.offsets[-1]), dtype=np.int64)
        # Padding only where some sentence is shorter than the batch (never for one text).
        outside = None if bool((lengths >= width).all()) else np.arange(width)[None, :] >= lengths[:, None]
        hashes = np.zeros((2, batch, width), dtype=np.int64)
        bases = np.array(_BASES, dtype=np.int64)[:, None, None]
        for length in range(1, n_lengths + 1):
            n_starts = width - length + 1
            # Windows of length L from those of L - 1 (h < 2^31, bases < 2^30: no overflow).
            hashes = hashes[:, :, :n_starts] * bases
            hashes += cp[None, :, length - 1 :]
            hashes %= _MOD
            block = self.keys[self.offsets[length - 1] : self.offsets[length]].reshape(batch, n_starts)
            np.multiply(hashes[0], _SHIFT, out=block)
            block += hashes[1]
            if outside is not None:
                block[outside[:, length - 1 :]] = -1


class WindowMatcher:
    """The stored words (lexicon or gazetteer) found among a batch's windows.

    keys (np.ndarray): int64, sorted; row 0 is the sentinel (key -1: no word).
    max_len (int): Longest word matched.
    """

    def __init__(self, keys: np.ndarray, max_len: int) -> None:
        self.keys = keys
        self.max_len = int(max_len)
        # A membership filter on the keys' low bits (about 8 bits per key, at most 4 MB):
        # most windows are no word, and one lookup in it is cheaper than a binary search
        # over hundreds of thousands of keys. Only the windows it passes are searched.
        bits = min(22, max(10, len(keys).bit_length() + 3))
        self._mask = (1 << bits) - 1
        self._filter = np.zeros(1 << bits, dtype=bool)
        self._filter[keys & self._mask] = True

    def words(self, windows: Windows) -> "Words":
        """RETURNS (Words): Every window of up to ``max_len`` characters that is a
        stored word: the filter, then one search over the windows it passes."""
        n_lengths = min(self.max_len, len(windows.n_starts))
        keys = windows.keys[: windows.offsets[n_lengths]]
        maybe = np.flatnonzero(self._filter[keys & self._mask] & (keys >= 0))
        index, hit = sorted_lookup(self.keys, keys[maybe])
        found, index = maybe[hit], index[hit]
        block = np.searchsorted(windows.offsets, found, side="right") - 1
        within = found - windows.offsets[block]
        n_starts = windows.n_starts[block]
        return Words(within // n_starts, within % n_starts, index, block + 1)


class Words:
    """Matched words: sentence, start, row in the keys, length (int64 arrays of one
    size); and the places they cover (:meth:`places`)."""

    def __init__(self, batch: np.ndarray, start: np.ndarray, row: np.ndarray, length: np.ndarray) -> None:
        self.batch, self.start, self.row, self.length = batch, start, row, length

    def places(self, width: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each word's characters. width (int): The batch's width.

        RETURNS (Tuple[np.ndarray, ...]): for each place, its word, its offset in the
            word, its set (0 B: the first of two or more characters, 1 M: inside, 2 E:
            the last, 3 S: a one-character word) and its position in the flattened
            (batch, width) grid.
        """
        word = np.repeat(np.arange(len(self.length)), self.length)
        firsts = np.cumsum(self.length) - self.length
        offset = np.arange(len(word)) - np.repeat(firsts, self.length)
        length = self.length[word]
        which = np.where(offset == 0, 0, np.where(offset == length - 1, 2, 1))
        which = np.where(length == 1, 3, which)
        position = self.batch[word] * width + self.start[word] + offset
        return word, offset, which, position


class FeatureTables:
    """What the features are computed from, as ``features.npz`` holds it.

    tables (Mapping[str, np.ndarray]): ``char_table`` (sorted known code points after
        a sentinel), ``size_names`` and ``sizes`` (scalars by name) always; ``class_table``, ``lexicon_keys``,
        ``lexicon_weights``, ``lexicon_pos``, ``entity_keys``, ``entity_labels``,
        ``lac_codepoints``, ``lac_ids`` where the network has the part.
    """

    def __init__(self, tables: Mapping[str, np.ndarray]) -> None:
        sizes = {str(k): int(v) for k, v in zip(tables["size_names"].tolist(), tables["sizes"].tolist())}
        self.char_table = tables["char_table"]
        self.bigram_buckets = sizes["bigram_buckets"]  # 0: no bigrams
        self.class_table = tables["class_table"] if "class_table" in tables else None
        self.lexicon = WindowMatcher(tables["lexicon_keys"], sizes["lexicon_max_len"]) if "lexicon_keys" in tables else None
        self.lexicon_weights = tables["lexicon_weights"] if "lexicon_weights" in tables else None
        self.lexicon_pos = tables["lexicon_pos"] if "lexicon_pos" in tables else None
        self.vector_rows = tables["lexicon_vector_rows"] if "lexicon_vector_rows" in tables else None
        self.n_pos_groups = sizes.get("n_pos_groups", 0)
        self.entities = WindowMatcher(tables["entity_keys"], sizes["entity_max_len"]) if "entity_keys" in tables else None
        self.entity_labels = tables["entity_labels"] if "entity_labels" in tables else None
        self.lac_codepoints = tables["lac_codepoints"] if "lac_codepoints" in tables else None
        self.lac_ids = tables["lac_ids"] if "lac_ids" in tables else None
        self.lac_oov = sizes.get("lac_oov", 0)

    def features(self, codepoints: np.ndarray, lengths: np.ndarray) -> Dict[str, np.ndarray]:
        """The graph's inputs (``INPUT_NAMES``) for a padded batch.

        codepoints (np.ndarray): int64 (batch, width), raw code points.
        lengths (np.ndarray): int64 (batch,).
        RETURNS (Dict[str, np.ndarray]): The graph's feed; parts the network lacks get
            small zero placeholders (the graph ignores them).
        """
        batch, width = codepoints.shape
        inside = np.arange(width)[None, :] < lengths[:, None]
        cp = normalize(codepoints)
        index, known = sorted_lookup(self.char_table, cp)
        char_ids = np.where(inside, np.where(known, index + 1, _UNK_ID), _PAD_ID)
        feed: Dict[str, np.ndarray] = {"char_ids": char_ids, "lengths": lengths}
        zeros = np.zeros((batch, width), dtype=np.int64)
        feed["left_bigrams"], feed["right_bigrams"] = self._bigrams(cp, inside) if self.bigram_buckets else (zeros, zeros)
        if self.class_table is not None:
            in_table = cp < len(self.class_table)
            classes = np.where(in_table, self.class_table[np.where(in_table, cp, 0)], _OTHER_CLASS)
            feed["classes"] = np.where(inside, classes, 0).astype(np.int64)
        else:
            feed["classes"] = zeros
        matchers = [m for m in (self.lexicon, self.entities) if m is not None]
        # Both matchers hash the same windows: once, to the longer of their lengths.
        windows = Windows(cp, lengths, max(m.max_len for m in matchers)) if matchers else None
        feed.update(self._lexicon(windows, batch, width))
        feed["entity_flags"] = self._entity_flags(windows, batch, width)
        if self.lac_codepoints is not None:
            index, known = sorted_lookup(self.lac_codepoints, cp)
            feed["lac_ids"] = np.where(known, self.lac_ids[index], self.lac_oov)
        else:
            feed["lac_ids"] = zeros
        return feed

    def _bigrams(self, cp: np.ndarray, inside: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Hashed rows of the (previous, current) and (current, next) pairs; 0 at padding."""
        cp = np.where(inside, cp, _BOUNDARY)
        boundary = np.full((cp.shape[0], 1), _BOUNDARY, dtype=np.int64)
        previous = np.concatenate([boundary, cp[:, :-1]], axis=1)
        following = np.concatenate([cp[:, 1:], boundary], axis=1)

        def bucket(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.where(inside, ((a + 2) * _BIGRAM_BASE + (b + 2)) % self.bigram_buckets + 1, 0)

        return bucket(previous, cp), bucket(cp, following)

    def _lexicon(self, windows: Optional[Windows], batch: int, width: int) -> Dict[str, np.ndarray]:
        """B/M/E/S flags (and word types), and the places of SoftLexicon's means."""
        pad = np.zeros(MIN_PLACES, dtype=np.int64)
        no_places = {
            "place_target": pad, "place_low": pad, "place_high": pad,
            "place_weight": pad.astype(np.float32), "vector_target": pad, "vector_row": pad,
            "vector_weight": pad.astype(np.float32),
        }  # fmt: skip
        if self.lexicon is None or windows is None:
            return {"word_flags": np.zeros((batch, width, 1), dtype=np.float32), **no_places}
        words = self.lexicon.words(windows)
        word, offset, which, position = words.places(width)
        length = words.length[word]
        n_pos = 2 * self.n_pos_groups if self.lexicon_pos is not None else 0
        flags = np.zeros((batch * width, 9 + n_pos), dtype=np.float32)
        bucket = np.minimum(length, 4) - 2  # -1 for single characters, whose S flag has none
        flag = _FIRST_FLAG[which] + np.maximum(bucket, 0)
        flags[position, flag] = 1.0
        if n_pos:
            group = self.lexicon_pos[words.row[word]]
            typed = group > 0
            # Even channels: begins a word of the type; odd: covers it past its first character.
            channel = 9 + 2 * (group - 1) + (offset > 0)
            flags[position[typed], channel[typed]] = 1.0
        feed = {"word_flags": flags.reshape(batch, width, -1)}
        if self.lexicon_weights is None:
            return {**feed, **no_places}
        weight = self.lexicon_weights[words.row[word]].astype(np.float64)
        target = position * N_SETS + which
        totals = np.bincount(target, weights=weight, minlength=batch * width * N_SETS)
        # The weighted mean of the set's word means: weight / length / the set's total.
        coefficient = weight / length / np.maximum(totals[target], 1e-6)
        # Prefix sums have a leading zero row per sentence: width + 1 rows each.
        low = words.batch[word] * (width + 1) + words.start[word]
        feed.update({
            "place_target": np.concatenate([target, pad]),
            "place_low": np.concatenate([low, pad]),
            "place_high": np.concatenate([low + length, pad]),
            "place_weight": np.concatenate([coefficient, pad]).astype(np.float32),
        })  # fmt: skip
        if self.vector_rows is None:
            return {**no_places, **feed}
        # Pretrained word vectors: the B/M/E means of the covered words of two or more
        # characters (``LexiconFeatures.pooled_word_vectors``).
        row = self.vector_rows[words.row[word]].astype(np.int64)
        covered = (row > 0) & (length > 1)
        target = position[covered] * 3 + which[covered]
        weight = weight[covered]
        totals = np.bincount(target, weights=weight, minlength=batch * width * 3)
        feed.update({
            "vector_target": np.concatenate([target, pad]),
            "vector_row": np.concatenate([row[covered], pad]),
            "vector_weight": np.concatenate([weight / np.maximum(totals[target], 1e-6), pad]).astype(np.float32),
        })  # fmt: skip
        return feed

    def _entity_flags(self, windows: Optional[Windows], batch: int, width: int) -> np.ndarray:
        """The gazetteer's flags: for each set (B, M, E, S), the labels of the stored
        entities whose place this is."""
        if self.entities is None or windows is None:
            return np.zeros((batch, width, 1), dtype=np.float32)
        n_labels = self.entity_labels.shape[1]
        words = self.entities.words(windows)
        word, _, which, position = words.places(width)
        place, label = np.nonzero(self.entity_labels[words.row[word]])
        flags = np.zeros((batch * width, N_SETS * n_labels), dtype=np.float32)
        flags[position[place], which[place] * n_labels + label] = 1.0
        return flags.reshape(batch, width, -1)


def load_tables(data: bytes) -> FeatureTables:
    """data (bytes): A ``features.npz``. RETURNS (FeatureTables): Its tables (no pickled
    objects are read)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as data:
        return FeatureTables({name: data[name] for name in data.files})
