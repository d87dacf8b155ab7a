"""Writing one shard's records with their entities: JSON lines, Parquet, DocBin."""
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from spacy.language import Language
from spacy.tokens import DocBin, SpanGroup

from .entities import CANDIDATES_FIELD, UNCERTAINTY_FIELD, Annotation, Entity
from .inputs import Reject
from .schema import is_json_field, to_json_text
from .tagging import make_doc


def json_line(row: Dict[str, Any]) -> str:
    """A record as one line of JSON, Chinese kept readable.

    row (Dict[str, Any]): The record.
    RETURNS (str): The line, without its newline.
    """
    # default=str: values that JSON has no type for (Parquet timestamps, decimals)
    # are carried through as their text instead of failing the shard.
    line = json.dumps(row, ensure_ascii=False, default=str)
    try:
        line.encode("utf8")
    except UnicodeEncodeError:
        # A lone surrogate (a rejected text, a carried-through field) cannot be
        # written as UTF-8; as a \uXXXX escape it is kept, exactly.
        line = json.dumps(row, ensure_ascii=True, default=str)
    return line


def write_jsonl(path: Path, rows: List[Dict[str, Any]]) -> None:
    """Write records as JSON lines.

    path (Path): The file.
    rows (List[Dict[str, Any]]): The records.
    """
    with path.open("w", encoding="utf8") as f:
        for row in rows:
            f.write(json_line(row) + "\n")


def write_rejects(path: Path, rejects: List[Reject]) -> None:
    """Write rejected records, each with its source, position and reason, as JSON lines.

    path (Path): The file.
    rejects (List[Reject]): The rejects.
    """
    write_jsonl(path, [reject.to_dict() for reject in rejects])


ARROW_ERRORS = (TypeError, ValueError, OverflowError, UnicodeError)  # pyarrow's errors subclass these


def parquet_rows(
    records: List[Dict[str, Any]], schema: Any, entities_key: str, written: Tuple[str, ...] = ()
) -> List[Dict[str, Any]]:
    """Records as rows of the output schema: JSON fields as their JSON text.

    records (List[Dict[str, Any]]): The records as read.
    schema (pyarrow.Schema): The output schema (see `schema.output_schema`).
    entities_key (str): The entities field, left out (it is added from the entities).
    written (Tuple[str, ...]): Other fields annotate adds, left out too.
    RETURNS (List[Dict[str, Any]]): The rows.
    """
    json_fields = {f.name for f in schema if is_json_field(f)}
    left_out = {entities_key, *written}
    return [
        {k: (to_json_text(v) if k in json_fields else v) for k, v in record.items() if k not in left_out}
        for record in records
    ]


def parquet_table(
    records: List[Dict[str, Any]],
    entities: List[List[Entity]],
    schema: Any,
    entities_key: str,
    extra: Optional[Dict[str, List[Any]]] = None,
) -> Tuple[Any, List[Tuple[int, str]]]:
    """A shard's records and entities as a table of the output schema.

    A record that does not fit the schema (which `output_schema` should rule out)
    is left out and returned with the reason, for the rejects: one record never
    stops the run.

    records (List[Dict[str, Any]]): The records as read.
    entities (List[List[Dict[str, Any]]]): Each record's entities.
    schema (pyarrow.Schema): The output schema, the entities field included.
    entities_key (str): The entities field.
    extra (Optional[Dict[str, List[Any]]]): Other columns annotate adds (candidates,
        uncertainty), a value per record; their fields are in `schema`.
    RETURNS (Tuple[pyarrow.Table, List[Tuple[int, str]]]): The table, and the
        (index, reason) of each record left out.
    """
    import pyarrow as pa

    columns = {entities_key: entities, **(extra or {})}
    data_schema = schema
    for name in columns:
        data_schema = data_schema.remove(data_schema.get_field_index(name))
    rows = parquet_rows(records, schema, entities_key, tuple(columns))
    misfits: List[Tuple[int, str]] = []
    try:
        table = pa.Table.from_pylist(rows, schema=data_schema)
    except ARROW_ERRORS:
        keep = []
        for index, row in enumerate(rows):
            try:
                pa.Table.from_pylist([row], schema=data_schema)
            except ARROW_ERRORS as err:
                misfits.append((index, f"does not fit the output's Parquet schema: {err}"))
            else:
                keep.append(index)
        table = pa.Table.from_pylist([rows[i] for i in keep], schema=data_schema)
        columns = {name: [values[i] for i in keep] for name, values in columns.items()}
    # The columns' types are given, not inferred: a shard without entities would
    # otherwise get a list<null> column that other shards do not have.
    for field in schema:
        if field.name in columns:
            table = table.append_column(field, pa.array(columns[field.name], type=field.type))
    return table, misfits


def write_parquet(path: Path, table: Any) -> None:
    """Write a table as one Parquet file.

    path (Path): The file.
    table (pyarrow.Table): The shard, from `parquet_table`.
    """
    import pyarrow.parquet as pq

    pq.write_table(table, path)


def write_docbin(
    path: Path, nlp: Language, texts: List[str], annotations: List[Annotation], spans_key: Optional[str] = None
) -> None:
    """Write texts with their entities as a DocBin, for spaCy users.

    With scores, each doc also gets the component's span group, as tagging put it:
    `doc.spans[spans_key]` holds the entities and the candidates, with their
    probabilities in `attrs["scores"]` and the measures in `attrs["uncertainty"]`.

    path (Path): The file.
    nlp (Language): The pipeline, for its tokenizer.
    texts (List[str]): The texts.
    annotations (List[Dict[str, Any]]): Each text's annotation (`entities.doc_annotation`).
    spans_key (Optional[str]): The span group's key; None: no span group.
    """
    docbin = DocBin(attrs=["ENT_IOB", "ENT_TYPE"], store_user_data=False)
    for text, annotation in zip(texts, annotations):
        doc = make_doc(nlp, text)  # a text of any length, as it was tagged
        # Entities come from the same tokenizer's tokens, so they align; "expand"
        # only matters for a pipeline whose tokenizer changed since tagging.
        ents = annotation["entities"]
        spans = [doc.char_span(e["start"], e["end"], e["label"], alignment_mode="expand") for e in ents]
        doc.ents = [s for s in spans if s is not None]
        if spans_key is not None:
            add_span_group(doc, annotation, spans_key)
        docbin.add(doc)
    docbin.to_disk(path)


def add_span_group(doc: Any, annotation: Annotation, spans_key: str) -> None:
    """Put an annotation's scored spans in `doc.spans[spans_key]`, as the component does.

    doc (Doc): The tokenized text, its entities set.
    annotation (Dict[str, Any]): Its annotation.
    spans_key (str): The span group's key.
    """
    scored = [e for e in annotation["entities"] if e.get("score") is not None]
    scored += annotation.get(CANDIDATES_FIELD) or []
    spans, scores = [], []
    for entry in scored:
        span = doc.char_span(entry["start"], entry["end"], entry["label"], alignment_mode="expand")
        if span is not None:
            spans.append(span)
            scores.append(entry["score"])
    group = SpanGroup(doc, name=spans_key, spans=spans)
    group.attrs["scores"] = scores
    if annotation.get(UNCERTAINTY_FIELD) is not None:
        group.attrs["uncertainty"] = dict(annotation[UNCERTAINTY_FIELD])
    doc.spans[spans_key] = group
