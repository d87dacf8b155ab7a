"""Exact entity probabilities from the CRF's forward-backward scores.

The probability that the span ``[i, j)`` is one entity with label ``l`` is the
total probability of the paths that tag it ``B-l I-l … E-l`` (``S-l`` for one
token under BIOES; ``B-l I-l …`` under BIO) and do not continue the entity at
``j``: a sum over exponentially many paths, computed exactly from the forward
and backward scores in O(1) per span (prefix sums along the span). It is not a
product of per-token marginals, which would count paths where the entity is
split or extended.

Pure numpy, no spaCy and no torch: the inputs are one sentence's arrays.
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy

from ..network.tags import Span, TagScheme


@dataclass
class Lattice:
    """The scores of one sentence's (possibly constrained) CRF lattice.

    alpha (numpy.ndarray): Float (n, n_tags) forward log-scores, emissions included.
    beta (numpy.ndarray): Float (n, n_tags) backward log-scores, end transition included.
    emissions (numpy.ndarray): Float (n, n_tags), with banned tags already given a
        very low score (``crf.constrain``).
    transitions (numpy.ndarray): Float (n_tags, n_tags), banned transitions very low.
    end (numpy.ndarray): Float (n_tags,) end-transition scores, banned ones very low.
    log_z (float): The log-partition, the log-sum-exp of ``alpha[-1] + end``.
    """

    alpha: numpy.ndarray
    beta: numpy.ndarray
    emissions: numpy.ndarray
    transitions: numpy.ndarray
    end: numpy.ndarray
    log_z: float

    def __len__(self) -> int:
        return len(self.emissions)


def span_probabilities(lattice: Lattice, scheme: TagScheme, spans: Sequence[Span]) -> numpy.ndarray:
    """The probability of each span being exactly one entity with its label.

    lattice (Lattice): The sentence's scores.
    scheme (TagScheme): The tags (BIOES or BIO) the lattice is over.
    spans (Sequence[Span]): ``(start, end_exclusive, label_index)`` triples.
    RETURNS (numpy.ndarray): Float64 (len(spans),), each in [0, 1].
    """
    if len(spans) == 0:
        return numpy.zeros(0, dtype="float64")
    triples = numpy.asarray(spans, dtype="int64").reshape(-1, 3)
    out = numpy.empty(len(triples), dtype="float64")
    for label in numpy.unique(triples[:, 2]):
        rows = numpy.flatnonzero(triples[:, 2] == label)
        starts, ends = triples[rows, 0], triples[rows, 1]
        out[rows] = _label_log_probs(lattice, scheme, int(label), starts, ends)
    return numpy.clip(numpy.exp(out - lattice.log_z), 0.0, 1.0)


def candidate_spans(
    lattice: Lattice, scheme: TagScheme, threshold: float, max_len: int
) -> List[Tuple[int, int, int, float]]:
    """Every span of at most ``max_len`` tokens, any label, whose probability is >= threshold.

    lattice (Lattice): The sentence's scores.
    scheme (TagScheme): The tags the lattice is over.
    threshold (float): Smallest probability kept.
    max_len (int): Longest span considered.
    RETURNS (List[Tuple[int, int, int, float]]): ``(start, end, label, probability)``,
        sorted by start, end, label.
    """
    n = len(lattice)
    if n == 0:
        return []
    starts, ends = numpy.meshgrid(numpy.arange(n), numpy.arange(1, max_len + 1), indexing="ij")
    ends = starts + ends
    keep = ends <= n
    starts, ends = starts[keep], ends[keep]
    found = []
    for label in range(len(scheme.labels)):
        probs = numpy.exp(_label_log_probs(lattice, scheme, label, starts, ends) - lattice.log_z)
        for i in numpy.flatnonzero(probs >= threshold):
            found.append((int(starts[i]), int(ends[i]), label, float(min(probs[i], 1.0))))
    return sorted(found)


def _label_log_probs(
    lattice: Lattice, scheme: TagScheme, label: int, starts: numpy.ndarray, ends: numpy.ndarray
) -> numpy.ndarray:
    """Unnormalized log-probabilities of spans ``[starts, ends)`` being one ``label`` entity."""
    emit, trans = lattice.emissions, lattice.transitions
    b, i = scheme.tag_id("B", label), scheme.tag_id("I", label)
    bioes = scheme.scheme == "BIOES"
    e = scheme.tag_id("E", label) if bioes else i
    n = len(emit)
    # inside[t]: the score of staying inside the entity at t (I after I); its prefix
    # sums give any run of I's in O(1).
    inside = numpy.zeros(n + 1, dtype="float64")
    inside[1:] = numpy.cumsum(trans[i, i] + emit[:, i])
    length = ends - starts
    last = ends - 1
    # Tag at the last position and the score of the path from B to it.
    last_tag = numpy.full(len(starts), e)
    body = numpy.zeros(len(starts), dtype="float64")
    long = length >= 2
    if bioes:
        # B (I ...) E: the first step into I or E comes from B, later ones from I.
        two = length == 2
        body[two] = trans[b, e] + emit[last[two], e]
        many = length >= 3
        first = starts[many] + 1
        body[many] = (
            trans[b, i]
            + emit[first, i]
            + inside[last[many]]
            - inside[first + 1]
            + trans[i, e]
            + emit[last[many], e]
        )
        single = length == 1
        last_tag[single] = scheme.tag_id("S", label)
    else:
        first = starts[long] + 1
        body[long] = trans[b, i] + emit[first, i] + inside[ends[long]] - inside[first + 1]
        last_tag[~long] = b
    first_tag = numpy.where(length == 1, last_tag, b)
    head = lattice.alpha[starts, first_tag]
    return head + body + _closing(lattice, scheme, label, last, last_tag)


def _closing(
    lattice: Lattice, scheme: TagScheme, label: int, last: numpy.ndarray, last_tag: numpy.ndarray
) -> numpy.ndarray:
    """The log-score of everything after the span's last position, given that the
    entity ends there: under BIOES the tag (E or S) closes it, so it is ``beta``;
    under BIO the next tag must not be ``I`` of the same label.
    """
    if scheme.scheme == "BIOES":
        return lattice.beta[last, last_tag]
    n = len(lattice)
    out = lattice.end[last_tag].astype("float64")
    inner = last < n - 1
    if inner.any():
        nxt = last[inner] + 1
        scores = (
            lattice.transitions[last_tag[inner]]
            + lattice.emissions[nxt]
            + lattice.beta[nxt]
        )
        scores[:, scheme.tag_id("I", label)] = -numpy.inf
        out[inner] = _logsumexp(scores)
    return out


def _logsumexp(scores: numpy.ndarray) -> numpy.ndarray:
    top = scores.max(axis=1)
    return top + numpy.log(numpy.exp(scores - top[:, None]).sum(axis=1))
