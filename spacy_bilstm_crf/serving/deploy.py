"""Deployment: INT8 quantization of a trained pipeline, and an export for serving.

Both work on a loaded ``Language``; the ``quantize`` and ``export`` commands
(``cli/deploy.py``) wrap them. The export is served by ``serving/tagger.py``, which
needs torch only (and ``prediction/windows.py``). A float32 network is exported with
``torch.export`` (format version 2: code points → emissions, the Viterbi runs in
``serving/tagger.py``); an INT8 one as TorchScript (version 1), as torch.export cannot
take its dynamically quantized LSTM. TorchScript runs code of its own when it is
loaded, so a version 1 export loads only where the caller says it trusts it.
"""
import copy
import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from spacy.language import Language

from . import tagger as serving
from ..about import __version__
from ..component.architectures import build_torch_layer, get_torch_module
from ..pipe import BiLSTMCRFNER
from .quantize import is_quantized, quantize_module

# Checked after an export: the exported tagger must find the pipeline's entities.
SELF_CHECK_TEXTS = [
    "马云在阿里巴巴杭州总部发表演讲",
    "",
    "  Apple公司CEO Tim Cook 2024年访问北京 ",
    "😀张伟\u3000担任华为公司\n\n总经理🇨🇳",
]


def find_pipe(nlp: Language, name: Optional[str] = None) -> BiLSTMCRFNER:
    """The pipeline's ``bilstm_crf_ner`` component (by name, or the only one).

    RAISES (ValueError): No such component, or several and no name given.
    """
    if name is not None:
        pipe = nlp.get_pipe(name)
        if not isinstance(pipe, BiLSTMCRFNER):
            raise ValueError(
                f"Component '{name}' is a {type(pipe).__name__}, not a bilstm_crf_ner."
            )
        return pipe
    found = [(n, p) for n, p in nlp.pipeline if isinstance(p, BiLSTMCRFNER)]
    if len(found) != 1:
        names = [n for n, _ in found]
        raise ValueError(
            f"Expected one bilstm_crf_ner component, found {len(found)} {names}: pass its name."
        )
    return found[0][1]


def quantize_pipeline(nlp: Language, name: Optional[str] = None) -> BiLSTMCRFNER:
    """Turn the pipeline's BiLSTM-CRF into its INT8 version, in place.

    The torch module is replaced by a quantized copy and the component's config
    gets ``quantize_int8 = true``, so ``nlp.to_disk`` writes int8 weights and
    ``spacy.load`` rebuilds the quantized module before loading them.

    nlp (Language): A pipeline with a trained ``bilstm_crf_ner``, on the CPU.
    name (Optional[str]): The component's name, if there are several.
    RETURNS (BiLSTMCRFNER): The quantized component.
    """
    pipe = find_pipe(nlp, name)
    module = get_torch_module(pipe.model)
    if is_quantized(module):
        raise ValueError(f"'{pipe.name}' is already quantized.")
    state = quantize_module(module).state_dict()
    pipe.model.attrs["quantize_int8"] = True
    # Mixed precision is a GPU training setting; the INT8 model is CPU-only.
    pipe.model.attrs["mixed_precision"] = False
    build_torch_layer(pipe.model, pipe.scheme, *pipe.table_sizes)
    get_torch_module(pipe.model).load_state_dict(state)
    model_config = nlp.get_pipe_config(pipe.name)["model"]  # the live config nlp.to_disk writes
    model_config["quantize_int8"] = True
    model_config["mixed_precision"] = False
    return pipe


def bf16_pipeline(nlp: Language, name: Optional[str] = None) -> BiLSTMCRFNER:
    """Switch the pipeline's BiLSTM-CRF to bfloat16 inference, in place.

    The recurrences (LSTM, LAC) of CPU predictions then run in bfloat16; the weights
    are unchanged and stay float32. The component's config gets
    ``bf16_inference = true``, so ``nlp.to_disk`` writes a pipeline that loads so.

    nlp (Language): A pipeline with a trained, float32 ``bilstm_crf_ner``.
    name (Optional[str]): The component's name, if there are several.
    RETURNS (BiLSTMCRFNER): The component.
    """
    pipe = find_pipe(nlp, name)
    module = get_torch_module(pipe.model)
    if is_quantized(module):
        raise ValueError(f"'{pipe.name}' is INT8: bfloat16 inference takes a float32 pipeline.")
    pipe.model.attrs["bf16_inference"] = True
    module.bf16_inference = True
    nlp.get_pipe_config(pipe.name)["model"]["bf16_inference"] = True  # the config nlp.to_disk writes
    return pipe


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX or AVX-512 BF16), as oneDNN
    reports it. Elsewhere bfloat16 products are emulated: on an AVX2 CPU the default
    network's ``nlp.pipe`` ran 20x slower in bfloat16 than in float32. True when torch
    cannot tell (no warning then)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def script_module(module: torch.nn.Module) -> torch.jit.ScriptModule:
    """The network as TorchScript, in eval mode: ``(codepoints, lengths) → tags``.

    Scripted, not traced: tracing would freeze the LSTM's, the CRF's and the
    lexicon's loops over time steps at the length of the example input. Format
    version 1 (``export_pipeline(version=1)``), and the INT8 networks' export.
    """
    # No mode switch needed: the module's predictions never depend on its mode.
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export (format version 2), which
        # cannot take the INT8 LSTM; TorchScript still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


