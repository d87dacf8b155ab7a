"""Compiled CPU kernels (numba): Viterbi decoding, lexicon window matching and
SoftLexicon pooling.

With tensor ops, each of them runs a few whole-batch operations per step (per
time step for Viterbi, per word length for matching and pooling) whose
arithmetic is small: memory traffic through padded intermediate tensors and
per-operation dispatch bound them. A kernel keeps one sentence's state in cache
and does only the work that is needed: Viterbi records back-pointers as it goes
and follows them back; matching searches a window only when the bit filter lets
it through; pooling touches only the windows that are words.

Each kernel computes what its tensor-op twin computes: Viterbi adds the same
numbers in the same order as ``serving.viterbi_scores`` and keeps the first of
equal maxima, as its backtracking does, so the paths are the same; matching
hashes windows as ``LexiconFeatures._window_keys`` does and returns the same
rows; pooling sums each word's vectors directly instead of as a prefix-sum
difference, so its means agree to float rounding.

numba compiles a kernel at its first use (one to three seconds) and caches the
machine code next to this file, or in the user's cache directory where the
package folder is read-only, so later processes load it in milliseconds. When
numba cannot be imported or cannot compile, the functions here return None
(after one warning) and the callers use their tensor ops; a GPU tensor never
comes here.
"""
import threading
import warnings
from typing import Any, Callable, Dict, List, Optional

import numpy
import torch
from torch import Tensor

_COMPILED: Dict[str, Any] = {}
_FAILED: Dict[str, bool] = {}
_LOCK = threading.Lock()


def _viterbi(emissions, lengths, trans, start, end, pad, out):  # pragma: no cover - compiled
    """Best paths: ``out[b, :lengths[b]]`` the tags, ``pad`` after them.

    emissions: (batch, max_len, n_tags); trans: (n_tags, n_tags), [from, to];
    start, end: (n_tags,); all one float dtype, ``-inf`` where banned.
    lengths: int64 (batch,); out: int64 (batch, max_len).
    """
    batch, max_len, n_tags = emissions.shape
    score = numpy.empty_like(start)
    best = numpy.empty_like(start)
    back = numpy.zeros((max(max_len, 1), n_tags), numpy.int32)
    for b in range(batch):
        n = lengths[b]
        for p in range(n, max_len):
            out[b, p] = pad
        if n == 0:
            continue
        for j in range(n_tags):
            score[j] = start[j] + emissions[b, 0, j]
        for t in range(1, n):
            for j in range(n_tags):
                best[j] = -numpy.inf
                back[t, j] = 0
            # "From" outside and "to" inside: the inner loop runs along a row of
            # ``trans`` and vectorizes; the strict ``>`` keeps the first maximum.
            for i in range(n_tags):
                s = score[i]
                for j in range(n_tags):
                    v = s + trans[i, j]
                    if v > best[j]:
                        best[j] = v
                        back[t, j] = i
            for j in range(n_tags):
                score[j] = best[j] + emissions[b, t, j]
        tag = 0
        top = -numpy.inf
        for j in range(n_tags):
            v = score[j] + end[j]
            if v > top:
                top = v
                tag = j
        out[b, n - 1] = tag
        for t in range(n - 1, 0, -1):
            tag = back[t, tag]
            out[b, t - 1] = tag


def _window_rows(cp, lengths, max_len, keys, bit_filter, char_rows, hashing, out):  # pragma: no cover
    """The lexicon row of every window: ``out[L - 1, b, s]`` for the L characters of
    sentence b from s (0: no word; windows past the sentence's end are left alone).

    cp: int64 (batch, seq_len) normalized code points; keys: sorted int64, keys[0]
    the sentinel; bit_filter: int64 words of the bit filter; char_rows: the row of
    each single character below ``len(char_rows)``; hashing: int64 (mod, base1,
    base2, shift, filter_mask); out: int64 (max_len, batch, seq_len), zeros.
    """
    mod, base1, base2, shift, filter_mask = hashing[0], hashing[1], hashing[2], hashing[3], hashing[4]
    n_direct = char_rows.shape[0]
    n_keys = keys.shape[0]
    batch = cp.shape[0]
    for b in range(batch):
        n = lengths[b]
        for s in range(n):
            h1 = 0
            h2 = 0
            for length in range(1, min(max_len, n - s) + 1):
                c = cp[b, s + length - 1]
                # h < 2^31 and the bases < 2^30: the products fit in int64.
                h1 = (h1 * base1 + c) % mod
                h2 = (h2 * base2 + c) % mod
                if length == 1 and 0 <= c < n_direct:
                    out[0, b, s] = char_rows[c]
                    continue
                key = h1 * shift + h2
                bit = key & filter_mask
                if (bit_filter[bit >> 6] >> (bit & 63)) & 1 == 0:
                    continue
                lo = 0
                hi = n_keys
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if keys[mid] < key:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < n_keys and keys[lo] == key:
                    out[length - 1, b, s] = lo


