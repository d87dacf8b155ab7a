"""Soft-lexicon features: which words of a lexicon cover each character, and how.

For every character, flags say whether some lexicon word of length 2, 3 or 4+
Begins there, has it in the Middle (3, 4+) or Ends there, and whether the
character is a Single-character word: 9 flags, the B/M/E/S sets of Zhang & Yang
(2018) and Ma et al. (2020) without word embeddings.

Matching is vectorized and lives inside the torch module: each lexicon word is
stored as a 62-bit key (two polynomial hashes mod 2^31-1) in a sorted buffer,
and each window of a sentence is hashed incrementally and looked up with
``searchsorted``, one tensor op per window length. The lexicon therefore travels
with the model's weights, and an exported model needs no word list file.
"""
from pathlib import Path
from typing import Final, Iterable, List, Optional

import torch
from torch import Tensor, nn

_MOD = 2**31 - 1
_BASE1, _BASE2 = 1_000_003, 911_382_323
_SHIFT = 2**31
N_LEXICON_FLAGS = 9  # B2 B3 B4+ M3 M4+ E2 E3 E4+ S


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


def padded_word_keys(padded: Tensor, lengths: Tensor) -> Tensor:
    """Keys of words given as a padded (n_words, longest) code point tensor and their lengths.

    Hashed for all words at once, one position at a time (a jieba-sized lexicon has
    ~350k words): the same keys as the per-window hashing of ``LexiconFeatures``.
    RETURNS (Tensor): Sorted unique int64 keys.
    """
    h1 = torch.zeros(len(lengths), dtype=torch.long)
    h2 = torch.zeros(len(lengths), dtype=torch.long)
    for position in range(padded.shape[1]):
        active = lengths > position
        cp = padded[:, position]
        # h < 2^31 and the bases < 2^30: the products fit in int64.
        h1 = torch.where(active, (h1 * _BASE1 + cp) % _MOD, h1)
        h2 = torch.where(active, (h2 * _BASE2 + cp) % _MOD, h2)
    return torch.unique(h1 * _SHIFT + h2)


class LexiconFeatures(nn.Module):
    """B/M/E/S lexicon flags per character.

    n_keys (int): Number of lexicon words (the key buffer's size; filled by ``set_keys``).
    max_len (int): Longest word length matched.
    """

    # Final class constants: TorchScript reads no module globals.
    _mod: Final[int] = _MOD
    _base1: Final[int] = _BASE1
    _base2: Final[int] = _BASE2
    _shift: Final[int] = _SHIFT
    _n_flags: Final[int] = N_LEXICON_FLAGS

    def __init__(self, n_keys: int, max_len: int = 6) -> None:
        super().__init__()
        self.max_len = max_len
        # Sorted keys after a sentinel that matches nothing, so an empty lexicon works.
        self.register_buffer("keys", torch.full((n_keys + 1,), -1, dtype=torch.long))

    def set_keys(self, keys: Tensor) -> None:
        if len(keys) + 1 != len(self.keys):
            raise ValueError(f"Expected {len(self.keys) - 1} lexicon keys, got {len(keys)}")
        self.keys[1:] = keys

    def _found(self, key: Tensor) -> Tensor:
        index = torch.searchsorted(self.keys, key).clamp_max(len(self.keys) - 1)
        return self.keys[index] == key

    def forward(self, cp: Tensor, lengths: Tensor) -> Tensor:
        """cp (Tensor): Long (batch, max_len) normalized code points; lengths (Tensor): Long (batch,).

        RETURNS (Tensor): Float (batch, max_len, 9) flags; zero at padding.
        """
        batch, seq_len = cp.shape
        flags = torch.zeros(batch, seq_len, self._n_flags, dtype=torch.bool, device=cp.device)
        h1 = torch.zeros_like(cp)
        h2 = torch.zeros_like(cp)
        # Window hashes for length L at start s, built from length L-1: one op per length.
        for length in range(1, min(self.max_len, seq_len) + 1):
            n_starts = seq_len - length + 1
            last = cp[:, length - 1 :]
            h1 = (h1[:, :n_starts] * self._base1 + last) % self._mod
            h2 = (h2[:, :n_starts] * self._base2 + last) % self._mod
            starts = torch.arange(n_starts, device=cp.device)
            inside = starts[None, :] + length <= lengths[:, None]
            match = self._found(h1 * self._shift + h2) & inside
            # Explicit ``a[i] = a[i] | b``: TorchScript compiles ``a[i] |= b`` on a
            # slice into an op that does not write back.
            if length == 1:
                flags[:, :, 8] = flags[:, :, 8] | match
                continue
            bucket = _bucket(length)
            flags[:, :n_starts, bucket] = flags[:, :n_starts, bucket] | match  # B
            end = 5 + bucket
            flags[:, length - 1 :, end] = flags[:, length - 1 :, end] | match  # E
            middle = 3 + bucket - 1
            for offset in range(1, length - 1):  # M (lengths >= 3)
                inner = flags[:, offset : offset + n_starts, middle] | match
                flags[:, offset : offset + n_starts, middle] = inner
        return flags.to(torch.float32)


def load_word_list(source: str) -> List[str]:
    """Words of a lexicon: ``"jieba"`` (jieba's dictionary, ``pip install jieba``) or a file path.

    A file has one word per line; anything after the first whitespace (jieba's
    frequency and POS columns) is ignored.
    """
    if source == "jieba":
        try:
            import jieba
        except ImportError as err:
            raise ImportError(
                "lexicon = \"jieba\" needs the jieba package: pip install jieba"
            ) from err
        path: Optional[Path] = Path(jieba.__file__).parent / "dict.txt"
    else:
        path = Path(source)
    if path is None or not path.exists():
        raise FileNotFoundError(f"Lexicon file not found: {path}")
    with path.open(encoding="utf8") as f:
        return [line.split()[0] for line in f if line.strip()]
