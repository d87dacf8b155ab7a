"""Streaming corpus readers: CLUE JSON and char-per-line (CoNLL-style) files → spaCy Docs.

The readers are pure generators (no CLI, no output): they yield one ``Doc`` per
record, built with the language's own tokenizer (``spacy.blank("zh")`` segments
one token per character), with ``doc.ents`` set and every other token ``O``.
Nothing is lost silently: every record is either yielded or counted as skipped
by reason, and every entity is either kept or counted as dropped by reason, in a
``CorpusStats`` object the caller passes in.

Rules, stated once:

* Record-level problems (bad JSON, ``text`` not a non-empty string, ``label`` not
  an object, offsets not a list of ``[int, int]`` pairs, an invalid tag sequence)
  raise ``CorpusError`` naming the file, the line (the record index for JSON
  arrays) and the problem, unless ``skip_invalid=True``: then the record is
  skipped and counted under ``stats.skipped[reason]``.
* Entity-level problems never stop the conversion: the entity is dropped and
  counted under ``stats.dropped[reason]``, checked in this order:
  ``unknown_label`` (not in the given label set), ``out_of_range``
  (``not 0 <= start <= end < len(text)``), ``text_mismatch``
  (``text[start:end + 1]`` differs from the surface key), ``misaligned`` (the
  span does not fall on token boundaries, e.g. it starts or ends on a
  whitespace), ``duplicate`` (same span and label listed twice), ``overlap``.
* Overlaps: the longest span wins; ties go to the earliest start, then to the
  span listed first in the record. Every span that overlaps a kept span is
  dropped as ``overlap``.
* Tag sequences (char-per-line format): an ``I-``/``M-``/``E-`` tag that does not
  continue an open entity of the same label, or (BIOES/BMES) an entity that is
  not closed by ``E-``/``S-``, is invalid. By default that is a record-level
  error; with ``repair_tags=True`` it is repaired the conlleval way (the stray
  tag starts a new entity, an unclosed entity ends at its last tag) and each
  repair is counted under ``stats.repaired[reason]``.
"""
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import ijson
from spacy.language import Language
from spacy.tokens import Doc, Span

# How many example messages to keep per reason, so reports stay short.
MAX_EXAMPLES = 5

# Entity-level drop reasons, in the order they are checked.
DROP_REASONS = ("unknown_label", "out_of_range", "text_mismatch", "misaligned", "duplicate", "overlap")
# Record-level reasons (fatal unless skip_invalid).
SKIP_REASONS = (
    "invalid_json",
    "bad_record",
    "bad_text",
    "empty_text",
    "bad_label",
    "bad_offsets",
    "bad_line",
    "bad_tag",
    "invalid_tag_sequence",
)

# Tag prefixes per scheme. ``I`` and ``M`` both continue an entity.
SCHEME_PREFIXES: Dict[str, Tuple[str, ...]] = {
    "BIO": ("B", "I"),
    "BIOES": ("B", "I", "E", "S"),
    "BMES": ("B", "M", "E", "S"),
}
OUTSIDE = "O"
DOCSTART = "-DOCSTART-"

# A character-level entity: (start, end_exclusive, label).
CharSpan = Tuple[int, int, str]


class CorpusError(ValueError):
    """A record that cannot be converted, located by file and line (or record index).

    path (Path): The input file.
    location (str): Where in the file, e.g. ``"line 12"`` or ``"record 3"``.
    reason (str): A key of ``SKIP_REASONS``.
    detail (str): What is wrong.
    """

    def __init__(self, path: Path, location: str, reason: str, detail: str) -> None:
        self.path = path
        self.location = location
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}, {location}: {detail} [{reason}]")


