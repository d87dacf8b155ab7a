"""How unsure the CRF is about a whole sentence, computed exactly from its lattice.

Three measures, each an exact expectation under the CRF's distribution over valid
tag sequences (no sampling, no product of independent token guesses):

- ``best_path``: ``1 - P(best path)``, the probability that the decoded tags are not
  all right ("least confidence");
- ``tag_errors``: the expected number of characters whose decoded tag is wrong,
  ``sum_t 1 - P(y_t = decoded_t)``, from the forward-backward marginals;
- ``entity_errors``: the expected number of entity errors, false positives plus
  false negatives: ``E[#entities] + #decoded - 2 * sum P(decoded entity)``. The
  expected number of entities is the sum of the marginals of the tags that open one
  (``B``, and ``S`` under BIOES), so it covers every span, of any length, exactly.

``Measures`` are sums over characters: a window of a long doc measures only the
characters it owns (``measure_window``), and a doc's measures are the sums of its
windows' (``best_path`` is exact for a doc of one window; a longer doc's combines
its windows' path probabilities, each in proportion to the characters it owns).

Pure numpy, no spaCy and no torch.
"""
from dataclasses import dataclass
from typing import Dict, Iterable, Sequence

import numpy

from ..network.tags import Span, TagScheme
from .confidence import Lattice

MEASURES = ("best_path", "tag_errors", "entity_errors")


@dataclass
class Measures:
    """A sentence's (or window's) uncertainty, in additive form.

    log_best (float): Log-probability of the decoded tags (0 for an empty sentence).
    tag_errors (float): Expected number of wrongly tagged characters.
    entity_errors (float): Expected number of false-positive plus false-negative entities.
    """

    log_best: float = 0.0
    tag_errors: float = 0.0
    entity_errors: float = 0.0

    def __add__(self, other: "Measures") -> "Measures":
        return Measures(
            self.log_best + other.log_best,
            self.tag_errors + other.tag_errors,
            self.entity_errors + other.entity_errors,
        )

    def to_dict(self) -> Dict[str, float]:
        """RETURNS (Dict[str, float]): ``best_path``, ``tag_errors``, ``entity_errors``."""
        return {
            "best_path": float(min(max(1.0 - numpy.exp(self.log_best), 0.0), 1.0)),
            "tag_errors": float(max(self.tag_errors, 0.0)),
            "entity_errors": float(max(self.entity_errors, 0.0)),
        }


def total(parts: Iterable[Measures]) -> Measures:
    """RETURNS (Measures): The sum of ``parts`` (a doc's windows)."""
    result = Measures()
    for part in parts:
        result = result + part
    return result


def tag_marginals(lattice: Lattice) -> numpy.ndarray:
    """P(y_t = k) for every character and tag.

    lattice (Lattice): The sentence's scores.
    RETURNS (numpy.ndarray): Float64 (n, n_tags); rows sum to 1.
    """
    return numpy.exp(lattice.alpha + lattice.beta - lattice.log_z)


def path_log_probability(lattice: Lattice, tags: numpy.ndarray) -> float:
    """The log-probability of one tag sequence under the lattice.

    ``alpha[0]`` holds the start transition plus the first emission, so the path's
    score is ``alpha[0, y_0]``, then a transition and an emission per step, then the
    end transition.

    lattice (Lattice): The sentence's scores.
    tags (numpy.ndarray): Int tag ids, one per character.
    RETURNS (float): ``score(tags) - log Z`` (<= 0).
    """
    n = len(tags)
    if n == 0:
        return 0.0
    tags = numpy.asarray(tags, dtype="int64")
    score = lattice.alpha[0, tags[0]]
    if n > 1:
        steps = numpy.arange(1, n)
        score += lattice.transitions[tags[:-1], tags[1:]].sum() + lattice.emissions[steps, tags[1:]].sum()
    score += lattice.end[tags[-1]]
    return float(min(score - lattice.log_z, 0.0))


def measure_window(
    lattice: Lattice,
    scheme: TagScheme,
    tags: numpy.ndarray,
    spans: Sequence[Span],
    span_probs: numpy.ndarray,
    own: slice = slice(None),
) -> Measures:
    """A window's uncertainty over the characters it owns.

    lattice (Lattice): The window's scores.
    scheme (TagScheme): The tags the lattice is over.
    tags (numpy.ndarray): The decoded tags of the window.
    spans (Sequence[Span]): The decoded entities, ``(start, end, label)`` in the window.
    span_probs (numpy.ndarray): Their probabilities (``confidence.span_probabilities``).
    own (slice): The characters the window owns (all, for a doc of one window);
        entities count where they start.
    RETURNS (Measures): The window's measures.
    """
    n = len(tags)
    if n == 0:
        return Measures()
    marginals = tag_marginals(lattice)
    positions = numpy.arange(n)[own]
    decoded = numpy.asarray(tags, dtype="int64")[positions]
    tag_errors = float((1.0 - marginals[positions, decoded]).sum())
    opening = numpy.isin(scheme.tag_prefix, ("B", "S"))
    expected_entities = float(marginals[positions][:, opening].sum())
    owned = numpy.zeros(n, dtype=bool)
    owned[positions] = True
    kept = [k for k, (start, _, _) in enumerate(spans) if owned[start]]
    found = float(numpy.asarray(span_probs, dtype="float64")[kept].sum()) if kept else 0.0
    entity_errors = expected_entities + len(kept) - 2.0 * found
    # A window's context is also in its neighbours' lattices: counting it twice would
    # make long docs look more unsure than they are, so a window of a long doc adds
    # its path's log-probability in proportion to the characters it owns.
    log_best = path_log_probability(lattice, tags) * len(positions) / n
    return Measures(log_best, tag_errors, entity_errors)

