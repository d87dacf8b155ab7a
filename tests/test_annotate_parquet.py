"""Parquet output: one schema for every shard, readable as one dataset, whatever the
carried-through fields hold (mixed types, nulls in one shard, fields missing in some
records or files); a record that does not fit is rejected with the reason, never the run."""
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy

from spacy_bilstm_crf.annotate import annotate, core
from spacy_bilstm_crf.annotate.schema import JSON_METADATA, entities_type
from spacy_bilstm_crf.annotate.writers import parquet_table

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
ds = pytest.importorskip("pyarrow.dataset")

LINEAR_TOKENIZER = {"@tokenizers": "spacy-bilstm-crf.ChineseTokenizer.v1", "segmenter": "char"}


@pytest.fixture(scope="module")
def blank_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("parquet") / "model"
    spacy.blank("zh", config={"nlp": {"tokenizer": LINEAR_TOKENIZER}}).to_disk(path)
    return path


# Shards of 2 records: every field changes its type, or is null, from one shard to the next.
MIXED: List[Dict[str, Any]] = [
    {"id": 0, "text": "甲", "x": 1, "d": {"a": 1}, "n": None, "f": 1},
    {"id": 1, "text": "乙", "x": 2, "d": {"a": 2}, "n": None, "f": 2},
    {"id": 2, "text": "丙", "x": "three", "d": [1, 2], "n": "set", "f": 2.5},
    {"id": 3, "text": "丁", "x": None, "d": None, "f": 3},  # "n" missing
    {"id": 4, "text": "戊", "x": [4, "four"], "d": {"b": "x"}, "n": "set", "f": 4, "extra": True},
]


def write_jsonl(path: Path, rows: List[Dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf8")
    return path


def test_mixed_types_give_one_schema_and_one_readable_dataset(blank_model: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", MIXED)
    output = tmp_path / "out.parquet"
    summary = annotate(blank_model, source, output, shard_size=2)
    assert (summary.records_out, summary.rejects, summary.shards) == (5, 0, 3)
    schemas = [pq.read_schema(p) for p in sorted(output.glob("part-*.parquet"))]
    assert all(s.equals(schemas[0], check_metadata=True) for s in schemas[1:])
    schema = schemas[0]
    assert schema.names == ["id", "text", "x", "d", "n", "f", "extra", "entities"]
    # Mixed types: JSON text, said in the field's metadata. Others keep their Arrow type.
    assert {f.name for f in schema if f.metadata == JSON_METADATA} == {"x", "d"}
    assert (schema.field("n").type, schema.field("f").type, schema.field("extra").type) == (
        pa.string(), pa.float64(), pa.bool_()
    )
    assert schema.field("entities").type == entities_type()
    rows = ds.dataset(output, format="parquet").to_table().to_pylist()  # all shards as one dataset
    assert [r["id"] for r in rows] == [0, 1, 2, 3, 4]
    for row, record in zip(rows, MIXED):
        for key in ("x", "d"):
            value = record.get(key)
            assert row[key] == (None if value is None else json.dumps(value, ensure_ascii=False))
            assert (None if row[key] is None else json.loads(row[key])) == value
        assert row["n"] == record.get("n") and row["f"] == record["f"]
        assert row["entities"] == []


def test_parquet_files_with_different_schemas(blank_model: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pylist([{"text": "甲", "y": 1}, {"text": "乙", "y": 2}]), tmp_path / "in" / "a.parquet")
    pq.write_table(pa.Table.from_pylist([{"text": "丙", "y": "x", "z": 1.5}]), tmp_path / "in" / "b.parquet")
    output = tmp_path / "out.parquet"
    annotate(blank_model, tmp_path / "in", output, shard_size=2)
    table = ds.dataset(output, format="parquet").to_table()
    assert table.column_names == ["text", "y", "z", "entities"]
    assert table.column("y").to_pylist() == ["1", "2", '"x"']
    assert table.column("z").to_pylist() == [None, None, 1.5]


def test_a_record_that_does_not_fit_is_rejected_with_the_reason(
    blank_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A schema that does not hold every record (output_schema rules this out; the
    # writer must not rely on it): the record is rejected, the run goes on.
    narrow = pa.schema([("id", pa.int64()), ("text", pa.string()), ("entities", entities_type())])
    monkeypatch.setattr(core, "output_schema", lambda *args: narrow)
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 0, "text": "甲"}, {"id": "one", "text": "乙"}, {"id": 2, "text": "丙"}])
    summary = annotate(blank_model, source, tmp_path / "out.parquet", shard_size=2)
    assert (summary.records_in, summary.records_out, summary.rejects) == (3, 2, 1)
    assert ds.dataset(tmp_path / "out.parquet", format="parquet").to_table().column("id").to_pylist() == [0, 2]
    (reject,) = [json.loads(line) for line in (tmp_path / "out.parquet" / "_rejects.jsonl").read_text().splitlines()]
    assert reject["position"] == 2 and reject["record"] == {"id": "one", "text": "乙"}
    assert reject["reason"].startswith("does not fit the output's Parquet schema")


def test_parquet_table_keeps_entities_aligned_with_the_records_that_fit() -> None:
    schema = pa.schema([("id", pa.int64()), ("entities", entities_type())])
    ents = [[{"start": 0, "end": 1, "label": f"L{i}", "text": "x"}] for i in range(3)]
    table, misfits = parquet_table([{"id": 0}, {"id": "bad"}, {"id": 2}], ents, schema, "entities")
    assert [i for i, _ in misfits] == [1]
    assert table.to_pylist() == [{"id": 0, "entities": ents[0]}, {"id": 2, "entities": ents[2]}]


def test_resumed_parquet_output_keeps_the_schema(blank_model: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", MIXED)
    annotate(blank_model, source, tmp_path / "whole.parquet", shard_size=2)

    def crash(counts: Dict[str, int]) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        annotate(blank_model, source, tmp_path / "resumed.parquet", shard_size=2, on_shard_written=crash)
    assert annotate(blank_model, source, tmp_path / "resumed.parquet", shard_size=2).shards_resumed == 1
    for part in sorted((tmp_path / "whole.parquet").glob("part-*")):
        assert pq.read_table(tmp_path / "resumed.parquet" / part.name).equals(pq.read_table(part), check_metadata=True)
