"""Export for ONNX Runtime: the network as numpy features and one ONNX graph.

The network is split where its table lookups end (``onnx_features.py`` says why):
``features.npz`` holds the tables that ``onnx_features.py`` computes the features
from, in numpy; ``model.onnx`` is ``onnx_graph.FeatureEmissions`` (features →
emissions), traced with ``torch.export`` and converted with
``torch.onnx.export(..., dynamo=True)``. Two of its operators have no ONNX translation
in torch's library, so they get their own here (``TRANSLATIONS``):

- ``aten.mkldnn_rnn_layer`` (each direction of the LSTM, ``recurrence.padded_bilstm``):
  one ONNX ``LSTM`` (gates reordered from torch's ifgo to ONNX's iofc).
- ``spacy_bilstm_crf::paddle_bigru``: LAC's BiGRU layers, traced as one operator each
  (``lac/gru_op.py``), each translated into one ONNX ``GRU`` (``_paddle_bigru``),
  which ONNX Runtime runs as a fused kernel.

The CRF's masked scores go to ``crf.json``; the features, the Viterbi, the windows and
the tokenization run in ``serving/onnx_tagger.py`` and ``onnx_features.py`` (numpy and
onnxruntime only), copied next to the export with ``prediction/windows.py`` as
``windows.py``.

This module needs ``onnx``, ``onnxscript`` and ``onnxruntime`` (the ``onnx`` extra).
"""
import contextlib
import copy
import io
import json
import logging
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch
from spacy.language import Language

from . import onnx_tagger
from ..component.architectures import get_torch_module
from ..network.lac.gru_op import onnx_layers
from .deploy import check_tokenizer, export_meta, find_pipe, write_export
from .onnx_features import MIN_PLACES, load_tables
from .onnx_graph import MIN_WIDTH, FeatureEmissions, example_inputs, feature_tables
from .quantize import is_quantized

# torch's exporter records each translation's ONNX ops through this opset.
OPSET = 18


def _mkldnn_rnn_layer(
    input: Any,
    weight0: Any,
    weight1: Any,
    weight2: Any,
    weight3: Any,
    hx_: Any,
    cx_: Any,
    reverse: bool,
    batch_sizes: Any,
    mode: int,
    hidden_size: int,
    num_layers: int,
    has_biases: bool,
    bidirectional: bool,
    batch_first: bool,
    train: bool,
) -> Any:
    """``aten.mkldnn_rnn_layer`` (one LSTM direction, time-major, as
    ``recurrence.padded_bilstm`` calls it) as an ONNX ``LSTM``."""
    from onnxscript import opset18 as op

    if mode != 2 or bidirectional or batch_first or not has_biases or reverse:
        raise NotImplementedError("mkldnn_rnn_layer: only a forward, time-major LSTM with biases")

    def iofc(weight: Any) -> Any:
        # torch stacks the gates i, f, g (cell), o; ONNX i, o, f, c.
        i, f, g, o = (op.Slice(weight, [k * hidden_size], [(k + 1) * hidden_size], [0]) for k in range(4))
        return op.Concat(i, o, f, g, axis=0)

    w = op.Unsqueeze(iofc(weight0), [0])
    r = op.Unsqueeze(iofc(weight1), [0])
    b = op.Unsqueeze(op.Concat(iofc(weight2), iofc(weight3), axis=0), [0])
    y, y_h, y_c = op.LSTM(input, w, r, b, None, hx_, cx_, hidden_size=hidden_size, direction="forward")
    return op.Squeeze(y, [1]), y_h, y_c, y_c


