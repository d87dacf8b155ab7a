"""Choose the records to label next: most uncertain first, no near-duplicates, a varied batch.

Pure Python: the measures come from the component (``uncertainty = true``, see
``prediction/uncertainty.py``); this module only ranks and filters them, so the
``select`` command and the active-learning benchmark choose the same records.
"""
import random
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set

from ..prediction.uncertainty import MEASURES

# The uncertainty strategies rank by one of the measures; "random" is the baseline
# that any strategy has to beat.
STRATEGIES = MEASURES + ("random",)
DEFAULT_STRATEGY = "entity_errors"
# The kind of a record with no predicted entity.
NO_ENTITY = "(none)"
# Character n-grams compared for near-duplicates.
SHINGLE = 3
_IGNORED = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass
class PoolRecord:
    """What the selection knows of one unlabelled record.

    text (str): Its text.
    uncertainty (Dict[str, float]): Its measures (``best_path``, ``tag_errors``,
        ``entity_errors``); may be empty for the ``random`` strategy.
    kind (str): What sort of sentence it is, to keep a batch varied: by default the
        label of its least certain predicted entity (``record_kind``).
    """

    text: str
    uncertainty: Dict[str, float] = field(default_factory=dict)
    kind: str = NO_ENTITY


@dataclass
class Selection:
    """The chosen records and what was passed over.

    chosen (List[int]): Indices into the pool, in rank order.
    duplicates (int): Records skipped as near-duplicates of a chosen one (or of a
        text given as already labelled).
    capped (int): Records passed over because their kind had its share of the batch
        (only while other kinds were left).
    kinds (Dict[str, int]): The chosen records per kind.
    """

    chosen: List[int]
    duplicates: int = 0
    capped: int = 0
    kinds: Dict[str, int] = field(default_factory=dict)


def record_kind(labels: Sequence[str], scores: Sequence[float]) -> str:
    """The kind of a record: the label of its least certain predicted entity.

    labels (Sequence[str]): Its predicted entities' labels.
    scores (Sequence[float]): Their probabilities.
    RETURNS (str): A label, or ``NO_ENTITY``.
    """
    if not labels:
        return NO_ENTITY
    return min(zip(scores, labels))[1]


def normalize(text: str) -> str:
    """The text compared for duplicates: NFKC, lower case, no spaces or punctuation."""
    return _IGNORED.sub("", unicodedata.normalize("NFKC", text).lower())


def shingles(text: str) -> Set[str]:
    """RETURNS (Set[str]): The normalized text's character n-grams (the text itself if shorter)."""
    key = normalize(text)
    if len(key) <= SHINGLE:
        return {key}
    return {key[i : i + SHINGLE] for i in range(len(key) - SHINGLE + 1)}


class NearDuplicates:
    """Texts seen so far, and whether a new one is a near-duplicate of one of them.

    Two texts are near-duplicates when the Jaccard similarity of their character
    n-grams is at least ``threshold`` (1.0: only texts equal after ``normalize``).
    An inverted index from n-gram to texts keeps each check to the texts that share
    an n-gram.

    threshold (float): Similarity in (0, 1].
    """

    def __init__(self, threshold: float) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"The near-duplicate threshold must be in (0, 1], not {threshold}")
        self.threshold = threshold
        self.keys: Set[str] = set()
        self.grams: List[Set[str]] = []
        self.index: Dict[str, List[int]] = defaultdict(list)

    def seen(self, text: str) -> bool:
        """RETURNS (bool): Whether ``text`` is a near-duplicate of a text added before."""
        if normalize(text) in self.keys:
            return True
        grams = shingles(text)
        shared: Counter = Counter()
        for gram in grams:
            shared.update(self.index.get(gram, ()))
        for other, common in shared.items():
            union = len(grams) + len(self.grams[other]) - common
            if union and common / union >= self.threshold:
                return True
        return False

    def add(self, text: str) -> None:
        """Remember ``text``."""
        self.keys.add(normalize(text))
        grams = shingles(text)
        position = len(self.grams)
        self.grams.append(grams)
        for gram in grams:
            self.index[gram].append(position)


