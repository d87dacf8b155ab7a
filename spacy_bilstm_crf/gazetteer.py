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
from typing import Final, Optional, Tuple

import torch
from torch import Tensor, nn

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
    """Per label, B/M/E/S flags of the stored entities that a sentence contains, and
    optionally the same places given each entity's ratio: the share of its occurrences
    in the training text annotated with the label (the largest where several match).

    n_keys (int): Number of stored entity strings.
    n_labels (int): Number of entity labels.
    max_len (int): Longest entity matched (longer ones are not stored).
    n_folds (int): Folds of the training-time exclusion (see the module docstring).
    with_ratios (bool): Add the ratio channels.
    """

    _n_sets: Final[int] = N_GAZETTEER_SETS

    def __init__(
        self, n_keys: int, n_labels: int, max_len: int = 10, n_folds: int = 5, with_ratios: bool = False
    ) -> None:
        super().__init__()
        if n_folds < 2:
            raise ValueError(f"gazetteer_folds must be 2 or more, got {n_folds}")
        self.n_labels = n_labels
        self.n_folds = n_folds
        self.with_ratios = with_ratios
        self.matcher = LexiconFeatures(n_keys, max_len)
        # Row i: the labels of matcher.keys[i] (row 0: the sentinel, no label).
        self.register_buffer("labels", torch.zeros(n_keys + 1, n_labels, dtype=torch.bool))
        if with_ratios:
            self.register_buffer("ratios", torch.zeros(n_keys + 1, n_labels))
        else:
            self.ratios = torch.zeros(1, n_labels)  # TorchScript needs the name
        # Row i, fold f: its annotations with each label, and its occurrences, in the
        # training sentences of fold f. For training only: not saved.
        self.register_buffer("fold_counts", torch.zeros(n_keys + 1, n_folds, n_labels), persistent=False)
        self.register_buffer("fold_occurrences", torch.zeros(n_keys + 1, n_folds), persistent=False)
        self.has_folds = False

    @property
    def width(self) -> int:
        """RETURNS (int): Number of features per character."""
        return self._n_sets * self.n_labels * (2 if self.with_ratios else 1)

    def set_entries(self, keys: Tensor, fold_counts: Tensor, fold_occurrences: Tensor) -> None:
        """keys (Tensor): Sorted unique entity keys (see ``lexicon.py``); fold_counts
        (Tensor): Float (n_keys, n_folds, n_labels) annotations per fold and label;
        fold_occurrences (Tensor): Float (n_keys, n_folds) occurrences per fold.
        """
        n_keys = len(self.labels) - 1
        if fold_counts.shape != (n_keys, self.n_folds, self.n_labels):
            raise ValueError(
                f"Expected entity counts of shape {(n_keys, self.n_folds, self.n_labels)}, "
                f"got {tuple(fold_counts.shape)}"
            )
        if fold_occurrences.shape != (n_keys, self.n_folds):
            raise ValueError(
                f"Expected occurrences of shape {(n_keys, self.n_folds)}, got {tuple(fold_occurrences.shape)}"
            )
        self.matcher.set_keys(keys)
        self.fold_counts[1:] = fold_counts
        self.fold_occurrences[1:] = fold_occurrences
        counts = fold_counts.sum(dim=1)
        self.labels[1:] = counts > 0
        if self.with_ratios:
            self.ratios[1:] = counts / fold_occurrences.sum(dim=1, keepdim=True).clamp_min(1.0)
        self.has_folds = True

    def _hits(self, row: Tensor, folds: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """RETURNS (Tuple[Tensor, Tensor]): Bool (batch, n_starts, n_labels), the labels of
        each window's entity, and Float (same shape) their ratios (zero without
        ``with_ratios``); with ``folds``, as found in the other folds than the sentence's.
        """
        batch, n_starts = row.shape[0], row.shape[1]
        flat = row.reshape(-1)
        shape = (batch, n_starts, self.n_labels)
        if folds is None:
            hits = self.labels.index_select(0, flat).view(shape)
            if not self.with_ratios:
                return hits, torch.zeros(0)
            return hits, self.ratios.index_select(0, flat).view(shape)
        other = (folds[:, None] != torch.arange(self.n_folds, device=folds.device)[None, :]).to(torch.float32)
        by_fold = self.fold_counts.index_select(0, flat).view(batch, n_starts, self.n_folds, self.n_labels)
        counts = (by_fold * other[:, None, :, None]).sum(dim=2)
        if not self.with_ratios:
            return counts > 0, torch.zeros(0)
        occurrences = self.fold_occurrences.index_select(0, flat).view(batch, n_starts, self.n_folds)
        seen = (occurrences * other[:, None, :]).sum(dim=2, keepdim=True)
        return counts > 0, counts / seen.clamp_min(1.0)

    def forward(self, cp: Tensor, lengths: Tensor, exclude_own_fold: bool = False) -> Tensor:
        """cp (Tensor): Long (batch, seq_len) normalized code points; lengths (Tensor): Long (batch,).

        exclude_own_fold (bool): Training: each sentence sees the entities of the other
            folds only (when the fold assignment is known).
        RETURNS (Tensor): Float (batch, seq_len, width): the B, M, E and S flags, n_labels
            each, then (``with_ratios``) the B, M, E and S ratios; zero at padding.
        """
        folds: Optional[Tensor] = None
        if exclude_own_fold and self.has_folds:
            folds = sentence_folds(cp, lengths, self.n_folds)
        rows = self.matcher.matches(cp, lengths)
        batch, seq_len = cp.shape[0], cp.shape[1]
        shape = (batch, seq_len, self.n_labels)
        begins = torch.zeros(shape, dtype=torch.bool, device=cp.device)
        ends = torch.zeros(shape, dtype=torch.bool, device=cp.device)
        singles = torch.zeros(shape, dtype=torch.bool, device=cp.device)
        # Middles as a difference array: +1 after an entity's first character, -1 at its
        # last; the running sum is positive strictly inside one. Two ops per length.
        inner = torch.zeros((batch, seq_len + 1, self.n_labels), dtype=torch.int32, device=cp.device)
        # Ratios: the largest of the entities matched at each place (B, M, E, S).
        ratio_sets = [torch.zeros(shape, device=cp.device) for _ in range(self._n_sets if self.with_ratios else 0)]
        for index, row in enumerate(rows):
            length = index + 1
            n_starts = seq_len - length + 1
            hits, ratios = self._hits(row, folds)
            # Explicit ``a[i] = a[i] | b``: TorchScript compiles ``a[i] |= b`` on a
            # slice into an op that does not write back.
            if length == 1:
                singles = singles | hits
                if self.with_ratios:
                    ratio_sets[3] = torch.maximum(ratio_sets[3], ratios)
                continue
            begins[:, :n_starts] = begins[:, :n_starts] | hits
            ends[:, length - 1 :] = ends[:, length - 1 :] | hits
            if length >= 3:
                counts = hits.to(torch.int32)
                inner[:, 1 : 1 + n_starts] = inner[:, 1 : 1 + n_starts] + counts
                inner[:, length - 1 : length - 1 + n_starts] = inner[:, length - 1 : length - 1 + n_starts] - counts
            if self.with_ratios:
                ratio_sets[0][:, :n_starts] = torch.maximum(ratio_sets[0][:, :n_starts], ratios)
                ratio_sets[2][:, length - 1 :] = torch.maximum(ratio_sets[2][:, length - 1 :], ratios)
                for offset in range(1, length - 1):
                    inside = torch.maximum(ratio_sets[1][:, offset : offset + n_starts], ratios)
                    ratio_sets[1][:, offset : offset + n_starts] = inside
        middles = inner.cumsum(dim=1)[:, :seq_len] > 0
        flags = [begins, middles, ends, singles]
        return torch.cat([flag.to(torch.float32) for flag in flags] + ratio_sets, dim=-1)
