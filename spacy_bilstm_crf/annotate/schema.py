"""One Arrow schema for every Parquet shard of a run, decided before the first shard.

Shards that each inferred their own schema disagreed (a column `null` in one
shard, `string` in the next) and could not be read as one dataset, and a field
of mixed types (int and str, dict and list) failed the whole run. So the schema
is the input's: the Parquet input's own schema when every file has the same one,
else inferred from all the records to tag, in a pass before tagging (reading and
parsing run thousands of times faster than tagging). A field whose values have no
common Arrow type is written as JSON text, the same way in every record and
shard, and its field says so in its metadata (`JSON_METADATA`).
"""
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Set

from .entities import CANDIDATES_FIELD, UNCERTAINTY_FIELD
from .inputs import Item, Record, file_format, require_pyarrow
from .scoring import NO_SCORES, ScoreSettings

if TYPE_CHECKING:
    import pyarrow as pa

# On a field written as JSON text: {b"encoding": b"json"}.
JSON_METADATA = {b"encoding": b"json"}
RECORDS_PER_INFERENCE = 4096


def span_type(scored: bool) -> "pa.DataType":
    """RETURNS (pyarrow.DataType): The Arrow type of one entity (with its float64 `score` if scored)."""
    import pyarrow as pa

    fields = [("start", pa.int64()), ("end", pa.int64()), ("label", pa.string()), ("text", pa.string())]
    return pa.struct(fields + ([("score", pa.float64())] if scored else []))


def entities_type(scored: bool = False) -> "pa.DataType":
    """The Arrow type of a record's entities.

    scored (bool): Whether each entity has its probability (`score`).
    RETURNS (pyarrow.DataType): A list of entity structs.
    """
    import pyarrow as pa

    return pa.list_(span_type(scored))


def uncertainty_type() -> "pa.DataType":
    """RETURNS (pyarrow.DataType): The Arrow type of a record's uncertainty measures."""
    import pyarrow as pa

    from ..prediction.uncertainty import MEASURES

    return pa.struct([(name, pa.float64()) for name in MEASURES])


def annotation_fields(entities_key: str, settings: Optional[ScoreSettings] = None) -> List["pa.Field"]:
    """The fields annotate adds to every record, in the order they are written.

    entities_key (str): The entities field.
    settings (Optional[ScoreSettings]): What is scored; None: nothing.
    RETURNS (List[pyarrow.Field]): The entities, then the candidates and the
        uncertainty when they are asked for.
    """
    import pyarrow as pa

    settings = settings or NO_SCORES
    fields = [pa.field(entities_key, entities_type(settings.confidence))]
    if settings.threshold is not None:
        fields.append(pa.field(CANDIDATES_FIELD, pa.list_(span_type(True))))
    if settings.uncertainty:
        fields.append(pa.field(UNCERTAINTY_FIELD, uncertainty_type()))
    return fields


def is_json_field(field: "pa.Field") -> bool:
    """RETURNS (bool): Whether a field of the output schema holds its values as JSON text."""
    return bool(field.metadata) and field.metadata.get(b"encoding") == b"json"


def to_json_text(value: Any) -> Optional[str]:
    """A value of a JSON field as its JSON text; null stays null.

    value (Any): The record's value.
    RETURNS (Optional[str]): The JSON text, or None.
    """
    if value is None:
        return None
    text = json.dumps(value, ensure_ascii=False, default=str)
    try:
        text.encode("utf8")
    except UnicodeEncodeError:  # a lone surrogate: kept exactly, as a \uXXXX escape
        text = json.dumps(value, ensure_ascii=True, default=str)
    return text


def has_empty_struct(data_type: "pa.DataType") -> bool:
    """RETURNS (bool): Whether a type holds a struct without fields, which Parquet cannot store."""
    import pyarrow as pa

    if pa.types.is_struct(data_type):
        return data_type.num_fields == 0 or any(has_empty_struct(f.type) for f in data_type)
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_fixed_size_list(data_type):
        return has_empty_struct(data_type.value_type)
    if pa.types.is_map(data_type):
        return has_empty_struct(data_type.key_type) or has_empty_struct(data_type.item_type)
    return False


