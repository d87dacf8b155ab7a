"""CLUE JSON / char-per-line corpora → DocBin (the ``convert`` command).

spaCy, srsly and the readers are imported inside the command, so that
``python -m spacy_bilstm_crf --help`` does not import them because of this module.
"""
import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

import typer
from wasabi import msg

from ..corpus.textio import DEFAULT_ENCODING, NotATextEncoding, codec_name
from ._util import app, fail

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc, DocBin

    from ..corpus import CorpusStats

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
    except OSError as err:
        raise ValueError(f"Cannot read the labels file {path}: {err.strerror or err}") from None
    if path.suffix != ".json":
        return text.splitlines()
    try:
        labels = json.loads(text)
    except ValueError as err:
        raise ValueError(f"Labels file {path} is not valid JSON: {err}") from None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"Labels file {path} must hold a JSON list of strings")
    return labels


def clean_labels(labels: List[str], source: str) -> List[str]:
    """Strip the labels (``" name "`` is ``name``, as in the records) and drop blank
    lines; an empty result is an error, because every entity would be dropped.

    labels (List[str]): The labels as given.
    source (str): Where they come from, for the message.
    RETURNS (List[str]): The labels, stripped, in their order, without repeats.
    RAISES (ValueError): No label is left.
    """
    cleaned = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
    if not cleaned:
        raise ValueError(f"No labels in {source}: every entity would be dropped.")
    return cleaned


def parse_labels(
    value: Optional[str], labels_file: Optional[Path] = None
) -> Tuple[Optional[List[str]], Optional[Path]]:
    """Read the label set from ``--labels`` or ``--labels-file``.

    ``--labels-file`` always names a file. ``--labels`` is a comma-separated list;
    for compatibility with earlier versions, a value that names an existing file
    is read as a labels file (the caller says so). A value that looks like a file
    name (a suffix or a directory part) but names no file is an error, not a
    one-label list that would drop every entity.

    value (Optional[str]): The ``--labels`` value.
    labels_file (Optional[Path]): The ``--labels-file`` value.
    RETURNS (Tuple[Optional[List[str]], Optional[Path]]): The labels (``None``:
        allow all) and the file they were read from (``None`` for a list).
    RAISES (ValueError): Both options, a missing or unreadable file, or no labels.
    """
    if value and labels_file is not None:
        raise ValueError("Pass either --labels or --labels-file, not both.")
    if labels_file is not None:
        if not labels_file.is_file():
            what = "is a directory" if labels_file.is_dir() else "not found"
            raise ValueError(f"Labels file {what}: {labels_file}")
        return clean_labels(read_labels_file(labels_file), str(labels_file)), labels_file
    if not value:
        return None, None
    path = Path(value)
    if path.is_file():
        return clean_labels(read_labels_file(path), str(path)), path
    if path.is_dir() or looks_like_path(value):
        what = "is a directory" if path.is_dir() else "not found"
        raise ValueError(
            f"Labels file {what}: {path}. Pass an existing file (--labels-file PATH), or the "
            "labels themselves separated by commas (e.g. --labels name,company)."
        )
    return clean_labels(value.split(","), f"--labels {value!r}"), None


def check_labels_used(stats: "CorpusStats", labels: List[str], labels_from: Optional[Path]) -> None:
    """Fail when the label set dropped every entity of the input (a label set that
    matches nothing is a mistake: e.g. a labels file name given to --labels that
    does not exist, read as one label), and warn about labels no entity had.

    stats (CorpusStats): The counts of the conversion.
    labels (List[str]): The label set.
    labels_from (Optional[Path]): The file the labels were read from, if any.
    """
    source = f"the labels file {labels_from}" if labels_from else f"--labels {','.join(labels)}"
    found = ", ".join(sorted(stats.unknown_labels)) or "none"
    if stats.entities_in and stats.dropped["unknown_label"] == stats.entities_in:
        hint = "" if labels_from else (
            f" If {','.join(labels)!r} was meant as a labels file, it does not exist: pass "
            "--labels-file PATH."
        )
        fail(
            "No entity has a label in the label set",
            f"All {stats.entities_in} entities were dropped as unknown_label: {source} matches "
            f"none of the input's labels ({found}).{hint} Nothing was written.",
        )
    unused = [label for label in labels if not stats.labels[label]]
    if unused:
        msg.warn(f"No entity has the label(s) {', '.join(unused)} from {source}")


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


