"""Entity gazetteer features: the training corpus's own entities, matched in the text.

Every entity string of the training data is stored with the labels it was given
(``"北京"``: address, government, …). For each character and each label, four
flags say whether a stored entity of that label Begins there, covers it in its
Middle, Ends there, or is that Single character. A name seen in training is then
recognized in any context, and the network learns from its context how far to
trust the match (``"中国"`` is an address, a government or part of a company).

Trained naively, the flags would lie: every training sentence finds all of its
own entities in the gazetteer, while new text finds only some (on CLUENER, 64%
of the dev entities' strings are training entities). So training uses k-fold
exclusion: each sentence belongs to one of ``n_folds`` folds, by a hash of its
text, and sees only the entities found in the other folds' sentences, the rate
of hits that unseen text will have. Predictions use every entity. The fold
assignment is kept for training only (not saved): a loaded pipeline that is
trained further matches every entity, as predictions do.

Matching is ``LexiconFeatures.matches`` (the hashed keys, bit filter and
compiled kernel of the lexicon), so the gazetteer travels in the weights and
works in exported copies.
"""
from typing import Final, List, Optional

import torch
from torch import Tensor, nn

from . import flag_kernels
from .crf import lengths_to_mask
from .lexicon import LexiconFeatures

N_GAZETTEER_SETS = 4  # Begins, Middle, Ends, Single


def sentence_folds(cp: Tensor, lengths: Tensor, n_folds: int) -> Tensor:
    """The fold of each sentence: a position-weighted sum of its normalized code points,
    so that a sentence repeated in a corpus always falls in one fold.

    cp (Tensor): Long (batch, seq_len) normalized code points; lengths (Tensor): Long (batch,).
    RETURNS (Tensor): Long (batch,) folds in ``[0, n_folds)``.
    """
    mask = lengths_to_mask(lengths, cp.shape[1])
    positions = torch.arange(1, cp.shape[1] + 1, device=cp.device)
    return (torch.where(mask, cp, torch.zeros_like(cp)) * positions).sum(dim=1) % n_folds