def _soft_lexicon(rows, weights, vectors, out):  # pragma: no cover - compiled
    """SoftLexicon means: ``out[b, t, k]`` the weighted mean of the vectors of the words
    of set k (B, M, E, S) at character t of sentence b; zero for an empty set.

    rows: int64 (n_lengths, batch, seq_len), the lexicon row of each window (0: no
    word); weights: (n_rows,) a weight per row, 0 for row 0; vectors: (batch,
    seq_len, dim); out: (batch, seq_len, 4, dim) zeros, of the vectors' dtype.
    """
    n_lengths, batch, seq_len = rows.shape
    dim = vectors.shape[2]
    word = numpy.empty(dim, vectors.dtype)
    for b in range(batch):
        totals = numpy.zeros((seq_len, 4), numpy.float64)
        for index in range(n_lengths):
            length = index + 1
            for s in range(seq_len - length + 1):
                row = rows[index, b, s]
                if row == 0:
                    continue
                w = weights[row]
                if w == 0:
                    continue
                for d in range(dim):
                    word[d] = vectors[b, s, d]
                for k in range(1, length):
                    for d in range(dim):
                        word[d] += vectors[b, s + k, d]
                scale = w / length
                for k in range(length):
                    if length == 1:
                        which = 3
                    elif k == 0:
                        which = 0
                    elif k == length - 1:
                        which = 2
                    else:
                        which = 1
                    totals[s + k, which] += w
                    for d in range(dim):
                        out[b, s + k, which, d] += scale * word[d]
        for t in range(seq_len):
            for which in range(4):
                total = totals[t, which]
                if total > 0:  # (weights are log counts, never negative)
                    for d in range(dim):
                        out[b, t, which, d] /= total


def _compiled(name: str, function: Callable, probe: Callable[[Any], None], **options: Any) -> Any:
    """``function`` compiled (with numba's ``options`` beside caching and ``nogil``), or
    None when numba is missing or fails (warned once)."""
    if name in _COMPILED or _FAILED.get(name, False):
        return _COMPILED.get(name)
    with _LOCK:
        if name not in _COMPILED and not _FAILED.get(name, False):
            try:
                import numba

                kernel = numba.njit(cache=True, nogil=True, **options)(function)
                probe(kernel)
                _COMPILED[name] = kernel
            except Exception as error:  # any failure leaves the tensor ops in charge
                _FAILED[name] = True
                warnings.warn(f"Compiled {name} unavailable ({error!r}); using tensor ops.")
    return _COMPILED.get(name)


def _probe_viterbi(kernel: Any) -> None:
    """Compile for float32 (the dtype of every CPU decode but gradchecks) and check it."""
    emissions = numpy.zeros((1, 2, 2), numpy.float32)
    emissions[0, 1, 1] = 1.0
    out = numpy.empty((1, 2), numpy.int64)
    zeros = numpy.zeros(2, numpy.float32)
    kernel(emissions, numpy.array([2], numpy.int64), numpy.zeros((2, 2), numpy.float32), zeros, zeros, -1, out)
    if out.tolist() != [[0, 1]]:
        raise RuntimeError(f"self-check decoded {out.tolist()}, expected [[0, 1]]")


def viterbi_decode(
    emissions: Tensor, lengths: Tensor, trans: Tensor, start: Tensor, end: Tensor, pad: int
) -> Optional[Tensor]:
    """The best path of each sentence, or None when the kernel is unavailable.

    emissions (Tensor): Float (batch, max_len, n_tags), on the CPU.
    lengths (Tensor): Int (batch,), each in [0, max_len].
    trans, start, end (Tensor): Masked scores (``-inf`` where banned), in the
        emissions' dtype.
    pad (int): The value written past each sentence's end.
    RETURNS (Optional[Tensor]): Long (batch, max_len).
    """
    kernel = _compiled("Viterbi", _viterbi, _probe_viterbi)
    if kernel is None:
        return None
    out = numpy.empty(tuple(emissions.shape[:2]), numpy.int64)
    kernel(_array(emissions), _array(lengths.to(torch.int64)), _array(trans), _array(start), _array(end), pad, out)
    return torch.from_numpy(out)


