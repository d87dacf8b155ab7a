"""The ray engine (Ray Data on a local 2-CPU cluster) gives the local engine's output,
and resumes the same way. Skipped only when Ray is not installed."""
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from spacy.language import Language

from spacy_bilstm_crf.annotate import annotate, ray_engine

from .conftest import TRAIN_DATA
from .ray_netns_cluster import offline_ray_home
from .scores_close import close, same_file
from .test_annotate_scores import TEXTS as SCORED_TEXTS
from .test_annotate import read_output
from .test_annotate_scores import THRESHOLD, assert_component_scores, write_jsonl

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pq = pytest.importorskip("pyarrow.parquet")

TEXTS = [text for text, _ in TRAIN_DATA] * 3 + ["".join(t for t, _ in TRAIN_DATA) * 8, ""]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # One local cluster for the module: starting Ray costs seconds. The engine
    # joins a running Ray and leaves it running. It lives on loopback (see
    # conftest.py) and in a HOME of its own: there its auth token is made, and
    # its head does not ask the cloud metadata addresses where it runs.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(offline_ray_home(tmp_path_factory.mktemp("ray_home"))))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(trained_nlp: Language, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("annotate_ray") / "model"
    trained_nlp.to_disk(path)
    return path


def read_jsonl_parts(output: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for part in sorted(output.glob("part-*.jsonl")) for line in part.read_text().splitlines()]


def test_ray_engine_gives_the_local_output(
    ray_cluster: None, trained_nlp: Language, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(TEXTS)))
    with source.open("a") as f:
        f.write('{"id": -1}\n')  # a reject, in the last shard
    annotate(model_dir, source, tmp_path / "local", shard_size=10, batch_size=4)
    # Windows of 16 texts: two Ray datasets, batches of 4 spread over 2 actors.
    monkeypatch.setattr(ray_engine, "RAY_WINDOW_TEXTS", 16)
    summary = annotate(model_dir, source, tmp_path / "ray", engine="ray", num_workers=2, shard_size=10, batch_size=4)
    assert (summary.records_in, summary.records_out, summary.rejects, summary.shards) == (27, 26, 1, 3)
    rows = read_jsonl_parts(tmp_path / "ray")
    assert [r["id"] for r in rows] == list(range(len(TEXTS)))
    expected = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in trained_nlp.pipe(TEXTS)]
    assert [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in rows] == expected
    for name in ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl", "_rejects.jsonl"]:
        assert same_file(tmp_path / "ray" / name, tmp_path / "local" / name), name
    assert ray.is_initialized()  # the caller's cluster is left running


def test_ray_engine_resumes_and_writes_parquet(ray_cluster: None, model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(TEXTS)))

    def crash(counts: Dict[str, int]) -> None:
        raise RuntimeError("killed")

    output = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        annotate(model_dir, source, output, engine="ray", shard_size=20, on_shard_written=crash)
    summary = annotate(model_dir, source, output, engine="ray", shard_size=20)
    assert (summary.shards, summary.shards_resumed) == (2, 1)
    annotate(model_dir, source, tmp_path / "local.parquet", shard_size=20)
    for name in ["part-00000.parquet", "part-00001.parquet"]:
        ray_table, local_table = pq.read_table(output / name), pq.read_table(tmp_path / "local.parquet" / name)
        assert ray_table.schema.equals(local_table.schema)
        assert close(ray_table.to_pylist(), local_table.to_pylist())


def test_a_refused_join_says_how_to_pass_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray's own error hides the reason in its cause, with a traceback in the text.
    def refuse(**kwargs: Any) -> None:
        try:
            raise RuntimeError(
                "Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                '  File "node.py", line 1\nray.exceptions.AuthenticationError: Authentication token is missing'
            )
        except RuntimeError as err:
            raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379") from err

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setenv("RAY_AUTH_MODE", "unset")  # recorded: restored (unset or not) after the test
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/somewhere/auth_token")
    with pytest.raises(ConnectionError) as err:
        ray_engine.RayEngine("model", address="127.0.0.1:6379")
    message = str(err.value)
    assert message.startswith("Cannot join the Ray cluster at 127.0.0.1:6379: Failed to connect")
    assert "AuthenticationError: Authentication token is missing" in message and "Traceback" not in message
    assert "RAY_AUTH_MODE=token" in message and "RAY_AUTH_TOKEN_PATH" in message
    # A token given without the mode is used: Ray ignores it for an explicit address otherwise.
    assert os.environ["RAY_AUTH_MODE"] == "token"


def test_ray_engine_writes_the_component_scores(ray_cluster: None, model_dir: Path, tmp_path: Path) -> None:
    # The module's cluster: a second local cluster started right after this one stops
    # can time out waiting for its GCS on a loaded machine.
    source = write_jsonl(tmp_path / "in.jsonl", SCORED_TEXTS)
    annotate(
        model_dir, source, tmp_path / "out", engine="ray", num_workers=2, batch_size=3, threshold=THRESHOLD, uncertainty=True
    )
    assert_component_scores(read_output(tmp_path / "out"), model_dir, SCORED_TEXTS)
