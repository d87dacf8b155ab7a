"""The batched CRF against brute force over all K^T paths on small sizes."""
import itertools

import pytest
import torch

from spacy_bilstm_crf.network.crf import LinearChainCRF
from spacy_bilstm_crf.network.tags import TagScheme


def _random_crf(n_tags: int, constrained: bool, seed: int) -> LinearChainCRF:
    torch.manual_seed(seed)
    if constrained:
        scheme = TagScheme([f"L{i}" for i in range((n_tags - 1) // 4)], "BIOES")
        crf = LinearChainCRF(
            len(scheme),
            torch.as_tensor(scheme.allowed_transitions()),
            torch.as_tensor(scheme.allowed_start()),
            torch.as_tensor(scheme.allowed_end()),
        )
    else:
        crf = LinearChainCRF(n_tags)
    with torch.no_grad():
        for param in crf.parameters():
            param.normal_(0.0, 1.0)
    return crf


def _compiled(crf: LinearChainCRF, emissions: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """The compiled kernel's paths (numba is a dependency: None would be a failure)."""
    with torch.no_grad():
        tags = crf._decode_compiled(emissions, lengths, pad)
    assert tags is not None
    return tags


def _brute_force(crf: LinearChainCRF, emissions: torch.Tensor, length: int):
    """All valid paths of one sentence: (log Z, best path, best score, marginals)."""
    n_tags = emissions.shape[-1]
    scores, paths = [], []
    for path in itertools.product(range(n_tags), repeat=length):
        tags = torch.tensor(path, dtype=torch.long)
        if not crf.is_valid(tags[None], torch.tensor([length]))[0]:
            continue
        score = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
        score = score + sum(emissions[t, path[t]] for t in range(length))
        score = score + sum(crf.transitions[path[t - 1], path[t]] for t in range(1, length))
        scores.append(score)
        paths.append(path)
    scores_t = torch.stack(scores).double()
    log_z = torch.logsumexp(scores_t, 0)
    probs = torch.exp(scores_t - log_z)
    marginals = torch.zeros(length, n_tags, dtype=torch.float64)
    for prob, path in zip(probs, paths):
        for t, tag in enumerate(path):
            marginals[t, tag] += prob
    best = int(scores_t.argmax())
    return log_z, paths[best], marginals


@pytest.mark.parametrize("constrained,n_tags", [(False, 3), (False, 4), (True, 5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_brute_force(constrained: bool, n_tags: int, seed: int):
    crf = _random_crf(n_tags, constrained, seed)
    gen = torch.Generator().manual_seed(100 + seed)
    lengths = torch.randint(1, 6, (4,), generator=gen)
    lengths[0] = 5
    emissions = torch.randn(4, 5, n_tags, generator=gen) * 2
    with torch.no_grad():
        log_z = crf.log_partition(emissions, lengths)
        # Both decoders: the compiled kernel (CPU) and tensor ops (GPU, scripted copies).
        decoded = crf.decode(emissions, lengths)
        by_kernel = _compiled(crf, emissions, lengths, -1)
        by_torch = crf._viterbi(emissions, lengths, -1)
    marginals = crf.marginals(emissions, lengths)
    for b in range(4):
        length = int(lengths[b])
        ref_z, ref_path, ref_marg = _brute_force(crf, emissions[b], length)
        assert log_z[b].item() == pytest.approx(ref_z.item(), abs=1e-4)
        for paths in (decoded, by_kernel, by_torch):
            assert paths[b, :length].tolist() == list(ref_path)
            assert (paths[b, length:] == -1).all()
        torch.testing.assert_close(marginals[b, :length].double(), ref_marg, atol=1e-4, rtol=1e-4)
        assert (marginals[b, length:] == 0).all()


def test_nll_matches_brute_force_and_is_nonnegative():
    crf = _random_crf(5, True, 3)
    emissions = torch.randn(3, 4, 5)
    lengths = torch.tensor([4, 2, 3])
    scheme = TagScheme(["L0"], "BIOES")
    gold = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0], [0, 1, 3, 0]])
    assert all(scheme.is_valid(g[:n].tolist()) for g, n in zip(gold, lengths))
    nll = crf.nll(emissions, gold, lengths)
    for b in range(3):
        n = int(lengths[b])
        ref_z, _, _ = _brute_force(crf, emissions[b], n)
        path = gold[b, :n].tolist()
        ref_score = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
        ref_score = ref_score + sum(emissions[b, t, path[t]] for t in range(n))
        ref_score = ref_score + sum(crf.transitions[path[t - 1], path[t]] for t in range(1, n))
        assert nll[b].item() == pytest.approx((ref_z - ref_score).item(), abs=1e-4)
    assert (nll >= -1e-5).all()


def test_gradcheck_float64():
    crf = _random_crf(5, True, 4).double()
    emissions = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 1, 3])
    gold = torch.tensor([[0, 4, 1, 3], [4, 0, 0, 0], [1, 2, 3, 0]])

    def nll(emissions, transitions, start, end):
        crf.transitions, crf.start_transitions, crf.end_transitions = transitions, start, end
        return crf.nll(emissions, gold, lengths)

    params = [p.detach().clone().requires_grad_(True) for p in crf.parameters()]
    del crf.transitions, crf.start_transitions, crf.end_transitions  # plain tensors from here
    assert torch.autograd.gradcheck(nll, (emissions, *params), eps=1e-6, atol=1e-5)


def test_zero_lengths_and_empty_batch():
    crf = _random_crf(5, True, 5)
    emissions = torch.randn(3, 4, 5)
    lengths = torch.tensor([0, 4, 0])
    gold = torch.zeros(3, 4, dtype=torch.long)
    nll = crf.nll(emissions, gold, lengths)
    assert nll[0].item() == 0 and nll[2].item() == 0 and nll[1].item() > 0
    decoded = crf.decode(emissions, lengths)
    assert (decoded[0] == -1).all() and (decoded[2] == -1).all() and (decoded[1] >= 0).all()
    with torch.no_grad():
        assert torch.equal(crf._viterbi(emissions, lengths, -1), decoded)
        assert torch.equal(_compiled(crf, emissions, lengths, -1), decoded)
    # A batch whose longest sentence is empty, and an empty batch.
    assert crf.decode(torch.randn(2, 0, 5), torch.tensor([0, 0])).shape == (2, 0)
    assert crf.log_partition(torch.randn(2, 0, 5), torch.tensor([0, 0])).tolist() == [0, 0]
    assert crf.decode(torch.randn(0, 3, 5), torch.zeros(0, dtype=torch.long)).shape == (0, 3)


def test_constrained_decode_is_always_valid_even_against_huge_emissions():
    scheme = TagScheme(["A", "B", "C"], "BIOES")
    crf = _random_crf(len(scheme), True, 6)
    torch.manual_seed(7)
    # Emissions that strongly prefer invalid tags (e.g. I- right after O).
    emissions = torch.randn(64, 12, len(scheme)) * 1e5
    lengths = torch.randint(0, 13, (64,))
    decoded = crf.decode(emissions, lengths)
    assert crf.is_valid(decoded.clamp_min(0), lengths).all()
    for path, n in zip(decoded, lengths):
        assert scheme.is_valid(path[:n].tolist())


def test_float32_under_autocast():
    crf = _random_crf(5, True, 8)
    emissions = torch.randn(2, 6, 5).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_z = crf.log_partition(emissions, torch.tensor([6, 3]))
    assert log_z.dtype == torch.float32


def test_compiled_and_tensor_decoders_agree_on_ragged_batches():
    """The compiled kernel and the tensor-op decoder give the same paths on many random
    batches (the same float sums and the same tie-breaking), under constraints."""
    crf = _random_crf(41, True, 9)
    gen = torch.Generator().manual_seed(9)
    for _ in range(5):
        lengths = torch.randint(0, 31, (40,), generator=gen)
        emissions = torch.randn(40, int(lengths.max()), 41, generator=gen) * 3
        with torch.no_grad():
            by_torch = crf._viterbi(emissions, lengths, -7)
            by_kernel = _compiled(crf, emissions, lengths, -7)
        assert torch.equal(by_torch, by_kernel)
        assert crf.is_valid(by_kernel.clamp_min(0), lengths).all()


def test_sorted_chunks_give_the_same_paths(monkeypatch):
    """With several chunks the sentences are sorted by length and each chunk stops at its
    longest sentence: the paths are those of one unsorted chunk, in the callers' order."""
    crf = _random_crf(41, True, 10)
    gen = torch.Generator().manual_seed(10)
    lengths = torch.randint(0, 25, (13,), generator=gen)
    lengths[3] = 24
    emissions = torch.randn(13, 24, 41, generator=gen) * 3
    with torch.no_grad():
        expected = crf._viterbi(emissions, lengths, -1)
        monkeypatch.setattr(LinearChainCRF, "_chunk", 4)
        got = crf._viterbi(emissions, lengths, -1)
    assert torch.equal(got, expected)
    assert crf.is_valid(got.clamp_min(0), lengths).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_decoder_breaks_ties_like_the_tensor_decoder(dtype):
    """Small integer scores tie everywhere: both decoders keep the first of equal maxima."""
    crf = _random_crf(9, True, 11)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        crf.transitions.copy_(torch.randint(0, 2, (9, 9), generator=gen).float())
        crf.start_transitions.zero_()
        crf.end_transitions.zero_()
    lengths = torch.randint(0, 16, (30,), generator=gen)
    emissions = torch.randint(0, 2, (30, 15, 9), generator=gen).to(dtype)
    with torch.no_grad():
        by_torch = crf._viterbi(emissions, lengths, -1)
    by_kernel = _compiled(crf, emissions, lengths, -1)
    assert torch.equal(by_torch, by_kernel)
    assert torch.equal(crf.decode(emissions, lengths), by_kernel)


def test_decoding_without_numba_falls_back_to_tensor_ops(monkeypatch):
    """Where numba cannot be imported, one warning, and the tensor-op decoder's paths."""
    import sys

    from spacy_bilstm_crf.network import kernels

    crf = _random_crf(9, True, 12)
    emissions = torch.randn(6, 7, 9)
    lengths = torch.tensor([7, 0, 3, 7, 1, 5])
    expected = crf.decode(emissions, lengths)
    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_FAILED", {})
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    with pytest.warns(UserWarning, match="Compiled Viterbi unavailable"):
        assert torch.equal(crf.decode(emissions, lengths), expected)
    assert crf._decode_compiled(emissions, lengths, -1) is None
