"""The annotate command and function with the local engine: entities as nlp.pipe gives
them, JSON lines and Parquet in and out, fields carried through, rejects and counts,
resuming after a crash, and the install hint of the ray engine without Ray."""
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.language import Language
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_bilstm_crf.annotate import RAY_INSTALL_HINT, annotate
from spacy_bilstm_crf.cli import app

from .conftest import TRAIN_DATA, ents_of
from .scores_close import close, same_file

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

runner = CliRunner()

# Longer than the component's 512-character window: tagged in windows, stitched.
LONG_TEXT = "".join(text for text, _ in TRAIN_DATA) * 8
TEXTS = [text for text, _ in TRAIN_DATA] + [LONG_TEXT, ""]


@pytest.fixture(scope="module")
def model_dir(trained_nlp: Language, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("annotate") / "model"
    trained_nlp.to_disk(path)
    return path


def expected_entities(nlp: Language, texts: List[str]) -> List[List[Dict[str, Any]]]:
    return [
        [{"start": s, "end": e, "label": label, "text": text[s:e]} for s, e, label in ents_of(doc)]
        for text, doc in zip(texts, nlp.pipe(texts))
    ]


def unscored(rows: List[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    """Each row's entities without their `score` (tests/test_annotate_scores.py checks the scores)."""
    return [[{k: v for k, v in e.items() if k != "score"} for e in r["entities"]] for r in rows]


def records() -> List[Dict[str, Any]]:
    return [{"id": i, "text": t, "meta": {"source": "test", "n": [i, i + 1]}} for i, t in enumerate(TEXTS)]


def write_jsonl(path: Path, rows: List[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf8")
    return path


def read_output(output: Path) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    for part in sorted(output.glob("part-*")):
        if part.suffix == ".parquet":
            rows.extend(pq.read_table(part).to_pylist())
        elif part.suffix == ".jsonl":
            rows.extend(json.loads(line) for line in part.read_text(encoding="utf8").splitlines())
    return rows


def test_local_engine_gives_the_entities_of_nlp_pipe_and_carries_fields(
    trained_nlp: Language, model_dir: Path, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", records())
    summary = annotate(model_dir, source, tmp_path / "out", shard_size=3, batch_size=2)
    rows = read_output(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == [
        "part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl", "part-00003.jsonl"
    ]
    assert [{k: v for k, v in r.items() if k != "entities"} for r in rows] == records()
    expected = expected_entities(trained_nlp, TEXTS)
    assert unscored(rows) == expected
    assert all(isinstance(e["score"], float) for r in rows for e in r["entities"])  # scored by default
    assert any(e["end"] > 512 for e in rows[len(TRAIN_DATA)]["entities"])  # the long text
    assert sum(map(len, expected)) == summary.entities > 0
    assert (summary.records_in, summary.records_out, summary.rejects, summary.shards) == (10, 10, 0, 4)
    assert json.loads((tmp_path / "out" / "_summary.json").read_text())["records_out"] == 10


def test_two_processes_give_the_same_output(model_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", records())
    annotate(model_dir, source, tmp_path / "one", shard_size=4, batch_size=2)
    annotate(model_dir, source, tmp_path / "two", shard_size=4, batch_size=2, n_process=2)
    assert close(read_output(tmp_path / "two"), read_output(tmp_path / "one"))


@pytest.mark.parametrize("in_fmt,out_name", [("parquet", "out.parquet"), ("parquet", "out"), ("jsonl", "out.parquet")])
def test_parquet_in_and_out(
    trained_nlp: Language, model_dir: Path, tmp_path: Path, in_fmt: str, out_name: str
) -> None:
    rows = records()
    if in_fmt == "parquet":
        source = tmp_path / "in.parquet"
        pq.write_table(pa.Table.from_pylist(rows), source)
    else:
        source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / out_name
    annotate(model_dir, source, output, shard_size=4)
    parts = sorted(p.suffix for p in output.glob("part-*"))
    assert parts == [".parquet" if out_name.endswith(".parquet") else ".jsonl"] * 3
    out = read_output(output)
    assert [{k: v for k, v in r.items() if k != "entities"} for r in out] == rows
    assert unscored(out) == expected_entities(trained_nlp, TEXTS)
    if out_name.endswith(".parquet"):
        # Every shard has the same schema, entities typed even in a shard without any.
        schemas = {str(pq.read_schema(p)) for p in output.glob("part-*")}
        assert len(schemas) == 1
        assert pq.read_schema(output / "part-00000.parquet").field("id").type == pa.int64()


def test_directory_and_glob_inputs_are_read_in_path_order(model_dir: Path, tmp_path: Path) -> None:
    rows = records()
    (tmp_path / "in" / "sub").mkdir(parents=True)
    write_jsonl(tmp_path / "in" / "b.jsonl", rows[5:])
    write_jsonl(tmp_path / "in" / "a.jsonl", rows[:3])
    write_jsonl(tmp_path / "in" / "sub" / "c.jsonl", rows[3:5])  # "a" < "b" < "sub/c"
    write_jsonl(tmp_path / "in" / "_ignored.jsonl", rows)
    annotate(model_dir, tmp_path / "in", tmp_path / "dir")
    ids = [r["id"] for r in read_output(tmp_path / "dir")]
    assert ids == [0, 1, 2, 5, 6, 7, 8, 9, 3, 4]
    annotate(model_dir, str(tmp_path / "in" / "[ab].jsonl"), tmp_path / "glob")  # glob: as given
    assert [r["id"] for r in read_output(tmp_path / "glob")] == [0, 1, 2, 5, 6, 7, 8, 9]


def bad_input(path: Path) -> Path:
    good = [json.dumps({"id": i, "text": t}, ensure_ascii=False).encode() for i, t in enumerate(TEXTS[:4])]
    lines = [
        good[0],
        b'{"id": 10}',  # no text
        b'{"id": 11, "text": 5}',
        b'{"id": 12, "text": null}',  # three rejects: shard 1 (size 3) has nothing to tag
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        b'{"id": 13, "text": "\\ud800"}',
        good[1],
        b"",  # blank: not a record
        b"{not json",
        good[2],
        good[3],
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_rejects_are_written_with_reasons_and_counted(model_dir: Path, tmp_path: Path) -> None:
    source = bad_input(tmp_path / "in.jsonl")
    summary = annotate(model_dir, source, tmp_path / "out", shard_size=3)
    assert (summary.records_in, summary.records_out, summary.rejects) == (11, 4, 7)
    assert [r["id"] for r in read_output(tmp_path / "out")] == [0, 1, 2, 3]
    assert (tmp_path / "out" / "part-00001.jsonl").read_text() == ""  # rejects only
    rejects = [json.loads(line) for line in (tmp_path / "out" / "_rejects.jsonl").read_text().splitlines()]
    assert [(r["position"], r["reason"].split(":")[0]) for r in rejects] == [
        (2, "missing field 'text'"),
        (3, "field 'text' is int, not a string"),
        (4, "field 'text' is null, not a string"),
        (5, "not UTF-8"),
        (6, "record is a list, not an object"),
        (7, "field 'text' is not valid Unicode"),
        (10, "invalid JSON"),
    ]
    assert rejects[0]["record"] == {"id": 10} and rejects[0]["source"] == str(source)
    assert rejects[3]["record"] == "\\xff\\xfe not utf-8"
    assert rejects[5]["record"] == {"id": 13, "text": "\ud800"}  # kept exactly, as an escape
    written = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert written["records_in"] == written["records_out"] + written["rejects"] == 11


def test_text_key(trained_nlp: Language, model_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"body": t, "text": "x"} for t in TEXTS[:3]])
    annotate(model_dir, source, tmp_path / "out", text_key="body")
    assert unscored(read_output(tmp_path / "out")) == expected_entities(trained_nlp, TEXTS[:3])


class Crash(Exception):
    pass


@pytest.mark.parametrize("n_process", [1, 2])
def test_interrupted_run_resumes_to_the_uninterrupted_output(model_dir: Path, tmp_path: Path, n_process: int) -> None:
    source = bad_input(tmp_path / "in.jsonl")
    annotate(model_dir, source, tmp_path / "whole", shard_size=3)

    def crash_after_first_shard(counts: Dict[str, int]) -> None:
        if counts["index"] == 0:
            raise Crash

    output = tmp_path / "resumed"
    with pytest.raises(Crash):
        annotate(model_dir, source, output, shard_size=3, n_process=n_process, on_shard_written=crash_after_first_shard)
    assert sorted(p.name for p in output.glob("part-*")) == ["part-00000.jsonl"]
    assert not (output / "_summary.json").exists()
    # A shard written but not marked finished (killed before its marker), and a temp file.
    (output / "part-00001.jsonl").write_text("half a shard\n")
    (output / ".part-00002.jsonl.tmp-1").write_text("{}")
    done: List[int] = []
    summary = annotate(
        model_dir, source, output, shard_size=3, n_process=n_process, on_shard_written=lambda c: done.append(c["index"])
    )
    assert done == [1, 2, 3]  # shard 0 is kept, not redone
    assert (summary.shards, summary.shards_resumed, summary.records_in) == (4, 1, 11)
    names = sorted(p.name for p in (tmp_path / "whole").iterdir() if p.is_file() and p.name != "_summary.json")
    assert sorted(p.name for p in output.iterdir() if p.is_file() and p.name != "_summary.json") == names
    for name in names:
        assert same_file(output / name, tmp_path / "whole" / name), name


def test_resuming_with_other_settings_is_refused_unless_overwrite(model_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", records())
    annotate(model_dir, source, tmp_path / "out", shard_size=3)
    with pytest.raises(ValueError, match="shard_size"):
        annotate(model_dir, source, tmp_path / "out", shard_size=5)
    summary = annotate(model_dir, source, tmp_path / "out", shard_size=5, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == ["part-00000.jsonl", "part-00001.jsonl"]
    assert summary.shards_resumed == 0


def test_docbin_shards(trained_nlp: Language, model_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", records())
    annotate(model_dir, source, tmp_path / "out", shard_size=6, docbin=True)
    docs = [
        doc
        for part in sorted((tmp_path / "out").glob("part-*.spacy"))
        for doc in DocBin().from_disk(part).get_docs(spacy.blank("zh").vocab)
    ]
    assert [d.text for d in docs] == TEXTS
    assert [ents_of(d) for d in docs] == [ents_of(d) for d in trained_nlp.pipe(TEXTS)]


def test_cli_annotates_and_prints_the_counts(model_dir: Path, tmp_path: Path) -> None:
    source = bad_input(tmp_path / "in.jsonl")
    args = ["annotate", str(model_dir), str(source), str(tmp_path / "out"), "--no-progress", "--shard-size", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "11 records in = 4 out + 7 rejects" in " ".join(result.output.split())
    again = runner.invoke(app, args)
    assert "4 shards (4 kept from an earlier run)" in " ".join(again.output.split())
    bad = runner.invoke(app, args[:4] + ["--format", "csv"])
    assert bad.exit_code == 1 and "Unknown format" in bad.output


def test_ray_engine_without_ray_says_how_to_install(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    source = write_jsonl(tmp_path / "in.jsonl", records())
    with pytest.raises(ImportError, match="ray"):
        annotate(model_dir, source, tmp_path / "out", engine="ray")
    assert not (tmp_path / "out").exists()  # nothing started
    result = runner.invoke(app, ["annotate", str(model_dir), str(source), str(tmp_path / "out"), "--engine", "ray"])
    assert result.exit_code == 1
    assert RAY_INSTALL_HINT in result.output
    assert 'pip install "spacy-bilstm-crf[ray]"' in result.output


def test_ray_is_imported_only_when_asked_for() -> None:
    code = "import sys, spacy_bilstm_crf.cli, spacy_bilstm_crf.annotate; print(sorted({'ray', 'pyarrow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