def check_output_path(path: Path, what: str) -> None:
    """Fail before converting when ``path`` cannot be written: it is a directory,
    or a parent that must be created is a file.

    path (Path): The file to write.
    what (str): What it is, for the message (``"output"``, ``"--stats"``).
    """
    if path.is_dir():
        fail(f"Cannot write the {what}", f"{path} is a directory; pass a file path.")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                fail(f"Cannot write the {what}", f"{parent} is a file, not a directory: {path} cannot be created.")
            return


def check_distinct_paths(input_path: Path, output_path: Path, stats_path: Path) -> None:
    """Fail when two of the files are one: the output would overwrite the input
    (or the counts the output) once the conversion is done."""
    named = [("input", input_path), ("output", output_path), ("--stats file", stats_path)]
    for i, (first, first_path) in enumerate(named):
        for second, second_path in named[i + 1 :]:
            if first_path.resolve() == second_path.resolve():
                fail(f"The {second} is the {first}", f"{second_path}: pass another path for the {second}.")


def check_encoding(encoding: str) -> None:
    """Fail unless ``encoding`` names a codec that can read a text file."""
    try:
        codec_name(encoding)
    except NotATextEncoding as err:
        fail("Not a text encoding", f"--encoding {encoding}: {err}. Use a text encoding, e.g. utf-8, gbk, gb18030.")
    except LookupError as err:
        fail("Unknown encoding", f"--encoding {encoding}: {err}. Use a Python codec name, e.g. utf-8, gbk, gb18030.")


