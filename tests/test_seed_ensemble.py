"""Posterior decoding of benchmarks/seed_ensemble.py against a brute-force search."""
import itertools
from types import ModuleType

import numpy
import pytest
import spacy

from spacy_bilstm_crf.network.tags import TagScheme

from .conftest import benchmark_module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script as a module."""
    return benchmark_module("seed_ensemble")


@pytest.mark.parametrize("seed", range(4))
def test_posterior_entities_are_the_best_valid_path(bench: ModuleType, seed: int) -> None:
    """The entities of the valid tag path with the largest product of marginals, over
    every path of a 4-character doc; marginals that favour an invalid path (``I`` after
    ``O``) still give a valid one."""
    labels = ["name", "company"]
    scheme = TagScheme(labels, "BIOES")
    doc = spacy.blank("zh").make_doc("马云在阿")
    rng = numpy.random.default_rng(seed)
    marginals = rng.dirichlet(numpy.full(len(scheme.tags), 0.3), size=len(doc))
    marginals[1, scheme.tag_id("I", 0)] = 5.0  # an I with no B before it, if it could
    found = bench.posterior_entities(doc, marginals, scheme, labels)
    best, best_score = None, -numpy.inf
    for path in itertools.product(range(len(scheme.tags)), repeat=len(doc)):
        if not scheme.is_valid(path):
            continue
        score = float(sum(numpy.log(marginals[t, tag]) for t, tag in enumerate(path)))
        if score > best_score:
            best, best_score = path, score
    expected = {(start, end, labels[label]) for start, end, label in scheme.tags_to_spans(numpy.array(best))}
    assert found == expected
    assert bench.posterior_entities(doc[:0].as_doc(), marginals[:0], scheme, labels) == set()
