"""Viterbi decoding on the CPU as one compiled kernel (numba).

Decoding with tensor ops pays for each time step a few whole-batch operations
that write and read a ``(n_tags, n_tags, batch)`` buffer: the arithmetic is
small, but the memory traffic and the per-operation dispatch bound it, and
backtracking adds one more group of operations per step. The kernel here keeps
one sentence's scores in cache, records back-pointers as it goes, and follows
them back with no further arithmetic: several times faster on one thread, with
the same paths, since it adds the same float32 numbers in the same order as
``serving.viterbi_scores`` and keeps the first of equal maxima, as its
backtracking does.

numba compiles the kernel at its first use in a process (under a second) and
caches the machine code next to this file, or in the user's cache directory
where the package folder is read-only, so later processes load it in
milliseconds. When numba cannot be imported or cannot compile, :func:`decode`
returns None and the CRF decodes with tensor ops; a GPU tensor never comes here.
"""
import threading
import warnings
from typing import Any, Optional

import numpy
import torch
from torch import Tensor

_KERNEL: Any = None
_FAILED = False
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
            # Over "from" outside and "to" inside: the inner loop runs along a row of
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


def _kernel() -> Any:
    """The compiled kernel, or None when numba is missing or fails (warned once)."""
    global _KERNEL, _FAILED
    if _KERNEL is not None or _FAILED:
        return _KERNEL
    with _LOCK:
        if _KERNEL is None and not _FAILED:
            try:
                import numba

                kernel = numba.njit(cache=True, nogil=True)(_viterbi)
                _probe(kernel)
                _KERNEL = kernel
            except Exception as error:  # any failure leaves the tensor-op decoder in charge
                _FAILED = True
                warnings.warn(f"Compiled Viterbi unavailable ({error!r}); decoding with tensor ops.")
    return _KERNEL


def _probe(kernel: Any) -> None:
    """Compile for float32 (the dtype of every CPU decode but gradchecks) and check it."""
    emissions = numpy.zeros((1, 2, 2), numpy.float32)
    emissions[0, 1, 1] = 1.0
    out = numpy.empty((1, 2), numpy.int64)
    zeros = numpy.zeros(2, numpy.float32)
    kernel(emissions, numpy.array([2], numpy.int64), numpy.zeros((2, 2), numpy.float32), zeros, zeros, -1, out)
    if out.tolist() != [[0, 1]]:
        raise RuntimeError(f"self-check decoded {out.tolist()}, expected [[0, 1]]")


def decode(emissions: Tensor, lengths: Tensor, trans: Tensor, start: Tensor, end: Tensor, pad: int) -> Optional[Tensor]:
    """The best path of each sentence, or None when the kernel is unavailable.

    emissions (Tensor): Float (batch, max_len, n_tags), on the CPU.
    lengths (Tensor): Int (batch,), each in [0, max_len].
    trans, start, end (Tensor): Masked scores (``-inf`` where banned), in the
        emissions' dtype.
    pad (int): The value written past each sentence's end.
    RETURNS (Optional[Tensor]): Long (batch, max_len).
    """
    kernel = _kernel()
    if kernel is None:
        return None
    out = numpy.empty(tuple(emissions.shape[:2]), numpy.int64)
    kernel(
        _array(emissions),
        lengths.to(torch.int64).contiguous().numpy(),
        _array(trans),
        _array(start),
        _array(end),
        pad,
        out,
    )
    return torch.from_numpy(out)


def _array(tensor: Tensor) -> numpy.ndarray:
    return tensor.detach().contiguous().numpy()