@dataclass
class CorpusStats:
    """Counts of one conversion. Invariants (see ``check``):
    ``records_read == docs_written + sum(skipped)`` and
    ``entities_in == entities_kept + sum(dropped)``.

    records_read (int): Records (JSON objects, sentences) seen.
    docs_written (int): Docs yielded.
    unlabeled (int): Docs from records without a ``label`` field (no entities).
    entities_in (int): Entity mentions found in the yielded docs' records.
    entities_kept (int): Entities set on the yielded docs.
    dropped (Counter): Dropped entities by reason (``DROP_REASONS``).
    skipped (Counter): Skipped records by reason (``SKIP_REASONS``).
    repaired (Counter): Repaired tag-sequence problems by kind.
    labels (Counter): Kept entities by label.
    examples (Dict[str, List[str]]): Up to ``MAX_EXAMPLES`` messages per reason.
    """

    records_read: int = 0
    docs_written: int = 0
    unlabeled: int = 0
    entities_in: int = 0
    entities_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    examples: Dict[str, List[str]] = field(default_factory=dict)

    def note(self, reason: str, message: str) -> None:
        """Keep an example message for a reason, up to ``MAX_EXAMPLES``."""
        kept = self.examples.setdefault(reason, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(message)

    def drop(self, reason: str, message: str) -> None:
        """Count a dropped entity. reason (str): One of ``DROP_REASONS``."""
        self.dropped[reason] += 1
        self.note(reason, message)

    def skip(self, error: CorpusError) -> None:
        """Count a skipped record. error (CorpusError): Why it was skipped."""
        self.skipped[error.reason] += 1
        self.note(error.reason, str(error))

    def check(self) -> None:
        """Raise AssertionError if a record or an entity went uncounted."""
        n_skipped = sum(self.skipped.values())
        if self.records_read != self.docs_written + n_skipped:
            raise AssertionError(
                f"records_read {self.records_read} != docs_written {self.docs_written} + skipped {n_skipped}"
            )
        n_dropped = sum(self.dropped.values())
        if self.entities_in != self.entities_kept + n_dropped:
            raise AssertionError(
                f"entities_in {self.entities_in} != kept {self.entities_kept} + dropped {n_dropped}"
            )

    def to_dict(self) -> Dict[str, Any]:
        """RETURNS (Dict[str, Any]): JSON-serializable counts, reasons sorted by name."""
        return {
            "records_read": self.records_read,
            "docs_written": self.docs_written,
            "records_skipped": sum(self.skipped.values()),
            "skipped": dict(sorted(self.skipped.items())),
            "unlabeled": self.unlabeled,
            "entities_in": self.entities_in,
            "entities_kept": self.entities_kept,
            "entities_dropped": sum(self.dropped.values()),
            "dropped": dict(sorted(self.dropped.items())),
            "repaired": dict(sorted(self.repaired.items())),
            "labels": dict(sorted(self.labels.items())),
            "examples": self.examples,
        }


# -- shared: char spans → Doc -------------------------------------------------------


def resolve_overlaps(spans: Sequence[CharSpan]) -> Tuple[List[CharSpan], List[CharSpan]]:
    """Keep the longest spans; ties go to the earliest start, then to input order.

    spans (Sequence[CharSpan]): ``(start, end_exclusive, label)`` triples.
    RETURNS (Tuple[List[CharSpan], List[CharSpan]]): Kept spans sorted by start, and
        the dropped ones in input order.
    """
    order = sorted(range(len(spans)), key=lambda i: (spans[i][0] - spans[i][1], spans[i][0], i))
    taken: List[CharSpan] = []
    dropped_ids: Set[int] = set()
    for i in order:
        start, end, _ = spans[i]
        if any(start < t_end and t_start < end for t_start, t_end, _ in taken):
            dropped_ids.add(i)
        else:
            taken.append(spans[i])
    dropped = [spans[i] for i in range(len(spans)) if i in dropped_ids]
    return sorted(taken), dropped


def _mention(text: str, start: int, end: int, label: str) -> str:
    """RETURNS (str): ``label 'surface' [start, end_inclusive]``, for messages (CLUE's own notation)."""
    return f"{label} {text[start:end]!r} [{start}, {end - 1}]"


def make_doc(
    nlp: Language, text: str, spans: Sequence[CharSpan], stats: CorpusStats, where: str
) -> Doc:
    """Tokenize a text and set its entities, dropping (and counting) those that
    are misaligned with the tokens, duplicated or overlapping.

    nlp (Language): Provides the tokenizer (``make_doc``).
    text (str): The record's text.
    spans (Sequence[CharSpan]): Candidate entities, already range/surface checked.
    stats (CorpusStats): Receives the drop counts and the kept-entity counts.
    where (str): ``"file, line N"``, for the example messages.
    RETURNS (Doc): The doc, with ``doc.ents`` set and all other tokens ``O``.
    """
    doc = nlp.make_doc(text)
    aligned: List[CharSpan] = []
    seen: Set[CharSpan] = set()
    for start, end, label in spans:
        # Strict alignment: a span must start and end on token boundaries, so an
        # entity that begins or ends on a whitespace character is not representable.
        if doc.char_span(start, end, label=label) is None:
            stats.drop("misaligned", f"{where}: {_mention(text, start, end, label)} is not on token boundaries")
        elif (start, end, label) in seen:
            stats.drop("duplicate", f"{where}: {_mention(text, start, end, label)} is listed twice")
        else:
            seen.add((start, end, label))
            aligned.append((start, end, label))
    kept, dropped = resolve_overlaps(aligned)
    for start, end, label in dropped:
        stats.drop("overlap", f"{where}: {_mention(text, start, end, label)} overlaps a longer or earlier entity")
    ents: List[Span] = [doc.char_span(start, end, label=label) for start, end, label in kept]
    # default="outside": the doc is fully annotated, every non-entity token is O.
    doc.set_ents(ents, default="outside")
    stats.entities_kept += len(ents)
    stats.labels.update(label for _, _, label in kept)
    return doc


# -- CLUE JSON ----------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    # bool is a subclass of int, but true/false are not offsets.
    return isinstance(value, int) and not isinstance(value, bool)


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
    labels = record.get("label")
    if labels is None:
        return text, None
    if not isinstance(labels, dict):
        got = type(labels).__name__
        raise CorpusError(path, location, "bad_label", f"'label' must be an object, got {got}")
    mentions: List[Tuple[int, int, str, str]] = []
    for label, surfaces in labels.items():
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


def _first_char(path: Path) -> str:
    """RETURNS (str): The first non-whitespace character of a file ("" if none)."""
    with path.open("r", encoding="utf-8-sig") as file_:
        while True:
            chunk = file_.read(4096)
            if not chunk:
                return ""
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0]