def _paddle_bigru(x: Any, lengths: Any, in_weight: Any, in_bias: Any, gate_weight: Any, cand_weight: Any) -> Any:
    """``spacy_bilstm_crf::paddle_bigru`` (LAC's BiGRU layer, ``lac/gru_op.py``) as one
    bidirectional ONNX ``GRU`` with ``linear_before_reset = 0`` (the reset gate applied
    to the state before the recurrent product, as in Paddle's cell).

    ONNX's update gate keeps the old state (``h = (1 - z) c + z h``), Paddle's takes the
    candidate (``h = (1 - u) h + u c``): ``z = 1 - u = σ(-a)``, so the update gate's
    weights and bias enter negated. Gates: Paddle [update, reset, candidate] in columns
    of (input, 3H) matrices; ONNX [z, r, h] in rows of (3H, input) ones.
    """
    from onnxscript import opset18 as op

    hidden = cand_weight.shape[-1]
    if not isinstance(hidden, int):
        raise NotImplementedError("paddle_bigru: the state width must be static")
    sign = op.Constant(value_floats=[-1.0] * hidden + [1.0] * (2 * hidden))  # (3H,)
    w = op.Mul(op.Transpose(in_weight, perm=[0, 2, 1]), op.Unsqueeze(sign, [1]))  # (2, 3H, input)
    recurrent = op.Concat(gate_weight, cand_weight, axis=2)  # (2, H, 3H)
    r = op.Mul(op.Transpose(recurrent, perm=[0, 2, 1]), op.Unsqueeze(sign, [1]))  # (2, 3H, H)
    b = op.Concat(op.Mul(in_bias, sign), op.Mul(in_bias, op.Constant(value_float=0.0)), axis=1)  # (2, 6H)
    y, _ = op.GRU(
        x, w, r, b, op.Cast(lengths, to=6), None,
        hidden_size=hidden, direction="bidirectional", linear_before_reset=0,
    )  # fmt: skip
    # (seq_len, 2, batch, H) → (seq_len, batch, 2H): forward states, then reverse ones.
    return op.Reshape(op.Transpose(y, perm=[0, 2, 1, 3]), op.Constant(value_ints=[0, 0, -1]))


TRANSLATIONS: Dict[Callable, Callable] = {
    torch.ops.aten.mkldnn_rnn_layer.default: _mkldnn_rnn_layer,
    torch.ops.spacy_bilstm_crf.paddle_bigru.default: _paddle_bigru,
}


def onnx_graph(module: torch.nn.Module, tables: bytes) -> bytes:
    """The network's features → emissions as a serialized ONNX model
    (``onnx_graph.FeatureEmissions``; inputs ``onnx_features.INPUT_NAMES``), dynamic
    batch, width and numbers of places, weights inside the file (no external data).

    tables (bytes): The network's ``features.npz`` (``onnx_graph.feature_tables``).
    RAISES (NotImplementedError): The network cannot be exported.
    """
    graph = FeatureEmissions(module)
    example = example_inputs(load_tables(tables), width=9)
    batch = torch.export.Dim("batch", min=1)
    width = torch.export.Dim("width", min=MIN_WIDTH)
    places = {"place": torch.export.Dim("places", min=MIN_PLACES), "vector": torch.export.Dim("vector_places", min=MIN_PLACES)}
    shapes: Dict[str, Dict[int, Any]] = {}
    for name, tensor in example.items():
        prefix = name.split("_")[0]
        shapes[name] = {0: places[prefix]} if prefix in places else {0: batch, 1: width}
    shapes["lengths"] = {0: batch}
    with onnx_layers(), torch.no_grad():  # LAC's layers as ONNX GRUs, not scan (see ``lac/gru_op.py``)
        program = torch.export.export(graph, tuple(example.values()), dynamic_shapes=shapes)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            program, dynamo=True, optimize=True, verbose=False, custom_translation_table=TRANSLATIONS
        )
        path = Path(tmp) / "model.onnx"
        onnx_program.save(path, external_data=False)
        return path.read_bytes()


