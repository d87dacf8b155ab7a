"""CLUE JSON / char-per-line corpora → DocBin (the ``convert`` command)."""
from enum import Enum
from pathlib import Path
from typing import Iterator, List, Optional

import spacy
import srsly
import typer
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from wasabi import msg

from ..corpus import (
    DEFAULT_ENCODING,
    CorpusError,
    CorpusStats,
    InputEncodingError,
    codec_name,
    read_clue,
    read_conll,
)
from ._util import app, fail

# The CLUENER2020 release: where to get it when the input is missing.
CLUENER_URL = "https://github.com/CLUEbenchmark/CLUENER2020 (cluener_public.zip)"


class InputFormat(str, Enum):
    clue = "clue"
    conll = "conll"


class Scheme(str, Enum):
    BIO = "BIO"
    BIOES = "BIOES"
    BMES = "BMES"


def looks_like_path(value: str) -> bool:
    """Whether a ``--labels`` value that is not an existing file was meant as one:
    it has no comma, and a directory part or a suffix (``labels.txt``).

    value (str): The option value.
    RETURNS (bool): True if it names a file.
    """
    path = Path(value)
    return "," not in value and (len(path.parts) > 1 or bool(path.suffix))


def read_labels_file(path: Path) -> List[str]:
    """Read a labels file: a JSON list of strings (``.json``), or one label per line.

    path (Path): The file.
    RETURNS (List[str]): The labels, as written.
    RAISES (ValueError): The file is not UTF-8, or not a JSON list of strings.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"Labels file {path} is not UTF-8: {err}") from None
    if path.suffix != ".json":
        return [line.strip() for line in text.splitlines()]
    try:
        labels = srsly.json_loads(text)
    except ValueError as err:
        raise ValueError(f"Labels file {path} is not valid JSON: {err}") from None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"Labels file {path} must hold a JSON list of strings")
    return labels


def parse_labels(value: Optional[str]) -> Optional[List[str]]:
    """Read the ``--labels`` option: a path to a file (one label per line, or a
    JSON list), or a comma-separated list.

    A value that looks like a file name but names no file is an error rather
    than a one-label list, which would drop every entity as ``unknown_label``.
    So is a list without labels, for the same reason.

    value (Optional[str]): The option value.
    RETURNS (Optional[List[str]]): The labels, or ``None`` for "allow all".
    RAISES (ValueError): The file is missing or unreadable, or has no labels.
    """
    if not value:
        return None
    path = Path(value)
    if path.is_file():
        labels = read_labels_file(path)
    elif looks_like_path(value):
        raise ValueError(
            f"Labels file not found: {path}. Pass an existing file, or the labels "
            "themselves separated by commas (e.g. --labels name,company)."
        )
    else:
        labels = [label.strip() for label in value.split(",")]
    labels = [label for label in labels if label]
    if not labels:
        raise ValueError(f"No labels in --labels {value!r}: every entity would be dropped.")
    return labels


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
    encoding: str = typer.Option(DEFAULT_ENCODING, "--encoding", "-e", help="Encoding of the input file, e.g. gbk or gb18030 (a UTF-8 byte order mark is skipped)"),
    stats_path: Optional[Path] = typer.Option(None, "--stats", help="Where to write the counts as JSON (default: OUTPUT with suffix .stats.json)", dir_okay=False),
    lang: str = typer.Option("zh", "--lang", help="Language of the blank pipeline whose tokenizer is used"),
    # fmt: on
) -> None:
    """Convert a CLUE JSON or char-per-line corpus into a spaCy DocBin.

    The input is CLUE-format JSON (CLUENER2020; one object per line, or one
    array) or a char-per-line file (`char TAG` per line, BIO/BIOES/BMES tags).
    Every doc has its entities set as `doc.ents`, and its other tokens as O.

    Bad entities (offsets out of range or not matching the text, off token
    boundaries, overlapping: the longest wins, unknown labels) are dropped and
    counted. Malformed records stop the conversion with the file and line,
    unless --skip-invalid skips and counts them. Bytes that are not valid in
    the --encoding always stop it. The counts are printed and written as JSON.
    """
    if not input_path.exists():
        fail("Input file not found", missing_input_message(input_path, input_format))
    try:
        codec_name(encoding)
    except LookupError as err:
        fail("Unknown encoding", f"--encoding {encoding}: {err}. Use a Python codec name, e.g. utf-8, gbk, gb18030.")
    try:
        label_list = parse_labels(labels)
    except ValueError as err:
        fail("Bad --labels", str(err))
    nlp = spacy.blank(lang)
    stats = CorpusStats()
    docs = read_docs(
        input_path, nlp, stats, input_format, scheme.value, label_list, skip_invalid, repair_tags, encoding
    )
    doc_bin = DocBin(attrs=["ENT_IOB", "ENT_TYPE"], store_user_data=False)
    try:
        for doc in docs:
            doc_bin.add(doc)
    except InputEncodingError as err:
        fail(
            f"Cannot decode the input as {encoding}",
            f"{err}\nPass the file's encoding with --encoding, e.g. --encoding gbk (or gb18030) "
            "for a Chinese file that is not UTF-8.",
        )
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
    warn_if_empty(stats, input_path)
    msg.good(f"Wrote {stats.docs_written} docs to {output_path}", f"Counts: {stats_path}")


def warn_if_empty(stats: CorpusStats, input_path: Path) -> None:
    """Warn when no doc was written: an empty corpus is valid output, but rarely
    what was meant (an empty download, the wrong file, the wrong --format).
    """
    if stats.records_read == 0:
        msg.warn(f"No records in {input_path}: the file is empty (or only blank lines); the DocBin is empty")
    elif stats.docs_written == 0:
        msg.warn(f"All {stats.records_read} records of {input_path} were skipped; the DocBin is empty")


def read_docs(
    input_path: Path,
    nlp: Language,
    stats: CorpusStats,
    input_format: InputFormat,
    scheme: str,
    labels: Optional[List[str]],
    skip_invalid: bool,
    repair_tags: bool,
    encoding: str = DEFAULT_ENCODING,
) -> Iterator[Doc]:
    """Pick the reader for the input format.

    RETURNS (Iterator[Doc]): The docs, streamed; ``stats`` fills as they are read.
    """
    if input_format == InputFormat.clue:
        return read_clue(input_path, nlp, stats, labels=labels, skip_invalid=skip_invalid, encoding=encoding)
    return read_conll(
        input_path, nlp, stats, scheme=scheme, labels=labels,
        skip_invalid=skip_invalid, repair_tags=repair_tags, encoding=encoding,
    )

