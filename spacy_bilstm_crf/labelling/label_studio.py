"""Label Studio: tasks with pre-annotations out, its JSON export back to docs.

Targets Label Studio 1.x (checked against the formats of 1.13) with a "Named Entity
Recognition" labeling config (``<Labels>`` on a ``<Text>``):

- **Tasks** (import into Label Studio, "Upload Files", JSON): a list of
  ``{"data": {TEXT_KEY: text, ...plain record fields}, "meta": {...nested fields},
  "predictions": [{"model_version", "score", "result": [region, ...]}]}``, each region
  ``{"id", "from_name": "label", "to_name": "text", "type": "labels", "score",
  "value": {"start", "end", "text", "labels": [label]}}``. ``score`` per region is
  the entity's probability; the prediction's ``score`` is the probability that the
  whole pre-annotation is right (``tasks.task_score``), which Label Studio shows in
  the Data Manager's "Prediction score" column to sort or filter by.
- **Labeling config** (``label_config``): the entity labels and the missing label.
- **Export** (Label Studio's "JSON" export): a list of tasks, each with ``data`` and
  ``annotations: [{"result": [region, ...], "was_cancelled", "created_at", ...}]``.
"""
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import quoteattr

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
    gather_labels,
    plain_fields,
    record_regions,
    record_text,
    task_score,
)

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

FROM_NAME = "label"
TO_NAME = "text"
REGION_TYPE = "labels"
ANNOTATION_CHOICES = ("last", "first")
MISSING_COLOR = "#9e9e9e"


def to_label_studio(
    records: Sequence[Dict[str, Any]],
    *,
    text_key: str = "text",
    model_version: str = "spacy-bilstm-crf",
    places: Optional[Sequence[str]] = None,
) -> List[Dict[str, Any]]:
    """Label Studio tasks with the records' entities as predictions.

    records (Sequence[Dict[str, Any]]): Records as ``annotate`` or ``select`` write them.
    text_key (str): The field holding the text; the task's ``data`` has it under the
        same name (the labeling config reads ``$TEXT_KEY``).
    model_version (str): The predictions' ``model_version``.
    places (Optional[Sequence[str]]): Where each record is, for errors (default "record N").
    RETURNS (List[Dict[str, Any]]): The tasks, in record order.
    """
    tasks = []
    for k, record in enumerate(records):
        place = places[k] if places is not None else f"record {k}"
        text = record_text(record, text_key, place)
        regions = record_regions(record, text, place)
        data, meta = plain_fields(record, ANNOTATION_FIELDS)
        data[text_key] = text
        prediction: Dict[str, Any] = {
            "model_version": model_version,
            "result": [_region(f"p{k}-{n}", text, region) for n, region in enumerate(regions)],
        }
        score = task_score(record, regions)
        if score is not None:
            prediction["score"] = score
        task: Dict[str, Any] = {"data": data, "predictions": [prediction]}
        if meta:
            task["meta"] = meta
        tasks.append(task)
    return tasks


def _region(region_id: str, text: str, region: Region) -> Dict[str, Any]:
    value = {"start": region.start, "end": region.end, "text": text[region.start : region.end], "labels": [region.label]}
    result: Dict[str, Any] = {
        "id": region_id,
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "type": REGION_TYPE,
        "value": value,
    }
    if region.score is not None:
        result["score"] = region.score
    return result


def label_config(labels: Sequence[str], *, missing_label: str = MISSING_LABEL, text_key: str = "text") -> str:
    """The labeling config of a project for these tasks.

    labels (Sequence[str]): The entity labels.
    missing_label (str): The label that marks text the annotator did not review.
    text_key (str): The task data field holding the text.
    RETURNS (str): The config XML.
    """
    lines = ["<View>", f"  <Labels name={quoteattr(FROM_NAME)} toName={quoteattr(TO_NAME)}>"]
    lines += [f"    <Label value={quoteattr(label)}/>" for label in labels if label != missing_label]
    lines.append(f"    <Label value={quoteattr(missing_label)} background={quoteattr(MISSING_COLOR)}/>")
    lines += ["  </Labels>", f"  <Text name={quoteattr(TO_NAME)} value={quoteattr('$' + text_key)}/>", "</View>", ""]
    return "\n".join(lines)


def labels_of(tasks: Sequence[Dict[str, Any]], missing_label: str = MISSING_LABEL) -> List[str]:
    """RETURNS (List[str]): The labels of the tasks' predictions, sorted, the missing label left out."""
    labels = (
        label
        for task in tasks
        for prediction in task.get("predictions", [])
        for result in prediction["result"]
        for label in result["value"]["labels"]
    )
    return gather_labels(labels, missing_label)