def common_type(a: "pa.DataType", b: "pa.DataType") -> Optional["pa.DataType"]:
    """The type both types' values fit (null widens, int widens to float, structs merge), or None.

    a (pyarrow.DataType): One type.
    b (pyarrow.DataType): Another.
    RETURNS (Optional[pyarrow.DataType]): The common type, or None if there is none.
    """
    import pyarrow as pa

    if a.equals(b):
        return a
    try:
        unified = pa.unify_schemas([pa.schema([("f", a)]), pa.schema([("f", b)])], promote_options="permissive")
    except (pa.ArrowException, TypeError, ValueError):
        return None
    return unified.field("f").type


class SchemaInference:
    """Infers the output schema of records, a few thousand at a time.

    text_key (str): The text field (always a string).
    entities_key (str): The entities field (written by annotate, not inferred).
    written (Sequence[pyarrow.Field]): Every field annotate writes (`annotation_fields`),
        entities included: not inferred, added last; None: the entities only.
    """

    def __init__(self, text_key: str, entities_key: str, written: Optional[Sequence["pa.Field"]] = None) -> None:
        self.text_key = text_key
        self.entities_key = entities_key
        self.written = list(written) if written is not None else annotation_fields(entities_key)
        self.written_names = {f.name for f in self.written} | {entities_key}
        self.types: Dict[str, Any] = {}  # field -> Arrow type so far, in first-seen order
        self.json_fields: Set[str] = set()

    def add(self, records: List[Dict[str, Any]]) -> None:
        """Take a chunk of records into account.

        records (List[Dict[str, Any]]): Records to tag, as read.
        """
        import pyarrow as pa

        keys = list(dict.fromkeys(k for record in records for k in record))
        for key in keys:
            if key in self.written_names:
                continue
            self.types.setdefault(key, pa.null())
            if key in self.json_fields:
                continue
            try:
                found = pa.array([record.get(key) for record in records]).type
            except (pa.ArrowException, TypeError, ValueError, OverflowError, UnicodeError):
                self.json_fields.add(key)  # mixed types within the chunk
                continue
            merged = common_type(self.types[key], found)
            if merged is None or has_empty_struct(merged):
                self.json_fields.add(key)
            else:
                self.types[key] = merged

    def schema(self) -> "pa.Schema":
        """RETURNS (pyarrow.Schema): The schema of the records and their entities."""
        import pyarrow as pa

        fields = []
        for key, data_type in self.types.items():
            if key in self.json_fields:
                fields.append(pa.field(key, pa.string(), metadata=JSON_METADATA))
            else:
                fields.append(pa.field(key, pa.string() if key == self.text_key else data_type))
        return pa.schema(fields + self.written)


def infer_schema(
    records: Iterable[Record], text_key: str, entities_key: str, settings: Optional[ScoreSettings] = None
) -> "pa.Schema":
    """The output schema of the records to tag (rejects are not written to shards).

    records (Iterable[Union[Item, Reject]]): The input, in order.
    text_key (str): The text field.
    entities_key (str): The entities field.
    settings (Optional[ScoreSettings]): What is scored (the fields written); None: nothing.
    RETURNS (pyarrow.Schema): One schema for every shard.
    """
    inference = SchemaInference(text_key, entities_key, annotation_fields(entities_key, settings))
    chunk: List[Dict[str, Any]] = []
    for record in records:
        if isinstance(record, Item):
            chunk.append(record.record)
            if len(chunk) == RECORDS_PER_INFERENCE:
                inference.add(chunk)
                chunk = []
    if chunk:
        inference.add(chunk)
    return inference.schema()


def output_schema(
    files: List[Path],
    records: Iterable[Record],
    text_key: str,
    entities_key: str,
    settings: Optional[ScoreSettings] = None,
) -> "pa.Schema":
    """The schema of every Parquet shard of a run.

    files (List[Path]): The input files.
    records (Iterable[Union[Item, Reject]]): Their records (read only when the files
        are not Parquet files of one schema).
    text_key (str): The text field.
    entities_key (str): The entities field.
    settings (Optional[ScoreSettings]): What is scored; None: nothing.
    RETURNS (pyarrow.Schema): The schema, annotate's fields (`annotation_fields`) last;
        an input field of the same name is replaced.
    """
    pq = require_pyarrow()

    written = annotation_fields(entities_key, settings)
    if files and all(file_format(p) == "parquet" for p in files):
        schemas = [pq.read_schema(p).remove_metadata() for p in files]
        if all(s.equals(schemas[0]) for s in schemas[1:]):
            schema = schemas[0]
            for field in written:
                if field.name in schema.names:
                    schema = schema.remove(schema.get_field_index(field.name))
            for field in written:
                schema = schema.append(field)
            return schema
    return infer_schema(records, text_key, entities_key, settings)