class _Emissions(torch.nn.Module):
    """The network's ``emissions`` as a ``forward``, the function ``torch.export`` traces."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, codepoints: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.network.emissions(codepoints, lengths)


def min_width(module: torch.nn.Module) -> int:
    """The exported program's smallest input width: the window loops of the lexicon
    and the gazetteer run ``max_len`` steps, and each must keep at least two starts (a
    dimension of size 1 would be specialized), so widths start at ``max_len + 1``; at
    least ``serving.MIN_WIDTH``."""
    widths = [serving.MIN_WIDTH]
    lexicon = getattr(module, "lexicon", None)
    if lexicon is not None:
        widths.append(lexicon.max_len + 1)
    gazetteer = getattr(module, "gazetteer", None)
    if gazetteer is not None:
        widths.append(gazetteer.matcher.max_len + 1)
    return max(widths)


def export_module(module: torch.nn.Module) -> torch.export.ExportedProgram:
    """The network's emissions as a ``torch.export`` program: ``(codepoints, lengths) →
    emissions``, any batch size and any width from :func:`min_width` (CPU, float32).

    The network takes its export branches under ``torch.compiler.is_exporting()``:
    each LSTM direction as one ``aten.mkldnn_rnn_layer`` over the padded batch
    (``recurrence.padded_bilstm``), LAC's BiGRU inside ``scan``, the lexicon searched
    window by window.

    RAISES (NotImplementedError): The network cannot be exported (an INT8 LSTM).
    """
    if is_quantized(module):
        raise NotImplementedError("torch.export cannot take the INT8 (dynamically quantized) LSTM")
    if getattr(module, "vector_dim", 0):
        raise NotImplementedError("The network reads an upstream encoder's vectors: it cannot be exported alone.")
    width = min_width(module)
    generator = torch.Generator().manual_seed(0)
    codepoints = torch.randint(0x4E00, 0x9FA5, (3, width + 2), generator=generator)
    lengths = torch.tensor([width + 2, width, 1])
    batch = torch.export.Dim("batch", min=1)
    seq = torch.export.Dim("width", min=width)
    shapes = {"codepoints": {0: batch, 1: seq}, "lengths": {0: batch}}
    with torch.no_grad():
        return torch.export.export(_Emissions(module), (codepoints, lengths), dynamic_shapes=shapes)


def export_pipeline(
    nlp: Language,
    output_dir: Union[str, Path],
    name: Optional[str] = None,
    version: Optional[int] = None,
) -> Path:
    """Write the network, its labels and tags, for ``serving.Tagger``.

    Format version 2 (float32 networks): ``model.pt2``, the emissions as a
    ``torch.export`` program; ``crf.pt``, the CRF's masked scores for the Viterbi
    in ``serving/tagger.py``. Version 1 (INT8 networks, which torch.export cannot take):
    ``model.pt``, the whole network as TorchScript, which ``Tagger.load`` reads
    only with ``trust_torchscript=True`` (TorchScript holds code that runs on
    load). Both with ``tagger.json``: the labels, tags and scheme, the
    pipeline's window settings, and the SHA-256 of every file and of itself.

    nlp (Language): A ``zh`` pipeline (character segmenter) with a trained
        ``bilstm_crf_ner``, float32 or INT8.
    output_dir (Union[str, Path]): Where the files go (created).
    name (Optional[str]): The component's name, if there are several.
    version (Optional[int]): The format: 2, 1 (TorchScript, deprecated), or None:
        2 where the network allows it, else 1.
    RETURNS (Path): The output directory.
    """
    pipe = find_pipe(nlp, name)
    check_tokenizer(nlp)
    module = get_torch_module(pipe.model)
    if next(module.parameters()).device.type != "cpu":
        # Export a CPU copy (``.cpu()`` alone would move the live pipeline's module);
        # Tagger.load(device=...) puts a version 1 export where it runs.
        module = copy.deepcopy(module).cpu()
    if version is None:
        version = serving.TORCHSCRIPT_VERSION if is_quantized(module) else serving.FORMAT_VERSION
    if version not in (serving.FORMAT_VERSION, serving.TORCHSCRIPT_VERSION):
        raise ValueError(f"Unknown export format version {version}: 1 or 2.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    fmt = serving.FORMAT if version == serving.FORMAT_VERSION else serving.TORCHSCRIPT_FORMAT
    meta = export_meta(pipe, fmt, version, is_quantized(module))
    files: Dict[str, bytes] = {}
    if version == serving.FORMAT_VERSION:
        files[serving.PROGRAM_FILE] = _saved(lambda f: torch.export.save(export_module(module), f))
        trans, start, end = module.crf.masked_scores(float("-inf"))
        scores = {"transitions": trans.contiguous(), "start": start.contiguous(), "end": end.contiguous()}
        files[serving.CRF_FILE] = _saved(lambda f: torch.save(scores, f))
        meta["min_width"] = min_width(module)
    else:
        scripted = script_module(module)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            files[serving.MODEL_FILE] = _saved(lambda f: torch.jit.save(scripted, f))
    # Another format's files from an earlier export go.
    write_export(output_dir, files, meta, stale=(serving.PROGRAM_FILE, serving.CRF_FILE, serving.MODEL_FILE))
    return output_dir


def export_meta(pipe: BiLSTMCRFNER, fmt: str, version: int, quantized: bool) -> Dict[str, Any]:
    """The ``tagger.json`` of an export of the component, before its checksums.

    pipe (BiLSTMCRFNER): The component.
    fmt (str): The export's format name.
    version (int): Its format version.
    quantized (bool): Whether its weights are INT8.
    RETURNS (Dict[str, Any]): Labels, tags, the pipeline's windows and the versions.
    """
    return {
        "format": fmt,
        "version": version,
        "labels": list(pipe.labels),
        "scheme": pipe.scheme.scheme,
        "tags": pipe.scheme.tags,
        "quantized": quantized,
        # The pipeline's windows: the tagger cuts long texts where the pipeline does.
        "window_size": pipe.window_size,
        "window_overlap": pipe.window_overlap,
        "batch_chars": pipe.batch_chars,
        "tokenizer": "spacy.zh.ChineseTokenizer (segmenter = char)",
        "component": pipe.name,
        "spacy_bilstm_crf_version": __version__,
        "torch_version": torch.__version__,
    }


def write_export(output_dir: Path, files: Dict[str, bytes], meta: Dict[str, Any], stale: Sequence[str] = ()) -> None:
    """Write an export's files, then its ``tagger.json`` with their checksums.

    Every file is checked against its SHA-256 before a tagger reads it, and
    ``tagger.json`` against its own; it is written last: a directory without it is
    not an export.

    output_dir (Path): The export directory (existing).
    files (Dict[str, bytes]): File name → content.
    meta (Dict[str, Any]): ``tagger.json`` without checksums (changed in place).
    stale (Sequence[str]): Files of other formats to remove when not in ``files``.
    """
    meta[serving.FILE_CHECKSUMS_KEY] = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    meta[serving.CHECKSUM_KEY] = serving.meta_checksum(meta)
    (output_dir / serving.META_FILE).unlink(missing_ok=True)  # no stale tagger.json beside new files
    for file_name in stale:
        if file_name not in files:
            (output_dir / file_name).unlink(missing_ok=True)
    for file_name, data in files.items():
        (output_dir / file_name).write_bytes(data)
    (output_dir / serving.META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf8")


def _saved(save: Callable[[io.BytesIO], None]) -> bytes:
    """RETURNS (bytes): What ``save`` writes: the bytes that are checksummed are the
    bytes written."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