def rank(pool: Sequence[PoolRecord], strategy: str, seed: int = 0, per_char: bool = False) -> List[int]:
    """The pool's indices, most worth labelling first.

    pool (Sequence[PoolRecord]): The unlabelled records.
    strategy (str): One of ``STRATEGIES``.
    seed (int): The seed of the ``random`` order (and of ties).
    per_char (bool): Rank by the measure per character instead of per record (a long
        sentence is otherwise chosen for its length as much as for its doubt).
    RETURNS (List[int]): Indices into ``pool``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)  # random strategy, and random among ties
    if strategy == "random":
        return order
    for k in order:
        if strategy not in pool[k].uncertainty:
            raise ValueError(f"Pool record {k} has no {strategy!r} measure: score the pool with uncertainty on")

    def value(k: int) -> float:
        measure = pool[k].uncertainty[strategy]
        return measure / max(len(pool[k].text), 1) if per_char else measure

    return sorted(order, key=value, reverse=True)  # stable: ties stay in random order


def select(
    pool: Sequence[PoolRecord],
    n: int,
    strategy: str = DEFAULT_STRATEGY,
    *,
    seed: int = 0,
    max_share: float = 0.3,
    duplicate_threshold: float = 0.8,
    labelled: Sequence[str] = (),
    per_char: bool = False,
) -> Selection:
    """Choose ``n`` records to label.

    In rank order (``rank``), a record is skipped when it is a near-duplicate of one
    already chosen or of a ``labelled`` text, and passed over while its kind already
    has ``max_share`` of the batch; if the other kinds run out before the batch is
    full, the passed-over records fill it, in rank order.

    pool (Sequence[PoolRecord]): The unlabelled records.
    n (int): How many to choose.
    strategy (str): One of ``STRATEGIES``.
    seed (int): The seed of the ``random`` order and of ties.
    max_share (float): Largest share of the batch of one kind, in (0, 1]; 1 for no cap.
    duplicate_threshold (float): n-gram Jaccard similarity from which texts count as
        near-duplicates (``NearDuplicates``).
    labelled (Sequence[str]): Texts already labelled: their near-duplicates are skipped too.
    per_char (bool): Rank by the measure per character (``rank``).
    RETURNS (Selection): The chosen indices and the counts of what was skipped.
    """
    if n < 0:
        raise ValueError(f"n must be at least 0, not {n}")
    if not 0.0 < max_share <= 1.0:
        raise ValueError(f"max_share must be in (0, 1], not {max_share}")
    seen = NearDuplicates(duplicate_threshold)
    for text in labelled:
        seen.add(text)
    cap = max(1, int(max_share * n + 1e-9))
    chosen: List[int] = []
    passed_over: List[int] = []
    per_kind: Counter = Counter()
    duplicates = 0
    for k in rank(pool, strategy, seed, per_char):
        if len(chosen) >= n:
            break
        if seen.seen(pool[k].text):
            duplicates += 1
            continue
        if per_kind[pool[k].kind] >= cap:
            passed_over.append(k)
            continue
        seen.add(pool[k].text)
        chosen.append(k)
        per_kind[pool[k].kind] += 1
    capped = len(passed_over)
    for k in passed_over:  # the other kinds ran out: fill the batch in rank order
        if len(chosen) >= n:
            break
        if seen.seen(pool[k].text):
            duplicates += 1
            capped -= 1  # counted once, as a duplicate
            continue
        seen.add(pool[k].text)
        chosen.append(k)
        per_kind[pool[k].kind] += 1
        capped -= 1
    return Selection(chosen, duplicates, capped, dict(sorted(per_kind.items())))


def pool_record(text: str, labels: Sequence[str], scores: Sequence[float], uncertainty: Optional[Dict[str, float]]) -> PoolRecord:
    """A ``PoolRecord`` from what the component put on a doc.

    text (str): The text.
    labels (Sequence[str]): The predicted entities' labels.
    scores (Sequence[float]): Their probabilities.
    uncertainty (Optional[Dict[str, float]]): The doc's measures.
    RETURNS (PoolRecord): The record.
    """
    return PoolRecord(text, dict(uncertainty or {}), record_kind(labels, scores))
