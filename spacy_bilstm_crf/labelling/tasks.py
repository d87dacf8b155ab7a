"""What the Label Studio and doccano round trips share: records in, docs with missing tokens out.

Going out, a record (as ``annotate`` and ``select`` write it) has a text, its predicted
``entities`` (``start``, ``end`` exclusive, ``label``, ``text``, ``score``) and
optionally ``uncertainty`` measures. Coming back, an annotated text is a list of
``Region``s: entity regions, and regions labelled with the *missing label*
(``UNREVIEWED``) whose characters the annotator did not review. ``build_doc`` turns
them into a character-token doc where those characters are missing
(``token.ent_iob == 0``, marginalized in training) and the rest of a reviewed text is
``O``.

Offsets are Python string indices (Unicode code points), as both tools write them.
Some front-end versions counted UTF-16 code units instead, which differ after a
character outside the Basic Multilingual Plane (emoji, CJK Extension B): when a
region's text does not match at its offsets but does at the UTF-16 reading, that
reading is used.
"""
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:  # spaCy is imported by the functions that need it (the CLI loads fast)
    from spacy.language import Language
    from spacy.tokens import Doc

MISSING_LABEL = "UNREVIEWED"
ON_ERROR = ("raise", "skip")
# A record's fields that are not copied into a task: the pre-annotation is written
# in the tool's own form instead.
ANNOTATION_FIELDS = ("entities",)


class TaskError(ValueError):
    """A record or task that cannot be converted; the message names it."""


@dataclass(frozen=True)
class Region:
    """An annotated character range of a text.

    start (int): First character (code point index).
    end (int): Character after the last one.
    label (str): Its label; the missing label marks unreviewed characters.
    score (Optional[float]): The model's probability of it, when known.
    """

    start: int
    end: int
    label: str
    score: Optional[float] = None


@dataclass
class ImportCounts:
    """What an import read and wrote: tasks in = docs + skipped.

    tasks (int): Tasks (or documents) read.
    docs (int): Docs written.
    unreviewed (int): Tasks without an annotation (written with every token missing,
        or skipped with ``skip_unreviewed``).
    skipped_unreviewed (int): Unreviewed tasks not written.
    skipped_errors (int): Tasks not written because of an error (``on_error="skip"``).
    cancelled (int): Annotations skipped because the annotator cancelled (skipped) them.
    entities (int): Entities written.
    missing_chars (int): Characters written as missing (unreviewed), whitespace included.
    errors (List[str]): The messages of the skipped errors.
    """

    tasks: int = 0
    docs: int = 0
    unreviewed: int = 0
    skipped_unreviewed: int = 0
    skipped_errors: int = 0
    cancelled: int = 0
    entities: int = 0
    missing_chars: int = 0
    errors: List[str] = field(default_factory=list)

    def add_doc(self, doc: "Doc") -> None:
        """Count a doc that is written.

        doc (Doc): The doc.
        """
        self.docs += 1
        self.entities += len(doc.ents)
        self.missing_chars += sum(len(t.text_with_ws) for t in doc if t.ent_iob == 0)

    def summary(self) -> str:
        """RETURNS (str): The counts in one line."""
        return (
            f"{self.tasks} tasks in = {self.docs} docs written + {self.skipped_unreviewed} unreviewed skipped "
            f"+ {self.skipped_errors} skipped for errors; {self.unreviewed} unreviewed, {self.cancelled} cancelled "
            f"annotations; {self.entities} entities; {self.missing_chars} missing characters"
        )


def load_records(path: Union[str, Path], text_key: str) -> Tuple[List[Dict[str, Any]], List[str]]:
    """The records of JSON lines or Parquet files (as ``annotate`` and ``select`` write them).

    path (Union[str, Path]): A file, a directory of them or a glob.
    text_key (str): The field holding the text.
    RETURNS (Tuple[List[Dict[str, Any]], List[str]]): The records, and where each is
        ("FILE, line N" or "FILE, row N"), for error messages.
    """
    from ..annotate.inputs import Reject, file_format, read_records, resolve_inputs

    records: List[Dict[str, Any]] = []
    places: List[str] = []
    for item in read_records(resolve_inputs(path), text_key):
        unit = "row" if file_format(Path(item.source)) == "parquet" else "line"
        place = f"{item.source}, {unit} {item.position}"
        if isinstance(item, Reject):
            raise TaskError(f"{place}: {item.reason}")
        records.append(item.record)
        places.append(place)
    return records, places


