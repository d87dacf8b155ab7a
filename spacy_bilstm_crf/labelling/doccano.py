"""doccano: documents with pre-annotations out, its JSONL export back to docs.

Targets doccano 1.8 sequence-labeling projects:

- **Import into doccano** ("Import Dataset", JSONL, column data ``text``, column label
  ``label``): one JSON object a line, ``{TEXT_KEY: text, "label": [[start, end,
  label], ...], "score": ..., "scores": [...], ...other record fields}``. doccano has
  no prediction: the pre-annotations become annotations of the importing user, and
  the fields it does not know (``score``, ``scores``, the record's other fields) are
  kept as the document's metadata. ``scores`` holds each entity's probability, in
  the order of ``label``; ``score`` the probability that the whole pre-annotation is
  right (``tasks.task_score``).
- **Labels** (``label_types``; "Labels", "Import Labels"): a JSON list of
  ``{"text", "suffix_key", "background_color", "text_color"}``, the missing label
  included.
- **Export** ("Export Dataset", JSONL): ``{"id", TEXT_KEY, "label": [[start, end,
  label], ...], "Comments": [...], ...metadata}``, or with relations enabled
  ``"entities": [{"id", "start_offset", "end_offset", "label"}]``; both are read.
  doccano's export says nothing of which documents were reviewed (export "only
  approved documents" to leave the others out): every exported document counts as
  reviewed, except one without any ``label``/``labels``/``entities`` field.
"""
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from .tasks import (
    ANNOTATION_FIELDS,
    MISSING_LABEL,
    ImportCounts,
    Region,
    TaskError,
    build_doc,
    check_on_error,
    check_overlaps,
    check_region,
    plain_fields,
    record_regions,
    record_text,
    task_score,
)

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

LABEL_FIELDS = ("label", "labels", "entities")
COLORS = ("#2196f3", "#4caf50", "#ff9800", "#e91e63", "#9c27b0", "#00bcd4", "#cddc39", "#795548", "#3f51b5", "#ff5722")
MISSING_COLOR = "#9e9e9e"


def to_doccano(
    records: Sequence[Dict[str, Any]], *, text_key: str = "text", places: Optional[Sequence[str]] = None
) -> List[Dict[str, Any]]:
    """doccano documents (JSONL lines) with the records' entities as labels.

    records (Sequence[Dict[str, Any]]): Records as ``annotate`` or ``select`` write them.
    text_key (str): The field holding the text, written under the same name.
    places (Optional[Sequence[str]]): Where each record is, for errors (default "record N").
    RETURNS (List[Dict[str, Any]]): The documents, in record order.
    """
    lines = []
    for k, record in enumerate(records):
        place = places[k] if places is not None else f"record {k}"
        text = record_text(record, text_key, place)
        regions = record_regions(record, text, place)
        plain, nested = plain_fields(record, ANNOTATION_FIELDS + LABEL_FIELDS + ("score", "scores"))
        line: Dict[str, Any] = {**plain, **nested, text_key: text}
        line["label"] = [[r.start, r.end, r.label] for r in regions]
        line["scores"] = [r.score for r in regions]
        score = task_score(record, regions)
        if score is not None:
            line["score"] = score
        lines.append(line)
    return lines


def label_types(labels: Sequence[str], *, missing_label: str = MISSING_LABEL) -> List[Dict[str, Any]]:
    """doccano's label import file: the entity labels and the missing label.

    labels (Sequence[str]): The entity labels.
    missing_label (str): The label that marks text the annotator did not review.
    RETURNS (List[Dict[str, Any]]): One object per label.
    """
    names = [label for label in labels if label != missing_label]
    types = [_label_type(name, COLORS[i % len(COLORS)]) for i, name in enumerate(names)]
    return types + [_label_type(missing_label, MISSING_COLOR)]


def _label_type(name: str, color: str) -> Dict[str, Any]:
    return {"text": name, "suffix_key": None, "background_color": color, "text_color": "#ffffff"}


def from_doccano(
    documents: Sequence[Any],
    nlp: "Language",
    *,
    text_key: str = "text",
    missing_label: str = MISSING_LABEL,
    skip_unreviewed: bool = False,
    on_error: str = "raise",
    places: Optional[Sequence[str]] = None,
) -> Tuple[List["Doc"], ImportCounts]:
    """Docs of doccano's JSONL export, unreviewed text missing.

    A document's spans are its entities, except those labelled ``missing_label``,
    whose tokens are missing; every other token is ``O``. A document without any
    label field was not reviewed: all its tokens are missing, or it is skipped
    (``skip_unreviewed``).

    documents (Sequence[Any]): The parsed lines of the export.
    nlp (Language): Tokenizes the texts (``spacy.blank("zh")``).
    text_key (str): The field holding the text.
    missing_label (str): The label of unreviewed spans.
    skip_unreviewed (bool): Leave out documents without a label field.
    on_error (str): "raise" (default) or "skip" a document that cannot be read (counted).
    places (Optional[Sequence[str]]): Where each document is, for errors (default "line N").
    RETURNS (Tuple[List[Doc], ImportCounts]): The docs, in order, and the counts.
    """
    check_on_error(on_error)
    docs: List["Doc"] = []
    counts = ImportCounts()
    for k, document in enumerate(documents):
        counts.tasks += 1
        place = places[k] if places is not None else f"line {k + 1}"
        try:
            text = record_text(document, text_key, place)
            regions = document_regions(document, text, place)
            doc = build_doc(nlp, text, regions, missing_label, place)
        except TaskError as err:
            if on_error == "raise":
                raise
            counts.skipped_errors += 1
            counts.errors.append(str(err))
            continue
        if regions is None:
            counts.unreviewed += 1
            if skip_unreviewed:
                counts.skipped_unreviewed += 1
                continue
        docs.append(doc)
        counts.add_doc(doc)
    return docs, counts


def document_regions(document: Dict[str, Any], text: str, place: str) -> Optional[List[Region]]:
    """The spans of an exported document, checked against its text.

    document (Dict[str, Any]): One line of the export.
    text (str): Its text.
    place (str): Where it is, for errors.
    RETURNS (Optional[List[Region]]): The spans in text order; None when the document
        has no label field.
    """
    key = next((key for key in LABEL_FIELDS if key in document), None)
    if key is None:
        return None
    spans = document[key]
    if not isinstance(spans, list):
        raise TaskError(f"{place}: '{key}' is a {type(spans).__name__}, not a list")
    regions = []
    for n, span in enumerate(spans):
        at = f"{place}, {key} {n}"
        if isinstance(span, dict):  # "entities" of a project with relations
            start, end, label = span.get("start_offset"), span.get("end_offset"), span.get("label")
        elif isinstance(span, list) and len(span) == 3:
            start, end, label = span
        else:
            raise TaskError(f"{at}: expected [start, end, label] or an object with start_offset, end_offset, label; got {span!r}")
        for what, offset in (("start", start), ("end", end)):
            if isinstance(offset, bool) or not isinstance(offset, int):
                raise TaskError(f"{at}: {what} is {offset!r}, not a character offset")
        if not isinstance(label, str):
            raise TaskError(f"{at}: label is {label!r}, not a string")
        regions.append(check_region(Region(start, end, label), text, None, at))
    return check_overlaps(regions, place)
