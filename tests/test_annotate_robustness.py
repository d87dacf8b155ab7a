"""annotate's robustness: texts over spaCy's max_length, batches that never cross
shards, the model's and the inputs' identity on resume, the output lock, CR-only
line breaks, syncing before renames, and a CLI module that imports nothing heavy."""
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import minibatch
from typer.testing import CliRunner

from spacy_bilstm_crf.annotate import annotate
from spacy_bilstm_crf.annotate import shards as shards_module
from spacy_bilstm_crf.annotate.inputs import iter_lines
from spacy_bilstm_crf.annotate.shards import LOCK_FILE, OutputInUseError
from spacy_bilstm_crf.cli import app

from .conftest import ents_of

runner = CliRunner()
PACKAGE = Path(__file__).resolve().parents[1] / "spacy_bilstm_crf"


# The project's linear-time tokenizer: spaCy's own zh tokenizer is quadratic (~50 s on 1M characters).
LINEAR_TOKENIZER = {"@tokenizers": "spacy-bilstm-crf.ChineseTokenizer.v1", "segmenter": "char"}


def blank_zh() -> Language:
    return spacy.blank("zh", config={"nlp": {"tokenizer": LINEAR_TOKENIZER}})


class BatchMarker:
    """Labels each doc's first character with the first text of the batch it was tagged in:
    a component whose output depends on the batch, as INT8's can."""

    def __call__(self, doc: Doc) -> Doc:
        return self.mark([doc])[0]

    def pipe(self, docs: Iterator[Doc], batch_size: int = 128) -> Iterator[Doc]:
        for batch in minibatch(docs, size=batch_size):
            yield from self.mark(batch)

    @staticmethod
    def mark(batch: List[Doc]) -> List[Doc]:
        for doc in batch:
            if len(doc):
                doc.ents = [doc.char_span(0, 1, label=f"FIRST={batch[0].text}")]
        return batch


@Language.factory("annotate_test_batch_marker")
def make_batch_marker(nlp: Language, name: str) -> BatchMarker:
    return BatchMarker()


@pytest.fixture(scope="module")
def marker_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    nlp = blank_zh()
    nlp.add_pipe("annotate_test_batch_marker")
    path = tmp_path_factory.mktemp("marker") / "model"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def blank_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("blank") / "model"
    blank_zh().to_disk(path)
    return path


@pytest.fixture(scope="module")
def model_dir(trained_nlp: Language, tmp_path_factory: pytest.TempPathFactory) -> Path:
    saved = tmp_path_factory.mktemp("trained") / "saved"
    trained_nlp.to_disk(saved)
    # The same pipeline with the linear tokenizer, as configs/bilstm_crf.cfg has it.
    path = saved.parent / "model"
    spacy.load(saved, config={"nlp": {"tokenizer": LINEAR_TOKENIZER}}).to_disk(path)
    return path


