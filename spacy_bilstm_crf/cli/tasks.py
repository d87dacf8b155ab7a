"""The `export-tasks` and `import-tasks` commands: a round trip with Label Studio and doccano.

Only light modules at the top: every command's module is imported for
`python -m spacy_bilstm_crf --help`, and spaCy takes seconds.
"""
import json
from pathlib import Path
from typing import Any, List, Optional, Tuple

import typer
from wasabi import msg

from ..labelling.tasks import MISSING_LABEL, ON_ERROR, TaskError
from ._util import app, fail

TOOLS = ("label-studio", "doccano")
# The tool's own file written next to the tasks: a labeling config, or a labels import.
SIDE_FILES = {"label-studio": ".label_config.xml", "doccano": ".labels.json"}
ERRORS_SHOWN = 10


def side_file(output: Path, tool: str) -> Path:
    """RETURNS (Path): Where the labeling config (Label Studio) or labels file (doccano) goes."""
    return output.with_name(output.stem + SIDE_FILES[tool])


def parse_labels(labels: Optional[str]) -> Optional[List[str]]:
    """The entity labels given on the command line.

    labels (Optional[str]): Comma-separated labels, or a JSON file with a list of them
        (as `spacy init labels` writes).
    RETURNS (Optional[List[str]]): The labels, or None when not given.
    """
    if labels is None:
        return None
    path = Path(labels)
    if path.is_file():
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as err:
            fail(f"Cannot read the labels file {path}", str(err))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            fail(f"Cannot read the labels file {path}", "Expected a JSON list of label strings")
        return value
    return [label.strip() for label in labels.split(",") if label.strip()]


@app.command("export-tasks")
def export_tasks_cli(
    input_path: str = typer.Argument(..., help="Records from `annotate` or `select`: JSON lines or Parquet file, directory or glob"),
    output: Path = typer.Argument(..., help="Tasks file to write: .json for Label Studio, .jsonl for doccano"),
    to: str = typer.Option(..., "--to", help="The annotation tool: label-studio or doccano"),
    text_key: str = typer.Option("text", "--text-key", help="Field of a record that holds its text"),
    model_version: str = typer.Option("spacy-bilstm-crf", "--model-version", help="Label Studio: the predictions' model_version"),
    labels: Optional[str] = typer.Option(
        None, "--labels", help="Entity labels, comma-separated or a JSON list file (default: those of the records' entities)"
    ),
    missing_label: str = typer.Option(MISSING_LABEL, "--missing-label", help="Label for text the annotator did not review"),
) -> None:
    """Write selected records as Label Studio tasks or doccano documents, pre-annotated with their entities.

    Label Studio (1.x): OUTPUT is a JSON list of tasks with the entities as `predictions`, each region with its `score` (probability) and the task with the probability that its whole pre-annotation is right; OUTPUT's name with `.label_config.xml` is the project's labeling config.

    doccano (1.8, sequence labeling): OUTPUT is JSON lines with `label` as `[start, end, label]` lists, the scores as metadata; OUTPUT's name with `.labels.json` is the label set to import.

    Both label sets include the missing label (`UNREVIEWED`): annotators mark with it the text they did not review, and `import-tasks` leaves it unannotated (missing) instead of `O`.
    """
    if to not in TOOLS:
        fail(f"Unknown tool: {to}", f"Use one of: {', '.join(TOOLS)}")
    from ..labelling import doccano, label_studio
    from ..labelling.tasks import gather_labels, load_records, record_labels

    try:
        records, places = load_records(input_path, text_key)
        if to == "label-studio":
            items = label_studio.to_label_studio(records, text_key=text_key, model_version=model_version, places=places)
        else:
            items = doccano.to_doccano(records, text_key=text_key, places=places)
    except (FileNotFoundError, ValueError, ImportError) as err:
        fail("Cannot export the records", str(err))
    found = gather_labels(record_labels(records), missing_label)
    label_set = parse_labels(labels) or found
    extra = sorted(set(found) - set(label_set))
    if extra:
        fail("Entity labels missing from --labels", f"The records have entities labelled {', '.join(extra)}")
    side = side_file(output, to)
    try:
        _write(output, side, to, items, label_set, missing_label, text_key)
    except OSError as err:
        fail(f"Cannot write {output}", str(err))
    msg.good(f"{len(items)} {'tasks' if to == 'label-studio' else 'documents'} written to {output}")
    msg.text(f"{len(label_set)} labels + {missing_label}: {side}")


def _write(output: Path, side: Path, to: str, items: List[Any], labels: List[str], missing_label: str, text_key: str) -> None:
    """Write the tasks and the tool's label file."""
    import srsly

    from ..labelling import doccano, label_studio

    output.parent.mkdir(parents=True, exist_ok=True)
    if to == "label-studio":
        srsly.write_json(output, items)
        side.write_text(label_studio.label_config(labels, missing_label=missing_label, text_key=text_key), encoding="utf-8")
    else:
        srsly.write_jsonl(output, items)
        srsly.write_json(side, doccano.label_types(labels, missing_label=missing_label))


