"""Soft-lexicon features: which words of a lexicon cover each character, and how.

For every character, flags say whether some lexicon word of length 2, 3 or 4+
Begins there, has it in the Middle (3, 4+) or Ends there, and whether the
character is a Single-character word: 9 flags, the B/M/E/S sets of Zhang & Yang
(2018) and Ma et al. (2020). Optionally:

- SoftLexicon vectors (Ma et al. 2020): for each of the B/M/E/S sets, the
  frequency-weighted mean of the vectors of the words in it; a word's vector is
  the mean of its characters' vectors, so it needs no word table of its own
  (hundreds of thousands of rows) and is trained through the character table.
- Word-type flags from the lexicon's POS column (jieba: ``nr`` person, ``ns``
  place, ``nt`` organization, ``nz`` other proper noun): whether a word of that
  type begins at the character, or covers it past its first character.
- Pretrained word vectors (``pooled_word_vectors``): for the lexicon words that
  a pretrained table covers (LAC-full's 50,000 words, ``lac/word_vectors.py``),
  the B/M/E sets' weighted means of those vectors. The table is frozen and
  stored in float16 with the model; words it lacks are left out of the means.

Matching lives inside the torch module: each lexicon word is stored as a 62-bit
key (two polynomial hashes mod 2^31-1) in a sorted buffer, and each window of a
sentence is hashed incrementally and looked up by binary search. The lexicon
therefore travels with the model's weights, and an exported model needs no word
list file. On the CPU one compiled kernel matches the whole batch
(``kernels.window_rows``); on a GPU and in scripted or exported copies, tensor
ops do, one length at a time, with ``searchsorted``: the same rows.

Most windows spell no word (in CLUENER text about 85% of them), and each
``searchsorted`` query costs a binary search through a buffer of megabytes, so a
bit filter (one bit per hash bucket, 2 MB, derived from the keys and rebuilt
whenever they change) sends only the windows that may be words to the search,
and single characters of the Basic Multilingual Plane, most of them words, are
looked up in a table indexed by code point: in CLUENER text, one window in
twenty is searched.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Iterable, List, Optional, Tuple

import numpy

import torch
from torch import Tensor, nn

from . import flag_kernels, kernels
from .crf import lengths_to_mask

_MOD = 2**31 - 1
_BASE1, _BASE2 = 1_000_003, 911_382_323
_SHIFT = 2**31
# The bit filter has 2^_FILTER_BITS bits, indexed by a key's low bits (those of its
# second hash, uniform mod a prime): 16M bits for ~350k words pass ~2% of non-words.
_FILTER_BITS = 24
# Single-character words below this code point are found by direct indexing.
_DIRECT_CHARS = 2**16
N_LEXICON_FLAGS = 9  # B2 B3 B4+ M3 M4+ E2 E3 E4+ S
# Word types with a channel of their own; POS tags are grouped by prefix (nrt, nrfg → nr).
POS_GROUPS = ("nr", "ns", "nt", "nz")
N_POS_FLAGS = 2 * len(POS_GROUPS)  # begins / continues a word of each type
N_SETS = 4  # B, M, E, S
LEXICON_VECTOR_DIM = 128  # LAC-full's word vectors


def pos_group(tag: str) -> int:
    """RETURNS (int): 1 + the index of the tag's group in ``POS_GROUPS``; 0 for any other tag."""
    for index, group in enumerate(POS_GROUPS):
        if tag.startswith(group):
            return index + 1
    return 0


def _bucket(length: int) -> int:
    """Index of a word length among (2, 3, 4+)."""
    return min(length, 4) - 2


def word_keys(words: Iterable[Tensor], max_len: int) -> Tensor:
    """Keys of words given as normalized code point tensors; words longer than ``max_len`` are skipped.

    RETURNS (Tensor): Sorted unique int64 keys.
    """
    kept = [word.to(torch.long) for word in words if 1 <= len(word) <= max_len]
    if not kept:
        return torch.zeros(0, dtype=torch.long)
    lengths = torch.tensor([len(word) for word in kept])
    return padded_word_keys(nn.utils.rnn.pad_sequence(kept, batch_first=True), lengths)