def record_text(record: Any, text_key: str, place: str) -> str:
    """The text of a record or task data, or an error naming it.

    record (Any): The parsed record.
    text_key (str): The field holding the text.
    place (str): Where the record is, for the error.
    RETURNS (str): The text.
    """
    if not isinstance(record, dict):
        raise TaskError(f"{place}: expected an object, got {type(record).__name__}")
    text = record.get(text_key)
    if not isinstance(text, str):
        found = "missing" if text_key not in record else f"a {type(text).__name__}"
        raise TaskError(f"{place}: the text field '{text_key}' is {found}, not a string")
    return text


def _offset(value: Any, what: str, place: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskError(f"{place}: {what} is {value!r}, not a character offset")
    return value


def record_regions(record: Dict[str, Any], text: str, place: str) -> List[Region]:
    """A record's predicted entities as regions, checked against its text.

    record (Dict[str, Any]): The record.
    text (str): Its text.
    place (str): Where it is, for errors.
    RETURNS (List[Region]): The entities, in text order.
    """
    entities = record.get("entities") or []
    if not isinstance(entities, list):
        raise TaskError(f"{place}: 'entities' is a {type(entities).__name__}, not a list")
    regions = []
    for k, ent in enumerate(entities):
        where = f"{place}, entity {k}"
        if not isinstance(ent, dict) or not isinstance(ent.get("label"), str):
            raise TaskError(f"{where}: expected an object with start, end and a string label, got {ent!r}")
        score = ent.get("score")
        if score is not None and not (isinstance(score, (int, float)) and 0.0 <= score <= 1.0):
            raise TaskError(f"{where}: score {score!r} is not a probability")
        start, end = _offset(ent.get("start"), "start", where), _offset(ent.get("end"), "end", where)
        region = Region(start, end, ent["label"], None if score is None else float(score))
        regions.append(check_region(region, text, ent.get("text"), where))
    return check_overlaps(regions, place)


def task_score(record: Dict[str, Any], regions: Sequence[Region]) -> Optional[float]:
    """The probability that a record's pre-annotation is right as a whole.

    ``1 - uncertainty.best_path`` (the CRF's exact probability of its best tagging)
    when the record has it; else the product of the entity scores (each entity right,
    taken as independent), when every entity has one; else None (unknown).

    record (Dict[str, Any]): The record.
    regions (Sequence[Region]): Its entities.
    RETURNS (Optional[float]): The score, or None.
    """
    uncertainty = record.get("uncertainty")
    if isinstance(uncertainty, dict) and isinstance(uncertainty.get("best_path"), (int, float)):
        return min(max(1.0 - float(uncertainty["best_path"]), 0.0), 1.0)
    if regions and all(r.score is not None for r in regions):
        return math.prod(r.score for r in regions)  # type: ignore[misc]
    return None


def plain_fields(record: Dict[str, Any], skip: Iterable[str]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """A record's other fields, split into plain values and nested ones.

    record (Dict[str, Any]): The record.
    skip (Iterable[str]): Fields not to copy.
    RETURNS (Tuple[Dict[str, Any], Dict[str, Any]]): Fields whose values are strings,
        numbers, booleans or null; fields whose values are lists or objects.
    """
    skipped = set(skip)
    plain, nested = {}, {}
    for key, value in record.items():
        if key in skipped:
            continue
        (nested if isinstance(value, (list, dict)) else plain)[key] = value
    return plain, nested


def gather_labels(labels: Iterable[str], missing_label: str) -> List[str]:
    """RETURNS (List[str]): The distinct labels, sorted, the missing label left out."""
    return sorted(set(labels) - {missing_label})


def record_labels(records: Iterable[Dict[str, Any]]) -> Iterable[str]:
    """YIELDS (str): The label of each entity of the records."""
    for record in records:
        for entity in record.get("entities") or []:
            if isinstance(entity, dict) and isinstance(entity.get("label"), str):
                yield entity["label"]


def utf16_to_code_points(text: str, start: int, end: int) -> Optional[Tuple[int, int]]:
    """Offsets counted in UTF-16 code units as code point offsets.

    text (str): The text.
    start (int): Start, in UTF-16 code units.
    end (int): End, in UTF-16 code units.
    RETURNS (Optional[Tuple[int, int]]): The offsets in code points, or None when
        they fall inside a character or past the end.
    """
    positions = {0: 0}
    units = 0
    for i, char in enumerate(text, start=1):
        units += 2 if ord(char) > 0xFFFF else 1
        positions[units] = i
    if start not in positions or end not in positions:
        return None
    return positions[start], positions[end]


def check_region(region: Region, text: str, region_text: Any, place: str) -> Region:
    """A region checked against the text: within it, not empty, with the text it claims.

    Whitespace at either end of a region is left out: annotators often select it,
    and it is not part of an entity (character tokens keep spaces as trailing
    whitespace, so it would not align).

    region (Region): The region as read.
    text (str): The text it is on.
    region_text (Any): The text the tool says it covers, or None.
    place (str): Where it is, for errors.
    RETURNS (Region): The region, in code points and without outer whitespace.
    """
    start, end = region.start, region.end
    if isinstance(region_text, str) and text[start:end] != region_text:
        converted = utf16_to_code_points(text, start, end)
        if converted is None or text[converted[0] : converted[1]] != region_text:
            raise TaskError(
                f"{place}: characters {start}-{end} of the text are {text[start:end]!r}, "
                f"not the region's text {region_text!r}"
            )
        start, end = converted
    if not 0 <= start < end <= len(text):
        raise TaskError(f"{place}: characters {start}-{end} are not a non-empty range of the text ({len(text)} characters)")
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start == end:
        raise TaskError(f"{place}: characters {region.start}-{region.end} are only whitespace")
    return Region(start, end, region.label, region.score)


def check_overlaps(regions: Iterable[Region], place: str) -> List[Region]:
    """Regions in text order, or an error if two overlap.

    A region given twice (same characters, same label) counts once: tools write such
    copies, e.g. when an annotator labels a pre-annotated span again.

    regions (Iterable[Region]): The regions of one text.
    place (str): Where they are, for the error.
    RETURNS (List[Region]): The regions, sorted.
    """
    unique = {(r.start, r.end, r.label): r for r in regions}
    ordered = sorted(unique.values(), key=lambda r: (r.start, r.end))
    for first, second in zip(ordered, ordered[1:]):
        if second.start < first.end:
            raise TaskError(
                f"{place}: regions overlap: {first.label} at {first.start}-{first.end} "
                f"and {second.label} at {second.start}-{second.end}"
            )
    return ordered


def build_doc(
    nlp: "Language", text: str, regions: Optional[Sequence[Region]], missing_label: str, place: str
) -> "Doc":
    """A character-token doc of an annotated text.

    nlp (Language): Tokenizes the text (``spacy.blank("zh")``: one token per character).
    text (str): The text.
    regions (Optional[Sequence[Region]]): Its regions, checked and not overlapping;
        None when nobody reviewed the text (every token missing).
    missing_label (str): The label of unreviewed regions: their tokens are missing.
    place (str): Where the text is, for errors.
    RETURNS (Doc): The doc: entities, missing tokens, and ``O`` elsewhere when reviewed.
    """
    doc = nlp.make_doc(text)
    if regions is None:
        doc.set_ents([], default="missing")
        return doc
    entities, missing = [], []
    for region in regions:
        span = doc.char_span(region.start, region.end, label=region.label, alignment_mode="strict")
        if span is None:
            raise TaskError(
                f"{place}: {region.label} at characters {region.start}-{region.end} "
                f"({text[region.start:region.end]!r}) does not align with the tokens"
            )
        (missing if region.label == missing_label else entities).append(span)
    doc.set_ents(entities, missing=missing, default="outside")
    return doc


def check_on_error(on_error: str) -> None:
    """An error unless ``on_error`` is "raise" or "skip"."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error is {on_error!r}: use one of {', '.join(ON_ERROR)}")