def from_label_studio(
    tasks: Any,
    nlp: "Language",
    *,
    text_key: str = "text",
    missing_label: str = MISSING_LABEL,
    annotation: str = "last",
    skip_unreviewed: bool = False,
    on_error: str = "raise",
) -> Tuple[List["Doc"], ImportCounts]:
    """Docs of Label Studio's JSON export, unreviewed text missing.

    A task's annotation is its last (``annotation="first"``: first) one that was not
    cancelled, by ``created_at`` when every annotation has one, else in the export's
    order. Its ``labels`` regions are the entities, except those labelled
    ``missing_label``, whose tokens are missing; every other token is ``O`` (the
    annotator saw the task). A task without such an annotation was not reviewed: all
    its tokens are missing, or it is skipped (``skip_unreviewed``).

    tasks (Any): The parsed export: a list of tasks.
    nlp (Language): Tokenizes the texts (``spacy.blank("zh")``).
    text_key (str): The task data field holding the text.
    missing_label (str): The label of unreviewed regions.
    annotation (str): "last" or "first".
    skip_unreviewed (bool): Leave out tasks without an annotation.
    on_error (str): "raise" (default) or "skip" a task that cannot be read (counted).
    RETURNS (Tuple[List[Doc], ImportCounts]): The docs, in task order, and the counts.
    """
    check_on_error(on_error)
    if annotation not in ANNOTATION_CHOICES:
        raise ValueError(f"annotation is {annotation!r}: use one of {', '.join(ANNOTATION_CHOICES)}")
    if not isinstance(tasks, list):
        raise TaskError(f"A Label Studio JSON export is a list of tasks, not a {type(tasks).__name__}")
    docs: List["Doc"] = []
    counts = ImportCounts()
    for k, task in enumerate(tasks):
        counts.tasks += 1
        place = _task_place(k, task)
        try:
            doc, reviewed = _task_doc(task, nlp, text_key, missing_label, annotation, place, counts)
        except TaskError as err:
            if on_error == "raise":
                raise
            counts.skipped_errors += 1
            counts.errors.append(str(err))
            continue
        if not reviewed:
            counts.unreviewed += 1
            if skip_unreviewed:
                counts.skipped_unreviewed += 1
                continue
        docs.append(doc)
        counts.add_doc(doc)
    return docs, counts


def _task_place(k: int, task: Any) -> str:
    task_id = task.get("id") if isinstance(task, dict) else None
    return f"task {k}" + (f" (id {task_id})" if task_id is not None else "")


def _task_doc(
    task: Any, nlp: "Language", text_key: str, missing_label: str, annotation: str, place: str, counts: ImportCounts
) -> Tuple["Doc", bool]:
    """The doc of one task, and whether it was reviewed; ``counts`` gets its cancelled annotations."""
    if not isinstance(task, dict):
        raise TaskError(f"{place}: expected an object, got {type(task).__name__}")
    if not isinstance(task.get("data"), dict):
        raise TaskError(f"{place}: no 'data' object (is this Label Studio's JSON export, not JSON-MIN or CSV?)")
    text = record_text(task["data"], text_key, f"{place}, data")
    chosen = choose_annotation(task.get("annotations") or [], annotation, place, counts)
    if chosen is None:
        return build_doc(nlp, text, None, missing_label, place), False
    regions = annotation_regions(chosen, text, place)
    return build_doc(nlp, text, regions, missing_label, place), True


def choose_annotation(annotations: Any, which: str, place: str, counts: ImportCounts) -> Optional[Dict[str, Any]]:
    """The annotation to import: the last (or first) one not cancelled, or None.

    annotations (Any): The task's ``annotations``.
    which (str): "last" or "first".
    place (str): Where the task is, for errors.
    counts (ImportCounts): Gets the cancelled annotations counted.
    RETURNS (Optional[Dict[str, Any]]): The annotation, or None when there is none.
    """
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise TaskError(f"{place}: 'annotations' is not a list of objects")
    kept = [a for a in annotations if not a.get("was_cancelled", False)]
    counts.cancelled += len(annotations) - len(kept)
    if not kept:
        return None
    if all(isinstance(a.get("created_at"), str) for a in kept):
        kept.sort(key=lambda a: a["created_at"])  # ISO 8601 times: their text order is their time order
    return kept[-1] if which == "last" else kept[0]


def annotation_regions(annotation: Dict[str, Any], text: str, place: str) -> List[Region]:
    """The labelled regions of an annotation, checked against the text.

    Results of other types (choices, text areas, relations) are left aside.

    annotation (Dict[str, Any]): One annotation of a task.
    text (str): The task's text.
    place (str): Where the task is, for errors.
    RETURNS (List[Region]): The regions, in text order.
    """
    where = place + (f", annotation {annotation['id']}" if "id" in annotation else "")
    results = annotation.get("result") or []
    if not isinstance(results, list):
        raise TaskError(f"{where}: 'result' is not a list")
    regions = []
    for n, result in enumerate(results):
        if not isinstance(result, dict) or result.get("type") != REGION_TYPE:
            continue
        at = f"{where}, region {result.get('id', n)}"
        value = result.get("value")
        if not isinstance(value, dict):
            raise TaskError(f"{at}: 'value' is not an object")
        labels = value.get("labels")
        if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
            raise TaskError(f"{at}: expected exactly one label, got {labels!r}")
        start, end = value.get("start"), value.get("end")
        for what, offset in (("start", start), ("end", end)):
            if isinstance(offset, bool) or not isinstance(offset, int):
                raise TaskError(f"{at}: {what} is {offset!r}, not a character offset (is the text a <Text> tag?)")
        regions.append(check_region(Region(start, end, labels[0]), text, value.get("text"), at))
    return check_overlaps(regions, where)
