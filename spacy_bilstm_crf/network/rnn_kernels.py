"""Compiled recurrences (numba) for predictions on a few sentences: LAC's Paddle BiGRU
and the BiLSTM, one whole layer (both directions, every step) in one call.

A single ``nlp(text)`` call runs the recurrences over one sentence of a few dozen
characters. As tensor ops, each time step is a chain of small operations (a
batched matmul, two activations, slicing, an interpolation), each with a few
microseconds of dispatch for a few microseconds of arithmetic, and the Python
loop around them; two BiGRU layers and the BiLSTM take ~60% of such a call. Here
the input projections stay one matrix product over all positions (torch, BLAS),
and the recurrence runs as compiled loops: the state stays in cache, the
recurrent weights are read four rows at a time (vectorized multiply-adds), and
nothing is dispatched per step.

For large batches the tensor path is faster (its per-step products are real
matrix products); ``model.py`` picks the kernels below a batch size.

The kernels compute the functions of ``lac/encoder.py`` (``PaddleBiGRU``) and
``nn.LSTM`` over a packed batch, up to float rounding (tests compare them): each
sentence's reverse direction starts from a zero state at its own last character,
and the states at padding are zero. When numba is unavailable, the functions here
return None and the callers keep their tensor ops (see ``kernels.py``).
"""
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy
import torch
from torch import Tensor

from .kernels import _array, _compiled


def _tanh32(x):  # pragma: no cover - compiled (inlined into the kernels)
    """tanh in float32 as a rational function (Eigen's ``generic_fast_tanh_float``):
    within 4e-7 of tanh, with no branch or library call, so a loop over a gate vector
    vectorizes (a call to ``exp`` per element costs three quarters of the kernel)."""
    x = min(max(x, numpy.float32(-7.90531110763549805)), numpy.float32(7.90531110763549805))
    x2 = x * x
    p = numpy.float32(-2.76076847742355e-16)
    p = p * x2 + numpy.float32(2.00018790482477e-13)
    p = p * x2 + numpy.float32(-8.60467152213735e-11)
    p = p * x2 + numpy.float32(5.12229709037114e-08)
    p = p * x2 + numpy.float32(1.48572235717979e-05)
    p = p * x2 + numpy.float32(6.37261928875436e-04)
    p = p * x2 + numpy.float32(4.89352455891786e-03)
    q = numpy.float32(1.19825839466702e-06)
    q = q * x2 + numpy.float32(1.18534705686654e-04)
    q = q * x2 + numpy.float32(2.26843463243900e-03)
    q = q * x2 + numpy.float32(4.89352518554385e-03)
    return p * x / q


def _sigmoid32(x):  # pragma: no cover - compiled (inlined into the kernels)
    """The logistic function as ``(1 + tanh(x / 2)) / 2`` (exact identity), via :func:`_tanh32`."""
    return numpy.float32(0.5) + numpy.float32(0.5) * _tanh32(numpy.float32(0.5) * x)


def _add_product(out, vector, weights):  # pragma: no cover - compiled (inlined into the kernels)
    """``out += vector @ weights`` (weights (K, N)), four rows of weights a pass: each
    pass loads and stores ``out`` once for four multiply-adds per element. A row a pass
    is bound by those loads and stores; this is about twice as fast for the 128-row
    recurrent weights here (the order of the additions changes: float rounding only)."""
    n_rows = weights.shape[0]
    width = out.shape[0]
    k = 0
    while k + 4 <= n_rows:
        v0, v1, v2, v3 = vector[k], vector[k + 1], vector[k + 2], vector[k + 3]
        r0, r1, r2, r3 = weights[k], weights[k + 1], weights[k + 2], weights[k + 3]
        for j in range(width):
            out[j] += (v0 * r0[j] + v1 * r1[j]) + (v2 * r2[j] + v3 * r3[j])
        k += 4
    while k < n_rows:
        vk = vector[k]
        row = weights[k]
        for j in range(width):
            out[j] += vk * row[j]
        k += 1


def _paddle_bigru(proj, lengths, gate_weight, cand_weight, out):  # pragma: no cover - compiled
    """One bidirectional Paddle GRU layer.

    proj: (2, batch, max_len, 3H) input projections with biases, per direction, in the
    order update, reset, candidate; lengths: int64 (batch,); gate_weight: (2, H, 2H);
    cand_weight: (2, H, H); out: (batch, max_len, 2H), zero on entry: forward states,
    then reverse ones. All float32.
    """
    batch = proj.shape[1]
    hidden = cand_weight.shape[1]
    h = numpy.zeros(hidden, numpy.float32)
    gates = numpy.empty(2 * hidden, numpy.float32)
    cand = numpy.empty(hidden, numpy.float32)
    reset_h = numpy.empty(hidden, numpy.float32)
    for b in range(batch):
        n = lengths[b]
        for d in range(2):
            gate_w = gate_weight[d]
            cand_w = cand_weight[d]
            h[:] = 0.0
            for s in range(n):
                t = s if d == 0 else n - 1 - s
                step = proj[d, b, t]
                gates[:] = step[: 2 * hidden]
                _add_product(gates, h, gate_w)
                for j in range(2 * hidden):
                    gates[j] = _sigmoid32(gates[j])
                cand[:] = step[2 * hidden :]
                for k in range(hidden):
                    reset_h[k] = gates[hidden + k] * h[k]
                _add_product(cand, reset_h, cand_w)
                state = out[b, t]
                for j in range(hidden):
                    # (1 - u) h + u c, as Paddle's origin_mode False.
                    h[j] += gates[j] * (_tanh32(cand[j]) - h[j])
                    state[d * hidden + j] = h[j]