def write_jsonl(path: Path, rows: List[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf8")
    return path


def read_rows(output: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for part in sorted(output.glob("part-*.jsonl")) for line in part.read_text("utf8").splitlines()]


def output_files(output: Path) -> Dict[str, bytes]:
    """Every file of a run but its summary (which has timings) and the lock."""
    return {
        p.name: p.read_bytes()
        for p in sorted(output.iterdir())
        if p.is_file() and p.name not in ("_summary.json", LOCK_FILE)
    }


class Crash(Exception):
    pass


def crash_after_shard(index: int) -> Any:
    def hook(counts: Dict[str, int]) -> None:
        if counts["index"] == index:
            raise Crash

    return hook


def long_input(path: Path) -> Path:
    """The issue's repro: a short record, then one of 1,000,001 characters."""
    path.write_text(
        json.dumps({"id": 1, "text": "马云"}) + "\n" + json.dumps({"id": 2, "text": "张" * 1_000_001}) + "\n"
    )
    return path


# --- texts over nlp.max_length ----------------------------------------------------


@pytest.mark.parametrize("n_process", [1, 2])
def test_a_text_over_max_length_is_tagged_not_the_end_of_the_run(
    blank_model: Path, tmp_path: Path, n_process: int
) -> None:
    source = long_input(tmp_path / "long.jsonl")
    summary = annotate(blank_model, source, tmp_path / "out", n_process=n_process, docbin=True)
    assert (summary.records_in, summary.records_out, summary.rejects) == (2, 2, 0)
    assert summary.chars == 2 + 1_000_001
    assert [r["id"] for r in read_rows(tmp_path / "out")] == [1, 2]


def test_max_chars_rejects_longer_texts_with_the_reason(blank_model: Path, tmp_path: Path) -> None:
    source = long_input(tmp_path / "long.jsonl")
    result = runner.invoke(
        app, ["annotate", str(blank_model), str(source), str(tmp_path / "out"), "--no-progress", "--max-chars", "1000000"]
    )
    assert result.exit_code == 0, result.output
    assert "2 records in = 1 out + 1 rejects" in " ".join(result.output.split())
    (reject,) = [json.loads(line) for line in (tmp_path / "out" / "_rejects.jsonl").read_text().splitlines()]
    assert reject["position"] == 2 and reject["record"]["id"] == 2
    assert reject["reason"] == "field 'text' has 1,000,001 characters, more than the limit of 1,000,000 (max_chars)"


@pytest.mark.slow
def test_the_issue_repro_is_tagged_by_the_trained_pipeline(trained_nlp: Language, model_dir: Path, tmp_path: Path) -> None:
    # Minutes on a busy 2-core machine: the 1,000,001 characters go through the BiLSTM in windows.
    source = long_input(tmp_path / "long.jsonl")
    result = runner.invoke(app, ["annotate", str(model_dir), str(source), str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "out")
    assert [r["id"] for r in rows] == [1, 2]
    expected = [{"start": s, "end": e, "label": label, "text": "马云"[s:e]} for s, e, label in ents_of(trained_nlp("马云"))]
    assert [{k: v for k, v in e.items() if k != "score"} for e in rows[0]["entities"]] == expected
    assert all(e["text"] == "张" * (e["end"] - e["start"]) for e in rows[1]["entities"])


# --- batches never cross shards -------------------------------------------------


def marker_input(path: Path, n: int = 10) -> Path:
    return write_jsonl(path, [{"id": i, "text": f"文本{i}"} for i in range(n)])


@pytest.mark.parametrize("n_process", [1, 2])
def test_batches_restart_at_each_shard(marker_model: Path, tmp_path: Path, n_process: int) -> None:
    source = marker_input(tmp_path / "in.jsonl")
    annotate(marker_model, source, tmp_path / "out", shard_size=4, batch_size=3, n_process=n_process)
    firsts = [r["entities"][0]["label"] for r in read_rows(tmp_path / "out")]
    # Shards [0-3], [4-7], [8-9]; batches of 3 cut within each shard: [0 1 2] [3] [4 5 6] [7] [8 9].
    assert firsts == [f"FIRST=文本{i}" for i in (0, 0, 0, 3, 4, 4, 4, 7, 8, 8)]


def test_a_resumed_run_batches_as_an_uninterrupted_one(marker_model: Path, tmp_path: Path) -> None:
    # 3 does not divide 4: a stream over all shards would batch a resumed run differently.
    source = marker_input(tmp_path / "in.jsonl")
    annotate(marker_model, source, tmp_path / "whole", shard_size=4, batch_size=3)
    with pytest.raises(Crash):
        annotate(marker_model, source, tmp_path / "resumed", shard_size=4, batch_size=3, on_shard_written=crash_after_shard(0))
    summary = annotate(marker_model, source, tmp_path / "resumed", shard_size=4, batch_size=3)
    assert summary.shards_resumed == 1
    assert output_files(tmp_path / "resumed") == output_files(tmp_path / "whole")


# --- the model's and the inputs' identity ---------------------------------------


def test_resuming_with_a_changed_model_is_refused_unless_overwrite(blank_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    blank_zh().to_disk(model)
    source = marker_input(tmp_path / "in.jsonl")
    output = tmp_path / "out"
    with pytest.raises(Crash):
        annotate(model, source, output, shard_size=4, on_shard_written=crash_after_shard(0))
    # Another model saved at the same path (here: its meta edited, as a new version would).
    meta = json.loads((model / "meta.json").read_text())
    (model / "meta.json").write_text(json.dumps({**meta, "version": "9.9.9"}))
    with pytest.raises(ValueError, match="tagged with another model") as err:
        annotate(model, source, output, shard_size=4)
    assert "--overwrite" in str(err.value)
    result = runner.invoke(app, ["annotate", str(model), str(source), str(output), "--no-progress", "--shard-size", "4"])
    assert result.exit_code == 1 and "another model" in result.output and "Traceback" not in result.output
    summary = annotate(model, source, output, shard_size=4, overwrite=True)
    assert (summary.shards, summary.shards_resumed) == (3, 0)


def test_the_same_model_elsewhere_resumes(blank_model: Path, tmp_path: Path) -> None:
    source = marker_input(tmp_path / "in.jsonl")
    with pytest.raises(Crash):
        annotate(blank_model, source, tmp_path / "out", shard_size=4, on_shard_written=crash_after_shard(0))
    copy = tmp_path / "copy"
    spacy.load(blank_model).to_disk(copy)
    assert annotate(copy, source, tmp_path / "out", shard_size=4).shards_resumed == 1


def test_an_input_edited_with_the_same_size_and_mtime_is_noticed(blank_model: Path, tmp_path: Path) -> None:
    source = marker_input(tmp_path / "in.jsonl")
    with pytest.raises(Crash):
        annotate(blank_model, source, tmp_path / "out", shard_size=4, on_shard_written=crash_after_shard(0))
    stat = source.stat()
    source.write_text(source.read_text(encoding="utf8").replace("文本9", "文本8"), encoding="utf8")
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (source.stat().st_size, source.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    with pytest.raises(ValueError, match=r"changed: inputs\)"):
        annotate(blank_model, source, tmp_path / "out", shard_size=4)


# --- one run per output directory -------------------------------------------------


def test_a_second_run_on_the_same_output_is_refused_and_the_first_finishes(marker_model: Path, tmp_path: Path) -> None:
    source = marker_input(tmp_path / "in.jsonl")
    annotate(marker_model, source, tmp_path / "alone", shard_size=4, batch_size=3)
    output = tmp_path / "out"
    refused: List[str] = []

    def second_run(counts: Dict[str, int]) -> None:
        if counts["index"] == 0:  # the first run holds the output: an overwriting run must not touch it
            with pytest.raises(OutputInUseError) as err:
                annotate(marker_model, source, output, shard_size=4, batch_size=3, overwrite=True)
            refused.append(str(err.value))

    annotate(marker_model, source, output, shard_size=4, batch_size=3, on_shard_written=second_run)
    assert len(refused) == 1 and str(output / LOCK_FILE) in refused[0] and f"pid {os.getpid()}" in refused[0]
    assert output_files(output) == output_files(tmp_path / "alone")


LOCK_HOLDER = """
import fcntl, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
f.write("pid holder"); f.flush()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the holder uses fcntl")
def test_cli_names_the_lock_of_a_live_run_and_takes_over_a_dead_ones(blank_model: Path, tmp_path: Path) -> None:
    source = marker_input(tmp_path / "in.jsonl")
    output = tmp_path / "out"
    output.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(output / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        args = ["annotate", str(blank_model), str(source), str(output), "--no-progress"]
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "in use by another annotate run" in result.output and LOCK_FILE in result.output
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up: its lock file is left, its lock is not.
    assert (output / LOCK_FILE).exists()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


# --- line breaks, fsync -----------------------------------------------------------


def test_cr_only_and_mixed_line_breaks_separate_records(blank_model: Path, tmp_path: Path) -> None:
    lines = [json.dumps({"id": i, "text": f"文本{i}"}, ensure_ascii=False).encode() for i in range(4)]
    source = tmp_path / "in.jsonl"
    source.write_bytes(lines[0] + b"\r" + lines[1] + b"\r\n" + lines[2] + b"\n\r" + lines[3] + b"\r")
    summary = annotate(blank_model, source, tmp_path / "out")
    assert (summary.records_in, summary.rejects) == (4, 0)
    assert [r["id"] for r in read_rows(tmp_path / "out")] == [0, 1, 2, 3]


def test_line_breaks_split_by_a_block_boundary() -> None:
    data = b"a\r\nbb\rccc\n\r\r\nd"
    expected = [b"a", b"bb", b"ccc", b"", b"", b"d"]
    for block in range(1, len(data) + 2):
        assert list(iter_lines(io.BytesIO(data), block_bytes=block)) == expected, block
    assert list(iter_lines(io.BytesIO(b"x\r"), block_bytes=1)) == [b"x"]
    assert list(iter_lines(io.BytesIO(b""))) == []


def test_files_are_synced_before_they_are_renamed(
    blank_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: List[Tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("rename", os.stat(src).st_ino))
        real_replace(src, dst)
        events.append(("renamed", os.stat(Path(dst).parent).st_ino))

    monkeypatch.setattr(shards_module.os, "fsync", fsync)
    monkeypatch.setattr(shards_module.os, "replace", replace)
    annotate(blank_model, marker_input(tmp_path / "in.jsonl"), tmp_path / "out", shard_size=4)
    renames = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    assert len(renames) >= 3 * 3  # per shard: data, rejects, marker
    for i in renames:
        assert ("fsync", events[i][1]) in events[:i], "a file renamed before it was synced"
        directory = events[i + 1][1]
        assert ("fsync", directory) in events[i + 2 :], "a rename never synced"


# --- the CLI module is light ------------------------------------------------------


def test_the_annotate_cli_module_imports_no_heavy_module() -> None:
    # The package's and the cli package's __init__ are bypassed: only what this module imports counts.
    code = f"""
import sys, types
for name, path in (("spacy_bilstm_crf", {str(PACKAGE)!r}), ("spacy_bilstm_crf.cli", {str(PACKAGE / "cli")!r})):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
import spacy_bilstm_crf.cli.annotate
print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"spacy", "thinc", "torch", "ray", "pyarrow", "numpy"}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
