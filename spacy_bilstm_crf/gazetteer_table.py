"""The entity gazetteer as the network stores it, built from the training sentences."""
from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple

import numpy
import torch
from torch import Tensor

from .codepoints import normalize_codepoints
from .gazetteer import sentence_folds
from .lexicon import LexiconFeatures, padded_word_keys
from .tags import Span

_BATCH = 256  # sentences matched at a time when counting occurrences


@dataclass
class GazetteerTable:
    """Sorted unique entity keys; per key and fold, how often it is an entity of each
    label and how often it occurs in the text at all."""

    keys: numpy.ndarray  # int64 (n_keys,)
    fold_counts: numpy.ndarray  # float32 (n_keys, n_folds, n_labels): entity annotations
    fold_occurrences: numpy.ndarray  # float32 (n_keys, n_folds): occurrences in the text

    @property
    def labels(self) -> numpy.ndarray:
        """RETURNS (numpy.ndarray): Bool (n_keys, n_labels): the labels each key was given."""
        return self.fold_counts.sum(axis=1) > 0

    @property
    def fold_labels(self) -> numpy.ndarray:
        """RETURNS (numpy.ndarray): Bool (n_keys, n_folds, n_labels): the labels by fold."""
        return self.fold_counts > 0

    @property
    def ratios(self) -> numpy.ndarray:
        """RETURNS (numpy.ndarray): Float32 (n_keys, n_labels): the share of a key's
        occurrences annotated with each label."""
        occurrences = self.fold_occurrences.sum(axis=1)[:, None]
        return (self.fold_counts.sum(axis=1) / numpy.maximum(occurrences, 1)).astype("float32")


def build_gazetteer_table(
    sentences: Iterable[Tuple[numpy.ndarray, Sequence[Span]]],
    n_labels: int,
    max_len: int,
    n_folds: int,
) -> GazetteerTable:
    """Collect the entities of the training sentences.

    sentences (Iterable[Tuple[numpy.ndarray, Sequence[Span]]]): Each sentence's code
        points as the network reads them, and its gold entities as character spans
        ``(start, end, label index)``.
    n_labels (int): Number of labels; spans with other label indices are an error.
    max_len (int): Longer entities are left out (they are never matched).
    n_folds (int): Folds of the training-time exclusion (``gazetteer.sentence_folds``).
    RETURNS (GazetteerTable): The table; a string given several labels keeps them all.
    """
    entities: List[numpy.ndarray] = []
    entity_labels: List[int] = []
    entity_folds: List[int] = []
    texts: List[Tensor] = []
    text_folds: List[int] = []
    for codepoints, spans in sentences:
        normalized = normalize_codepoints(torch.as_tensor(numpy.asarray(codepoints, dtype="int64")))
        fold = int(sentence_folds(normalized[None, :], torch.tensor([len(normalized)]), n_folds)[0])
        texts.append(normalized)
        text_folds.append(fold)
        for start, end, label in spans:
            if not 0 <= label < n_labels:
                raise ValueError(f"Entity label index {label} is not below the number of labels ({n_labels}).")
            if 0 < end - start <= max_len:
                entities.append(normalized[start:end].numpy())
                entity_labels.append(label)
                entity_folds.append(fold)
    if not entities:
        return GazetteerTable(
            numpy.zeros(0, dtype="int64"),
            numpy.zeros((0, n_folds, n_labels), dtype="float32"),
            numpy.zeros((0, n_folds), dtype="float32"),
        )
    lengths = torch.tensor([len(entity) for entity in entities])
    padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(e) for e in entities], batch_first=True)
    entity_keys = padded_word_keys(padded, lengths, unique=False).numpy()
    keys, row = numpy.unique(entity_keys, return_inverse=True)
    fold_counts = numpy.zeros((len(keys), n_folds, n_labels), dtype="float32")
    numpy.add.at(fold_counts, (row, numpy.asarray(entity_folds), numpy.asarray(entity_labels)), 1.0)
    occurrences = _occurrences(keys, texts, numpy.asarray(text_folds, dtype="int64"), max_len, n_folds)
    return GazetteerTable(keys, fold_counts, occurrences)


def _occurrences(
    keys: numpy.ndarray, texts: List[Tensor], folds: numpy.ndarray, max_len: int, n_folds: int
) -> numpy.ndarray:
    """RETURNS (numpy.ndarray): Float32 (n_keys, n_folds): how often each key occurs in
    the texts of each fold, found by the matching that predictions use."""
    matcher = LexiconFeatures(len(keys), max_len)
    matcher.set_keys(torch.from_numpy(keys))
    counts = numpy.zeros((len(keys) + 1, n_folds), dtype="float32")
    for start in range(0, len(texts), _BATCH):
        batch = texts[start : start + _BATCH]
        lengths = torch.tensor([len(text) for text in batch])
        padded = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True) if max(lengths) else None
        if padded is None:
            continue
        batch_folds = torch.from_numpy(folds[start : start + _BATCH])
        for rows in matcher.matches(padded, lengths):
            sentence = batch_folds[:, None].expand_as(rows)
            found = rows > 0
            numpy.add.at(counts, (rows[found].numpy(), sentence[found].numpy()), 1.0)
    return counts[1:]
