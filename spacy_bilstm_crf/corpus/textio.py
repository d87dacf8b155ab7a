"""Reading input files in a named encoding, with decoding errors located by line and byte."""
import codecs
import io
import re
from pathlib import Path
from typing import Callable, Generator, Iterator, List, Optional, Tuple

from .stats import CorpusError

DEFAULT_ENCODING = "utf-8"
# Bytes read per step: large enough to be fast, small enough to keep memory flat.
CHUNK_SIZE = 1 << 16
# A JSON escape of a UTF-16 surrogate (\uD800-\uDFFF), paired or not.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class InputEncodingError(CorpusError):
    """Bytes that are not valid in the file's encoding. Never skipped: with the
    wrong encoding almost every record would fail, and "skip and count" would
    turn the file into an (almost) empty corpus.

    path (Path): The input file.
    location (str): ``"line N, byte offset B"`` of the first undecodable byte.
    detail (str): What could not be decoded.
    """

    def __init__(self, path: Path, location: str, detail: str) -> None:
        super().__init__(path, location, "bad_encoding", detail)


class NotATextEncoding(LookupError):
    """A codec Python knows that cannot read a text file: a bytes-to-bytes codec
    (``base64``), or one that cannot decode text with error locating
    (``undefined``, ``idna``)."""


def codec_name(encoding: str) -> str:
    """The codec that reads a file in ``encoding``: UTF-8 is read as ``utf-8-sig``,
    so that a byte order mark (as Windows editors write it) is not taken as text.

    The codec is tried on a short text first, so that one that cannot read a
    file fails here with a clear message, not halfway through the file.

    encoding (str): An encoding name Python knows, e.g. ``"utf-8"``, ``"gbk"``.
    RETURNS (str): The codec's canonical name.
    RAISES (LookupError): Unknown encoding.
    RAISES (NotATextEncoding): Not a text encoding (e.g. ``"base64"``), or one
        that cannot decode text (e.g. ``"undefined"``, ``"idna"``).
    """
    name = codecs.lookup(encoding).name
    try:
        probe = "a\n".encode(name)  # raises LookupError for bytes-to-bytes codecs
        # errors="replace" is what locating a decoding error uses (idna refuses it).
        codecs.getincrementaldecoder(name)(errors="replace").decode(probe, final=True)
    except LookupError:
        raise NotATextEncoding(f"{encoding!r} is not a text encoding") from None
    except (UnicodeError, ValueError, TypeError) as err:
        raise NotATextEncoding(f"the {name!r} codec cannot decode text ({err})") from None
    return "utf-8-sig" if name == "utf-8" else name


def _decode_error(
    path: Path, encoding: str, err: UnicodeDecodeError, bytes_read: int, line: int
) -> InputEncodingError:
    """Locate a decoding error in the file.

    path (Path): The file.
    encoding (str): The encoding, as the caller named it.
    err (UnicodeDecodeError): Raised by the incremental decoder. Its ``object`` is
        the tail of the bytes read so far (what the decoder held back, then the
        last chunk), so its offsets can be turned into file offsets.
    bytes_read (int): Bytes read from the file so far.
    line (int): The line the decoded text so far ends on.
    RETURNS (InputEncodingError): The error, naming the line and the byte offset (from 0).
    """
    offset = bytes_read - len(err.object) + err.start
    try:
        before = err.object[: err.start].decode(codec_name(encoding), errors="replace")
    except (UnicodeError, LookupError):  # a codec without "replace": count lines in what it did decode
        before = ""
    line += before.count("\n") + before.count("\r") - before.count("\r\n")
    bad = " ".join(f"0x{byte:02x}" for byte in err.object[err.start : err.end])
    detail = f"cannot decode {bad} as {encoding} ({err.reason}): is the file in another encoding?"
    return InputEncodingError(path, f"line {line}, byte offset {offset}", detail)


