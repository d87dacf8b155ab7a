"""The entity gazetteer as the network stores it, built from the training sentences."""
from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple

import numpy
import torch

from ..network.codepoints import normalize_codepoints
from ..network.gazetteer import sentence_folds
from ..network.lexicon import padded_word_keys
from ..network.tags import Span


@dataclass
class GazetteerTable:
    """Sorted unique entity keys, and the labels of each in each fold."""

    keys: numpy.ndarray  # int64 (n_keys,)
    fold_labels: numpy.ndarray  # bool (n_keys, n_folds, n_labels)

    @property
    def labels(self) -> numpy.ndarray:
        """RETURNS (numpy.ndarray): Bool (n_keys, n_labels): the labels each key was given."""
        return self.fold_labels.any(axis=1)


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
    for codepoints, spans in sentences:
        normalized = normalize_codepoints(torch.as_tensor(numpy.asarray(codepoints, dtype="int64")))
        fold = int(sentence_folds(normalized[None, :], torch.tensor([len(normalized)]), n_folds)[0])
        for start, end, label in spans:
            if not 0 <= label < n_labels:
                raise ValueError(f"Entity label index {label} is not below the number of labels ({n_labels}).")
            if 0 < end - start <= max_len:
                entities.append(normalized[start:end].numpy())
                entity_labels.append(label)
                entity_folds.append(fold)
    if not entities:
        return GazetteerTable(numpy.zeros(0, dtype="int64"), numpy.zeros((0, n_folds, n_labels), dtype=bool))
    lengths = torch.tensor([len(entity) for entity in entities])
    padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(e) for e in entities], batch_first=True)
    entity_keys = padded_word_keys(padded, lengths, unique=False).numpy()
    keys, row = numpy.unique(entity_keys, return_inverse=True)
    fold_labels = numpy.zeros((len(keys), n_folds, n_labels), dtype=bool)
    fold_labels[row, numpy.asarray(entity_folds), numpy.asarray(entity_labels)] = True
    return GazetteerTable(keys, fold_labels)
