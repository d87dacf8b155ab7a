"""Calibration of entity confidences, on docs whose scores are set by hand.

The scored docs (zh tokenizes per character), with "ent" for spans that are
also predicted entities and "cand" for extra candidate spans:

    text          gold                          scored spans
    张三在北京工作  name 张三, address 北京         name 张三 .9 ent ✓, address 北京 .8 ent ✓,
                                                name 北京 .1 cand ✗ (label)
    腾讯公司在深圳  company 腾讯公司, address 深圳   company 腾讯 .6 ent ✗ (boundary),
                                                company 腾讯公司 .3 cand ✓, address 深圳 .7 ent ✓
    我在家         (none)                        address 家 .4 ent ✗

    10 bins, one span each: gaps .1 .7 .4 .6 .3 .2 .1 → ECE = 2.4 / 7
    Brier = (.01 + .49 + .16 + .36 + .09 + .04 + .01) / 7 = 1.16 / 7
    entities: tp 3 (张三, 北京, 深圳), fp 2, fn 1 (腾讯公司)
"""
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import spacy
import srsly
import typer
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from typer.testing import CliRunner

from spacy_bilstm_crf.evaluation.calibration import (
    calibrate_docs,
    ece_of_bins,
    expected_calibration_error,
    pair_scores,
    save_reliability_diagram,
    threshold_prf,
)
from spacy_bilstm_crf.cli import app
from spacy_bilstm_crf.evaluation.report import render_report
from spacy_bilstm_crf.evaluation.scoring import evaluate_docs

from .conftest import docs_with_ents

KEY = "bilstm_crf_ner"
GOLD: List[Tuple[str, List[Tuple[int, int, str]]]] = [
    ("张三在北京工作", [(0, 2, "name"), (3, 5, "address")]),
    ("腾讯公司在深圳", [(0, 4, "company"), (5, 7, "address")]),
    ("我在家", []),
]
# text → [(start_char, end_char, label, score, is_entity)]
SCORED: Dict[str, List[Tuple[int, int, str, float, bool]]] = {
    "张三在北京工作": [(0, 2, "name", 0.9, True), (3, 5, "address", 0.8, True), (3, 5, "name", 0.1, False)],
    "腾讯公司在深圳": [(0, 2, "company", 0.6, True), (0, 4, "company", 0.3, False), (5, 7, "address", 0.7, True)],
    "我在家": [(2, 3, "address", 0.4, True)],
}
ECE = 2.4 / 7
BRIER = 1.16 / 7
MATPLOTLIB = ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg")


def _gold_docs(nlp: Language) -> List[Doc]:
    return docs_with_ents(nlp, GOLD)


def _annotate(doc: Doc, confidence: bool) -> Doc:
    rows = SCORED.get(doc.text, [])
    doc.ents = [doc.char_span(s, e, label=label) for s, e, label, _, is_ent in rows if is_ent]
    if confidence:
        doc.spans[KEY] = [doc.char_span(s, e, label=label) for s, e, label, _, _ in rows]
        doc.spans[KEY].attrs["scores"] = [score for *_, score, _ in rows]
    return doc


def _predicted_docs(nlp: Language) -> List[Doc]:
    return [_annotate(nlp.make_doc(text), True) for text, _ in GOLD]


class ScoredEntities:
    """A stand-in for a component with entity confidence: the attributes the evaluation
    looks for, and the spans of SCORED."""

    def __init__(self) -> None:
        self.confidence = False
        self.spans_key = KEY
        self.calls_with_confidence: List[bool] = []

    def __call__(self, doc: Doc) -> Doc:
        self.calls_with_confidence.append(self.confidence)
        return _annotate(doc, self.confidence)


@Language.factory("test_calibration_scored_entities")
def make_scored_entities(nlp: Language, name: str) -> ScoredEntities:
    return ScoredEntities()


def _scored_nlp() -> Language:
    nlp = spacy.blank("zh")
    nlp.add_pipe("test_calibration_scored_entities", name="scored")
    return nlp


# -- the error and the bins ------------------------------------------------------------------


def test_ece_and_brier_by_hand() -> None:
    # Bins of unequal size: an unweighted mean of the gaps would be (.05+.15+.75+.3)/4.
    scores = [0.05, 0.15, 0.25, 0.95, 0.95, 1.0]
    correct = [False, False, True, True, True, False]
    result = expected_calibration_error(scores, correct, n_bins=10)
    assert result.ece == pytest.approx((0.05 + 0.15 + 0.75 + 3 * abs(2 / 3 - 2.9 / 3)) / 6)
    assert result.brier == pytest.approx((0.05**2 + 0.15**2 + 0.75**2 + 0.05**2 + 0.05**2 + 1) / 6)
    assert result.n_spans == 6
    assert [row["count"] for row in result.bins] == [1, 1, 1, 0, 0, 0, 0, 0, 0, 3]  # 1.0: last bin
    last = result.bins[-1]
    assert (last["lower"], last["upper"]) == pytest.approx((0.9, 1.0))
    assert last["confidence"] == pytest.approx(2.9 / 3) and last["accuracy"] == pytest.approx(2 / 3)
    assert result.bins[5]["confidence"] is None and result.bins[5]["accuracy"] is None
    assert ece_of_bins(result.bins) == pytest.approx(result.ece)