def _probe_matching(kernel: Any) -> None:
    """Compile for the dtypes of ``window_rows`` and check one word and one character."""
    cp = numpy.array([[70000, 5]], numpy.int64)
    out = numpy.zeros((2, 1, 2), numpy.int64)
    hashing = numpy.array([2**31 - 1, 3, 5, 2**31, 63], numpy.int64)
    key = (70000 * 3 + 5) * 2**31 + (70000 * 5 + 5)
    bit_filter = numpy.array([-1], numpy.int64)  # every bit set
    char_rows = numpy.array([0, 0, 0, 0, 0, 2], numpy.int64)
    kernel(cp, numpy.array([2], numpy.int64), 2, numpy.array([-1, key], numpy.int64), bit_filter, char_rows, hashing, out)
    if out.tolist() != [[[0, 2]], [[1, 0]]]:
        raise RuntimeError(f"self-check matched {out.tolist()}, expected [[[0, 2]], [[1, 0]]]")


def window_rows(
    cp: Tensor,
    lengths: Tensor,
    max_len: int,
    keys: Tensor,
    bit_filter: Tensor,
    char_rows: Tensor,
    hashing: List[int],
) -> Optional[List[Tensor]]:
    """The lexicon row of every window (see ``LexiconFeatures.matches``), or None when
    the kernel is unavailable: item ``L - 1`` is Long (batch, seq_len - L + 1).

    cp (Tensor): Long (batch, seq_len) normalized code points, on the CPU.
    hashing (List[int]): mod, base1, base2, shift and the bit filter's mask.
    """
    kernel = _compiled("lexicon matching", _window_rows, _probe_matching)
    if kernel is None:
        return None
    batch, seq_len = cp.shape
    n_lengths = min(max_len, seq_len)
    out = numpy.zeros((n_lengths, batch, seq_len), numpy.int64)
    kernel(
        _array(cp.to(torch.int64)),
        _array(lengths.to(torch.int64)),
        n_lengths,
        _array(keys),
        _array(bit_filter),
        _array(char_rows),
        numpy.array(hashing, numpy.int64),
        out,
    )
    rows = torch.from_numpy(out)
    return [rows[index, :, : seq_len - index] for index in range(n_lengths)]


def _probe_soft_lexicon(kernel: Any) -> None:
    """Compile for float32 and check one two-character word and one single character."""
    rows = numpy.zeros((2, 1, 2), numpy.int64)
    rows[1, 0, 0] = 1  # the word of both characters
    rows[0, 0, 1] = 2  # the second character alone
    vectors = numpy.array([[[1.0], [3.0]]], numpy.float32)
    out = numpy.zeros((1, 2, 4, 1), numpy.float32)
    kernel(rows, numpy.array([0.0, 2.0, 1.0], numpy.float32), vectors, out)
    # B at 0 and E at 1: the word's mean, 2; S at 1: the character, 3.
    if out[0, :, :, 0].tolist() != [[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 3.0]]:
        raise RuntimeError(f"self-check pooled {out[0, :, :, 0].tolist()}")


def soft_lexicon(rows: List[Tensor], weights: Tensor, vectors: Tensor) -> Optional[Tensor]:
    """SoftLexicon means (see ``LexiconFeatures.pooled``) without gradient, or None when
    the kernel is unavailable: Float (batch, seq_len, 4 * dim), the B, M, E and S means.

    rows (List[Tensor]): Item ``L - 1``: Long (batch, seq_len - L + 1), the lexicon row
        of each window of L characters (0: no word).
    weights (Tensor): Float (n_rows,), a weight per lexicon row (0 for row 0).
    vectors (Tensor): Float (batch, seq_len, dim) character vectors, on the CPU.
    """
    kernel = _compiled("SoftLexicon pooling", _soft_lexicon, _probe_soft_lexicon)
    if kernel is None:
        return None
    batch, seq_len, dim = vectors.shape
    stacked = numpy.zeros((len(rows), batch, seq_len), numpy.int64)
    for index, row in enumerate(rows):
        stacked[index, :, : row.shape[1]] = row.numpy()
    array = _array(vectors)
    out = numpy.zeros((batch, seq_len, 4, dim), array.dtype)
    kernel(stacked, _array(weights.to(vectors.dtype)), array, out)
    return torch.from_numpy(out).view(batch, seq_len, 4 * dim)


def _array(tensor: Tensor) -> numpy.ndarray:
    return tensor.detach().contiguous().numpy()
