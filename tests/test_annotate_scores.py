"""annotate writes each entity's probability (`score`), and on request candidate spans
above a threshold and each record's uncertainty: the numbers the component puts in
`doc.spans[spans_key]`, on the local engine (one and two processes) and (in test_annotate_ray.py) the ray engine,
in JSON lines, Parquet and DocBin; other score settings refuse to resume a run."""
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import spacy
from spacy.language import Language
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_bilstm_crf.annotate import annotate
from spacy_bilstm_crf.annotate.scoring import ScoreSettings, apply_scoring, has_scoring_component, resolve_settings
from spacy_bilstm_crf.cli import app

from .conftest import TRAIN_DATA
from .test_annotate import read_output

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

runner = CliRunner()

# Unseen texts give uncertain entities and candidates; the long one is tagged in windows.
UNSEEN = ["王芳在上海的腾讯公司", "李明在华为公司工作", "张伟去深圳大学", "他在北京看了电影"]
TEXTS = [text for text, _ in TRAIN_DATA] + UNSEEN + ["".join(UNSEEN) * 20, ""]
THRESHOLD = 0.01
RTOL, ATOL = 1e-5, 1e-7


@pytest.fixture(scope="module")
def model_dir(trained_nlp: Language, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("annotate_scores") / "model"
    trained_nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def blank_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("annotate_scores_blank") / "model"
    spacy.blank("zh").to_disk(path)
    return path


Scored = Dict[Tuple[int, int, str], float]


def component_scores(model_dir: Path, texts: List[str]) -> List[Tuple[Scored, Scored, Dict[str, float]]]:
    """Per text: the entities' and the other spans' probabilities, and the measures, as
    the component puts them in doc.spans with confidence, the threshold and uncertainty on."""
    nlp = spacy.load(model_dir)  # a copy of its own: the session's trained_nlp stays as it is
    nlp.get_pipe("bilstm_crf_ner").confidence = True
    nlp.get_pipe("bilstm_crf_ner").threshold = THRESHOLD
    nlp.get_pipe("bilstm_crf_ner").uncertainty = True
    nlp.max_length = max(nlp.max_length, max(map(len, texts)))
    result = []
    for doc in nlp.pipe(texts, batch_size=len(texts)):
        group = doc.spans["bilstm_crf_ner"]
        ents = {(e.start_char, e.end_char, e.label_) for e in doc.ents}
        scored = {(s.start_char, s.end_char, s.label_): p for s, p in zip(group, group.attrs["scores"])}
        result.append(
            (
                {k: p for k, p in scored.items() if k in ents},
                {k: p for k, p in scored.items() if k not in ents},
                dict(group.attrs["uncertainty"]),
            )
        )
    return result


def write_jsonl(path: Path, texts: List[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)))
    return path


def isclose(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)


def assert_component_scores(rows: List[Dict[str, Any]], model_dir: Path, texts: List[str]) -> None:
    """The written scores, candidates and uncertainty are the component's."""
    expected = component_scores(model_dir, texts)
    assert len(rows) == len(texts)
    n_candidates = 0
    for row, (ents, candidates, measures) in zip(rows, expected):
        written = {(e["start"], e["end"], e["label"]): e["score"] for e in row["entities"]}
        assert written.keys() == ents.keys(), row["text"]
        assert all(isclose(written[k], ents[k]) for k in ents), (written, ents)
        assert all(e["text"] == row["text"][e["start"] : e["end"]] for e in row["candidates"])
        found = {(c["start"], c["end"], c["label"]): c["score"] for c in row["candidates"]}
        assert found.keys() == candidates.keys(), row["text"]
        assert all(isclose(found[k], candidates[k]) and found[k] >= THRESHOLD for k in found)
        n_candidates += len(found)
        assert row["uncertainty"].keys() == measures.keys()
        assert all(isclose(row["uncertainty"][k], measures[k]) for k in measures), (row["uncertainty"], measures)
    assert n_candidates > 0  # the unseen texts have some
    assert any(e["score"] < 0.99 for row in rows for e in row["entities"])  # not all certain