def _iter_json_lines(path: Path) -> Iterator[Tuple[str, Any, Optional[CorpusError]]]:
    """Yield ``(location, record, error)`` per non-blank line, reading line by line."""
    with path.open("r", encoding="utf-8-sig") as file_:
        for line_no, line in enumerate(file_, start=1):
            if not line.strip():
                continue
            location = f"line {line_no}"
            try:
                yield location, json.loads(line), None
            except json.JSONDecodeError as err:
                yield location, None, CorpusError(path, location, "invalid_json", f"invalid JSON: {err}")


def _iter_json_array(path: Path) -> Iterator[Tuple[str, Any, Optional[CorpusError]]]:
    """Yield ``(location, record, error)`` per array item, streamed with ijson.

    A syntax error inside the array cannot be skipped (the parser cannot resync),
    so it always raises, naming the index of the record it was reading.
    """
    with path.open("rb") as file_:
        index = 0
        try:
            # use_float: plain floats instead of Decimal, so type checks reject them alike.
            for index, record in enumerate(ijson.items(file_, "item", use_float=True), start=1):
                yield f"record {index}", record, None
        except ijson.JSONError as err:
            raise CorpusError(
                path, f"record {index + 1}", "invalid_json", f"invalid JSON in the array: {err}"
            ) from err