class GazetteerFeatures(nn.Module):
    """Per label, B/M/E/S flags of the stored entities that a sentence contains.

    n_keys (int): Number of stored entity strings.
    n_labels (int): Number of entity labels.
    max_len (int): Longest entity matched (longer ones are not stored).
    n_folds (int): Folds of the training-time exclusion (see the module docstring).
    """

    _n_sets: Final[int] = N_GAZETTEER_SETS

    def __init__(self, n_keys: int, n_labels: int, max_len: int = 10, n_folds: int = 10) -> None:
        super().__init__()
        if n_folds < 2:
            raise ValueError(f"gazetteer_folds must be 2 or more, got {n_folds}")
        self.n_labels = n_labels
        self.n_folds = n_folds
        self.matcher = LexiconFeatures(n_keys, max_len)
        # Row i: the labels of matcher.keys[i] (row 0: the sentinel, no label).
        self.register_buffer("labels", torch.zeros(n_keys + 1, n_labels, dtype=torch.bool))
        # Row i, fold f: the labels it has in the training sentences of fold f. For
        # training only: not saved.
        self.register_buffer(
            "fold_labels", torch.zeros(n_keys + 1, n_folds, n_labels, dtype=torch.bool), persistent=False
        )
        self.has_folds = False

    @property
    def width(self) -> int:
        """RETURNS (int): Number of flags per character."""
        return self._n_sets * self.n_labels

    def set_entries(self, keys: Tensor, fold_labels: Tensor) -> None:
        """keys (Tensor): Sorted unique entity keys (see ``lexicon.py``); fold_labels
        (Tensor): Bool (n_keys, n_folds, n_labels), the labels of each key in each fold.
        """
        n_keys = len(self.labels) - 1
        if fold_labels.shape != (n_keys, self.n_folds, self.n_labels):
            raise ValueError(
                f"Expected fold labels of shape {(n_keys, self.n_folds, self.n_labels)}, "
                f"got {tuple(fold_labels.shape)}"
            )
        self.matcher.set_keys(keys)
        self.fold_labels[1:] = fold_labels
        self.labels[1:] = fold_labels.any(dim=1)
        self.has_folds = True

    def _hits(self, row: Tensor, folds: Optional[Tensor]) -> Tensor:
        """RETURNS (Tensor): Bool (batch, n_starts, n_labels): the labels of each window's
        entity; with ``folds``, only those found in another fold than the sentence's.
        """
        batch, n_starts = row.shape[0], row.shape[1]
        flat = row.reshape(-1)
        if folds is None:
            return self.labels.index_select(0, flat).view(batch, n_starts, self.n_labels)
        by_fold = self.fold_labels.index_select(0, flat).view(batch, n_starts, self.n_folds, self.n_labels)
        other = folds[:, None] != torch.arange(self.n_folds, device=folds.device)[None, :]
        return (by_fold & other[:, None, :, None]).any(dim=2)

    @torch.jit.unused
    def _flags_compiled(self, rows: List[Tensor], shape: List[int]) -> Optional[Tensor]:
        """``forward``'s flags as one compiled kernel (``flag_kernels.entity_flags``), or None."""
        return flag_kernels.entity_flags(rows, self.labels, shape)

    def forward(self, cp: Tensor, lengths: Tensor, exclude_own_fold: bool = False) -> Tensor:
        """cp (Tensor): Long (batch, seq_len) normalized code points; lengths (Tensor): Long (batch,).

        exclude_own_fold (bool): Training: each sentence sees the entities of the other
            folds only (when the fold assignment is known).
        RETURNS (Tensor): Float (batch, seq_len, 4 * n_labels): the B, M, E and S flags,
            n_labels each; zero at padding.
        """
        folds: Optional[Tensor] = None
        if exclude_own_fold and self.has_folds:
            folds = sentence_folds(cp, lengths, self.n_folds)
        rows = self.matcher.matches(cp, lengths)
        batch, seq_len = cp.shape[0], cp.shape[1]
        if torch.jit.is_scripting():
            pass  # a scripted copy keeps the tensor ops below
        elif folds is None and cp.device.type == "cpu" and not torch.compiler.is_exporting():
            compiled = self._flags_compiled(rows, [batch, seq_len])
            if compiled is not None:
                return compiled
        shape = (batch, seq_len, self.n_labels)
        begins = torch.zeros(shape, dtype=torch.bool, device=cp.device)
        ends = torch.zeros(shape, dtype=torch.bool, device=cp.device)
        singles = torch.zeros(shape, dtype=torch.bool, device=cp.device)
        # Middles as a difference array: +1 after an entity's first character, -1 at its
        # last; the running sum is positive strictly inside one. Two ops per length.
        inner = torch.zeros((batch, seq_len + 1, self.n_labels), dtype=torch.int32, device=cp.device)
        for index, row in enumerate(rows):
            length = index + 1
            n_starts = seq_len - length + 1
            hits = self._hits(row, folds)
            # Explicit ``a[i] = a[i] | b``: TorchScript compiles ``a[i] |= b`` on a
            # slice into an op that does not write back.
            if length == 1:
                singles = singles | hits
                continue
            begins[:, :n_starts] = begins[:, :n_starts] | hits
            ends[:, length - 1 :] = ends[:, length - 1 :] | hits
            if length >= 3:
                counts = hits.to(torch.int32)
                inner[:, 1 : 1 + n_starts] = inner[:, 1 : 1 + n_starts] + counts
                inner[:, length - 1 : length - 1 + n_starts] = inner[:, length - 1 : length - 1 + n_starts] - counts
        middles = inner.cumsum(dim=1)[:, :seq_len] > 0
        return torch.cat([begins, middles, ends, singles], dim=-1).to(torch.float32)