def test_bins_are_closed_below() -> None:
    result = expected_calibration_error([0.0, 0.5, 0.5, 1.0], [False, True, False, True], n_bins=2)
    assert [row["count"] for row in result.bins] == [1, 3]
    assert result.bins[1]["accuracy"] == pytest.approx(2 / 3)
    assert result.ece == pytest.approx((1 * 0.0 + 3 * abs(2 / 3 - 2 / 3)) / 4)


def test_ece_is_zero_when_accuracy_equals_confidence() -> None:
    scores = [0.8] * 5 + [0.25] * 4 + [1.0] * 2 + [0.0] * 3
    correct = [True] * 4 + [False] + [True] + [False] * 3 + [True] * 2 + [False] * 3
    result = expected_calibration_error(scores, correct)
    assert result.ece == pytest.approx(0.0, abs=1e-12)
    assert result.brier == pytest.approx((4 * 0.2**2 + 0.8**2 + 0.75**2 + 3 * 0.25**2) / 14)
    # The same scores, one more 0.8 right: no longer calibrated.
    correct[4] = True
    assert expected_calibration_error(scores, correct).ece == pytest.approx(5 / 14 * 0.2)


def test_empty_input() -> None:
    result = expected_calibration_error([], [], n_bins=4)
    assert (result.ece, result.brier, result.n_spans) == (None, None, 0)
    assert [row["count"] for row in result.bins] == [0, 0, 0, 0]
    assert ece_of_bins(result.bins) is None


