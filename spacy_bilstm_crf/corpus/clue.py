"""CLUE JSON (one object per line, or one array) → Docs, streamed."""
import json
from contextlib import closing
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Set, Tuple, Union

import ijson
from spacy.language import Language
from spacy.tokens import Doc

from .docs import CharSpan, make_doc
from .nesting import MAX_JSON_DEPTH, NestingGuard
from .stats import CorpusError, CorpusStats, count_and_convert
from .textio import DEFAULT_ENCODING, Utf8Reader, first_char, has_surrogate_escape, iter_lines

# Nesting beyond what any CLUE record has (5 levels: record, label, surfaces,
# offset list, pair) is a record error, not a crash of the parser.
TOO_DEEP = f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep (a CLUE record has 5 levels)"
TOO_DEEP_LINE = "the JSON is nested too deeply for the parser (a CLUE record has 5 levels)"


def _is_int(value: Any) -> bool:
    # bool is a subclass of int, but true/false are not offsets.
    return isinstance(value, int) and not isinstance(value, bool)


def lone_surrogate_at(value: str) -> int:
    """Where a string holds a lone UTF-16 surrogate (``"\\ud800"`` in JSON decodes
    to one): no valid Unicode text does, and spaCy's string store cannot hash it.

    value (str): The string.
    RETURNS (int): The index of the first lone surrogate, or -1.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return -1


def parse_clue_record(
    record: Any, path: Path, location: str
) -> Tuple[str, Optional[List[Tuple[int, int, str, str]]]]:
    """Validate the structure of one CLUE record.

    record (Any): The decoded JSON value.
    path (Path): The input file, for error messages.
    location (str): ``"line N"`` or ``"record N"``, for error messages.
    RETURNS (Tuple[str, Optional[List[Tuple[int, int, str, str]]]]): The text and
        the mentions as ``(start, end_inclusive, label, surface)``, or ``None``
        when the record has no ``label`` field (unlabeled).
    """
    if not isinstance(record, dict):
        got = type(record).__name__
        raise CorpusError(path, location, "bad_record", f"expected a JSON object, got {got}")
    text = record.get("text")
    if not isinstance(text, str):
        raise CorpusError(path, location, "bad_text", f"'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise CorpusError(path, location, "empty_text", "'text' is empty")
    bad_char = lone_surrogate_at(text)
    if bad_char >= 0:
        raise CorpusError(
            path, location, "lone_surrogate",
            f"'text' has a lone surrogate {text[bad_char]!r} at character {bad_char}, which is not valid Unicode",
        )
    labels = record.get("label")
    if labels is None:
        return text, None
    if not isinstance(labels, dict):
        got = type(labels).__name__
        raise CorpusError(path, location, "bad_label", f"'label' must be an object, got {got}")
    mentions: List[Tuple[int, int, str, str]] = []
    for key, surfaces in labels.items():
        # " name " is the label name: surrounding whitespace is never part of a label.
        label = key.strip()
        # An empty label would be counted as kept but saved as no entity at all.
        if not label:
            detail = f"an entity label is empty: 'label' has the key {key!r}"
            raise CorpusError(path, location, "bad_label", detail)
        if lone_surrogate_at(label) >= 0:
            detail = f"the label {label!r} has a lone surrogate, which is not valid Unicode"
            raise CorpusError(path, location, "lone_surrogate", detail)
        if not isinstance(surfaces, dict):
            raise CorpusError(
                path, location, "bad_label",
                f"'label.{label}' must map surface strings to offset lists, got {type(surfaces).__name__}",
            )
        for surface, offsets in surfaces.items():
            if not isinstance(offsets, list):
                raise CorpusError(
                    path, location, "bad_offsets",
                    f"offsets of {label} {surface!r} must be a list of [start, end] pairs, got {offsets!r}",
                )
            for pair in offsets:
                if not (isinstance(pair, list) and len(pair) == 2 and all(_is_int(x) for x in pair)):
                    raise CorpusError(
                        path, location, "bad_offsets",
                        f"offset of {label} {surface!r} must be a [start, end] pair of integers, "
                        f"got {pair!r}",
                    )
                mentions.append((pair[0], pair[1], label, surface))
    return text, mentions


def clue_record_to_doc(
    nlp: Language,
    record: Any,
    path: Path,
    location: str,
    stats: CorpusStats,
    labels: Optional[Set[str]] = None,
) -> Doc:
    """Convert one CLUE record: validate it, check every mention, build the Doc.

    nlp (Language): Provides the tokenizer.
    record (Any): The decoded JSON value.
    path (Path): The input file, for messages.
    location (str): ``"line N"`` or ``"record N"``, for messages.
    stats (CorpusStats): Receives the entity counts (not the record counts).
    labels (Optional[Set[str]]): Allowed labels; ``None`` allows all.
    RETURNS (Doc): The converted doc.
    """
    text, mentions = parse_clue_record(record, path, location)
    where = f"{path}, {location}"
    if mentions is None:
        stats.unlabeled += 1
        mentions = []
    stats.entities_in += len(mentions)
    candidates: List[CharSpan] = []
    for start, end, label, surface in mentions:
        # CLUE offsets are end INCLUSIVE.
        if labels is not None and label not in labels:
            stats.unknown_labels[label] += 1
            stats.drop("unknown_label", f"{where}: label {label!r} ({surface!r}) is not in the label set")
        elif not 0 <= start <= end < len(text):
            stats.drop(
                "out_of_range",
                f"{where}: {label} {surface!r} [{start}, {end}] is outside the text (length {len(text)})",
            )
        elif text[start : end + 1] != surface:
            stats.drop(
                "text_mismatch",
                f"{where}: {label} {surface!r} [{start}, {end}] "
                f"but the text there is {text[start:end + 1]!r}",
            )
        else:
            candidates.append((start, end + 1, label))
    return make_doc(nlp, text, candidates, stats, where)


def _iter_json_lines(path: Path, encoding: str) -> Iterator[Tuple[str, Any, Optional[CorpusError]]]:
    """Yield ``(location, record, error)`` per non-blank line, reading line by line."""
    for line_no, line in iter_lines(path, encoding):
        if not line.strip():
            continue
        location = f"line {line_no}"
        try:
            record = json.loads(line)
        except ValueError as err:  # JSONDecodeError, or an integer of over 4,300 digits
            yield location, None, CorpusError(path, location, "invalid_json", f"invalid JSON: {err}")
        except RecursionError:  # the json module recurses once per nesting level
            yield location, None, CorpusError(path, location, "too_deep", TOO_DEEP_LINE)
        else:
            yield location, record, None


def _iter_json_array(path: Path, encoding: str) -> Iterator[Tuple[str, Any, Optional[CorpusError]]]:
    """Yield ``(location, record, error)`` per array item, streamed with ijson.

    A syntax error inside the array cannot be skipped (the parser cannot resync),
    so it always raises, naming the index of the record it was reading. A record
    nested too deeply is cut from the text before parsing (see ``NestingGuard``)
    and reported as a ``too_deep`` record error, which can be skipped.
    """
    # ijson's C backend mangles \uD800-\uDFFF escapes that do not form a pair
    # ("\ud800" → "?", "\ud800\u0041" → U+10041, "\udc00" → UnicodeDecodeError),
    # so such files go through its slower pure-Python backend, which keeps them
    # as the json module does and lets the record check report them.
    backend = ijson.get_backend("python") if has_surrogate_escape(path, encoding) else ijson
    guard = NestingGuard()
    with closing(Utf8Reader(path, encoding, transform=guard.feed)) as file_:
        index = 0
        try:
            # use_float: plain floats instead of Decimal, so type checks reject them alike.
            for index, record in enumerate(backend.items(file_, "item", use_float=True), start=1):
                if index in guard.too_deep:  # the parser saw a placeholder, not the record
                    yield f"record {index}", None, CorpusError(path, f"record {index}", "too_deep", TOO_DEEP)
                else:
                    yield f"record {index}", record, None
        except ijson.JSONError as err:
            detail = f"invalid JSON in the array: {err}"
            if index + 1 in guard.too_deep:
                detail = f"{TOO_DEEP}, and the array does not go on after it ({err})"
            raise CorpusError(path, f"record {index + 1}", "invalid_json", detail) from err


def read_clue(
    path: Union[str, Path],
    nlp: Language,
    stats: CorpusStats,
    labels: Optional[Iterable[str]] = None,
    skip_invalid: bool = False,
    encoding: str = DEFAULT_ENCODING,
) -> Iterator[Doc]:
    """Stream a CLUE-format file (JSON lines, or one JSON array) as Docs.

    The format is detected by the first non-whitespace character (``[`` → array).
    Memory stays flat in the file size: one record is decoded at a time.

    path (Union[str, Path]): The input file.
    nlp (Language): Provides the tokenizer, e.g. ``spacy.blank("zh")``.
    stats (CorpusStats): Receives all counts.
    labels (Optional[Iterable[str]]): Allowed labels; others are dropped as
        ``unknown_label``. ``None`` allows all.
    skip_invalid (bool): Skip (and count) malformed records instead of raising.
    encoding (str): The file's encoding, e.g. ``"gbk"``; a UTF-8 byte order
        mark is skipped.
    YIELDS (Doc): One doc per valid record.
    RAISES (InputEncodingError): The file is not in ``encoding`` (even with
        ``skip_invalid``).
    """
    path = Path(path)
    label_set = {label.strip() for label in labels} if labels is not None else None
    is_array = first_char(path, encoding) == "["
    records = _iter_json_array(path, encoding) if is_array else _iter_json_lines(path, encoding)
    yield from count_and_convert(
        records,
        lambda location, record: clue_record_to_doc(nlp, record, path, location, stats, label_set),
        stats,
        skip_invalid,
    )