def check_tokenizer(nlp: Language) -> None:
    """The serving loader re-implements spaCy's Chinese character segmentation only.

    RAISES (ValueError): The pipeline tokenizes otherwise.
    """
    segmenter = getattr(nlp.tokenizer, "segmenter", None)
    if nlp.lang != "zh" or str(getattr(segmenter, "value", segmenter)) != "char":
        raise ValueError(
            f"Only pipelines with spaCy's Chinese character tokenizer (lang 'zh', segmenter "
            f"'char') can be exported: this one has lang '{nlp.lang}', segmenter {segmenter!r}."
        )


def pipeline_entities(
    nlp: Language, texts: Sequence[str], batch_size: int = 256
) -> List[List[tuple]]:
    """The entities the spaCy pipeline finds, as ``(start_char, end_char, label)``."""
    return [
        [(e.start_char, e.end_char, e.label_) for e in doc.ents]
        for doc in nlp.pipe(texts, batch_size=batch_size)
    ]


def compare_with_pipeline(
    nlp: Language, tagger: "serving.Tagger", texts: Sequence[str], batch_size: int = 256
) -> Dict[str, object]:
    """Where the exported tagger and the pipeline disagree.

    RETURNS (Dict[str, object]): ``n_texts``, ``n_different`` and the first few
        ``differences`` (text, pipeline entities, exported entities).
    """
    expected = pipeline_entities(nlp, texts, batch_size)
    actual = list(tagger.pipe(texts, batch_size=batch_size))
    diffs = [(t, e, a) for t, e, a in zip(texts, expected, actual) if e != a]
    return {"n_texts": len(texts), "n_different": len(diffs), "differences": diffs[:5]}
