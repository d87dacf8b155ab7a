"""The People's Daily guard of benchmarks/cluener_accuracy.py: conversion, records, merging."""
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from spacy.tokens import DocBin
from spacy.vocab import Vocab

from .conftest import benchmark_module

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script as a module."""
    return benchmark_module("cluener_accuracy")


BIO = "北 B-LOC\n京 I-LOC\n的 O\n李 B-PER\n明 I-PER\n\n新 B-ORG\n华 I-ORG\n社 I-ORG\n报 O\n道 O\n"


def test_convert_guard_reads_bio_per_split_and_caches(bench: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "pd"
    data.mkdir()
    for split in ("train", "dev", "test"):
        (data / f"{split}.bio").write_text(BIO, encoding="utf8")
    out = tmp_path / "out"
    paths = bench.convert_guard(data, out)
    assert set(paths) == {"train", "dev", "test"}
    docs = list(DocBin().from_disk(paths["test"]).get_docs(Vocab()))
    assert [d.text for d in docs] == ["北京的李明", "新华社报道"]
    assert [(e.text, e.label_) for e in docs[0].ents] == [("北京", "LOC"), ("李明", "PER")]
    assert [(e.text, e.label_) for e in docs[1].ents] == [("新华社", "ORG")]
    # Cached: a second call does not convert again (the source is gone, the DocBin stays).
    (data / "test.bio").write_text("", encoding="utf8")
    assert bench.convert_guard(data, out)["test"] == paths["test"]
    assert len(list(DocBin().from_disk(paths["test"]).get_docs(Vocab()))) == 2


def test_convert_guard_missing_split_names_it(bench: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "train.bio").write_text(BIO, encoding="utf8")
    with pytest.raises(SystemExit, match="dev.bio not found"):
        bench.convert_guard(tmp_path, tmp_path / "out")


def test_guard_run_renames_measured_scores_to_test(bench: ModuleType) -> None:
    test = {"dev_p": 90.0, "dev_r": 80.0, "dev_f1": 84.71, "per_type_f1": {"LOC": 88.0}}
    dev = {"dev_p": 1.0, "dev_r": 2.0, "dev_f1": 86.5, "per_type_f1": {}}
    run = bench.guard_run({"train_seconds": 120.0, "threads": 1}, test, dev)
    assert run["test_f1"] == 84.71 and run["test_p"] == 90.0 and run["test_r"] == 80.0
    assert run["dev_f1"] == 86.5
    assert run["per_type_test_f1"] == {"LOC": 88.0}
    assert run["train_seconds"] == 120.0


def test_guard_summary_means_and_provenance(bench: ModuleType) -> None:
    runs = {
        1: {"test_f1": 85.0, "dev_f1": 86.0, "train_seconds": 200.0},
        0: {"test_f1": 84.0, "dev_f1": 87.0, "train_seconds": 100.0},
    }
    config = REPO / "configs" / "bilstm_crf.cfg"
    entry = bench.guard_summary(runs, config, {"revision": "abc1234", "uncommitted_changes": False})
    assert entry["test_f1_mean"] == pytest.approx(84.5)
    assert entry["dev_f1_mean"] == pytest.approx(86.5)
    assert entry["train_seconds_mean"] == pytest.approx(150.0)
    assert entry["seeds"] == [0, 1]
    assert list(entry["runs"]) == ["seed0", "seed1"]
    assert entry["config"] == "configs/bilstm_crf.cfg"  # relative: no machine path recorded
    assert entry["revision"] == "abc1234"
    assert entry["overrides"] == []


def test_guard_ablation_trains_and_records_the_lever(bench: ModuleType) -> None:
    """``--guard-ablation NAME``: the guard runs get that lever's settings, and the record names them."""
    import argparse

    args = argparse.Namespace(guard_ablation="typed_sets")
    assert bench.guard_overrides(args) == bench.ABLATIONS["typed_sets"]
    assert bench.guard_overrides(argparse.Namespace(guard_ablation=None)) == []
    runs = {0: {"test_f1": 84.0, "dev_f1": 87.0, "train_seconds": 100.0}}
    config = REPO / "configs" / "bilstm_crf.cfg"
    entry = bench.guard_summary(runs, config, {"revision": "abc1234"}, overrides=bench.guard_overrides(args))
    assert entry["overrides"] == ["--components.bilstm_crf_ner.model.lexicon_typed_sets", "true"]


