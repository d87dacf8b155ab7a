"""The select command: every strategy on a small model, JSON lines and Parquet in and
out; the uncertainty order against brute force over every tag path of short texts;
random by seed; near-duplicates of chosen and labelled texts skipped; clear errors."""
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy
import pytest
import spacy
import torch
from spacy.language import Language
from spacy.tokens import DocBin
from thinc.api import xp2torch
from typer.testing import CliRunner

from spacy_bilstm_crf.cli import app
from spacy_bilstm_crf.cli import select as select_cli
from spacy_bilstm_crf.component.architectures import featurize, get_torch_module
from spacy_bilstm_crf.features.chars import doc_chars
from spacy_bilstm_crf.labelling import selection
from spacy_bilstm_crf.labelling.select_run import select_file

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

runner = CliRunner()

POOL = [
    "王芳在上海的腾讯公司",
    "李明在华为公司工作",
    "张伟去深圳大学",
    "他在北京看了电影",
    "马云在阿里巴巴杭州总部发表演讲",
    "今天天气很好",
    "国务院发布了新规定",
    "我在广州玩《王者荣耀》",
    "王芳担任阿里巴巴总经理",
    "李明是华为的工程师",
]
# Short enough to enumerate every valid tag path.
SHORT = ["王芳在", "李明去", "腾讯的", "深圳玩"]


