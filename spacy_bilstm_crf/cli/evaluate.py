"""Evaluation report (the ``evaluate`` command)."""
from pathlib import Path

import spacy
import srsly
import typer
from spacy.language import Language
from wasabi import msg

from ..calibration import save_reliability_diagram
from ..evaluation import evaluate_docbin, render_displacy, render_report, require_seqeval
from ._util import app, fail


def load_pipeline(model: str, gpu_id: int) -> Language:
    """Load a pipeline from a directory or an installed package, or exit with an error.

    model (str): A pipeline directory or package name.
    gpu_id (int): GPU to use, or -1 for the CPU.
    RETURNS (Language): The loaded pipeline.
    """
    if not Path(model).exists() and not spacy.util.is_package(model):
        msg.fail(
            f"Model not found: {model}",
            "Pass a pipeline directory (e.g. training/model-best) or an installed package.",
            exits=1,
        )
    if gpu_id >= 0:
        try:
            spacy.require_gpu(gpu_id)
        except ValueError as err:  # thinc raises this when cupy or the GPU is missing
            msg.fail(f"Cannot use GPU {gpu_id}: {err}", exits=1)
        msg.info(f"Using GPU {gpu_id}")
    return spacy.load(model)


@app.command("evaluate")
def evaluate_cli(
    model: str = typer.Argument(..., help="Pipeline directory or installed package"),
    data_path: Path = typer.Argument(..., help="Gold data as a DocBin (.spacy)", dir_okay=False),
    output: Path = typer.Option(
        Path("metrics"),
        "--output",
        "-o",
        help="Directory for the JSON scores, markdown report and displaCy page",
        file_okay=False,
    ),
    displacy_limit: int = typer.Option(
        50, "--displacy-limit", help="Number of predicted docs on the displaCy page"
    ),
    gpu_id: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id, -1 for the CPU"),
    batch_size: int = typer.Option(256, "--batch-size", "-b", help="Docs per nlp.pipe batch"),
    calibration: bool = typer.Option(
        True,
        "--calibration/--no-calibration",
        help="Score entity confidence too (its calibration); off: the speed is that of plain prediction",
    ),
) -> None:
    """Score a pipeline's entities with spaCy and seqeval; write a report.

    Writes OUTPUT/STEM.json (spaCy's `ents_p`, `ents_r`, `ents_f` and
    `ents_per_type` as 0..1 floats, speed, counts), OUTPUT/STEM_report.md (the
    per-type table in CLUENER order next to the published BiLSTM-CRF F1, and
    seqeval's report) and OUTPUT/STEM_displacy.html, where STEM is the stem of
    DATA_PATH (dev.spacy → dev). Fails if spaCy's and seqeval's micro F1
    disagree.

    If the pipeline scores its entities (the bilstm_crf_ner component), the
    pass runs with confidence on (unless --no-calibration); the JSON and the
    report then include the calibration of the confidences (ECE, Brier score,
    reliability table) and, when matplotlib is installed,
    OUTPUT/STEM_reliability.png.

    Needs seqeval: `pip install "spacy-bilstm-crf[evaluate]"`.
    """
    try:
        require_seqeval()  # an optional extra: say so before loading anything
    except ImportError as err:
        fail("seqeval is not installed", str(err))  # unwrapped: the pip command stays on one line
    if not data_path.exists():
        msg.fail(f"Data file not found: {data_path}", exits=1)
    nlp = load_pipeline(model, gpu_id)
    msg.info(f"Evaluating {model} on {data_path}")
    try:
        result = evaluate_docbin(nlp, data_path, batch_size=batch_size, calibration=calibration)
    except ValueError as err:  # e.g. spaCy and seqeval disagree
        msg.fail("Evaluation failed", str(err), exits=1)
    output.mkdir(parents=True, exist_ok=True)
    stem = data_path.name.split(".")[0]
    paths = {
        "json": output / f"{stem}.json",
        "report": output / f"{stem}_report.md",
        "displacy": output / f"{stem}_displacy.html",
    }
    srsly.write_json(paths["json"], result.scores)
    image = None
    calibration = result.scores.get("calibration")
    if calibration is not None:
        title = f"{Path(model).name} on {data_path.name}"
        png = save_reliability_diagram(calibration["bins"], output / f"{stem}_reliability.png", title)
        if png is None:
            msg.info("matplotlib is not installed: no reliability diagram (pip install matplotlib)")
        else:
            paths["reliability"] = png
            image = png.name
    report = render_report(result, Path(model).name, data_path.name, reliability_image=image)
    paths["report"].write_text(report, encoding="utf8")
    page = render_displacy(result.predicted, displacy_limit)
    paths["displacy"].write_text(page, encoding="utf8")
    s = result.scores
    msg.good(
        f"P {100 * s['ents_p']:.2f}  R {100 * s['ents_r']:.2f}  F {100 * s['ents_f']:.2f} "
        f"(seqeval F {100 * result.seqeval_f1:.2f}) on {s['n_docs']} docs, "
        f"{s['chars_per_second']:.0f} chars/s"
    )
    if calibration is not None:
        ece, brier = calibration["ece"], calibration["brier"]
        msg.good(
            f"Confidence of {calibration['n_spans']} spans: "
            + ("no spans scored" if ece is None else f"ECE {ece:.4f}, Brier {brier:.4f}")
        )
    for path in paths.values():
        msg.text(f"Saved {path}")