def _bilstm(proj, lengths, w_hh, out):  # pragma: no cover - compiled
    """One bidirectional LSTM layer.

    proj: (2, batch, max_len, 4H) input projections with both biases, per direction, in
    torch's gate order (input, forget, cell, output); lengths: int64 (batch,); w_hh:
    (2, H, 4H), the recurrent weights transposed; out: (batch, max_len, 2H), zero on
    entry: forward states, then reverse ones. All float32.
    """
    batch = proj.shape[1]
    hidden = w_hh.shape[1]
    h = numpy.zeros(hidden, numpy.float32)
    c = numpy.zeros(hidden, numpy.float32)
    gates = numpy.empty(4 * hidden, numpy.float32)
    for b in range(batch):
        n = lengths[b]
        for d in range(2):
            w = w_hh[d]
            h[:] = 0.0
            c[:] = 0.0
            for s in range(n):
                t = s if d == 0 else n - 1 - s
                gates[:] = proj[d, b, t]
                _add_product(gates, h, w)
                state = out[b, t]
                for j in range(hidden):
                    i = _sigmoid32(gates[j])
                    f = _sigmoid32(gates[hidden + j])
                    g = _tanh32(gates[2 * hidden + j])
                    o = _sigmoid32(gates[3 * hidden + j])
                    c[j] = f * c[j] + i * g
                    h[j] = o * _tanh32(c[j])
                    state[d * hidden + j] = h[j]


_ACTIVATIONS_JITABLE = False


def _kernel(name: str, function: Callable, probe: Callable[[Any], None]) -> Any:
    """A recurrence compiled (``kernels._compiled``) with the activations inlined."""
    global _ACTIVATIONS_JITABLE
    if not _ACTIVATIONS_JITABLE:
        try:
            from numba.extending import register_jitable

            for activation in (_tanh32, _sigmoid32, _add_product):
                register_jitable(inline="always")(activation)
        except ImportError:  # _compiled reports it
            pass
        _ACTIVATIONS_JITABLE = True
    # fastmath: the products may be contracted and the polynomials reassociated;
    # error_model numpy: no zero-division check in the vectorized divisions.
    return _compiled(name, function, probe, fastmath=True, error_model="numpy")


def _probe_bigru(kernel: Any) -> None:
    """Compile for float32 and check one step against the cell's formula."""
    proj = numpy.zeros((2, 1, 1, 3), numpy.float32)
    proj[:, 0, 0, 0] = 100.0  # update gate open: h = c
    proj[:, 0, 0, 2] = 0.5
    out = numpy.zeros((1, 1, 2), numpy.float32)
    weights = numpy.zeros((2, 1, 2), numpy.float32), numpy.zeros((2, 1, 1), numpy.float32)
    kernel(proj, numpy.array([1], numpy.int64), *weights, out)
    if not numpy.allclose(out, numpy.tanh(0.5), atol=1e-6):
        raise RuntimeError(f"self-check computed {out.tolist()}, expected tanh(0.5) twice")


def _probe_bilstm(kernel: Any) -> None:
    """Compile for float32 and check one step against the cell's formula."""
    proj = numpy.zeros((2, 1, 1, 4), numpy.float32)
    proj[:, 0, 0, 2] = 0.5  # the cell input; every gate at sigmoid(0) = 0.5
    out = numpy.zeros((1, 1, 2), numpy.float32)
    kernel(proj, numpy.array([1], numpy.int64), numpy.zeros((2, 1, 4), numpy.float32), out)
    expected = 0.5 * numpy.tanh(0.5 * numpy.tanh(0.5))
    if not numpy.allclose(out, expected, atol=1e-6):
        raise RuntimeError(f"self-check computed {out.tolist()}, expected {expected} twice")


