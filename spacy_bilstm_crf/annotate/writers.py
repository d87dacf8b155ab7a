"""Writing one shard's records with their entities: JSON lines, Parquet, DocBin."""
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from spacy.language import Language
from spacy.tokens import DocBin

from .entities import Entity
from .inputs import Reject


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


def entities_type() -> Any:
    """RETURNS (pyarrow.DataType): The Arrow type of a record's entities."""
    import pyarrow as pa

    return pa.list_(
        pa.struct([("start", pa.int64()), ("end", pa.int64()), ("label", pa.string()), ("text", pa.string())])
    )


def write_parquet(
    path: Path,
    records: List[Dict[str, Any]],
    entities: List[List[Entity]],
    entities_key: str,
    schema: Optional[Any] = None,
) -> None:
    """Write records and their entities as one Parquet file.

    path (Path): The file.
    records (List[Dict[str, Any]]): The records as read.
    entities (List[List[Dict[str, Any]]]): Each record's entities.
    entities_key (str): The column for the entities.
    schema (Optional[pyarrow.Schema]): The records' schema (Parquet input), or None to infer it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if schema is not None and entities_key in schema.names:
        schema = schema.remove(schema.get_field_index(entities_key))
    rows = [{k: v for k, v in r.items() if k != entities_key} for r in records]
    table = pa.Table.from_pylist(rows, schema=schema)
    # The entities' type is given, not inferred: a shard without entities would
    # otherwise get a list<null> column that other shards do not have.
    table = table.append_column(pa.field(entities_key, entities_type()), pa.array(entities, type=entities_type()))
    pq.write_table(table, path)


def write_docbin(path: Path, nlp: Language, texts: List[str], entities: List[List[Entity]]) -> None:
    """Write texts with their entities as a DocBin, for spaCy users.

    path (Path): The file.
    nlp (Language): The pipeline, for its tokenizer.
    texts (List[str]): The texts.
    entities (List[List[Dict[str, Any]]]): Each text's entities.
    """
    docbin = DocBin(attrs=["ENT_IOB", "ENT_TYPE"], store_user_data=False)
    for text, ents in zip(texts, entities):
        doc = nlp.make_doc(text)
        # Entities come from the same tokenizer's tokens, so they align; "expand"
        # only matters for a pipeline whose tokenizer changed since tagging.
        spans = [doc.char_span(e["start"], e["end"], e["label"], alignment_mode="expand") for e in ents]
        doc.ents = [s for s in spans if s is not None]
        docbin.add(doc)
    docbin.to_disk(path)
