"""LAC's BiGRU layer in the ONNX export: one ONNX GRU (``lac/gru_op.py`` and its
translation in ``serving/onnx_export.py``) against the torch layer."""
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from spacy_bilstm_crf.network.lac.encoder import PaddleBiGRU
from spacy_bilstm_crf.network.lac.gru_op import onnx_layers, paddle_bigru

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


class _Layer(nn.Module):
    def __init__(self, layer: PaddleBiGRU) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.layer.time_major_scan(x, lengths)


def _layer(seed: int = 0) -> PaddleBiGRU:
    torch.manual_seed(seed)
    layer = PaddleBiGRU(6, hidden=5)
    for parameter in layer.parameters():
        nn.init.normal_(parameter, std=0.7)
    return layer


def test_the_operator_computes_the_layer():
    layer = _layer()
    x, lengths = torch.randn(7, 3, 6), torch.tensor([7, 2, 5])
    with torch.no_grad():
        expected = layer.time_major(x, lengths)
        got = paddle_bigru(x, lengths, layer.in_weight, layer.in_bias, layer.gate_weight, layer.cand_weight)
    inside = (torch.arange(7)[:, None] < lengths[None, :])[:, :, None]
    torch.testing.assert_close(got, expected * inside)


def test_onnx_gru_equals_the_layer():
    from spacy_bilstm_crf.serving.onnx_export import TRANSLATIONS

    layer = _layer(1)
    x, lengths = torch.randn(9, 2, 6), torch.tensor([9, 3])
    seq, batch = torch.export.Dim("seq", min=2), torch.export.Dim("batch", min=1)
    with torch.no_grad(), onnx_layers():
        program = torch.export.export(_Layer(layer), (x, lengths), dynamic_shapes=({0: seq, 1: batch}, {0: batch}))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(program, dynamo=True, optimize=True, custom_translation_table=TRANSLATIONS)
        path = Path(tmp) / "gru.onnx"
        onnx_program.save(path, external_data=False)
        ops = {node.op_type for node in onnx_program.model_proto.graph.node}
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert "GRU" in ops and "Scan" not in ops and "Loop" not in ops
    # Other lengths and batch sizes than the traced ones.
    for seq_len, lengths in ((9, torch.tensor([9, 3])), (12, torch.tensor([4, 12, 1]))):
        x = torch.randn(seq_len, len(lengths), 6)
        (got,) = session.run(None, {name.name: value.numpy() for name, value in zip(session.get_inputs(), (x, lengths))})
        with torch.no_grad():
            expected = layer.time_major(x, lengths)
        inside = (torch.arange(seq_len)[:, None] < lengths[None, :])[:, :, None]
        torch.testing.assert_close(torch.from_numpy(got), expected * inside, atol=1e-5, rtol=1e-5)
