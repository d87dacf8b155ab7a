"""Compiled word and entity flags (numba): the lexicon's B/M/E/S length flags, its
word-type flags and the gazetteer's per-label flags, from the matched rows.

As tensor ops each of them runs a few masked ORs per word length and per offset
inside a word, some forty small operations for one sentence, whose dispatch
costs more than their arithmetic in a single ``nlp(text)`` call. A kernel visits
each matched window once. The flags are the same as the tensor ops' (they are
booleans); tests compare them. Used for predictions on the CPU; training and
export keep the tensor ops, and so does everything where numba is unavailable
(the functions return None, see ``kernels.py``).
"""
from typing import Any, List, Optional

import numpy
import torch
from torch import Tensor

from .kernels import _array, _compiled

# The lexicon's flags: B for word lengths 2, 3 and 4+, M for 3 and 4+, E for 2, 3, 4+, S.
_N_LENGTH_FLAGS = 9


def _word_flags(rows, pos, n_groups, flags, pos_flags):  # pragma: no cover - compiled
    """rows: int64 (n_lengths, batch, seq_len), the lexicon row of each window (0: none);
    pos: uint8 (n_rows,), each row's word type (0: none, 1..n_groups); flags: float32
    (batch, seq_len, 9) zeros; pos_flags: float32 (batch, seq_len, 2 * n_groups) zeros
    (its width 0: no word types).
    """
    n_lengths, batch, seq_len = rows.shape
    with_pos = pos_flags.shape[2] > 0
    for index in range(n_lengths):
        length = index + 1
        bucket = min(length, 4) - 2
        for b in range(batch):
            for s in range(seq_len - length + 1):
                row = rows[index, b, s]
                if row == 0:
                    continue
                if length == 1:
                    flags[b, s, 8] = 1.0
                else:
                    flags[b, s, bucket] = 1.0
                    flags[b, s + length - 1, 5 + bucket] = 1.0
                    for offset in range(1, length - 1):
                        flags[b, s + offset, 2 + bucket] = 1.0
                if with_pos:
                    group = pos[row]
                    if 1 <= group <= n_groups:
                        pos_flags[b, s, 2 * (group - 1)] = 1.0
                        for offset in range(1, length):
                            pos_flags[b, s + offset, 2 * (group - 1) + 1] = 1.0


def _entity_flags(rows, labels, out):  # pragma: no cover - compiled
    """rows: int64 (n_lengths, batch, seq_len), the gazetteer row of each window (0:
    none); labels: bool (n_rows, n_labels); out: float32 (batch, seq_len, 4 * n_labels)
    zeros: per label, an entity of it begins here, continues, ends, is this character.
    """
    n_lengths, batch, seq_len = rows.shape
    n_labels = labels.shape[1]
    for index in range(n_lengths):
        length = index + 1
        for b in range(batch):
            for s in range(seq_len - length + 1):
                row = rows[index, b, s]
                if row == 0:
                    continue
                for label in range(n_labels):
                    if not labels[row, label]:
                        continue
                    if length == 1:
                        out[b, s, 3 * n_labels + label] = 1.0
                        continue
                    out[b, s, label] = 1.0
                    out[b, s + length - 1, 2 * n_labels + label] = 1.0
                    for offset in range(1, length - 1):
                        out[b, s + offset, n_labels + label] = 1.0


def _probe_word_flags(kernel: Any) -> None:
    """Compile for the dtypes of ``word_flags`` and check one three-character word."""
    rows = numpy.zeros((3, 1, 3), numpy.int64)
    rows[2, 0, 0] = 1
    # Both outputs are column slices of one array, as ``word_flags`` passes them.
    out = numpy.zeros((1, 3, 11), numpy.float32)
    flags, pos_flags = out[:, :, :9], out[:, :, 9:]
    kernel(rows, numpy.array([0, 1], numpy.uint8), 1, flags, pos_flags)
    expected = [[0, 1], [1, 3], [2, 6]]  # (character, flag): B3 at 0, M3 at 1, E3 at 2
    got = numpy.argwhere(flags[0]).tolist()
    if got != expected or pos_flags[0, :, 0].tolist() != [1, 0, 0] or pos_flags[0, :, 1].tolist() != [0, 1, 1]:
        raise RuntimeError(f"self-check flagged {got} and {pos_flags.tolist()}")


def _probe_entity_flags(kernel: Any) -> None:
    """Compile for the dtypes of ``entity_flags`` and check one two-character entity."""
    rows = numpy.zeros((2, 1, 2), numpy.int64)
    rows[1, 0, 0] = 1
    out = numpy.zeros((1, 2, 4), numpy.float32)
    kernel(rows, numpy.array([[False], [True]]), out)
    if out[0].tolist() != [[1, 0, 0, 0], [0, 0, 1, 0]]:
        raise RuntimeError(f"self-check flagged {out.tolist()}")


def stacked_rows(rows: List[Tensor], batch: int, seq_len: int) -> numpy.ndarray:
    """The windows' rows as one array: int64 (n_lengths, batch, seq_len), 0 past the
    last start of each length (item ``L - 1`` of ``rows``: Long (batch, seq_len - L + 1))."""
    stacked = numpy.zeros((len(rows), batch, seq_len), numpy.int64)
    for index, row in enumerate(rows):
        stacked[index, :, : row.shape[1]] = row.numpy()
    return stacked


def word_flags(rows: List[Tensor], pos: Optional[Tensor], n_groups: int, shape: List[int]) -> Optional[Tensor]:
    """The lexicon's length flags and, with ``pos``, its word-type flags (see
    ``LexiconFeatures.flags`` and ``pos_flags``), or None when the kernel is unavailable.

    rows (List[Tensor]): The lexicon's matches, on the CPU.
    pos (Optional[Tensor]): Uint8 (n_rows,), each row's word type; None: no type flags.
    n_groups (int): Number of word types.
    RETURNS (Optional[Tensor]): Float32 (batch, seq_len, 9 + 2 * n_groups with ``pos``).
    """
    kernel = _compiled("lexicon flags", _word_flags, _probe_word_flags)
    if kernel is None:
        return None
    batch, seq_len = shape[0], shape[1]
    n_pos = 2 * n_groups if pos is not None else 0
    out = numpy.zeros((batch, seq_len, _N_LENGTH_FLAGS + n_pos), numpy.float32)
    pos_array = _array(pos) if pos is not None else numpy.zeros(1, numpy.uint8)
    kernel(stacked_rows(rows, batch, seq_len), pos_array, n_groups, out[:, :, :_N_LENGTH_FLAGS], out[:, :, _N_LENGTH_FLAGS:])
    return torch.from_numpy(out)


def entity_flags(rows: List[Tensor], labels: Tensor, shape: List[int]) -> Optional[Tensor]:
    """The gazetteer's flags (see ``Gazetteer.forward``, without fold exclusion), or
    None when the kernel is unavailable.

    rows (List[Tensor]): The gazetteer's matches, on the CPU.
    labels (Tensor): Bool (n_rows, n_labels), each row's labels.
    RETURNS (Optional[Tensor]): Float32 (batch, seq_len, 4 * n_labels).
    """
    kernel = _compiled("gazetteer flags", _entity_flags, _probe_entity_flags)
    if kernel is None:
        return None
    batch, seq_len = shape[0], shape[1]
    out = numpy.zeros((batch, seq_len, 4 * labels.shape[1]), numpy.float32)
    kernel(stacked_rows(rows, batch, seq_len), _array(labels), out)
    return torch.from_numpy(out)
