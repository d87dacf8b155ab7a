"""Evaluation report (the ``evaluate`` command), and loading a pipeline for the CLI."""
import json
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
from wasabi import msg

from ._util import app, fail

if TYPE_CHECKING:  # spaCy is imported when a command runs, not for --help
    from spacy.language import Language

# The JSON files of a saved pipeline that spaCy and the components read (a
# component's ``cfg`` is JSON too). When loading fails with a bare JSON error
# ("Expected object or value"), these are checked to name the broken file.
JSON_FILES = ("meta.json", "vocab/strings.json", "vocab/vectors.cfg", "*/cfg")


def load_pipeline(model: str, gpu_id: int) -> "Language":
    """Load a pipeline from a directory or an installed package, or exit with an error.

    A path that is not a pipeline directory, and a pipeline that cannot be
    loaded (a weights file that fails its checksum, a missing file, a cfg or
    meta.json that is not valid JSON, a config.cfg that does not parse) end the
    command with a message naming the path and what is wrong, not a traceback.

    model (str): A pipeline directory or package name.
    gpu_id (int): GPU to use, or -1 for the CPU.
    RETURNS (Language): The loaded pipeline.
    """
    import spacy

    path = Path(model)
    if not path.exists() and not spacy.util.is_package(model):
        msg.fail(
            f"Model not found: {model}",
            "Pass a pipeline directory (e.g. training/model-best) or an installed package.",
            exits=1,
        )
    if path.exists():
        check_pipeline_dir(path)
    if gpu_id >= 0:
        try:
            spacy.require_gpu(gpu_id)
        except ValueError as err:  # thinc raises this when cupy or the GPU is missing
            msg.fail(f"Cannot use GPU {gpu_id}: {err}", exits=1)
        msg.info(f"Using GPU {gpu_id}")
    try:
        return spacy.load(model)
    except Exception as err:  # noqa: BLE001 - whatever a damaged pipeline raises, say it without a traceback
        # The path goes in the detail: wasabi wraps a long title across lines.
        fail("Cannot load the pipeline", f"{model}: {describe_load_error(path, err)}")


def check_pipeline_dir(path: Path) -> None:
    """Exit with an error if ``path`` is not a saved spaCy pipeline directory.

    spaCy's own errors for these cases name a config file, not the mistake.

    path (Path): An existing path.
    """
    if not path.is_dir():
        fail(
            "Not a pipeline directory",
            f"{path} is a file. Pass the directory that nlp.to_disk() or spacy train wrote "
            "(e.g. training/model-best).",
        )
    if not (path / "config.cfg").is_file():
        fail(
            "Not a pipeline directory",
            f"{path} has no config.cfg. Pass the directory that nlp.to_disk() or spacy train "
            "wrote (e.g. training/model-best), or save the pipeline again.",
        )


def describe_load_error(path: Path, err: Exception) -> str:
    """What went wrong when loading a pipeline, naming the file where it can be found.

    path (Path): The pipeline directory (or a package name as a path).
    err (Exception): The error that ``spacy.load`` raised.
    RETURNS (str): The error's text (with its type when that is not a plain
        ValueError or OSError), and the JSON files of the directory that do not parse.
    """
    text = str(err).strip() or "(no message)"
    if type(err) not in (ValueError, OSError):  # e.g. FileNotFoundError, ConfigValidationError
        text = f"{type(err).__name__}: {text}"
    broken = (config_problems(path) + invalid_json_files(path)) if path.is_dir() else []
    if broken:
        text += "\n" + "\n".join(broken)
    if "retrain" not in text:  # the component's own errors already say what to do
        text += "\nThe pipeline may be damaged: save it again from its original, or retrain it."
    return text


def config_problems(path: Path) -> List[str]:
    """Whether a pipeline's config.cfg parses; spaCy's error names no file ("file: '<string>'").

    path (Path): The pipeline directory.
    RETURNS (List[str]): ``["FILE does not parse as a config"]``, or nothing.
    """
    from spacy.util import load_config

    config = path / "config.cfg"
    try:
        load_config(config, interpolate=False)
    except OSError:  # missing or unreadable: spaCy's own error says so
        return []
    except Exception:  # noqa: BLE001 - configparser's and confection's errors alike
        return [f"{config} does not parse as a config (spaCy's message above)"]
    return []


def invalid_json_files(path: Path) -> List[str]:
    """The JSON files of a pipeline directory that cannot be parsed, with why.

    path (Path): The pipeline directory.
    RETURNS (List[str]): One ``"FILE is not valid JSON (...)"`` per broken file.
    """
    problems = []
    for pattern in JSON_FILES:
        for file in sorted(path.glob(pattern)):
            problem = json_problem(file)
            if problem is not None:
                problems.append(f"{file} is not valid JSON ({problem})")
    return problems


def json_problem(file: Path) -> Optional[str]:
    """Why a file is not valid JSON, or ``None`` when it is (or cannot be read at all).

    file (Path): The file.
    RETURNS (Optional[str]): The parser's message.
    """
    try:
        json.loads(file.read_bytes().decode("utf8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        return str(err) or type(err).__name__
    except OSError:
        return None
    return None


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
        50, "--displacy-limit", help="Number of docs on the displaCy page (gold above prediction)"
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
    `ents_per_type` as 0..1 floats, the macro F1, speed, counts),
    OUTPUT/STEM_report.md (a row per label of the data and of the predictions,
    micro and macro F1; for CLUENER's labels also the published BiLSTM-CRF F1;
    and seqeval's report) and OUTPUT/STEM_displacy.html (each doc's gold
    entities above the predicted ones, errors marked), where STEM is the stem of
    DATA_PATH (dev.spacy → dev). Fails if spaCy's and seqeval's micro F1
    disagree.

    If the pipeline scores its entities (the bilstm_crf_ner component), the
    pass runs with confidence on (unless --no-calibration); the JSON and the
    report then include the calibration of the confidences (ECE, Brier score,
    reliability table) and, when matplotlib is installed,
    OUTPUT/STEM_reliability.png.

    Needs seqeval: `pip install "spacy-bilstm-crf[evaluate]"`.
    """
    import srsly

    from ..evaluation.calibration import save_reliability_diagram
    from ..evaluation.report import render_displacy, render_report
    from ..evaluation.scoring import evaluate_docbin, require_seqeval

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
    page = render_displacy(result.predicted, displacy_limit, gold=result.gold)
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