def iter_text(path: Path, encoding: str = DEFAULT_ENCODING) -> Generator[str, None, None]:
    """Decode a file chunk by chunk, with newlines translated to ``"\\n"`` (like
    Python's text mode).

    path (Path): The file.
    encoding (str): Its encoding.
    YIELDS (str): The decoded text, in pieces of no particular length.
    RAISES (InputEncodingError): At the first undecodable byte, naming its line
        and byte offset.
    """
    codec = codec_name(encoding)
    decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder(codec)(), translate=True)
    bytes_read = 0
    line = 1
    with path.open("rb") as file_:
        while True:
            chunk = file_.read(CHUNK_SIZE)
            bytes_read += len(chunk)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                raise _decode_error(path, encoding, err, bytes_read, line) from None
            except (UnicodeError, ValueError) as err:  # a codec failing without saying where
                detail = f"the {encoding} codec failed: {err}: is the file in another encoding?"
                raise InputEncodingError(path, f"line {line}", detail) from None
            line += text.count("\n")
            if text:
                yield text
            if not chunk:
                return


def iter_lines(path: Path, encoding: str = DEFAULT_ENCODING) -> Iterator[Tuple[int, str]]:
    """Decode a file line by line (lines end with ``\\n``, ``\\r\\n`` or ``\\r``).

    path (Path): The file.
    encoding (str): Its encoding.
    YIELDS (Tuple[int, str]): The line number (from 1) and the line, without its newline.
    RAISES (InputEncodingError): At the first undecodable byte.
    """
    line_no = 0
    pieces: List[str] = []  # the unfinished line, kept as a list so a long line costs O(n)
    for text in iter_text(path, encoding):
        *lines, rest = text.split("\n")
        for line in lines:
            pieces.append(line)
            line_no += 1
            yield line_no, "".join(pieces)
            pieces = []
        if rest:
            pieces.append(rest)
    if pieces:
        yield line_no + 1, "".join(pieces)


def first_char(path: Path, encoding: str = DEFAULT_ENCODING) -> str:
    """RETURNS (str): The first non-whitespace character of a file ("" if none)."""
    for text in iter_text(path, encoding):
        stripped = text.lstrip()
        if stripped:
            return stripped[0]
    return ""


def has_surrogate_escape(path: Path, encoding: str = DEFAULT_ENCODING) -> bool:
    """Whether a JSON file has a ``\\uD800``-``\\uDFFF`` escape anywhere (paired or
    not; an escaped backslash before ``u`` gives a harmless false positive).

    path (Path): The file.
    encoding (str): Its encoding.
    RETURNS (bool): True if such an escape appears.
    """
    tail = ""
    for text in iter_text(path, encoding):
        # The tail covers an escape split between two chunks ("\u" + "d8").
        if SURROGATE_ESCAPE.search(tail + text):
            return True
        tail = text[-3:]
    return False


class Utf8Reader:
    """A binary file-like object over a file in any encoding: ``read`` returns
    its text re-encoded as UTF-8, which is the only input ijson parses.

    path (Path): The file.
    encoding (str): Its encoding.
    transform (Optional[Callable[[str], str]]): Applied to each decoded piece
        in order, e.g. ``NestingGuard.feed``.
    """

    def __init__(
        self, path: Path, encoding: str = DEFAULT_ENCODING, transform: Optional[Callable[[str], str]] = None
    ) -> None:
        self._chunks: Generator[str, None, None] = iter_text(path, encoding)
        self._transform = transform
        self._buffer = b""

    def close(self) -> None:
        """Close the file, also when the parser stops before its end."""
        self._chunks.close()

    def read(self, size: int = -1) -> bytes:
        """size (int): At most this many bytes; -1 for all.
        RETURNS (bytes): The next bytes, ``b""`` at the end.
        RAISES (InputEncodingError): When the file cannot be decoded.
        """
        while size < 0 or len(self._buffer) < size:
            text = next(self._chunks, None)
            if text is None:
                break
            if self._transform is not None:
                text = self._transform(text)
            self._buffer += text.encode("utf-8")
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data
