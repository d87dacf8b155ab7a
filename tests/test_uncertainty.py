"""Sentence uncertainty (``prediction/uncertainty.py``) against brute force over all paths."""
import numpy
import pytest
import torch

from spacy_bilstm_crf.network.tags import TagScheme
from spacy_bilstm_crf.prediction.confidence import span_probabilities
from spacy_bilstm_crf.prediction.uncertainty import Measures, measure_window, path_log_probability, tag_marginals, total

from .test_crf_constraints import _crf, _lattice, _paths, _score


def _brute_force(scheme: TagScheme, seed: int, length: int, forced_tag: int = -1):
    crf = _crf(scheme, seed)
    gen = torch.Generator().manual_seed(100 + seed)
    emissions = torch.randn(length, len(scheme), generator=gen, dtype=torch.float64) * 2
    forced = torch.full((length,), -1)
    forced[length // 2] = forced_tag
    paths = _paths(scheme, length, forced.tolist())
    scores = numpy.array([_score(crf, emissions, p) for p in paths])
    probs = numpy.exp(scores - numpy.logaddexp.reduce(scores))
    return _lattice(crf, emissions, forced, length), paths, probs


@pytest.mark.parametrize("scheme_name", ["BIOES", "BIO"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_measures_equal_brute_force(scheme_name: str, seed: int):
    scheme = TagScheme(["A", "B"], scheme_name)
    length = 4 if scheme_name == "BIOES" else 5
    # Seed 3 fixes a tag in the middle: the measures are over the constrained lattice.
    lattice, paths, probs = _brute_force(scheme, seed, length, forced_tag=0 if seed == 3 else -1)
    best = numpy.array(paths[int(numpy.argmax(probs))])
    spans = scheme.tags_to_spans(best)
    got = measure_window(lattice, scheme, best, spans, span_probabilities(lattice, scheme, spans)).to_dict()

    assert got["best_path"] == pytest.approx(1.0 - probs.max(), abs=1e-9)
    wrong_tags = [sum(a != b for a, b in zip(path, best)) for path in paths]
    assert got["tag_errors"] == pytest.approx(float(numpy.dot(probs, wrong_tags)), abs=1e-9)
    decoded = set(spans)
    entity_errors = [len(decoded ^ set(scheme.tags_to_spans(numpy.array(path)))) for path in paths]
    assert got["entity_errors"] == pytest.approx(float(numpy.dot(probs, entity_errors)), abs=1e-9)


@pytest.mark.parametrize("scheme_name", ["BIOES", "BIO"])
def test_marginals_and_path_probability_equal_brute_force(scheme_name: str):
    scheme = TagScheme(["A"], scheme_name)
    lattice, paths, probs = _brute_force(scheme, 7, 4)
    marginals = tag_marginals(lattice)
    expected = numpy.zeros_like(marginals)
    for path, p in zip(paths, probs):
        expected[numpy.arange(4), list(path)] += p
    assert numpy.allclose(marginals, expected, atol=1e-9)
    for path, p in zip(paths[:10], probs[:10]):
        assert path_log_probability(lattice, numpy.array(path)) == pytest.approx(numpy.log(p), abs=1e-9)


def test_a_window_measures_only_the_characters_it_owns():
    scheme = TagScheme(["A", "B"], "BIOES")
    lattice, paths, probs = _brute_force(scheme, 5, 4)
    best = numpy.array(paths[int(numpy.argmax(probs))])
    spans = scheme.tags_to_spans(best)
    span_probs = span_probabilities(lattice, scheme, spans)
    whole = measure_window(lattice, scheme, best, spans, span_probs)
    left = measure_window(lattice, scheme, best, spans, span_probs, slice(0, 2))
    right = measure_window(lattice, scheme, best, spans, span_probs, slice(2, 4))
    both = total([left, right])
    # Tag and entity errors are sums over positions (entities where they start).
    assert both.tag_errors == pytest.approx(whole.tag_errors, abs=1e-9)
    assert both.entity_errors == pytest.approx(whole.entity_errors, abs=1e-9)
    assert both.log_best == pytest.approx(whole.log_best, abs=1e-9)
    assert left.tag_errors < whole.tag_errors


def test_an_empty_sentence_is_certain():
    assert Measures().to_dict() == {"best_path": 0.0, "tag_errors": 0.0, "entity_errors": 0.0}