def test_scores_out_of_range() -> None:
    # float32 rounding just above 1 is clipped into the last bin; anything further is an error.
    assert expected_calibration_error([1.00001], [True]).bins[-1]["count"] == 1
    for bad in (1.1, -0.2, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            expected_calibration_error([0.5, bad], [True, True])
    with pytest.raises(ValueError, match="correctness"):
        expected_calibration_error([0.5], [True, False])


# -- pairing spans with gold -----------------------------------------------------------------


def test_pairing_with_gold() -> None:
    nlp = spacy.blank("zh")
    scores, correct = pair_scores(_predicted_docs(nlp), _gold_docs(nlp), KEY)
    assert scores == pytest.approx([0.9, 0.8, 0.1, 0.6, 0.3, 0.7, 0.4])
    # wrong label (北京 as name), wrong boundary (腾讯) and a spurious 家 are incorrect
    assert correct == [True, True, False, False, True, True, False]
    scores, correct = pair_scores(_predicted_docs(nlp), _gold_docs(nlp), KEY, ents_only=True)
    assert scores == pytest.approx([0.9, 0.8, 0.6, 0.7, 0.4])
    assert correct == [True, True, False, True, False]
    result = calibrate_docs(_predicted_docs(nlp), _gold_docs(nlp), KEY)
    assert (result.ece, result.brier, result.n_spans) == pytest.approx((ECE, BRIER, 7))


def test_pairing_uses_character_offsets() -> None:
    # Gold tokenized by words, predictions by characters: the same entities match.
    nlp = spacy.blank("zh")
    gold = Doc(nlp.vocab, words=["张三", "在", "北京", "工作"], spaces=[False] * 4)
    gold.ents = [gold.char_span(0, 2, label="name"), gold.char_span(3, 5, label="address")]
    _, correct = pair_scores([_annotate(nlp.make_doc(gold.text), True)], [gold], KEY)
    assert correct == [True, True, False]


def test_pairing_checks_its_input() -> None:
    nlp = spacy.blank("zh")
    predicted, gold = _predicted_docs(nlp), _gold_docs(nlp)
    with pytest.raises(ValueError, match="different texts"):
        pair_scores(predicted, gold[::-1], KEY)
    with pytest.raises(ValueError, match="differ in number"):
        pair_scores(predicted, gold[:2], KEY)
    predicted[0].spans[KEY].attrs["scores"] = [0.9]
    with pytest.raises(ValueError, match="3 spans and 1 scores"):
        pair_scores(predicted, gold, KEY)
    # A doc without the group contributes nothing.
    plain = [_annotate(nlp.make_doc(text), False) for text, _ in GOLD]
    assert pair_scores(plain, gold, KEY) == ([], [])


def test_threshold_prf() -> None:
    nlp = spacy.blank("zh")
    predicted, gold = _predicted_docs(nlp), _gold_docs(nlp)
    # No threshold: all 5 entities, tp 3 of 4 gold.
    assert threshold_prf(predicted, gold, KEY, 0.0) == pytest.approx(
        {"p": 3 / 5, "r": 3 / 4, "f": 2 / 3, "n_kept": 5, "n_dropped": 0}
    )
    # 家 (.4) dropped; the candidate 腾讯公司 (.3) is no entity and never counts.
    assert threshold_prf(predicted, gold, KEY, 0.5) == pytest.approx(
        {"p": 0.75, "r": 0.75, "f": 0.75, "n_kept": 4, "n_dropped": 1}
    )
    # Kept when the score equals the threshold (北京 .8).
    assert threshold_prf(predicted, gold, KEY, 0.8) == pytest.approx(
        {"p": 1.0, "r": 0.5, "f": 2 / 3, "n_kept": 2, "n_dropped": 3}
    )
    assert threshold_prf(predicted, gold, KEY, 0.95)["f"] == 0.0
    unscored = _annotate(nlp.make_doc("我在家"), False)
    with pytest.raises(ValueError, match="must be scored"):
        threshold_prf([unscored], [gold[2]], KEY, 0.5)


# -- evaluation and report -------------------------------------------------------------------


def test_evaluation_turns_confidence_on_and_restores_it() -> None:
    nlp = _scored_nlp()
    pipe = nlp.get_pipe("scored")
    result = evaluate_docs(nlp, _gold_docs(nlp))
    assert pipe.calls_with_confidence == [True, True, True]
    assert pipe.confidence is False
    calibration = result.scores["calibration"]
    assert calibration["ece"] == pytest.approx(ECE)
    assert calibration["brier"] == pytest.approx(BRIER)
    assert calibration["n_spans"] == 7 and len(calibration["bins"]) == 10
    assert (calibration["spans_key"], calibration["component"]) == (KEY, "scored")
    assert result.scores["ents_p"] == pytest.approx(3 / 5)
    assert result.scores["ents_r"] == pytest.approx(3 / 4)
    pipe.confidence = True  # an old value of True stays True
    evaluate_docs(nlp, _gold_docs(nlp))
    assert pipe.confidence is True


def test_evaluation_without_confidence() -> None:
    nlp = _scored_nlp()
    result = evaluate_docs(nlp, _gold_docs(nlp), calibration=False)
    assert "calibration" not in result.scores
    assert nlp.get_pipe("scored").calls_with_confidence == [False, False, False]
    ruler = spacy.blank("zh")
    ruler.add_pipe("entity_ruler").add_patterns([{"label": "name", "pattern": "张三"}])
    assert "calibration" not in evaluate_docs(ruler, _gold_docs(ruler)).scores
    assert "Calibration" not in render_report(evaluate_docs(ruler, _gold_docs(ruler)), "m", "d")


def test_report_section() -> None:
    nlp = _scored_nlp()
    result = evaluate_docs(nlp, _gold_docs(nlp))
    with_image = render_report(result, "scored", "dev.spacy", reliability_image="dev_reliability.png")
    assert "## Calibration of entity confidence" in with_image
    assert f"**{ECE:.4f}**" in with_image and f"**{BRIER:.4f}**" in with_image
    assert "![reliability](dev_reliability.png)" in with_image
    assert "| 0.30–0.40 | 1 | 0.3000 | 1.0000 |" in with_image
    assert "| 0.50–0.60 | 0 | n/a | n/a |" in with_image
    assert "(entity confidence on)" in with_image
    without = render_report(result, "scored", "dev.spacy")
    assert "![" not in without and "matplotlib is not installed" in without
    assert "| 0.90–1.00 | 1 | 0.9000 | 1.0000 |" in without


def test_reliability_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = expected_calibration_error([0.05, 0.5, 0.95, 1.0], [False, True, True, True])
    path = save_reliability_diagram(result.bins, tmp_path / "out" / "reliability.png")
    assert path == tmp_path / "out" / "reliability.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    # An empty table draws too (the evaluation of a model that predicts nothing).
    assert save_reliability_diagram(expected_calibration_error([], []).bins, tmp_path / "e.png")


def test_reliability_png_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in MATPLOTLIB:  # None in sys.modules: the import fails
        monkeypatch.setitem(sys.modules, name, None)
    result = expected_calibration_error([0.5], [True])
    assert save_reliability_diagram(result.bins, tmp_path / "r.png") is None
    assert not (tmp_path / "r.png").exists()


@pytest.mark.parametrize("with_matplotlib", [True, False])
def test_cli_writes_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_matplotlib: bool
) -> None:
    if with_matplotlib:
        pytest.importorskip("matplotlib")
    else:
        for name in MATPLOTLIB:
            monkeypatch.setitem(sys.modules, name, None)
    nlp = _scored_nlp()
    nlp.to_disk(tmp_path / "model")
    DocBin(docs=_gold_docs(nlp)).to_disk(tmp_path / "dev.spacy")
    out = tmp_path / "metrics"
    args = [str(tmp_path / "model"), str(tmp_path / "dev.spacy"), "--output", str(out)]
    is_group = hasattr(typer.main.get_command(app), "commands")
    result = CliRunner().invoke(app, ["evaluate", *args] if is_group else args)
    assert result.exit_code == 0, result.output
    assert srsly.read_json(out / "dev.json")["calibration"]["ece"] == pytest.approx(ECE)
    report = (out / "dev_report.md").read_text(encoding="utf8")
    assert (out / "dev_reliability.png").exists() is with_matplotlib
    assert ("![reliability](dev_reliability.png)" in report) is with_matplotlib
    assert ("matplotlib is not installed" in report) is not with_matplotlib
