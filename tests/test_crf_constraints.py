"""Forced tags, partial labels and forward-backward against brute force over all paths."""
import itertools
from typing import List, Sequence, Tuple

import numpy
import pytest
import torch

from spacy_bilstm_crf.prediction.confidence import Lattice, candidate_spans, span_probabilities
from spacy_bilstm_crf.network.crf import BANNED, LinearChainCRF, constrain
from spacy_bilstm_crf.network.tags import TagScheme


def _crf(scheme: TagScheme, seed: int) -> LinearChainCRF:
    torch.manual_seed(seed)
    crf = LinearChainCRF(
        len(scheme),
        torch.as_tensor(scheme.allowed_transitions()),
        torch.as_tensor(scheme.allowed_start()),
        torch.as_tensor(scheme.allowed_end()),
    )
    with torch.no_grad():
        for param in crf.parameters():
            param.normal_(0.0, 1.0)
    return crf


def _paths(scheme: TagScheme, length: int, forced: Sequence[int]) -> List[Tuple[int, ...]]:
    """Every valid path that agrees with the forced tags (-1: free)."""
    allowed, start, end = scheme.allowed_transitions(), scheme.allowed_start(), scheme.allowed_end()
    choices = [range(len(scheme)) if f < 0 else [f] for f in forced[:length]]
    return [
        path
        for path in itertools.product(*choices)
        if start[path[0]] and end[path[-1]] and all(allowed[a, b] for a, b in zip(path, path[1:]))
    ]


def _score(crf: LinearChainCRF, emissions: torch.Tensor, path: Sequence[int]) -> float:
    tags = torch.tensor([path])
    with torch.no_grad():
        return float(crf.path_score(emissions[None, : len(path)], tags, torch.tensor([len(path)]))[0])


def _lattice(crf: LinearChainCRF, emissions: torch.Tensor, forced: torch.Tensor, length: int) -> Lattice:
    allowed = constrain(emissions[None, :length], forced[None, :length], BANNED)
    alpha, beta, log_z = crf.forward_backward(allowed, torch.tensor([length]))
    trans, _, end = crf.masked_scores(BANNED)
    return Lattice(
        alpha[0].numpy(), beta[0].numpy(), allowed[0].numpy(), trans.double().numpy(), end.double().numpy(), float(log_z[0])
    )