def _count_and_convert(
    records: Iterable[Tuple[Any, Any, Optional[CorpusError]]],
    to_doc: Callable[[Any, Any], Doc],
    stats: CorpusStats,
    skip_invalid: bool,
) -> Iterator[Doc]:
    """Convert ``(location, record, parse_error)`` triples, counting every record:
    each one is either written as a doc or, with ``skip_invalid``, skipped by reason.
    """
    for location, record, error in records:
        stats.records_read += 1
        try:
            if error is not None:
                raise error
            doc = to_doc(location, record)
        except CorpusError as err:
            if not skip_invalid:
                raise
            stats.skip(err)
            continue
        stats.docs_written += 1
        yield doc


def read_clue(
    path: Union[str, Path],
    nlp: Language,
    stats: CorpusStats,
    labels: Optional[Iterable[str]] = None,
    skip_invalid: bool = False,
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
    YIELDS (Doc): One doc per valid record.
    """
    path = Path(path)
    label_set = set(labels) if labels is not None else None
    records = _iter_json_array(path) if _first_char(path) == "[" else _iter_json_lines(path)
    yield from _count_and_convert(
        records,
        lambda location, record: clue_record_to_doc(nlp, record, path, location, stats, label_set),
        stats,
        skip_invalid,
    )


# -- char-per-line (CoNLL-style) -----------------------------------------------------


class TagSequenceError(ValueError):
    """A tag outside the scheme or an invalid tag sequence, at a token position.

    position (int): The token index (``len(tags)`` for the end of the sentence).
    reason (str): ``"bad_tag"`` or ``"invalid_tag_sequence"``.
    detail (str): What is wrong.
    """

    def __init__(self, position: int, reason: str, detail: str) -> None:
        self.position = position
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


def split_tag(tag: str) -> Tuple[str, str]:
    """Split ``"B-PER"`` into ``("B", "PER")``; ``"O"`` gives ``("O", "")``.

    tag (str): A tag in ``PREFIX-LABEL`` form.
    RETURNS (Tuple[str, str]): The prefix and the label.
    RAISES (ValueError): If the tag is neither ``O`` nor ``PREFIX-LABEL``.
    """
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, sep, label = tag.partition("-")
    if not sep or not label or not prefix:
        raise ValueError(f"tag {tag!r} is neither 'O' nor PREFIX-LABEL")
    return prefix, label


def tags_to_spans(
    tags: Sequence[str], scheme: str = "BIOES", repair: bool = False
) -> Tuple[List[CharSpan], List[Tuple[int, str]]]:
    """Decode one sentence's tags into spans.

    tags (Sequence[str]): One tag per token, e.g. ``["B-PER", "E-PER", "O"]``.
    scheme (str): ``"BIO"``, ``"BIOES"`` or ``"BMES"``.
    repair (bool): Repair invalid sequences (conlleval rule: a stray ``I-``/``M-``/
        ``E-`` starts a new entity; an unclosed BIOES/BMES entity ends at its
        last tag) instead of raising.
    RETURNS (Tuple[List[CharSpan], List[Tuple[int, str]]]): The spans
        ``(start, end_exclusive, label)`` and the repairs ``(position, kind)``,
        kind ``"stray_continuation"`` or ``"unclosed_entity"``.
    RAISES (TagSequenceError): On a tag outside the scheme, or an invalid
        sequence when ``repair`` is False.
    """
    if scheme not in SCHEME_PREFIXES:
        raise ValueError(f"Unknown tag scheme {scheme!r}: use one of {sorted(SCHEME_PREFIXES)}")
    prefixes = SCHEME_PREFIXES[scheme]
    must_close = scheme != "BIO"  # BIOES/BMES entities end with E- or S-.
    spans: List[CharSpan] = []
    repairs: List[Tuple[int, str]] = []
    open_start = -1  # -1: no entity open
    open_label = ""

    def close(position: int) -> None:
        # End the open entity (if any) before ``position``.
        nonlocal open_start
        if open_start < 0:
            return
        if must_close:
            if not repair:
                raise TagSequenceError(
                    position, "invalid_tag_sequence",
                    f"the {open_label} entity started at token {open_start + 1} is not closed by E-/S-",
                )
            repairs.append((position, "unclosed_entity"))
        spans.append((open_start, position, open_label))
        open_start = -1

    for i, tag in enumerate(tags):
        try:
            prefix, label = split_tag(tag)
        except ValueError as err:
            raise TagSequenceError(i, "bad_tag", str(err)) from None
        if prefix != OUTSIDE and prefix not in prefixes:
            raise TagSequenceError(
                i, "bad_tag", f"tag {tag!r} is not in the {scheme} scheme (prefixes {', '.join(prefixes)}, O)"
            )
        if prefix in ("I", "M", "E"):
            if open_start < 0 or label != open_label:
                if not repair:
                    raise TagSequenceError(
                        i, "invalid_tag_sequence", f"tag {tag!r} does not continue an open {label} entity"
                    )
                repairs.append((i, "stray_continuation"))
                close(i)
                open_start, open_label = i, label
            if prefix == "E":
                spans.append((open_start, i + 1, label))
                open_start = -1
        else:  # O, B or S all end whatever is open
            close(i)
            if prefix == "S":
                spans.append((i, i + 1, label))
            elif prefix == "B":
                open_start, open_label = i, label
    close(len(tags))
    return spans, repairs


def spans_to_tags(length: int, spans: Sequence[CharSpan], scheme: str = "BIOES") -> List[str]:
    """Encode non-overlapping spans as tags (the inverse of ``tags_to_spans``).

    length (int): Number of tokens.
    spans (Sequence[CharSpan]): ``(start, end_exclusive, label)`` triples.
    scheme (str): ``"BIO"``, ``"BIOES"`` or ``"BMES"``.
    RETURNS (List[str]): One tag per token.
    """
    inside = "M" if scheme == "BMES" else "I"
    single = scheme != "BIO"
    tags = [OUTSIDE] * length
    for start, end, label in spans:
        if single and end - start == 1:
            tags[start] = f"S-{label}"
            continue
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"{inside}-{label}"
        if single:
            tags[end - 1] = f"E-{label}"
    return tags


def doc_to_conll(doc: Doc, scheme: str = "BIOES") -> str:
    """Write a doc in the char-per-line format (one ``char TAG`` line per non-space
    character, a blank line after the sentence), e.g. to make test fixtures.

    doc (Doc): A doc with entities.
    scheme (str): ``"BIO"``, ``"BIOES"`` or ``"BMES"``.
    RETURNS (str): The lines.
    """
    chars = [(i, c) for i, c in enumerate(doc.text) if not c.isspace()]
    position = {char_i: n for n, (char_i, _) in enumerate(chars)}
    spans = [(position[e.start_char], position[e.end_char - 1] + 1, e.label_) for e in doc.ents]
    tags = spans_to_tags(len(chars), spans, scheme)
    return "".join(f"{c}\t{tag}\n" for (_, c), tag in zip(chars, tags)) + "\n"


# One line of a char-per-line file: (line_no, char, tag).
Row = Tuple[int, str, str]


def _iter_conll_sentences(path: Path) -> Iterator[Tuple[int, List[Row], Optional[CorpusError]]]:
    """Yield ``(first_line, [(line_no, char, tag)], error)`` per sentence.

    Blank lines separate sentences; ``-DOCSTART-`` lines are ignored. A line is
    ``CHAR TAG`` separated by a tab (then CHAR may be a space) or by whitespace.
    A malformed line makes its sentence an error, reported once the sentence ends.
    """
    rows: List[Row] = []
    error: Optional[CorpusError] = None
    first = 0
    with path.open("r", encoding="utf-8-sig") as file_:
        for line_no, raw in enumerate(file_, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                if rows or error:
                    yield first, rows, error
                rows, error = [], None
                continue
            if line.split()[0] == DOCSTART:
                continue
            if not rows and error is None:
                first = line_no
            if "\t" in line:
                char, _, tag = line.rpartition("\t")
                tag = tag.strip()
            else:
                parts = line.split()
                char, tag = (parts[0], parts[1]) if len(parts) == 2 else ("", "")
            if not char or not tag:
                if error is None:
                    detail = f"expected 'CHAR TAG', got {line!r}"
                    error = CorpusError(path, f"line {line_no}", "bad_line", detail)
                continue
            rows.append((line_no, char, tag))
    if rows or error:
        yield first, rows, error


def conll_sentence_to_doc(
    nlp: Language,
    rows: Sequence[Row],
    path: Path,
    stats: CorpusStats,
    scheme: str = "BIOES",
    labels: Optional[Set[str]] = None,
    repair_tags: bool = False,
) -> Doc:
    """Convert one char-per-line sentence into a Doc.

    The text is the characters joined; entity char offsets come from the tags,
    so a multi-character "char" field is fine as long as spans fall on tokens.

    nlp (Language): Provides the tokenizer.
    rows (Sequence[Tuple[int, str, str]]): ``(line_no, char, tag)`` per line.
    path (Path): The input file, for messages.
    stats (CorpusStats): Receives the entity and repair counts.
    scheme (str): ``"BIO"``, ``"BIOES"`` or ``"BMES"``.
    labels (Optional[Set[str]]): Allowed labels; ``None`` allows all.
    repair_tags (bool): Repair invalid tag sequences instead of raising.
    RETURNS (Doc): The converted doc.
    """
    chars = [char for _, char, _ in rows]
    offsets = [0]
    for char in chars:
        offsets.append(offsets[-1] + len(char))
    text = "".join(chars)
    where = f"{path}, line {rows[0][0]}"
    if not text.strip():
        raise CorpusError(path, f"line {rows[0][0]}", "empty_text", "the sentence is only whitespace")
    try:
        spans, repairs = tags_to_spans([tag for _, _, tag in rows], scheme, repair_tags)
    except TagSequenceError as err:
        # Name the line of the offending tag (the last line for "not closed at the end").
        line_no = rows[min(err.position, len(rows) - 1)][0]
        raise CorpusError(path, f"line {line_no}", err.reason, err.detail) from None
    for position, kind in repairs:
        stats.repaired[kind] += 1
        line_no = rows[min(position, len(rows) - 1)][0]
        stats.note(kind, f"{path}, line {line_no}: repaired ({kind})")
    stats.entities_in += len(spans)
    candidates: List[CharSpan] = []
    for start, end, label in spans:
        if labels is not None and label not in labels:
            surface = text[offsets[start] : offsets[end]]
            stats.drop("unknown_label", f"{where}: label {label!r} ({surface!r}) is not in the label set")
        else:
            candidates.append((offsets[start], offsets[end], label))
    return make_doc(nlp, text, candidates, stats, where)


def read_conll(
    path: Union[str, Path],
    nlp: Language,
    stats: CorpusStats,
    scheme: str = "BIOES",
    labels: Optional[Iterable[str]] = None,
    skip_invalid: bool = False,
    repair_tags: bool = False,
) -> Iterator[Doc]:
    """Stream a char-per-line file (``char TAG`` per line, blank line between
    sentences, ``-DOCSTART-`` ignored) as Docs, one per sentence.

    path (Union[str, Path]): The input file.
    nlp (Language): Provides the tokenizer, e.g. ``spacy.blank("zh")``.
    stats (CorpusStats): Receives all counts.
    scheme (str): ``"BIO"``, ``"BIOES"`` or ``"BMES"``.
    labels (Optional[Iterable[str]]): Allowed labels; others are dropped as
        ``unknown_label``. ``None`` allows all.
    skip_invalid (bool): Skip (and count) malformed sentences instead of raising.
    repair_tags (bool): Repair invalid tag sequences (counted) instead of
        treating them as malformed.
    YIELDS (Doc): One doc per valid sentence.
    """
    if scheme not in SCHEME_PREFIXES:
        raise ValueError(f"Unknown tag scheme {scheme!r}: use one of {sorted(SCHEME_PREFIXES)}")
    path = Path(path)
    label_set = set(labels) if labels is not None else None
    yield from _count_and_convert(
        _iter_conll_sentences(path),
        lambda _, rows: conll_sentence_to_doc(
            nlp, rows, path, stats, scheme, label_set, repair_tags
        ),
        stats,
        skip_invalid,
    )