@app.command("import-tasks")
def import_tasks_cli(
    input_path: Path = typer.Argument(..., help="The tool's export: Label Studio JSON, or doccano JSONL"),
    output: Path = typer.Argument(..., help="DocBin (.spacy) to write"),
    source: str = typer.Option(..., "--from", help="The annotation tool: label-studio or doccano"),
    text_key: str = typer.Option("text", "--text-key", help="Field (Label Studio: of the task data) that holds the text"),
    missing_label: str = typer.Option(MISSING_LABEL, "--missing-label", help="Label of text the annotator did not review"),
    annotation: str = typer.Option("last", "--annotation", help="Label Studio: the task's last or first annotation that is not cancelled"),
    skip_unreviewed: bool = typer.Option(False, "--skip-unreviewed", help="Leave out tasks nobody annotated (default: keep them, every token missing)"),
    on_error: str = typer.Option("raise", "--on-error", help="raise: stop at a task that cannot be read; skip: count it and go on"),
    lang: str = typer.Option("zh", "--lang", help="Language of the blank pipeline that tokenizes the texts (zh: one token per character)"),
) -> None:
    """Read a Label Studio or doccano export back into a DocBin for training; unreviewed text stays missing.

    Entities keep their exact character offsets and labels. Text labelled with the missing label (`UNREVIEWED`) gets no annotation (`token.ent_iob_ == ""`): training marginalizes over it instead of learning it as `O`. Other text of a reviewed task is `O`.

    Label Studio (1.x JSON export): the task's last annotation that was not cancelled; a task without one was not reviewed and has every token missing (or is left out with `--skip-unreviewed`). doccano (1.8 JSONL export): every document counts as reviewed (export only the approved ones to leave the others out).

    Overlapping regions, a region whose text differs from the task's text at its offsets, a region with several labels, or one that does not align with the tokens stop the import with the task named, or are counted and skipped with `--on-error skip`.
    """
    if source not in TOOLS:
        fail(f"Unknown tool: {source}", f"Use one of: {', '.join(TOOLS)}")
    if on_error not in ON_ERROR:
        fail(f"Unknown --on-error: {on_error}", f"Use one of: {', '.join(ON_ERROR)}")
    if annotation not in ("last", "first"):
        fail(f"Unknown --annotation: {annotation}", "Use last or first")
    import spacy
    from spacy.tokens import DocBin

    try:
        nlp = spacy.blank(lang)
    except ImportError as err:
        fail(f"Cannot make a blank '{lang}' pipeline", str(err))
    try:
        docs, counts = _import(input_path, source, nlp, text_key, missing_label, annotation, skip_unreviewed, on_error)
    except TaskError as err:
        fail("Cannot import the annotations", str(err))
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        DocBin(docs=docs, store_user_data=False).to_disk(output)
    except OSError as err:
        fail(f"Cannot write {output}", str(err))
    # typer.echo, not wasabi: wasabi wraps long lines, and "task N (id M)" should stay whole.
    if counts.errors:
        msg.warn(f"{len(counts.errors)} tasks skipped for errors")
        for error in counts.errors[:ERRORS_SHOWN]:
            typer.echo(error)
        if len(counts.errors) > ERRORS_SHOWN:
            typer.echo(f"... and {len(counts.errors) - ERRORS_SHOWN} more")
    msg.good(f"Saved {len(docs)} docs to {output}")
    typer.echo(counts.summary())


def _import(
    path: Path, source: str, nlp: Any, text_key: str, missing_label: str, annotation: str, skip_unreviewed: bool, on_error: str
) -> Tuple[List[Any], Any]:
    """Read the export and convert it: the docs and the counts."""
    from ..labelling import doccano, label_studio

    if source == "label-studio":
        tasks = _read_json(path)
        return label_studio.from_label_studio(
            tasks, nlp, text_key=text_key, missing_label=missing_label, annotation=annotation,
            skip_unreviewed=skip_unreviewed, on_error=on_error,
        )
    documents, places = _read_jsonl(path)
    return doccano.from_doccano(
        documents, nlp, text_key=text_key, missing_label=missing_label,
        skip_unreviewed=skip_unreviewed, on_error=on_error, places=places,
    )


def _read_json(path: Path) -> Any:
    """The parsed JSON of a file, or a TaskError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as err:
        raise TaskError(f"{path}: {err}") from err
    except json.JSONDecodeError as err:
        raise TaskError(f"{path}: not JSON ({err.msg} at line {err.lineno}, column {err.colno})") from err


def _read_jsonl(path: Path) -> Tuple[List[Any], List[str]]:
    """The parsed lines of a JSON lines file and where each is, or a TaskError naming the line."""
    try:
        # Split on "\n" only: str.splitlines also splits on U+2028 and other separators
        # that JSON allows raw inside a string.
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise TaskError(f"{path}: {err}") from err
    documents, places = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            documents.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise TaskError(f"{path}, line {number}: not JSON ({err.msg})") from err
        places.append(f"{path}, line {number}")
    return documents, places