def quantize_graph(graph: bytes) -> bytes:
    """The graph with INT8 weights: ONNX Runtime's dynamic quantization (the LSTMs as
    ``DynamicQuantizeLSTM``, the matrix products as ``MatMulInteger``), activations
    quantized per batch at run time. LAC's GRUs stay float32: ONNX Runtime has no
    quantized GRU. RETURNS (bytes): The quantized model.

    ONNX Runtime's own pre-processing runs first: it folds the gate reordering of the
    LSTMs' weights (``_mkldnn_rnn_layer``) into constants, without which the quantizer
    finds no weights to quantize in them.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        source, folded, target = (Path(tmp) / name for name in ("model.onnx", "folded.onnx", "model.int8.onnx"))
        source.write_bytes(graph)
        # The quantizer logs a warning on the root logger for each integer tensor it skips.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                quant_pre_process(source, folded, skip_symbolic_shape=True)
                quantize_dynamic(folded, target, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        return target.read_bytes()


def crf_json(module: torch.nn.Module) -> bytes:
    """The CRF's masked (transitions, start, end) scores as JSON, ``null`` where banned
    (JSON has no infinity)."""
    with torch.no_grad():
        trans, start, end = module.crf.masked_scores(float("-inf"))

    def listed(scores: torch.Tensor) -> Any:
        return [listed(row) for row in scores] if scores.dim() > 1 else [
            None if math.isinf(x) else x for x in scores.float().tolist()
        ]

    scores = {"transitions": listed(trans), "start": listed(start), "end": listed(end)}
    return json.dumps(scores).encode("utf8")


def export_onnx(
    nlp: Language, output_dir: Union[str, Path], name: Optional[str] = None, int8: bool = False
) -> Path:
    """Write the network as ONNX, for ``onnx_tagger.OnnxTagger`` (onnxruntime and numpy).

    Files: ``model.onnx`` (code points → emissions), ``crf.json`` (the CRF's masked
    scores), ``onnx_tagger.py`` and ``windows.py`` (the code that serves it, so the
    directory works without the package), and ``tagger.json``: labels, tags, scheme,
    the pipeline's window settings and the SHA-256 of every file and of itself.

    nlp (Language): A ``zh`` pipeline (character segmenter) with a trained, float32
        ``bilstm_crf_ner``.
    output_dir (Union[str, Path]): Where the files go (created).
    name (Optional[str]): The component's name, if there are several.
    int8 (bool): Quantize the graph's weights to INT8 (ONNX Runtime's dynamic quantization).
    RETURNS (Path): The output directory.
    RAISES (ValueError): Not a pipeline this export can take (tokenizer, INT8 torch network).
    """
    pipe = find_pipe(nlp, name)
    check_tokenizer(nlp)
    module = get_torch_module(pipe.model)
    if is_quantized(module):
        raise ValueError(
            "The pipeline's network is already INT8 (torch): export the float32 pipeline with --onnx --int8."
        )
    if next(module.parameters()).device.type != "cpu":
        module = copy.deepcopy(module).cpu()  # the live pipeline's module stays where it is
    tables = feature_tables(module)
    try:
        graph = onnx_graph(module, tables)
    except NotImplementedError as err:
        raise ValueError(str(err)) from None
    if int8:
        graph = quantize_graph(graph)
    package = Path(__file__).resolve().parents[1]
    code = {
        "onnx_tagger.py": Path(onnx_tagger.__file__),
        "export_format.py": package / "serving" / "export_format.py",
        "windows.py": package / "prediction" / "windows.py",
        "onnx_features.py": package / "serving" / "onnx_features.py",
    }
    files: Dict[str, bytes] = {
        onnx_tagger.GRAPH_FILE: graph,
        onnx_tagger.CRF_FILE: crf_json(module),
        onnx_tagger.TABLES_FILE: tables,
        **{name: code[name].read_bytes() for name in onnx_tagger.CODE_FILES},
    }
    meta = export_meta(pipe, onnx_tagger.FORMAT, onnx_tagger.FORMAT_VERSION, int8)
    meta["min_width"] = MIN_WIDTH
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_export(output_dir, files, meta)
    return output_dir