def test_merge_guard_keeps_every_other_key(bench: ModuleType) -> None:
    recorded = {"bilstm_crf_ner": {"dev_f1_mean": 76.0}, "runs": {"x": 1},
                "guard": {"peoples_daily": {"default": {"test_f1_mean": 84.0}}}}  # fmt: skip
    before = json.dumps(recorded, sort_keys=True)
    merged = bench.merge_guard(recorded, "new", {"test_f1_mean": 85.0})
    assert json.dumps(recorded, sort_keys=True) == before  # the input is not changed
    assert merged["bilstm_crf_ner"] == recorded["bilstm_crf_ner"] and merged["runs"] == {"x": 1}
    assert merged["guard"]["peoples_daily"] == {"default": {"test_f1_mean": 84.0}, "new": {"test_f1_mean": 85.0}}
    # A rerun under the same name replaces that record only.
    again = bench.merge_guard(merged, "default", {"test_f1_mean": 84.2})
    assert again["guard"]["peoples_daily"]["default"] == {"test_f1_mean": 84.2}
    assert again["guard"]["peoples_daily"]["new"] == {"test_f1_mean": 85.0}


def test_merge_guard_into_file_without_guard(bench: ModuleType) -> None:
    merged = bench.merge_guard({"quick": False}, "default", {"test_f1_mean": 84.0})
    assert merged == {"quick": False, "guard": {"peoples_daily": {"default": {"test_f1_mean": 84.0}}}}


def test_guard_only_needs_seeds(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cluener_accuracy.py"), "--guard-only",
                             "--out", str(tmp_path)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2
    assert "--guard-only needs --guard-seeds" in result.stderr


def test_guard_train_job_keeps_the_revision_that_trained(bench: ModuleType, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """With --reuse, a run is recorded with the commit that trained it, not the current one."""

    def fake_train_job(name, config, extra, corpus, out, threads, reuse):  # type: ignore[no-untyped-def]
        (out / name / "model-best").mkdir(parents=True, exist_ok=True)
        (out / name / "train_seconds.json").write_text('{"train_seconds": 1.0, "threads": 1}')
        return {"train_seconds": 1.0, "threads": 1}

    monkeypatch.setattr(bench, "train_job", fake_train_job)
    old = {"revision": "aaaaaaa", "uncommitted_changes": False}
    new = {"revision": "bbbbbbb", "uncommitted_changes": False}
    first = bench.guard_train_job("g", Path("x.cfg"), [], {}, tmp_path, 1, False, old)
    assert first["revision"] == "aaaaaaa" and first["train_seconds"] == 1.0
    reused = bench.guard_train_job("g", Path("x.cfg"), [], {}, tmp_path, 1, True, new)
    assert reused["revision"] == "aaaaaaa"
    retrained = bench.guard_train_job("g", Path("x.cfg"), [], {}, tmp_path, 1, False, new)
    assert retrained["revision"] == "bbbbbbb"
    assert bench.guard_run(retrained, {"dev_p": 1, "dev_r": 1, "dev_f1": 1, "per_type_f1": {}},
                           {"dev_f1": 1})["revision"] == "bbbbbbb"  # fmt: skip


def test_carried_curve_keeps_the_series_and_shares_not_measured(bench: ModuleType) -> None:
    old = {
        "runs": {},
        "data_efficiency": {
            "seed": 0,
            "dev_f1_by_train_percent": {"bilstm_crf_ner": {"10": 65.0, "30": 70.0}, "fast": {"10": 56.0}},
        },
    }
    new = {"runs": {}, "data_efficiency": {"seed": 0, "dev_f1_by_train_percent": {
        "bilstm_crf_ner": {"10": 65.5, "60": 74.0}, "ablation_x": {"10": 66.0}}}}  # fmt: skip
    curve = bench.carry_over(new, old)["data_efficiency"]
    assert curve["dev_f1_by_train_percent"] == {
        "bilstm_crf_ner": {"10": 65.5, "30": 70.0, "60": 74.0},
        "ablation_x": {"10": 66.0},
        "fast": {"10": 56.0},
    }
    assert curve["carried_over_series"] == ["fast"]
