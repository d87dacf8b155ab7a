"""Deployment commands: ``quantize`` (an INT8 or bfloat16 pipeline) and ``export`` (for serving with torch only).

torch, spaCy and the modules that import them are imported inside the commands, so
that listing the commands (``--help``) does not load them.
"""
from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from ._util import COMMAND, app, fail


def directory_size(path: Path) -> int:
    """RETURNS (int): The total size in bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


@app.command("quantize")
def quantize_cli(
    # fmt: off
    input_path: str = typer.Argument(..., help="Trained pipeline directory or installed package"),
    output_dir: Path = typer.Argument(..., help="Where the reduced-precision pipeline is written", file_okay=False),
    component: Optional[str] = typer.Option(None, "--component", "-c", help="Name of the bilstm_crf_ner component, if there are several"),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 inference instead of INT8 (faster on CPUs with AMX, e.g. Intel Sapphire Rapids)"),
    # fmt: on
) -> None:
    """Write a reduced-precision copy of a trained pipeline (CPU inference).

    INT8 (the default): the LSTM and the output layer are dynamically quantized
    (int8 weights on disk); the embeddings and the CRF stay float32, and the
    copy's config has `quantize_int8 = true`. With --bf16: the weights stay
    float32 and the copy's config has `bf16_inference = true`, which runs the
    recurrences in bfloat16 (on CPUs without bfloat16 units it may be slower
    than float32). Either way `spacy.load(OUTPUT_DIR)` loads it as is.
    """
    from ..serving.deploy import bf16_pipeline, cpu_has_bf16, quantize_pipeline
    from .evaluate import load_pipeline

    nlp = load_pipeline(input_path, gpu_id=-1)
    kind = "bfloat16" if bf16 else "INT8"
    try:
        pipe = bf16_pipeline(nlp, component) if bf16 else quantize_pipeline(nlp, component)
    except ValueError as err:
        fail(f"Cannot write a {kind} pipeline", str(err))
    nlp.to_disk(output_dir)
    before = directory_size(Path(input_path)) if Path(input_path).is_dir() else None
    after = directory_size(output_dir)
    sizes = f"{after / 1e6:.1f} MB" + (f" (was {before / 1e6:.1f} MB)" if before else "")
    msg.good(f"Saved the {kind} pipeline ('{pipe.name}') to {output_dir}: {sizes}")
    if bf16 and not cpu_has_bf16():
        msg.warn(
            "This CPU has no bfloat16 units (AMX or AVX-512 BF16): here bfloat16 inference is "
            "emulated and many times slower than float32 (20x measured on an AVX2 CPU). "
            "Use the pipeline on a CPU with them, or the float32 or INT8 one."
        )


@app.command("export")
def export_cli(
    # fmt: off
    input_path: str = typer.Argument(..., help="Trained pipeline directory or installed package (float32 or INT8)"),
    output_dir: Path = typer.Argument(..., help="Where the exported network and tagger.json are written", file_okay=False),
    component: Optional[str] = typer.Option(None, "--component", "-c", help="Name of the bilstm_crf_ner component, if there are several"),
    int8: bool = typer.Option(False, "--int8", help="Quantize (INT8, CPU only) before exporting"),
    torchscript: bool = typer.Option(False, "--torchscript", help="Write TorchScript (format 1; torch.jit is deprecated, but its single-text calls are faster)"),
    onnx: bool = typer.Option(False, "--onnx", help="Write an ONNX graph, served with onnxruntime and numpy only (needs the onnx extra); with --int8, ONNX Runtime's INT8 quantization"),
    # fmt: on
) -> None:
    """Export the network, for serving without spaCy.

    A float32 network (code points → emissions) is written with torch.export as
    OUTPUT_DIR/model.pt2, with the CRF's scores for the Viterbi in crf.pt; an INT8
    one (code points → tags) as TorchScript, OUTPUT_DIR/model.pt, as is any with
    --torchscript. Its labels, tags and scheme, the pipeline's window settings and
    the SHA-256 of every file go to tagger.json. Load it with
    `spacy_bilstm_crf.serving.Tagger.load(OUTPUT_DIR)` (serving/tagger.py, serving/export_format.py and
    prediction/windows.py also work as copies on their own) and call the tagger on a text. A TorchScript
    export holds code that runs when it is loaded: it loads only with
    `Tagger.load(OUTPUT_DIR, trust_torchscript=True)`. With --onnx, the network
    (input features → emissions) is written as OUTPUT_DIR/model.onnx, the tables its
    features are computed from as features.npz, the CRF's scores as crf.json, with
    onnx_tagger.py, onnx_features.py, export_format.py and windows.py to serve it
    (`OnnxTagger.load(OUTPUT_DIR)`: onnxruntime and numpy only); --onnx --int8
    quantizes the graph with ONNX Runtime. The export is checked against the
    pipeline on a few texts.
    """
    if onnx:
        if torchscript:
            fail("Cannot export the pipeline", "--onnx and --torchscript are two formats: pass one.")
        export_onnx_cli(input_path, output_dir, component, int8)
        return
    from ..serving import tagger as serving
    from ..serving.deploy import SELF_CHECK_TEXTS, compare_with_pipeline, export_pipeline, quantize_pipeline
    from .evaluate import load_pipeline

    nlp = load_pipeline(input_path, gpu_id=-1)
    try:
        if int8:
            quantize_pipeline(nlp, component)
        export_pipeline(nlp, output_dir, component, version=serving.TORCHSCRIPT_VERSION if torchscript else None)
    except (ValueError, RuntimeError) as err:
        fail("Cannot export the pipeline", str(err))
    try:
        # The directory was written just now, by this process: its TorchScript is ours.
        tagger = serving.Tagger.load(output_dir, trust_torchscript=True)
    except ValueError as err:  # e.g. a graph operator the loader does not allow (yet)
        fail("The export was written but cannot be loaded", str(err))
    check = compare_with_pipeline(nlp, tagger, SELF_CHECK_TEXTS)
    if check["n_different"]:
        fail("The export disagrees with the pipeline", repr(check["differences"]))
    trust = ", trust_torchscript=True" if tagger.version == serving.TORCHSCRIPT_VERSION else ""
    msg.good(
        f"Exported to {output_dir} ({directory_size(output_dir) / 1e6:.1f} MB); "
        f"serve with {serving.__name__}.Tagger.load('{output_dir}'{trust})"
    )
    if trust:
        msg.warn(
            "This export is TorchScript (format version 1): loading it runs the code it holds. "
            "Load it only where you trust the directory as you would trust code."
        )
    msg.text(f"See also: {COMMAND} quantize, for an INT8 spaCy pipeline.")


def export_onnx_cli(input_path: str, output_dir: Path, component: Optional[str], int8: bool) -> None:
    """``export --onnx [--int8]``: write the ONNX export and check it against the pipeline."""
    try:
        from ..serving.onnx_export import export_onnx
        from ..serving.onnx_tagger import ExportError, OnnxTagger
    except ImportError as err:
        fail("Cannot export to ONNX", f"{err}: install the onnx extra (pip install 'spacy-bilstm-crf[onnx]').")
    from ..serving.deploy import SELF_CHECK_TEXTS, compare_with_pipeline
    from .evaluate import load_pipeline

    nlp = load_pipeline(input_path, gpu_id=-1)
    try:
        export_onnx(nlp, output_dir, component, int8=int8)
    except (ValueError, RuntimeError) as err:
        fail("Cannot export the pipeline to ONNX", str(err))
    try:
        tagger = OnnxTagger.load(output_dir)
    except ExportError as err:
        fail("The export was written but cannot be loaded", str(err))
    check = compare_with_pipeline(nlp, tagger, SELF_CHECK_TEXTS)
    if check["n_different"]:
        if not int8:
            fail("The export disagrees with the pipeline", repr(check["differences"]))
        # INT8 weights may move an entity: said, not refused.
        msg.warn(f"The INT8 export finds other entities than the pipeline in {check['n_different']} check texts.")
    kind = "INT8 ONNX" if int8 else "ONNX"
    msg.good(
        f"Exported ({kind}) to {output_dir} ({directory_size(output_dir) / 1e6:.1f} MB); serve with "
        f"onnx_tagger.OnnxTagger.load('{output_dir}') (onnx_tagger.py is in the directory)"
    )