def padded_word_keys(padded: Tensor, lengths: Tensor, unique: bool = True) -> Tensor:
    """Keys of words given as a padded (n_words, longest) code point tensor and their lengths.

    Hashed for all words at once, one position at a time (a jieba-sized lexicon has
    ~350k words): the same keys as the per-window hashing of ``LexiconFeatures``.
    unique (bool): Sort and deduplicate; otherwise one key per word, in order.
    RETURNS (Tensor): int64 keys.
    """
    h1 = torch.zeros(len(lengths), dtype=torch.long)
    h2 = torch.zeros(len(lengths), dtype=torch.long)
    for position in range(padded.shape[1]):
        active = lengths > position
        cp = padded[:, position]
        # h < 2^31 and the bases < 2^30: the products fit in int64.
        h1 = torch.where(active, (h1 * _BASE1 + cp) % _MOD, h1)
        h2 = torch.where(active, (h2 * _BASE2 + cp) % _MOD, h2)
    keys = h1 * _SHIFT + h2
    return torch.unique(keys) if unique else keys


class LexiconFeatures(nn.Module):
    """B/M/E/S lexicon flags per character, and optionally SoftLexicon vectors and word types.

    n_keys (int): Number of lexicon words (the key buffer's size; filled by ``set_keys``).
    max_len (int): Longest word length matched.
    weighted (bool): Keep a weight per word (log frequency) for ``pooled``.
    with_pos (bool): Keep a word type per word for ``pos_flags``.
    n_vectors (int): Rows of the pretrained word-vector table (0: none); filled by
        ``set_word_vectors``.
    vector_dim (int): Width of the pretrained word vectors.
    """

    # Final class constants: TorchScript reads no module globals.
    _mod: Final[int] = _MOD
    _base1: Final[int] = _BASE1
    _base2: Final[int] = _BASE2
    _shift: Final[int] = _SHIFT
    _n_flags: Final[int] = N_LEXICON_FLAGS
    _n_pos_flags: Final[int] = N_POS_FLAGS
    _n_sets: Final[int] = N_SETS
    _filter_mask: Final[int] = 2**_FILTER_BITS - 1
    _direct_chars: Final[int] = _DIRECT_CHARS

    def __init__(
        self,
        n_keys: int,
        max_len: int = 6,
        weighted: bool = False,
        with_pos: bool = False,
        n_vectors: int = 0,
        vector_dim: int = 128,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.weighted = weighted
        self.with_pos = with_pos
        self.n_vectors = n_vectors
        self.vector_dim = vector_dim if n_vectors else 0
        if n_vectors and not weighted:
            raise ValueError("Pretrained word vectors need a weighted lexicon (lexicon_dim > 0).")
        # Sorted keys after a sentinel that matches nothing, so an empty lexicon works.
        self.register_buffer("keys", torch.full((n_keys + 1,), -1, dtype=torch.long))
        # Row i describes keys[i]. Buffers only when used, so that models saved
        # without them still load; plain tensors otherwise (TorchScript needs the names).
        if weighted:
            self.register_buffer("weights", torch.zeros(n_keys + 1))
        else:
            self.weights = torch.zeros(1)
        # Word types fit a byte (a POS group index): a jieba-sized lexicon saves 2.4 MB
        # against int64. Pipelines saved with int64 types load into it unchanged.
        if with_pos:
            self.register_buffer("pos", torch.zeros(n_keys + 1, dtype=torch.uint8))
        else:
            self.pos = torch.zeros(1, dtype=torch.uint8)
        # Pretrained vectors: ``vector_rows[i]`` is the row of keys[i]'s word in
        # ``word_vectors`` (row 0, zero: not covered). Frozen buffers in float16: a
        # 50,000-word table takes 12.8 MB instead of 25.6.
        if n_vectors:
            self.register_buffer("vector_rows", torch.zeros(n_keys + 1, dtype=torch.int32))
            self.register_buffer("word_vectors", torch.zeros(n_vectors + 1, vector_dim, dtype=torch.float16))
        else:
            self.vector_rows = torch.zeros(1, dtype=torch.int32)
            self.word_vectors = torch.zeros(1, 1, dtype=torch.float16)
        # Derived from ``keys``: not saved, rebuilt by ``set_keys`` and after a state dict
        # load. ``filter``: a bit per hash bucket; ``char_rows``: the row of each
        # single-character word by code point (0: not a word).
        self.register_buffer("filter", torch.zeros(2**_FILTER_BITS // 64, dtype=torch.long), persistent=False)
        self.register_buffer("char_rows", torch.zeros(_DIRECT_CHARS, dtype=torch.long), persistent=False)
        self.register_load_state_dict_post_hook(_rebuild_index_after_load)
        self.rebuild_index()

    def rebuild_index(self) -> None:
        """Rebuild ``filter`` and ``char_rows`` from ``keys``."""
        keys = self.keys[1:].cpu().numpy()
        bits = (keys & self._filter_mask).astype(numpy.uint64)
        words = numpy.zeros(len(self.filter), dtype=numpy.uint64)
        numpy.bitwise_or.at(words, bits >> 6, numpy.left_shift(1, bits & 63, dtype=numpy.uint64))
        self.filter.copy_(torch.from_numpy(words.view(numpy.int64)))
        # A one-character word's key is cp * 2^31 + cp (both hashes of one code point).
        high, low = keys >> 31, keys & (_SHIFT - 1)
        single = numpy.flatnonzero((high == low) & (low < _DIRECT_CHARS))
        char_rows = numpy.zeros(_DIRECT_CHARS, dtype=numpy.int64)
        char_rows[low[single]] = single + 1  # + 1: row 0 is the sentinel
        self.char_rows.copy_(torch.from_numpy(char_rows))

    def set_keys(self, keys: Tensor, weights: Optional[Tensor] = None, pos: Optional[Tensor] = None) -> None:
        """keys (Tensor): Sorted unique keys; weights, pos (Optional[Tensor]): one per key."""
        if len(keys) + 1 != len(self.keys):
            raise ValueError(f"Expected {len(self.keys) - 1} lexicon keys, got {len(keys)}")
        self.keys[1:] = keys
        if self.weighted:
            if weights is None or len(weights) != len(keys):
                raise ValueError("A weighted lexicon needs one weight per key.")
            self.weights[1:] = weights
        if self.with_pos:
            if pos is None or len(pos) != len(keys):
                raise ValueError("A lexicon with word types needs one type per key.")
            self.pos[1:] = pos
        self.rebuild_index()

    def set_word_vectors(self, rows: Tensor, vectors: Tensor) -> None:
        """Store pretrained word vectors.

        rows (Tensor): Int (n_keys,): for each key, its row in ``vectors`` + 1; 0 where none.
        vectors (Tensor): Float (n_vectors, vector_dim).
        """
        if not self.n_vectors:
            raise ValueError("This lexicon was built without word vectors (n_vectors = 0).")
        if len(rows) + 1 != len(self.vector_rows):
            raise ValueError(f"Expected a vector row for each of {len(self.vector_rows) - 1} keys, got {len(rows)}")
        if tuple(vectors.shape) != (self.n_vectors, self.vector_dim):
            raise ValueError(
                f"Expected word vectors of shape {(self.n_vectors, self.vector_dim)}, got {tuple(vectors.shape)}"
            )
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) > self.n_vectors):
            raise ValueError(f"Vector rows must lie in 0..{self.n_vectors}")
        self.vector_rows[1:] = rows.to(torch.int32)
        self.word_vectors[0] = 0.0
        self.word_vectors[1:] = vectors.to(torch.float16)

    def _lookup(self, key: Tensor) -> Tensor:
        """RETURNS (Tensor): The row of each key in ``keys``; 0 (the sentinel) where absent."""
        index = torch.searchsorted(self.keys, key).clamp_max(len(self.keys) - 1)
        return torch.where(self.keys.index_select(0, index) == key, index, torch.zeros_like(index))

    def matches(self, cp: Tensor, lengths: Tensor) -> List[Tensor]:
        """The lexicon row of every window: item ``L - 1`` is Long (batch, seq_len - L + 1),
        the row of the word spelled by the L characters from each start; 0 for no word.

        cp (Tensor): Long (batch, seq_len) normalized code points; lengths (Tensor): Long (batch,).
        """
        if torch.jit.is_scripting():
            pass  # a scripted copy keeps the filtered search below
        elif torch.compiler.is_exporting():  # torch.export: no data-dependent shapes
            return self._matches_searched(cp, lengths)
        elif cp.device.type == "cpu":
            compiled = self._matches_compiled(cp, lengths)
            if compiled is not None:
                return compiled
        return self._matches_filtered(cp, lengths)

    def _matches_filtered(self, cp: Tensor, lengths: Tensor) -> List[Tensor]:
        """``matches`` with tensor ops: every window hashed, the bit filter applied, and
        only the windows that may be words searched. On a GPU, in a scripted copy, and
        on the CPU where the compiled kernel is unavailable.
        """
        seq_len = cp.shape[1]
        # Characters of the direct table need no search: key -1 (no word) skips them.
        keys = self._window_keys(cp, lengths, skip_direct=True)
        if len(keys) == 0:
            return keys
        # All lengths at once: filter, then search only the windows that may be words.
        flat = torch.cat([key.reshape(-1) for key in keys])
        # (index_select rather than indexing with a tensor: the same gather, twice as fast.)
        bit = flat & self._filter_mask
        word = self.filter.index_select(0, bit >> 6)
        maybe = (((word >> (bit & 63)) & 1) == 1) & (flat >= 0)
        candidates = maybe.nonzero().squeeze(1)
        found = torch.zeros_like(flat)
        found.index_copy_(0, candidates, self._lookup(flat.index_select(0, candidates)))
        rows: List[Tensor] = []
        offset = 0
        for key in keys:
            size = key.numel()
            rows.append(found[offset : offset + size].view(key.shape))
            offset += size
        direct = (cp < self._direct_chars) & lengths_to_mask(lengths, seq_len)
        by_char = self.char_rows.index_select(0, cp.clamp(0, self._direct_chars - 1).reshape(-1))
        by_char = by_char.view(cp.shape)
        rows[0] = torch.where(direct, by_char, rows[0])
        return rows

    @torch.jit.unused
    def _matches_compiled(self, cp: Tensor, lengths: Tensor) -> Optional[List[Tensor]]:
        """``matches`` as one compiled kernel over the batch (``kernels.window_rows``),
        or None where numba is unavailable. The same rows.
        """
        hashing = [self._mod, self._base1, self._base2, self._shift, self._filter_mask]
        return kernels.window_rows(cp, lengths, self.max_len, self.keys, self.filter, self.char_rows, hashing)

    def _window_keys(self, cp: Tensor, lengths: Tensor, skip_direct: bool) -> List[Tensor]:
        """The key of every window: item ``L - 1`` is Long (batch, seq_len - L + 1); -1 (the
        sentinel's key: no word) past a sentence's end and, with ``skip_direct``, for the
        single characters that the direct table covers.
        """
        seq_len = cp.shape[1]
        keys: List[Tensor] = []
        # Both hashes at once, (2, batch, ·): half the ops of two separate ones.
        bases = torch.tensor([self._base1, self._base2], device=cp.device).view(2, 1, 1)
        hashes = torch.zeros(2, cp.shape[0], seq_len, dtype=cp.dtype, device=cp.device)
        # A window lies inside its sentence when its last character does.
        mask = torch.arange(seq_len, device=cp.device)[None, :] < lengths[:, None]
        minus_one = torch.full_like(cp, -1)
        # Window hashes for length L at start s, built from length L-1: one op per length.
        for length in range(1, min(self.max_len, seq_len) + 1):
            n_starts = seq_len - length + 1
            hashes = (hashes[:, :, :n_starts] * bases + cp[:, length - 1 :]) % self._mod
            inside = mask[:, length - 1 :]
            if length == 1 and skip_direct:
                inside = inside & (cp >= self._direct_chars)
            keys.append(torch.where(inside, hashes[0] * self._shift + hashes[1], minus_one[:, :n_starts]))
        return keys

    @torch.jit.unused
    def _matches_searched(self, cp: Tensor, lengths: Tensor) -> List[Tensor]:
        """``matches`` for ``torch.export``: every window searched, no bit filter or direct
        table (their ``nonzero`` has a data-dependent size). The same rows.
        """
        keys = self._window_keys(cp, lengths, skip_direct=False)
        # One search over the windows of every length: an exported search is unrolled
        # into ~20 steps of elementwise operators, which a graph runs once, not per length.
        sizes = [key.numel() for key in keys]
        rows = self._lookup(torch.cat([key.reshape(-1) for key in keys]))
        return [part.view(key.shape) for part, key in zip(torch.split(rows, sizes), keys)]

    def forward(self, cp: Tensor, lengths: Tensor) -> Tensor:
        """cp (Tensor): Long (batch, max_len) normalized code points; lengths (Tensor): Long (batch,).

        RETURNS (Tensor): Float (batch, max_len, 9) flags; zero at padding.
        """
        return self.flags(self.matches(cp, lengths), cp.shape)

    def word_flags(self, rows: List[Tensor], shape: List[int], with_pos: bool) -> Tensor:
        """:meth:`flags`, then with ``with_pos`` :meth:`pos_flags`, side by side: Float
        (batch, seq_len, 9 or 17). On the CPU one compiled kernel (``flag_kernels.py``).
        """
        if torch.jit.is_scripting():
            pass  # a scripted copy keeps the tensor ops below
        elif self.keys.device.type == "cpu" and not torch.compiler.is_exporting():
            compiled = self._word_flags_compiled(rows, shape, with_pos)
            if compiled is not None:
                return compiled
        flags = self.flags(rows, shape)
        if with_pos:
            return torch.cat([flags, self.pos_flags(rows, shape)], dim=-1)
        return flags

    @torch.jit.unused
    def _word_flags_compiled(self, rows: List[Tensor], shape: List[int], with_pos: bool) -> Optional[Tensor]:
        pos = self.pos if with_pos else None
        return flag_kernels.word_flags(rows, pos, self._n_pos_flags // 2, shape)

    def flags(self, rows: List[Tensor], shape: List[int]) -> Tensor:
        """RETURNS (Tensor): Float (batch, seq_len, 9) B/M/E/S flags of ``matches``' rows."""
        batch, seq_len = shape[0], shape[1]
        # One (batch, seq_len) plane per flag, stacked at the end: the ORs below then
        # run over contiguous rows, not over every ninth byte.
        planes = torch.zeros(self._n_flags, batch, seq_len, dtype=torch.bool, device=self.keys.device)
        for index, row in enumerate(rows):
            length = index + 1
            n_starts = seq_len - length + 1
            match = row > 0
            # Explicit ``a[i] = a[i] | b``: TorchScript compiles ``a[i] |= b`` on a
            # slice into an op that does not write back.
            if length == 1:
                planes[8] = planes[8] | match
                continue
            bucket = _bucket(length)
            planes[bucket, :, :n_starts] = planes[bucket, :, :n_starts] | match  # B
            end = 5 + bucket
            planes[end, :, length - 1 :] = planes[end, :, length - 1 :] | match  # E
            middle = 3 + bucket - 1
            for offset in range(1, length - 1):  # M (lengths >= 3)
                inner = planes[middle, :, offset : offset + n_starts] | match
                planes[middle, :, offset : offset + n_starts] = inner
        return planes.permute(1, 2, 0).to(torch.float32)

    def pos_flags(self, rows: List[Tensor], shape: List[int]) -> Tensor:
        """RETURNS (Tensor): Float (batch, seq_len, 8): for each word type of ``POS_GROUPS``,
            a word of it begins here / covers this character past its first one.
        """
        batch, seq_len = shape[0], shape[1]
        n_groups = self._n_pos_flags // 2
        flags = torch.zeros(batch, seq_len, self._n_pos_flags, dtype=torch.bool, device=self.keys.device)
        groups = torch.arange(1, n_groups + 1, device=self.keys.device)
        for index, row in enumerate(rows):
            length = index + 1
            n_starts = seq_len - length + 1
            # (batch, n_starts, n_groups): the word starting here is of group g (0: none).
            match = self.pos[row][:, :, None] == groups
            # Even channels: begins a word of the group; odd: covers it past its first character.
            flags[:, :n_starts, 0::2] = flags[:, :n_starts, 0::2] | match
            for offset in range(1, length):
                inner = flags[:, offset : offset + n_starts, 1::2] | match
                flags[:, offset : offset + n_starts, 1::2] = inner
        return flags.to(torch.float32)

    def pooled(self, rows: List[Tensor], vectors: Tensor) -> Tensor:
        """SoftLexicon: per B/M/E/S set, the weighted mean of its words' vectors.

        A word's vector is the mean of its characters' ``vectors`` (a prefix-sum
        difference, so every window costs the same); its weight is ``weights[row]``.
        vectors (Tensor): Float (batch, seq_len, dim) character vectors.
        RETURNS (Tensor): Float (batch, seq_len, 4 * dim): the B, M, E and S means; zero
            for an empty set.
        """
        if torch.jit.is_scripting():
            pass  # a scripted copy keeps the tensor ops below
        elif not torch.is_grad_enabled() and vectors.device.type == "cpu" and not torch.compiler.is_exporting():
            compiled = self._pooled_compiled(rows, vectors)
            if compiled is not None:
                return compiled
        batch, seq_len, dim = vectors.shape
        prefix = torch.cat([vectors.new_zeros(batch, 1, dim), vectors.cumsum(dim=1)], dim=1)
        sums = [vectors.new_zeros(batch, seq_len, dim) for _ in range(4)]
        totals = [vectors.new_zeros(batch, seq_len, 1) for _ in range(4)]
        # With no gradient to take, add into slices (a padded copy per place costs more).
        in_place = not torch.is_grad_enabled()
        for index, row in enumerate(rows):
            length = index + 1
            n_starts = seq_len - length + 1
            weight = self.weights[row].to(vectors.dtype)[:, :, None]  # 0 where no word
            mean = (prefix[:, length : length + n_starts] - prefix[:, :n_starts]) / length
            weighted = weight * mean
            for which, offset in self._set_places(length):
                if in_place:
                    sums[which][:, offset : offset + n_starts].add_(weighted)
                    totals[which][:, offset : offset + n_starts].add_(weight)
                else:
                    # Pad instead of writing into a slice: no in-place op on the autograd path.
                    pad = [0, 0, offset, seq_len - n_starts - offset]
                    sums[which] = sums[which] + nn.functional.pad(weighted, pad)
                    totals[which] = totals[which] + nn.functional.pad(weight, pad)
        if in_place:
            # Each mean written into its place of the result: no concatenation.
            out = vectors.new_empty(batch, seq_len, 4 * dim)
            for which in range(4):
                torch.div(sums[which], totals[which].clamp_min_(1e-6), out=out[:, :, which * dim : (which + 1) * dim])
            return out
        return torch.cat([s / t.clamp_min(1e-6) for s, t in zip(sums, totals)], dim=-1)

    def pooled_typed(self, rows: List[Tensor], vectors: Tensor) -> Tensor:
        """:meth:`pooled` with each B/M/E/S set split by word type: the words of each
        group of ``POS_GROUPS`` (person, place, organization, other proper noun) and the
        words of none are pooled apart. Needs ``with_pos`` (the types) and ``weighted``.

        vectors (Tensor): Float (batch, seq_len, dim) character vectors.
        RETURNS (Tensor): Float (batch, seq_len, 4 * (n_groups + 1) * dim): per set, per
            type (0: none of the groups), the weighted mean; zero for an empty one.
        """
        batch, seq_len, dim = vectors.shape
        n_types = self._n_pos_flags // 2 + 1
        prefix = torch.cat([vectors.new_zeros(batch, 1, dim), vectors.cumsum(dim=1)], dim=1).reshape(-1, dim)
        # One entry per (matched word, character of it): the word's prefix-sum rows, its
        # weight over its length (its mean times its weight), and the (character, set,
        # type) it is pooled into. Only matched windows cost anything.
        targets: List[Tensor] = []
        lows: List[Tensor] = []
        highs: List[Tensor] = []
        scales: List[Tensor] = []
        weights: List[Tensor] = []
        for index, row in enumerate(rows):
            length = index + 1
            found = (row > 0).nonzero()
            sentence, start = found[:, 0], found[:, 1]
            word = row[sentence, start]
            weight = self.weights[word].to(vectors.dtype)
            word_type = self.pos[word].to(torch.long)
            low = sentence * (seq_len + 1) + start
            for which, offset in self._set_places(length):
                targets.append(((sentence * seq_len + start + offset) * self._n_sets + which) * n_types + word_type)
                lows.append(low)
                highs.append(low + length)
                scales.append(weight / length)
                weights.append(weight)
        n_slots = batch * seq_len * self._n_sets * n_types
        if not targets:
            return vectors.new_zeros(batch, seq_len, self._n_sets * n_types * dim)
        target = torch.cat(targets)
        sums = (prefix.index_select(0, torch.cat(highs)) - prefix.index_select(0, torch.cat(lows))) * torch.cat(scales)[:, None]
        pooled = vectors.new_zeros(n_slots, dim).index_add(0, target, sums)
        totals = vectors.new_zeros(n_slots).index_add(0, target, torch.cat(weights))
        return (pooled / totals.clamp_min(1e-6)[:, None]).reshape(batch, seq_len, self._n_sets * n_types * dim)

    def _set_places(self, length: int) -> List[Tuple[int, int]]:
        """Where a word of ``length`` characters counts: (set, offset from its start) for
        each of its characters; sets 0-3 are B, M, E, S."""
        if length == 1:
            return [(3, 0)]
        places: List[Tuple[int, int]] = [(0, 0), (2, length - 1)]
        for offset in range(1, length - 1):
            places.append((1, offset))
        return places

    @torch.jit.export
    def pooled_word_vectors(self, rows: List[Tensor], dtype: torch.dtype = torch.float32) -> Tensor:
        """Per B/M/E set, the weighted mean of the pretrained vectors of its words that
        the table covers (single characters have none: no S set).

        rows (List[Tensor]): The window rows of ``matches``.
        RETURNS (Tensor): Float (batch, seq_len, 3 * vector_dim): the B, M and E means;
            zero where a set has no covered word.
        """
        batch, seq_len = rows[0].shape
        dim = self.vector_dim
        zeros = torch.zeros(batch, seq_len, dim, dtype=dtype, device=rows[0].device)
        sums = [zeros, zeros, zeros]
        totals = [zeros[:, :, :1], zeros[:, :, :1], zeros[:, :, :1]]
        for index, row in enumerate(rows):
            length = index + 1
            if length < 2:
                continue
            n_starts = seq_len - length + 1
            vector_row = self.vector_rows[row].to(torch.long)
            # Words the table lacks weigh nothing.
            weight = (self.weights[row] * (vector_row > 0).to(self.weights.dtype)).to(dtype)[:, :, None]
            weighted = weight * self.word_vectors[vector_row].to(dtype)
            for which, offset in self._set_places(length):
                pad = [0, 0, offset, seq_len - n_starts - offset]
                sums[which] = sums[which] + nn.functional.pad(weighted, pad)
                totals[which] = totals[which] + nn.functional.pad(weight, pad)
        return torch.cat([s / t.clamp_min(1e-6) for s, t in zip(sums, totals)], dim=-1)

    @torch.jit.unused
    def _pooled_compiled(self, rows: List[Tensor], vectors: Tensor) -> Optional[Tensor]:
        """``pooled`` for predictions on the CPU as one compiled kernel
        (``kernels.soft_lexicon``: only the windows that are words cost anything), or
        None where numba is unavailable. The same means up to float rounding.
        """
        return kernels.soft_lexicon(rows, self.weights, vectors)


def _rebuild_index_after_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: the filter and direct table follow the keys just loaded."""
    assert isinstance(module, LexiconFeatures)
    with torch.no_grad():
        module.rebuild_index()


@dataclass
class LexiconEntries:
    """A lexicon's words, with a count and a POS tag per word where the source has them."""

    words: List[str]
    counts: Optional[numpy.ndarray] = None  # float64, one per word
    tags: Optional[List[str]] = None


def lexicon_path(source: str) -> Path:
    """``"jieba"`` (jieba's dictionary) or a file path. RETURNS (Path): the file."""
    if source == "jieba":
        try:
            import jieba
        except ImportError as err:
            raise ImportError(
                "lexicon = \"jieba\" needs the jieba package: pip install jieba"
            ) from err
        path = Path(jieba.__file__).parent / "dict.txt"
    else:
        path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"Lexicon file not found: {path}")
    return path


def load_lexicon(source: str) -> LexiconEntries:
    """The entries of a lexicon: ``"jieba"`` or a file with one ``word [count [POS]]`` per line.

    Counts and tags are kept only when every line has them (jieba's ``dict.txt``
    does); a count that is not a number is an error naming the line.
    """
    path = lexicon_path(source)
    words: List[str] = []
    counts: List[float] = []
    tags: List[str] = []
    with path.open(encoding="utf8") as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            words.append(parts[0])
            if len(parts) >= 2:
                try:
                    counts.append(float(parts[1]))
                except ValueError:
                    raise ValueError(
                        f"{path}, line {number}: the count '{parts[1]}' of '{parts[0]}' is not a number"
                    ) from None
            if len(parts) >= 3:
                tags.append(parts[2])
    return LexiconEntries(
        words,
        numpy.asarray(counts, dtype="float64") if words and len(counts) == len(words) else None,
        tags if words and len(tags) == len(words) else None,
    )


def load_word_list(source: str) -> List[str]:
    """Words of a lexicon: ``"jieba"`` (jieba's dictionary, ``pip install jieba``) or a file path.

    A file has one word per line; anything after the first whitespace (jieba's
    frequency and POS columns) is ignored.
    """
    return load_lexicon(source).words