def _projected(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> Tensor:
    """Both directions' input projections, in one buffer: (2, batch, max_len, n_gates).

    weights (Sequence[Tensor]): Per direction, (input_dim, n_gates) (a transposed view
        is read as it is); biases (Sequence[Tensor]): per direction, (n_gates,).
    """
    batch, max_len, input_dim = x.shape
    rows = x.reshape(batch * max_len, input_dim)  # (input_dim may be 0: every input folded)
    n_gates = weights[0].shape[1]
    out = rows.new_empty(2, batch * max_len, n_gates)
    for direction in range(2):
        torch.addmm(biases[direction], rows, weights[direction], out=out[direction])
    return out.view(2, batch, max_len, n_gates)


def _cached(owner: torch.nn.Module, name: str, parameters: Sequence[Tensor], build: Callable[[], Any]) -> Any:
    """``build()``, kept on ``owner`` until one of ``parameters`` changes (a plain
    attribute, replaced whole: not a buffer, not saved; safe across threads)."""
    try:
        key = tuple((t.data_ptr(), t._version) for t in parameters)
    except RuntimeError:  # inference tensors keep no version: no cache
        return build()
    cached = owner.__dict__.get(name)
    if cached is not None and cached[0] == key:
        return cached[1]
    value = build()
    object.__setattr__(owner, name, (key, value))
    return value


def paddle_bigru(layer: Any, x: Tensor, lengths: Tensor) -> Optional[Tensor]:
    """A ``PaddleBiGRU`` layer over a padded batch, or None when the kernel is unavailable.

    layer (PaddleBiGRU): The layer (float32, on the CPU).
    x (Tensor): Float32 (batch, max_len, input_dim).
    lengths (Tensor): Long (batch,).
    RETURNS (Optional[Tensor]): Float32 (batch, max_len, 2H), forward states then
        reverse ones, zero at padding.
    """
    kernel = _kernel("Paddle BiGRU", _paddle_bigru, _probe_bigru)
    if kernel is None:
        return None
    batch, max_len, _ = x.shape
    proj = _projected(x, layer.in_weight, layer.in_bias)
    out = numpy.zeros((batch, max_len, 2 * layer.hidden), numpy.float32)
    kernel(_array(proj), _array(lengths.to(torch.int64)), _array(layer.gate_weight), _array(layer.cand_weight), out)
    return torch.from_numpy(out)


def bilstm_layer(
    lstm: torch.nn.LSTM, layer: int, x: Tensor, lengths: Tensor, lookups: Sequence[Any] = ()
) -> Optional[Tensor]:
    """Layer ``layer`` of a bidirectional ``nn.LSTM`` (float32, on the CPU, with biases, no
    projection) over a padded batch, as over the packed batch; None when the kernel is
    unavailable.

    x (Tensor): Float32 (batch, max_len, n): the layer's inputs, except the columns of
        ``lookups``, in order.
    lengths (Tensor): Long (batch,).
    lookups (Sequence[recurrence.Lookup]): Embedding lookups among the first layer's
        inputs, folded into its input projection (``recurrence.Lookup``): each adds a
        row of its projected table (cached until a weight changes) instead of its
        columns' share of the matrix product.
    RETURNS (Optional[Tensor]): Float32 (batch, max_len, 2H), zero at padding.
    """
    kernel = _kernel("BiLSTM", _bilstm, _probe_bilstm)
    if kernel is None:
        return None
    names = [f"l{layer}", f"l{layer}_reverse"]
    parameters = [getattr(lstm, f"{kind}_{name}") for name in names for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    parameters += [lookup.embedding.weight for lookup in lookups]
    columns = [lookup.columns for lookup in lookups]

    def build() -> Tuple[List[Tensor], List[Tensor], numpy.ndarray, List[List[Tensor]]]:
        w_ih = [getattr(lstm, f"weight_ih_{name}").detach().t() for name in names]
        bias = [(getattr(lstm, f"bias_ih_{name}") + getattr(lstm, f"bias_hh_{name}")).detach() for name in names]
        w_hh = torch.stack([getattr(lstm, f"weight_hh_{name}").detach().t() for name in names])
        dense = torch.ones(w_ih[0].shape[0], dtype=torch.bool)
        for start, stop in columns:
            dense[start:stop] = False
        tables = [[lookup.embedding.weight.detach() @ w[start:stop] for w in w_ih] for lookup, (start, stop) in zip(lookups, columns)]
        return [w[dense] for w in w_ih], bias, _array(w_hh), tables

    w_ih, bias, w_hh, tables = _cached(lstm, f"_kernel_weights_l{layer}_{columns}", parameters, build)
    batch, max_len, _ = x.shape
    proj = _projected(x, w_ih, bias)
    for lookup, table in zip(lookups, tables):
        ids = lookup.ids.reshape(-1)
        for direction in range(2):
            proj[direction].view(batch * max_len, -1).add_(table[direction].index_select(0, ids))
    out = numpy.zeros((batch, max_len, 2 * lstm.hidden_size), numpy.float32)
    kernel(_array(proj), _array(lengths.to(torch.int64)), w_hh, out)
    return torch.from_numpy(out)