@pytest.mark.parametrize("scheme_name", ["BIOES", "BIO"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_span_probabilities_equal_brute_force(scheme_name: str, seed: int):
    scheme = TagScheme(["A", "B"], scheme_name)
    crf = _crf(scheme, seed)
    gen = torch.Generator().manual_seed(seed)
    length = 4
    emissions = torch.randn(length, len(scheme), generator=gen, dtype=torch.float64) * 2
    # Seed 0 decodes freely; the others force a tag, so the lattice is constrained.
    forced = torch.full((length,), -1)
    if seed == 1:
        forced[1] = scheme.tag_id("B", 1)
    if seed == 2:
        forced[3] = 0
    paths = _paths(scheme, length, forced.tolist())
    scores = numpy.array([_score(crf, emissions, p) for p in paths])
    probs = numpy.exp(scores - numpy.logaddexp.reduce(scores))
    lattice = _lattice(crf, emissions, forced, length)
    assert lattice.log_z == pytest.approx(numpy.logaddexp.reduce(scores), abs=1e-9)
    spans = [(i, j, label) for i in range(length) for j in range(i + 1, length + 1) for label in (0, 1)]
    expected = numpy.array(
        [sum(p for path, p in zip(paths, probs) if span in scheme.tags_to_spans(numpy.array(path))) for span in spans]
    )
    got = span_probabilities(lattice, scheme, spans)
    assert numpy.allclose(got, expected, atol=1e-9)
    assert ((got >= 0) & (got <= 1)).all()
    found = candidate_spans(lattice, scheme, threshold=0.05, max_len=length)
    assert [c[:3] for c in found] == [s for s, p in zip(spans, expected) if p >= 0.05]
    assert numpy.allclose([c[3] for c in found], [p for p in expected if p >= 0.05], atol=1e-9)


def test_forward_backward_log_z_matches_partition_with_padding():
    scheme = TagScheme(["A", "B", "C"])
    crf = _crf(scheme, 3)
    emissions = torch.randn(3, 7, len(scheme), dtype=torch.float64)
    lengths = torch.tensor([7, 2, 0])
    _, _, log_z = crf.forward_backward(emissions, lengths)
    assert torch.allclose(log_z, crf.log_partition(emissions, lengths))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_partial_label_loss_equals_brute_force(seed: int):
    scheme = TagScheme(["A", "B"])
    crf = _crf(scheme, seed)
    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(2, 5, len(scheme), generator=gen, dtype=torch.float64)
    lengths = torch.tensor([5, 4])
    gold = torch.tensor(
        [
            [0, -1, -1, scheme.tag_id("S", 1), 0],
            [scheme.tag_id("B", 0), scheme.tag_id("E", 0), -1, -1, 0],
        ]
    )
    with torch.no_grad():
        nll = crf.nll(emissions, gold, lengths)
    for b in range(2):
        n = int(lengths[b])
        log_z = numpy.logaddexp.reduce([_score(crf, emissions[b], p) for p in _paths(scheme, n, [-1] * n)])
        known = numpy.logaddexp.reduce([_score(crf, emissions[b], p) for p in _paths(scheme, n, gold[b, :n].tolist())])
        assert float(nll[b]) == pytest.approx(log_z - known, abs=1e-9)


def test_partial_label_loss_without_missing_is_the_full_loss():
    scheme = TagScheme(["A", "B"])
    crf = _crf(scheme, 0)
    emissions = torch.randn(2, 4, len(scheme), dtype=torch.float64)
    lengths = torch.tensor([4, 3])
    # Padding past a sentence's end is not missing annotation.
    gold = torch.tensor([[scheme.tag_id("S", 0), 0, scheme.tag_id("B", 1), scheme.tag_id("E", 1)], [0, 0, 0, -1]])
    full = crf.log_partition(emissions, lengths) - crf.path_score(emissions, gold.clamp_min(0), lengths)
    assert torch.equal(crf.nll(emissions, gold, lengths), full)
    # The marginalized form over a single consistent path gives the same value.
    known = crf.log_partition(constrain(emissions, gold.clamp_min(0), BANNED), lengths)
    assert torch.allclose(crf.log_partition(emissions, lengths) - known, full)


def test_partial_label_loss_has_gradients_only_where_paths_remain():
    scheme = TagScheme(["A"])
    crf = _crf(scheme, 1)
    emissions = torch.randn(1, 3, len(scheme), dtype=torch.float64, requires_grad=True)
    gold = torch.tensor([[0, -1, 0]])
    crf.nll(emissions, gold, torch.tensor([3])).sum().backward()
    assert torch.isfinite(emissions.grad).all()
    # At a known O position, the gradient is the marginal of each tag minus 1 for O.
    assert float(emissions.grad[0, 0].sum()) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_viterbi_is_the_best_consistent_path(seed: int):
    scheme = TagScheme(["A", "B"])
    crf = _crf(scheme, seed)
    gen = torch.Generator().manual_seed(10 + seed)
    emissions = torch.randn(1, 5, len(scheme), generator=gen) * 3
    forced = torch.tensor([[-1, scheme.tag_id("B", 0), scheme.tag_id("E", 0), -1, -1]])
    tags = crf.decode(constrain(emissions, forced, float("-inf")), torch.tensor([5]))[0].tolist()
    paths = _paths(scheme, 5, forced[0].tolist())
    best = max(paths, key=lambda p: _score(crf, emissions[0].double(), p))
    assert tags == list(best)
    assert tags[1:3] == [scheme.tag_id("B", 0), scheme.tag_id("E", 0)]


def _scan_log_partition(crf: LinearChainCRF, emissions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The forward algorithm in log space, step by step, differentiated by autograd: the
    reference for the hand-written backward."""
    trans, start, end = crf._masked(BANNED, emissions.dtype)
    alpha = start + emissions[:, 0]
    for t in range(1, emissions.shape[1]):
        nxt = torch.logsumexp(alpha[:, :, None] + trans[None], dim=1) + emissions[:, t]
        alpha = torch.where((t < lengths)[:, None], nxt, alpha)
    log_z = torch.logsumexp(alpha + end, dim=1)
    return torch.where(lengths > 0, log_z, torch.zeros_like(log_z))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("forced", [False, True])
def test_hand_written_backward_equals_autograd(seed: int, forced: bool):
    scheme = TagScheme(["A", "B", "C"])
    crf = _crf(scheme, seed)
    gen = torch.Generator().manual_seed(seed)
    emissions = (torch.randn(6, 9, len(scheme), generator=gen, dtype=torch.float64) * 4).requires_grad_(True)
    lengths = torch.tensor([9, 1, 0, 5, 9, 2])
    inputs = emissions
    if forced:  # a partial-label lattice: banned emissions, as the NLL builds it
        tags = torch.full((6, 9), -1)
        tags[0, 3], tags[3, 0], tags[4, 8] = scheme.tag_id("S", 2), 0, scheme.tag_id("E", 1)
        inputs = constrain(emissions, tags, BANNED)
    weights = torch.randn(6, generator=gen, dtype=torch.float64)
    params = [emissions, crf.transitions, crf.start_transitions, crf.end_transitions]
    ours = crf.log_partition(inputs, lengths)
    reference = _scan_log_partition(crf, inputs, lengths)
    assert torch.allclose(ours, reference, atol=1e-9)
    got = torch.autograd.grad((ours * weights).sum(), params, retain_graph=True)
    expected = torch.autograd.grad((reference * weights).sum(), params)
    for g, e in zip(got, expected):
        assert torch.allclose(g.double(), e.double(), atol=1e-5)
    assert emissions.grad is None


def test_hand_written_backward_passes_gradcheck():
    scheme = TagScheme(["A"])
    crf = _crf(scheme, 4).double()
    emissions = torch.randn(3, 4, len(scheme), dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2, 1])
    trans, start, end = (x.detach().requires_grad_(True) for x in crf._masked(BANNED, torch.float64))
    from spacy_bilstm_crf.network.crf import LogPartition

    assert torch.autograd.gradcheck(lambda e, a, s, z: LogPartition.apply(e, lengths, a, s, z), (emissions, trans, start, end))
