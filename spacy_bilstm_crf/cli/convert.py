"""CLUE JSON / char-per-line corpora → DocBin (the ``convert`` command)."""
from enum import Enum
from pathlib import Path
from typing import Iterator, List, NoReturn, Optional

import spacy
import srsly
import typer
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from wasabi import msg

from ..corpus import CorpusError, CorpusStats, read_clue, read_conll
from ._util import app

# The CLUENER2020 release: where to get it when the input is missing.
CLUENER_URL = "https://github.com/CLUEbenchmark/CLUENER2020 (cluener_public.zip)"


class InputFormat(str, Enum):
    clue = "clue"
    conll = "conll"


class Scheme(str, Enum):
    BIO = "BIO"
    BIOES = "BIOES"
    BMES = "BMES"


def parse_labels(value: Optional[str]) -> Optional[List[str]]:
    """Read the ``--labels`` option: a path to a file (one label per line, or a
    JSON list), or a comma-separated list.

    value (Optional[str]): The option value.
    RETURNS (Optional[List[str]]): The labels, or ``None`` for "allow all".
    """
    if not value:
        return None
    path = Path(value)
    if path.is_file():
        if path.suffix == ".json":
            labels = [str(label) for label in srsly.read_json(path)]
        else:
            labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        labels = [label.strip() for label in value.split(",")]
    return [label for label in labels if label]


def missing_input_message(input_path: Path, input_format: InputFormat) -> str:
    """RETURNS (str): What file is expected where, and how to get it."""
    if input_format == InputFormat.clue:
        return (
            f"CLUENER data not found at {input_path}: download the CLUENER2020 archive from "
            f"{CLUENER_URL}, unzip train.json / dev.json there, or pass the path of a "
            "CLUE-format file (JSON lines or a JSON array)."
        )
    return (
        f"Char-per-line corpus not found at {input_path}: pass the path of a file with one "
        "'CHAR TAG' pair per line and a blank line between sentences."
    )


def fail(title: str, detail: str) -> NoReturn:
    """Print an error and exit with status 1, like spaCy's CLI.

    The detail is echoed as is (wasabi would wrap it), so "file, line N" stays on one line.
    """
    msg.fail(title)
    typer.echo(detail)
    raise typer.Exit(code=1)


def print_stats(stats: CorpusStats) -> None:
    """Print the counts and a few examples of each drop/skip reason."""
    counts = stats.to_dict()
    msg.table(
        [
            ("records read", counts["records_read"]),
            ("docs written", counts["docs_written"]),
            ("records skipped", counts["records_skipped"]),
            ("unlabeled docs", counts["unlabeled"]),
            ("entities in", counts["entities_in"]),
            ("entities kept", counts["entities_kept"]),
            ("entities dropped", counts["entities_dropped"]),
        ],
        title="Conversion counts",
    )
    for title, by_reason in (
        ("Dropped entities", stats.dropped),
        ("Skipped records", stats.skipped),
        ("Repaired tags", stats.repaired),
    ):
        if by_reason:
            msg.warn(f"{title}: " + ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items())))
            for reason in sorted(by_reason):
                for example in stats.examples.get(reason, []):
                    msg.text(f"  {example}")


@app.command("convert")
def convert_cli(
    # fmt: off
    input_path: Path = typer.Argument(..., help="Input file: CLUE JSON (lines or array) or char-per-line", dir_okay=False),
    output_path: Path = typer.Argument(..., help="Output .spacy file (DocBin); parent dirs are created", dir_okay=False),
    input_format: InputFormat = typer.Option(InputFormat.clue, "--format", "-f", help="Input format"),
    scheme: Scheme = typer.Option(Scheme.BIOES, "--scheme", "-s", help="Tag scheme of a conll input"),
    labels: Optional[str] = typer.Option(None, "--labels", "-l", help="Allowed labels: comma-separated, or a file (one per line, or a JSON list); others are dropped and counted"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip and count malformed records instead of stopping"),
    repair_tags: bool = typer.Option(False, "--repair-tags", help="conll: repair invalid tag sequences (a stray I-/E- starts an entity; an unclosed entity ends at its last tag) and count them"),
    stats_path: Optional[Path] = typer.Option(None, "--stats", help="Where to write the counts as JSON (default: OUTPUT with suffix .stats.json)", dir_okay=False),
    lang: str = typer.Option("zh", "--lang", help="Language of the blank pipeline whose tokenizer is used"),
    # fmt: on
) -> None:
    """Convert a CLUE-format JSON file (CLUENER2020) or a char-per-line file
    (``char TAG``, BIO/BIOES/BMES) into a spaCy DocBin with ``doc.ents`` set.

    Bad entities (offsets out of range or not matching the text, off token
    boundaries, overlapping: the longest wins, unknown labels) are dropped and
    counted; malformed records stop the conversion with the file and line,
    unless --skip-invalid. The counts are printed and written as JSON.
    """
    if not input_path.exists():
        fail("Input file not found", missing_input_message(input_path, input_format))
    nlp = spacy.blank(lang)
    label_list = parse_labels(labels)
    stats = CorpusStats()
    docs = read_docs(input_path, nlp, stats, input_format, scheme.value, label_list, skip_invalid, repair_tags)
    doc_bin = DocBin(attrs=["ENT_IOB", "ENT_TYPE"], store_user_data=False)
    try:
        for doc in docs:
            doc_bin.add(doc)
    except CorpusError as err:
        fail("Malformed input", f"{err}\nFix the record, or pass --skip-invalid to skip (and count) malformed records.")
    stats.check()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    doc_bin.to_disk(output_path)
    if stats_path is None:
        stats_path = output_path.with_suffix(".stats.json")
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    srsly.write_json(stats_path, {"input": str(input_path), "output": str(output_path), **stats.to_dict()})
    print_stats(stats)
    msg.good(f"Wrote {stats.docs_written} docs to {output_path}", f"Counts: {stats_path}")


def read_docs(
    input_path: Path,
    nlp: Language,
    stats: CorpusStats,
    input_format: InputFormat,
    scheme: str,
    labels: Optional[List[str]],
    skip_invalid: bool,
    repair_tags: bool,
) -> Iterator[Doc]:
    """Pick the reader for the input format.

    RETURNS (Iterator[Doc]): The docs, streamed; ``stats`` fills as they are read.
    """
    if input_format == InputFormat.clue:
        return read_clue(input_path, nlp, stats, labels=labels, skip_invalid=skip_invalid)
    return read_conll(
        input_path, nlp, stats, scheme=scheme, labels=labels,
        skip_invalid=skip_invalid, repair_tags=repair_tags,
    )

