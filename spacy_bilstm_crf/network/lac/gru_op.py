"""LAC's BiGRU layer as one operator, ``spacy_bilstm_crf::paddle_bigru``, for the ONNX
export: torch.onnx translates it into one ONNX ``GRU`` (``serving/onnx_export.py``),
which ONNX Runtime runs as a fused kernel, where ``scan`` becomes an ONNX ``Scan``
that runs a dozen small operators per step.

The export traces the network with its fake (shape-only) implementation; the eager
one computes ``PaddleBiGRU.time_major`` (tests compare the two through the graph).
"""
import contextlib
import contextvars
from typing import Iterator

import torch
from torch import Tensor

# Set by ``onnx_layers``: the export for ONNX traces the layer as this operator.
_ONNX_LAYERS = contextvars.ContextVar("paddle_bigru_onnx_layers", default=False)


@contextlib.contextmanager
def onnx_layers() -> Iterator[None]:
    """Within: ``PaddleBiGRU.time_major_scan`` (the export branch) emits the operator."""
    token = _ONNX_LAYERS.set(True)
    try:
        yield
    finally:
        _ONNX_LAYERS.reset(token)


def onnx_layers_on() -> bool:
    return _ONNX_LAYERS.get()


@torch.library.custom_op("spacy_bilstm_crf::paddle_bigru", mutates_args=())
def paddle_bigru(
    x: Tensor, lengths: Tensor, in_weight: Tensor, in_bias: Tensor, gate_weight: Tensor, cand_weight: Tensor
) -> Tensor:
    """One Paddle BiGRU layer (see ``encoder.PaddleBiGRU``), time-major.

    x (Tensor): Float (seq_len, batch, input_dim); lengths (Tensor): Long (batch,), >= 1.
    RETURNS (Tensor): Float (seq_len, batch, 2H), zero past each sequence's length.
    """
    from .encoder import PaddleBiGRU

    hidden = cand_weight.shape[1]
    layer = PaddleBiGRU(x.shape[2], hidden)
    with torch.no_grad():
        for name, value in (("in_weight", in_weight), ("in_bias", in_bias),
                            ("gate_weight", gate_weight), ("cand_weight", cand_weight)):  # fmt: skip
            getattr(layer, name).copy_(value)
        out = layer.time_major(x, lengths)
    inside = torch.arange(x.shape[0])[:, None] < lengths[None, :]
    return out * inside[:, :, None].to(out.dtype)


@paddle_bigru.register_fake
def _(x: Tensor, lengths: Tensor, in_weight: Tensor, in_bias: Tensor, gate_weight: Tensor, cand_weight: Tensor) -> Tensor:
    return x.new_empty(x.shape[0], x.shape[1], 2 * cand_weight.shape[1])