def print_stats(stats: "CorpusStats") -> None:
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
    labels: Optional[str] = typer.Option(None, "--labels", "-l", help="Allowed labels, comma-separated (an existing file is read as with --labels-file); others are dropped and counted"),
    labels_file: Optional[Path] = typer.Option(None, "--labels-file", help="Allowed labels from a file: one per line, or a JSON list (.json)", dir_okay=False),
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
    Texts of any length are converted. Labels are stripped of surrounding spaces.

    Bad entities (offsets out of range or not matching the text, off token
    boundaries, overlapping: the longest wins, unknown labels) are dropped and
    counted; a label set that drops every entity is an error. Malformed records
    (bad JSON, JSON nested too deeply, bad fields or tags) stop the conversion
    with the file and line, unless --skip-invalid skips and counts them. Bytes
    that are not valid in the --encoding always stop it. The counts are printed
    and written as JSON.
    """
    import spacy

    from ..corpus import CorpusStats

    if not input_path.exists():
        fail("Input file not found", missing_input_message(input_path, input_format))
    check_encoding(encoding)
    label_list, labels_from = read_label_options(labels, labels_file)
    if stats_path is None:
        stats_path = output_path.with_suffix(".stats.json")
    check_output_path(output_path, "output")
    check_output_path(stats_path, "--stats file")
    check_distinct_paths(input_path, output_path, stats_path)
    try:
        nlp = spacy.blank(lang)
    except (ImportError, ValueError) as err:
        fail("Unknown --lang", f"--lang {lang}: {err}")
    stats = CorpusStats()
    docs = read_docs(
        input_path, nlp, stats, input_format, scheme.value, label_list, skip_invalid, repair_tags, encoding
    )
    doc_bin = collect_docs(docs, input_path, encoding, skip_invalid)
    stats.check()
    if label_list is not None:
        check_labels_used(stats, label_list, labels_from)
    counts = {"input": str(input_path), "output": str(output_path), **stats.to_dict()}
    write_outputs(doc_bin, output_path, stats_path, counts)
    print_stats(stats)
    warn_if_empty(stats, input_path)
    msg.good(f"Wrote {stats.docs_written} docs to {output_path}", f"Counts: {stats_path}")


def read_label_options(
    labels: Optional[str], labels_file: Optional[Path]
) -> Tuple[Optional[List[str]], Optional[Path]]:
    """``parse_labels``, failing cleanly, and saying where labels were read from.

    RETURNS (Tuple[Optional[List[str]], Optional[Path]]): The labels and their file.
    """
    try:
        label_list, labels_from = parse_labels(labels, labels_file)
    except ValueError as err:
        fail("Bad --labels" if labels_file is None else "Bad --labels-file", str(err))
    if labels_from is not None:
        msg.info(f"Labels from {labels_from}: {', '.join(label_list or [])}")
    return label_list, labels_from


def collect_docs(docs: Iterator["Doc"], input_path: Path, encoding: str, skip_invalid: bool) -> "DocBin":
    """Read every doc into a DocBin, failing cleanly on what stops a conversion.

    docs (Iterator[Doc]): The reader's docs.
    input_path (Path): The input file, for messages.
    encoding (str): The --encoding, for messages.
    skip_invalid (bool): Whether malformed records are skipped, for the hint.
    RETURNS (DocBin): The docs, with their entities.
    """
    from spacy.tokens import DocBin

    from ..corpus import CorpusError, InputEncodingError

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
    except OSError as err:  # e.g. no permission to read it
        fail("Cannot read the input", f"{input_path}: {err.strerror or err}")
    except CorpusError as err:
        # With --skip-invalid, only what cannot be skipped gets here: the rest of a
        # JSON array cannot be parsed after a syntax error.
        hint = "This error cannot be skipped: fix the file." if skip_invalid else (
            "Fix the record, or pass --skip-invalid to skip (and count) malformed records."
        )
        fail("Malformed input", f"{err}\n{hint}")
    return doc_bin


def write_outputs(doc_bin: "DocBin", output_path: Path, stats_path: Path, counts: Dict[str, Any]) -> None:
    """Write the DocBin and the counts, failing cleanly when a path cannot be written."""
    import srsly

    for path, write in (
        (output_path, lambda: doc_bin.to_disk(output_path)),
        (stats_path, lambda: srsly.write_json(stats_path, counts)),
    ):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write()
        except OSError as err:
            fail(f"Cannot write {path}", f"{path}: {err.strerror or err}")


def warn_if_empty(stats: "CorpusStats", input_path: Path) -> None:
    """Warn when no doc was written: an empty corpus is valid output, but rarely
    what was meant (an empty download, the wrong file, the wrong --format).
    """
    if stats.records_read == 0:
        msg.warn(f"No records in {input_path}: the file is empty (or only blank lines); the DocBin is empty")
    elif stats.docs_written == 0:
        msg.warn(f"All {stats.records_read} records of {input_path} were skipped; the DocBin is empty")


def read_docs(
    input_path: Path,
    nlp: "Language",
    stats: "CorpusStats",
    input_format: InputFormat,
    scheme: str,
    labels: Optional[List[str]],
    skip_invalid: bool,
    repair_tags: bool,
    encoding: str = DEFAULT_ENCODING,
) -> Iterator["Doc"]:
    """Pick the reader for the input format.

    RETURNS (Iterator[Doc]): The docs, streamed; ``stats`` fills as they are read.
    """
    from ..corpus import read_clue, read_conll

    if input_format == InputFormat.clue:
        return read_clue(input_path, nlp, stats, labels=labels, skip_invalid=skip_invalid, encoding=encoding)
    return read_conll(
        input_path, nlp, stats, scheme=scheme, labels=labels,
        skip_invalid=skip_invalid, repair_tags=repair_tags, encoding=encoding,
    )