@pytest.fixture(scope="module")
def model_dir(trained_nlp: Language, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("select") / "model"
    trained_nlp.to_disk(path)
    return path


def pool_records(texts: List[str]) -> List[Dict[str, Any]]:
    return [{"id": i, "text": t, "meta": {"batch": "b1", "n": i}} for i, t in enumerate(texts)]


def write_pool(path: Path, rows: List[Dict[str, Any]]) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf8")
    return path


def read_out(path: Path) -> List[Dict[str, Any]]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


def run(*args: str) -> Any:
    return runner.invoke(app, ["select", *args])


# --- every strategy, every format ---------------------------------------------------


@pytest.mark.parametrize("strategy", selection.STRATEGIES)
@pytest.mark.parametrize("in_name,out_name", [("pool.jsonl", "out.jsonl"), ("pool.parquet", "out.parquet")])
def test_every_strategy_writes_the_chosen_records(
    model_dir: Path, tmp_path: Path, strategy: str, in_name: str, out_name: str
) -> None:
    rows = pool_records(POOL)
    pool = write_pool(tmp_path / in_name, rows)
    output = tmp_path / "batch" / out_name
    result = run(str(model_dir), str(pool), str(output), "--n", "4", "--strategy", strategy)
    assert result.exit_code == 0, result.output
    assert f"Chose 4 of 10 pool records ({strategy})" in result.output
    chosen = read_out(output)
    assert [r["rank"] for r in chosen] == [1, 2, 3, 4]
    assert all(r["selection"] == strategy for r in chosen)
    by_id = {r["id"]: r for r in rows}
    for row in chosen:
        # Every original field, as it was.
        assert {k: row[k] for k in ("id", "text", "meta")} == by_id[row["id"]]
        assert all(isinstance(e["score"], float) and 0.0 <= e["score"] <= 1.0 for e in row["entities"])
        assert all(e["text"] == row["text"][e["start"] : e["end"]] for e in row["entities"])
        assert sorted(row["uncertainty"]) == ["best_path", "entity_errors", "tag_errors"]
    if strategy != "random":  # most uncertain first (the kinds' cap can only move records later)
        values = [r["uncertainty"][strategy] for r in chosen]
        assert values[0] == max(values)
    summary = json.loads((output.parent / (out_name + ".summary.json")).read_text())
    assert (summary["pool_records"], summary["rejects"], summary["chosen"], summary["strategy"]) == (10, 0, 4, strategy)
    assert sum(summary["kinds"].values()) == 4
    if out_name.endswith(".parquet"):
        schema = pq.read_schema(output)
        assert schema.names == ["id", "text", "meta", "entities", "uncertainty", "rank", "selection"]
        assert schema.field("entities").type.value_type.field("score").type == pa.float64()


def test_jsonl_in_parquet_out_and_rejects_are_written(model_dir: Path, tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool.jsonl", pool_records(POOL[:3]))
    with pool.open("a", encoding="utf8") as f:
        f.write('{"id": 3}\nnot json\n')
    output = tmp_path / "out.parquet"
    result = run(str(model_dir), str(pool), str(output), "--n", "10", "--max-share", "1")
    assert result.exit_code == 0, result.output
    assert len(read_out(output)) == 3
    assert "2 rejects in" in result.output and "10 asked for" in result.output
    rejects = [json.loads(line) for line in (tmp_path / "out.parquet.rejects.jsonl").read_text().splitlines()]
    assert [(r["position"], r["reason"]) for r in rejects] == [(4, "missing field 'text'"), (5, "invalid JSON: Expecting value")]
    summary = json.loads((tmp_path / "out.parquet.summary.json").read_text())
    assert (summary["records_in"], summary["pool_records"], summary["rejects"]) == (5, 3, 2)


def test_the_strategies_the_cli_names_are_the_selections() -> None:
    # The command lists them without importing selection (numpy) for --help.
    assert select_cli.STRATEGIES == selection.STRATEGIES
    assert select_cli.DEFAULT_STRATEGY == selection.DEFAULT_STRATEGY


# --- the uncertainty order against brute force ------------------------------------


def valid_paths(allowed: numpy.ndarray, start: numpy.ndarray, end: numpy.ndarray, length: int) -> numpy.ndarray:
    """Every tag path the CRF allows, (n_paths, length)."""
    paths = [[tag] for tag in numpy.flatnonzero(start)]
    for _ in range(length - 1):
        paths = [path + [tag] for path in paths for tag in numpy.flatnonzero(allowed[path[-1]])]
    return numpy.array([path for path in paths if end[path[-1]]])


def brute_force_measures(nlp: Language, text: str) -> Dict[str, float]:
    """The three measures of a text from every valid path's probability under the component's CRF."""
    pipe = nlp.get_pipe("bilstm_crf_ner")
    module = get_torch_module(pipe.model)
    batch = featurize(pipe.model, [doc_chars(nlp.make_doc(text)).codepoints], None, None)
    crf = module.crf
    with torch.no_grad():
        emissions = module.emissions(xp2torch(batch.codepoints), xp2torch(batch.lengths)).double()[0].numpy()
        trans, start, end = (t.double().numpy() for t in (crf.transitions, crf.start_transitions, crf.end_transitions))
    allowed, ok_start, ok_end = (t.numpy() for t in (crf.allowed, crf.allowed_start, crf.allowed_end))
    paths = valid_paths(allowed, ok_start, ok_end, len(text))
    steps = numpy.arange(len(text))
    scores = (
        start[paths[:, 0]]
        + emissions[steps, paths].sum(axis=1)
        + trans[paths[:, :-1], paths[:, 1:]].sum(axis=1)
        + end[paths[:, -1]]
    )
    probs = numpy.exp(scores - numpy.logaddexp.reduce(scores))
    best = paths[int(numpy.argmax(probs))]
    decoded = set(pipe.scheme.tags_to_spans(best))
    wrong_tags = (paths != best).sum(axis=1)
    wrong_entities = numpy.array([len(decoded ^ set(pipe.scheme.tags_to_spans(path))) for path in paths])
    return {
        "best_path": float(1.0 - probs.max()),
        "tag_errors": float(probs @ wrong_tags),
        "entity_errors": float(probs @ wrong_entities),
    }


@pytest.fixture(scope="module")
def short_measures(model_dir: Path) -> List[Dict[str, float]]:
    nlp = spacy.load(model_dir)
    return [brute_force_measures(nlp, text) for text in SHORT]


@pytest.mark.parametrize("strategy", selection.MEASURES)
@pytest.mark.parametrize("per_char", [False, True])
def test_uncertainty_order_is_that_of_brute_force(
    model_dir: Path, tmp_path: Path, short_measures: List[Dict[str, float]], strategy: str, per_char: bool
) -> None:
    texts = SHORT + ["今天天气很好啊"]  # longer: per character it is as sure, per record not
    pool = write_pool(tmp_path / "pool.jsonl", pool_records(texts))
    output = tmp_path / "out.jsonl"
    args = [str(model_dir), str(pool), str(output), "--n", str(len(texts)), "--strategy", strategy]
    args += ["--max-share", "1", "--duplicates", "1"] + (["--per-char"] if per_char else [])
    result = run(*args)
    assert result.exit_code == 0, result.output
    chosen = read_out(output)
    written = {r["text"]: r["uncertainty"] for r in chosen}
    for text, expected in zip(SHORT, short_measures):
        assert written[text] == pytest.approx(expected, abs=1e-6, rel=1e-5)
    value = {text: (m[strategy] / (len(text) if per_char else 1)) for text, m in zip(SHORT, short_measures)}
    assert len({round(v, 9) for v in value.values()}) == len(SHORT)  # no ties: the order is decided
    ranked = [r["text"] for r in chosen if r["text"] in value]
    assert ranked == sorted(value, key=value.get, reverse=True)


# --- random, duplicates, labelled ---------------------------------------------------


def chosen_ids(model_dir: Path, pool: Path, output: Path, **kwargs: Any) -> List[int]:
    select_file(model_dir, pool, output, **kwargs)
    return [r["id"] for r in read_out(output)]


def test_random_is_reproducible_by_seed_and_differs_across_seeds(model_dir: Path, tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool.jsonl", pool_records(POOL))
    settings: Dict[str, Any] = {"n": 6, "strategy": "random", "max_share": 1.0}
    first = chosen_ids(model_dir, pool, tmp_path / "a.jsonl", seed=7, **settings)
    again = chosen_ids(model_dir, pool, tmp_path / "b.jsonl", seed=7, **settings)
    other = chosen_ids(model_dir, pool, tmp_path / "c.jsonl", seed=8, **settings)
    assert first == again
    assert first != other
    assert len(set(first)) == 6


def test_near_duplicates_are_skipped(model_dir: Path, tmp_path: Path) -> None:
    texts = ["王芳在上海的腾讯公司", "王芳在上海的腾讯公司。", "王芳 在上海的腾讯公司！", "李明在华为公司工作"]
    pool = write_pool(tmp_path / "pool.jsonl", pool_records(texts))
    output = tmp_path / "out.jsonl"
    select_file(model_dir, pool, output, n=4, max_share=1.0)
    chosen = [r["text"] for r in read_out(output)]
    assert len(chosen) == 2 and "李明在华为公司工作" in chosen
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert (summary["duplicates"], summary["chosen"]) == (2, 2)


@pytest.mark.parametrize("labelled_name", ["labelled.jsonl", "labelled.parquet", "labelled.spacy", "corpus/"])
def test_labelled_texts_near_duplicates_are_skipped(model_dir: Path, tmp_path: Path, labelled_name: str) -> None:
    pool = write_pool(tmp_path / "pool.jsonl", pool_records(POOL))
    labelled_texts = ["王芳在上海的腾讯公司。", "他在北京看了电影！"]  # POOL[0] and POOL[3], up to punctuation
    labelled = tmp_path / labelled_name
    if labelled_name == "corpus/":  # a corpus directory, as spacy train reads it: one DocBin per batch
        nlp = spacy.blank("zh")
        (labelled / "batch").mkdir(parents=True)
        DocBin(docs=[nlp.make_doc(labelled_texts[0])]).to_disk(labelled / "first.spacy")
        DocBin(docs=[nlp.make_doc(labelled_texts[1])]).to_disk(labelled / "batch" / "second.spacy")
    elif labelled_name.endswith(".spacy"):
        nlp = spacy.blank("zh")
        DocBin(docs=[nlp.make_doc(t) for t in labelled_texts]).to_disk(labelled)
    else:
        write_pool(labelled, [{"text": t, "other": 1} for t in labelled_texts])
    output = tmp_path / "out.jsonl"
    result = run(str(model_dir), str(pool), str(output), "--n", "10", "--max-share", "1", "--labelled", str(labelled))
    assert result.exit_code == 0, result.output
    chosen = [r["text"] for r in read_out(output)]
    assert sorted(chosen) == sorted(set(POOL) - {POOL[0], POOL[3]})
    assert json.loads((tmp_path / "out.jsonl.summary.json").read_text())["labelled"] == 2


# --- bad input ------------------------------------------------------------------------


def test_bad_input_gives_clear_errors(model_dir: Path, tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool.jsonl", pool_records(POOL[:3]))
    bad_pool = tmp_path / "bad.jsonl"
    bad_pool.write_text('{"id": 1, "body": "x"}\n{"id": 2, "text": 5}\n', encoding="utf8")
    bad_labelled = tmp_path / "labelled.jsonl"
    bad_labelled.write_text('{"text": "甲"}\n{"text": null}\n', encoding="utf8")
    blank = tmp_path / "blank"
    spacy.blank("zh").to_disk(blank)
    out = str(tmp_path / "out.jsonl")
    cases: List[Tuple[List[str], List[str]]] = [
        ([str(model_dir), str(tmp_path / "missing.jsonl"), out, "--n", "2"], ["No input found at", "missing.jsonl"]),
        ([str(model_dir), str(pool), out, "--n", "2", "--strategy", "margin"], ["Unknown strategy: margin", "entity_errors"]),
        ([str(model_dir), str(pool), out, "--n", "0"], ["Invalid --n: 0"]),
        ([str(model_dir), str(pool), str(tmp_path / "out.txt"), "--n", "2"], ["Cannot tell the output format", "out.txt"]),
        ([str(model_dir), str(pool), out, "--n", "2", "--format", "csv"], ["Unknown format 'csv'"]),
        ([str(model_dir), str(bad_pool), out, "--n", "2"], ["No usable record", "2 rejected", "bad.jsonl, line 1: missing field 'text'"]),
        ([str(model_dir), str(pool), out, "--n", "2", "--labelled", str(bad_labelled)], ["labelled.jsonl, line 2", "field 'text' is null"]),
        ([str(model_dir), str(pool), out, "--n", "2", "--max-share", "0"], ["max_share must be in (0, 1]"]),
        ([str(model_dir), str(pool), out, "--n", "2", "--duplicates", "1.5"], ["near-duplicate threshold must be in (0, 1]"]),
        ([str(model_dir), str(pool), str(pool), "--n", "2"], ["is a pool file"]),
        ([str(blank), str(pool), out, "--n", "2"], ["bilstm_crf_ner component", "has none"]),
        ([str(tmp_path / "nomodel"), str(pool), out, "--n", "2"], ["Cannot select", "nomodel"]),
        ([str(model_dir), str(pool), out, "--n", "2", "--labelled", str(tmp_path / "gone.spacy")], ["gone.spacy"]),
    ]
    for args, expected in cases:
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output, result.output
        for part in expected:
            assert part in result.output, (args, result.output)
    assert not (tmp_path / "out.jsonl").exists()
    assert pool.read_text(encoding="utf8").count("\n") == 3  # the pool was not overwritten
