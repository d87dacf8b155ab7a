"""Reading the input: JSON lines or Parquet files, from a file, a directory or a glob.

Records come out in a fixed order (files sorted by path, then line or row order),
because the shard plan, and so resuming, depends on it. A record whose text cannot
be used is not dropped: it comes out as a `Reject` in its place.
"""
import glob
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Union

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_ROWS_PER_READ = 4096
READ_BLOCK_BYTES = 1 << 20
# "\r\n" first: it is one line break, not two. Valid JSON has no raw CR or LF
# inside a value, and neither byte occurs inside a UTF-8 multi-byte character.
LINE_BREAK = re.compile(rb"\r\n|\r|\n")
PYARROW_INSTALL_HINT = 'Parquet needs pyarrow: pip install "spacy-bilstm-crf[parquet]"'


def require_pyarrow() -> Any:
    """Import pyarrow.parquet, or say how to install it.

    RETURNS (module): The `pyarrow.parquet` module.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(PYARROW_INSTALL_HINT) from err
    return pq


@dataclass
class Item:
    """A usable input record.

    record (Dict[str, Any]): The record as read; written back with its entities.
    text (str): The text to tag (the record's text field).
    source (str): The file it comes from.
    position (int): Its line (JSON lines, from 1) or row (Parquet, from 0) in that file.
    """

    record: Dict[str, Any]
    text: str
    source: str = ""
    position: int = 0


@dataclass
class Reject:
    """An input record that cannot be tagged, and why.

    source (str): The file it comes from.
    position (int): Its line (JSON lines, from 1) or row (Parquet, from 0) in that file.
    reason (str): Why it was rejected.
    record (Any): The record, or the raw line when it could not be parsed.
    """

    source: str
    position: int
    reason: str
    record: Any

    def to_dict(self) -> Dict[str, Any]:
        """RETURNS (Dict[str, Any]): The reject as a row of the rejects file."""
        return {"source": self.source, "position": self.position, "reason": self.reason, "record": self.record}


Record = Union[Item, Reject]


def file_format(path: Path) -> Optional[str]:
    """The input format of a file, from its extension.

    path (Path): An input file.
    RETURNS (Optional[str]): "jsonl", "parquet", or None for other files.
    """
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    return None


def resolve_inputs(input_path: Union[str, Path]) -> List[Path]:
    """The input files, in the order their records are read.

    input_path (Union[str, Path]): A file, a directory (its JSON lines and Parquet
        files, recursively; names starting with "_" or "." are skipped, as Spark
        and Arrow do) or a glob pattern ("**" allowed).
    RETURNS (List[Path]): The files, sorted by path.
    """
    path = Path(input_path)
    if path.is_file():
        return [path]
    if path.is_dir():
        candidates = [
            p
            for p in path.rglob("*")
            if p.is_file()
            and not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)
        ]
    else:
        candidates = [Path(p) for p in glob.glob(str(input_path), recursive=True) if Path(p).is_file()]
    files = sorted((p for p in candidates if file_format(p) is not None), key=lambda p: str(p))
    if not files:
        raise FileNotFoundError(
            f"No input found at {input_path}: expected a JSON lines (.jsonl, .json, .ndjson) "
            "or Parquet (.parquet) file, a directory of them, or a glob"
        )
    return files


def check_text(record: Any, text_key: str, max_chars: Optional[int] = None) -> Optional[str]:
    """Why a parsed record cannot be tagged, or None if it can.

    record (Any): A parsed record.
    text_key (str): The field holding the text.
    max_chars (Optional[int]): Longer texts are rejected; None: texts of any length are tagged.
    RETURNS (Optional[str]): The reason, or None.
    """
    if not isinstance(record, dict):
        return f"record is a {type(record).__name__}, not an object"
    if text_key not in record:
        return f"missing field '{text_key}'"
    text = record[text_key]
    if not isinstance(text, str):
        return f"field '{text_key}' is {'null' if text is None else type(text).__name__}, not a string"
    try:
        # json.loads accepts lone surrogates ("\ud800"): such a text is not
        # Unicode that can be written out again, so it is undecodable too.
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"field '{text_key}' is not valid Unicode: {err.reason} at {err.start}"
    if max_chars is not None and len(text) > max_chars:
        return f"field '{text_key}' has {len(text):,} characters, more than the limit of {max_chars:,} (max_chars)"
    return None


def to_record(
    record: Any, text_key: str, source: str, position: int, raw: Any, max_chars: Optional[int] = None
) -> Record:
    """An Item, or a Reject with its reason.

    record (Any): The parsed record.
    text_key (str): The field holding the text.
    source (str): The file it comes from.
    position (int): Its line or row in that file.
    raw (Any): What to keep in the rejects file if it is rejected.
    max_chars (Optional[int]): Longer texts are rejected; None: no limit.
    RETURNS (Union[Item, Reject]): The record, ready to tag or rejected.
    """
    reason = check_text(record, text_key, max_chars)
    if reason is not None:
        return Reject(source, position, reason, raw)
    return Item(record, record[text_key], source, position)


def iter_lines(f: BinaryIO, block_bytes: int = READ_BLOCK_BYTES) -> Iterator[bytes]:
    """The lines of a binary file, without their line breaks.

    A line ends with "\n", "\r\n" or a lone "\r" (classic Mac files): Python's
    own line iteration knows only "\n", and read a file of CR-only line endings
    as one huge line, i.e. one record. Read in blocks: memory is bounded by the
    longest line, not the file.

    f (BinaryIO): A file opened in binary mode.
    block_bytes (int): Bytes per read.
    YIELDS (bytes): The lines, in order; the last one even without a line break.
    """
    pieces: List[bytes] = []  # the unfinished line, in blocks (no quadratic copying)
    while True:
        block = f.read(block_bytes)
        if not block:
            break
        if b"\n" not in block and b"\r" not in block:
            pieces.append(block)
            continue
        data = b"".join(pieces) + block
        # A CR at the end of the block may be the first half of a CRLF: keep it back.
        cut = len(data) - 1 if data.endswith(b"\r") else len(data)
        lines = LINE_BREAK.split(data[:cut])
        pieces = [lines.pop() + data[cut:]]
        yield from lines
    rest = LINE_BREAK.split(b"".join(pieces))
    if rest[-1] == b"":  # the file ends with a line break: no line after it
        rest.pop()
    yield from rest


def read_jsonl(path: Path, text_key: str, max_chars: Optional[int] = None) -> Iterator[Record]:
    """The records of a JSON lines file; blank lines are skipped, bad ones rejected.

    path (Path): The file.
    text_key (str): The field holding the text.
    max_chars (Optional[int]): Longer texts are rejected; None: no limit.
    YIELDS (Union[Item, Reject]): One per non-blank line.
    """
    source = str(path)
    # Bytes, so that one undecodable line is one reject and not the end of the file.
    with path.open("rb") as f:
        for number, raw in enumerate(iter_lines(f), start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                shown = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
                yield Reject(source, number, f"not UTF-8: {err.reason} at byte {err.start}", shown)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                yield Reject(source, number, f"invalid JSON: {err.msg}", line.rstrip("\r\n"))
                continue
            yield to_record(record, text_key, source, number, record, max_chars)


def read_parquet(path: Path, text_key: str, max_chars: Optional[int] = None) -> Iterator[Record]:
    """The rows of a Parquet file, read a few thousand at a time.

    path (Path): The file.
    text_key (str): The column holding the text.
    max_chars (Optional[int]): Longer texts are rejected; None: no limit.
    YIELDS (Union[Item, Reject]): One per row.
    """
    pq = require_pyarrow()  # an optional dependency: only when Parquet is read
    source = str(path)
    position = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_ROWS_PER_READ):
        for row in batch.to_pylist():
            yield to_record(row, text_key, source, position, row, max_chars)
            position += 1


def read_records(files: List[Path], text_key: str, max_chars: Optional[int] = None) -> Iterator[Record]:
    """All records of the input files, in order.

    files (List[Path]): The files, from `resolve_inputs`.
    text_key (str): The field holding the text.
    max_chars (Optional[int]): Longer texts are rejected; None: no limit.
    YIELDS (Union[Item, Reject]): The records.
    """
    for path in files:
        if file_format(path) == "parquet":
            yield from read_parquet(path, text_key, max_chars)
        else:
            yield from read_jsonl(path, text_key, max_chars)


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's content, read in blocks.

    Hashing runs at hundreds of MB/s, tagging at tens of KB/s: identifying the
    input by its content costs nothing next to the run, and notices an edit that
    keeps the file's size and modification time.

    path (Path): The file.
    RETURNS (str): "sha256:" and the hex digest.
    """
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(READ_BLOCK_BYTES), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def input_identity(path: Path) -> List[Any]:
    """What identifies an input file in a run's plan: its path, size and content digest.

    path (Path): The file.
    RETURNS (List[Any]): [path, size in bytes, "sha256:..."].
    """
    return [str(path), path.stat().st_size, file_digest(path)]


def parquet_schema(files: List[Path]) -> Optional[Any]:
    """The input's Arrow schema, when every input file is Parquet with the same schema.

    Writing Parquet with it keeps the columns' types in every shard (a shard
    whose values of a column are all null would otherwise get a null column).

    files (List[Path]): The input files.
    RETURNS (Optional[pyarrow.Schema]): The shared schema, or None.
    """
    if not files or any(file_format(p) != "parquet" for p in files):
        return None
    pq = require_pyarrow()
    schemas = [pq.read_schema(p) for p in files]
    if any(not s.equals(schemas[0]) for s in schemas[1:]):
        return None
    return schemas[0].remove_metadata()