@pytest.mark.parametrize("n_process", [1, 2])
def test_local_engine_writes_the_component_scores(model_dir: Path, tmp_path: Path, n_process: int) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", TEXTS)
    annotate(model_dir, source, tmp_path / "out", threshold=THRESHOLD, uncertainty=True, n_process=n_process, shard_size=5)
    assert_component_scores(read_output(tmp_path / "out"), model_dir, TEXTS)


def test_entities_are_scored_by_default_and_not_with_no_confidence(model_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", TEXTS)
    result = runner.invoke(app, ["annotate", str(model_dir), str(source), str(tmp_path / "on"), "--no-progress"])
    assert result.exit_code == 0, result.output
    on = read_output(tmp_path / "on")
    assert all(sorted(e) == ["end", "label", "score", "start", "text"] for r in on for e in r["entities"])
    assert all("candidates" not in r and "uncertainty" not in r for r in on)
    args = ["annotate", str(model_dir), str(source), str(tmp_path / "off"), "--no-progress", "--no-confidence"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    off = read_output(tmp_path / "off")
    assert all(sorted(e) == ["end", "label", "start", "text"] for r in off for e in r["entities"])
    # The same entities either way.
    assert [[{k: v for k, v in e.items() if k != "score"} for e in r["entities"]] for r in on] == [
        r["entities"] for r in off
    ]
    # Uncertainty without the entities' scores.
    result = runner.invoke(app, args[:3] + [str(tmp_path / "unc"), "--no-progress", "--no-confidence", "--uncertainty"])
    assert result.exit_code == 0, result.output
    unc = read_output(tmp_path / "unc")
    assert all("score" not in e for r in unc for e in r["entities"])
    assert all(sorted(r["uncertainty"]) == ["best_path", "entity_errors", "tag_errors"] for r in unc)


def test_parquet_has_typed_score_candidates_and_uncertainty(model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": i, "text": t} for i, t in enumerate(TEXTS)]), source)
    output = tmp_path / "out.parquet"
    annotate(model_dir, source, output, threshold=THRESHOLD, uncertainty=True, shard_size=4)
    schemas = [pq.read_schema(p) for p in sorted(output.glob("part-*.parquet"))]
    assert len(schemas) == 4 and all(s.equals(schemas[0]) for s in schemas)
    schema = schemas[0]
    assert schema.names == ["id", "text", "entities", "candidates", "uncertainty"]
    assert schema.field("entities").type.value_type.field("score").type == pa.float64()
    assert schema.field("candidates").type.value_type.field("score").type == pa.float64()
    assert [f.name for f in schema.field("uncertainty").type] == ["best_path", "tag_errors", "entity_errors"]
    assert_component_scores(read_output(output), model_dir, TEXTS)


def test_docbin_carries_the_span_group(model_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", TEXTS)
    annotate(model_dir, source, tmp_path / "out", docbin=True, threshold=THRESHOLD, uncertainty=True)
    rows = read_output(tmp_path / "out")
    nlp = spacy.blank("zh")
    docs = list(DocBin().from_disk(tmp_path / "out" / "part-00000.spacy").get_docs(nlp.vocab))
    for doc, row in zip(docs, rows):
        group = doc.spans["bilstm_crf_ner"]
        spans = {(s.start_char, s.end_char, s.label_): p for s, p in zip(group, group.attrs["scores"])}
        written = {(e["start"], e["end"], e["label"]): e["score"] for e in row["entities"] + row["candidates"]}
        assert spans == written
        assert group.attrs["uncertainty"] == row["uncertainty"]


def test_other_score_settings_refuse_to_resume(model_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", TEXTS)

    def crash(counts: Dict[str, int]) -> None:
        raise RuntimeError("killed")

    output = tmp_path / "out"
    with pytest.raises(RuntimeError):
        annotate(model_dir, source, output, shard_size=5, on_shard_written=crash)
    for settings in ({"confidence": False}, {"threshold": 0.5}, {"uncertainty": True}):
        with pytest.raises(ValueError, match=r"other settings \(changed: scores\)"):
            annotate(model_dir, source, output, shard_size=5, **settings)
    summary = annotate(model_dir, source, output, shard_size=5, confidence=True)  # the default, said
    assert summary.shards_resumed == 1


def test_a_pipeline_without_the_component_tags_without_scores(blank_model: Path, tmp_path: Path) -> None:
    assert not has_scoring_component(str(blank_model))
    source = write_jsonl(tmp_path / "in.jsonl", ["甲乙", "丙"])
    result = runner.invoke(app, ["annotate", str(blank_model), str(source), str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [r["entities"] for r in read_output(tmp_path / "out")] == [[], []]
    for flag in (["--confidence"], ["--threshold", "0.3"], ["--uncertainty"]):
        result = runner.invoke(app, ["annotate", str(blank_model), str(source), str(tmp_path / "x"), *flag])
        assert result.exit_code == 1
        assert "need a bilstm_crf_ner component" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "x").exists()  # refused before anything is written


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1"])
def test_a_bad_threshold_is_refused(model_dir: Path, tmp_path: Path, value: str) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ["甲"])
    result = runner.invoke(app, ["annotate", str(model_dir), str(source), str(tmp_path / "out"), "--threshold", value])
    assert result.exit_code == 1 and "Invalid --threshold" in result.output
    with pytest.raises(ValueError, match="probability in"):
        resolve_settings(str(model_dir), threshold=float(value))


def test_resolve_settings_defaults(model_dir: Path, blank_model: Path) -> None:
    assert resolve_settings(str(model_dir)) == ScoreSettings(confidence=True)
    assert resolve_settings(str(model_dir), confidence=False) == ScoreSettings(confidence=False)
    assert not resolve_settings(str(blank_model)).any
    assert not resolve_settings("blank:zh").any
    # A disabled component cannot score.
    nlp = spacy.load(model_dir)
    nlp.disable_pipe("bilstm_crf_ner")
    nlp.to_disk(model_dir.parent / "disabled")
    assert not has_scoring_component(str(model_dir.parent / "disabled"))


def test_apply_scoring_leaves_the_component_alone_when_nothing_is_scored(model_dir: Path) -> None:
    nlp = spacy.load(model_dir)
    assert apply_scoring(nlp, ScoreSettings(confidence=False)) is None
    assert nlp.get_pipe("bilstm_crf_ner").confidence is False


def test_candidates_are_at_least_the_threshold_with_min_confidence(model_dir: Path, tmp_path: Path) -> None:
    # min_confidence leaves unlikely entities out of doc.ents but scored in doc.spans:
    # they are candidates only if they reach the threshold.
    strict = tmp_path / "strict"
    spacy.load(model_dir, config={"components": {"bilstm_crf_ner": {"min_confidence": 0.9}}}).to_disk(strict)
    source = write_jsonl(tmp_path / "in.jsonl", TEXTS)
    annotate(strict, source, tmp_path / "out", threshold=0.5)
    rows = read_output(tmp_path / "out")
    assert all(e["score"] >= 0.9 for r in rows for e in r["entities"])
    assert all(c["score"] >= 0.5 for r in rows for c in r["candidates"])
    assert any(0.5 <= c["score"] < 0.9 for r in rows for c in r["candidates"])  # a dropped entity
    # The component's group also has dropped entities below the threshold: left out.
    nlp = spacy.load(strict)
    nlp.get_pipe("bilstm_crf_ner").confidence = True
    nlp.get_pipe("bilstm_crf_ner").threshold = 0.5
    groups = [doc.spans["bilstm_crf_ner"] for doc in nlp.pipe(TEXTS)]
    assert any(p < 0.5 for group in groups for p in group.attrs["scores"])
