"""The evaluate command on a rule-based pipeline whose scores are known by hand.

Gold and rules (zh tokenizes per character):

    doc  text        gold                      predicted by the ruler
    1    张三在北京工作  name 张三, address 北京     name 张三 ✓, address 北京 ✓
    2    李四去上海      name 李四, address 上海     name 李四 ✓ (上海 missed)
    3    腾讯公司在深圳  company 腾讯公司, addr 深圳  company 腾讯 ✗ (boundary), addr 深圳 ✓
    4    王五是经理      name 王五, position 经理    company 王五 ✗ (label), position 经理 ✓
    5    我在家         (no entities, annotated)    address 家 ✗

    name      tp 2 fp 0 fn 1 → P 1,   R 2/3, F 0.8
    address   tp 2 fp 1 fn 1 → P 2/3, R 2/3, F 2/3
    company   tp 0 fp 2 fn 1 → 0, 0, 0
    position  tp 1 fp 0 fn 0 → 1, 1, 1
    micro     tp 5 fp 3 fn 3 → P = R = F = 5/8
"""
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence, Tuple

import pytest
import spacy
import srsly
import typer
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from typer.testing import CliRunner, Result

from spacy_bilstm_crf.cli import app
from spacy_bilstm_crf.evaluation import (
    CLUENER_LABELS,
    PUBLISHED_BILSTM_CRF_TEST_F1,
    check_agreement,
    doc_to_iob,
    evaluate_docs,
    render_displacy,
    render_report,
)

from .conftest import docs_with_ents

GOLD: List[Tuple[str, List[Tuple[int, int, str]]]] = [
    ("张三在北京工作", [(0, 2, "name"), (3, 5, "address")]),
    ("李四去上海", [(0, 2, "name"), (3, 5, "address")]),
    ("腾讯公司在深圳", [(0, 4, "company"), (5, 7, "address")]),
    ("王五是经理", [(0, 2, "name"), (3, 5, "position")]),
    ("我在家", []),
]
PATTERNS = [
    {"label": "name", "pattern": "张三"},
    {"label": "name", "pattern": "李四"},
    {"label": "address", "pattern": "北京"},
    {"label": "address", "pattern": "深圳"},
    {"label": "address", "pattern": "家"},
    {"label": "company", "pattern": "腾讯"},
    {"label": "company", "pattern": "王五"},
    {"label": "position", "pattern": "经理"},
]


def _ruler_nlp() -> Language:
    nlp = spacy.blank("zh")
    nlp.add_pipe("entity_ruler").add_patterns(PATTERNS)
    return nlp


def _gold_docs(nlp: Language) -> List[Doc]:
    return docs_with_ents(nlp, GOLD)


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    nlp = _ruler_nlp()
    nlp.to_disk(root / "model")
    DocBin(docs=_gold_docs(nlp), store_user_data=False).to_disk(root / "dev.spacy")
    return root / "model", root / "dev.spacy"


def _invoke(args: Sequence[str]) -> Result:
    # A typer app with a single command runs it without the command name, and
    # other modules may or may not have registered theirs yet.
    command = typer.main.get_command(app)
    is_group = hasattr(command, "commands")
    return CliRunner().invoke(app, list(args) if is_group else list(args)[1:])


def test_scores_by_hand() -> None:
    nlp = _ruler_nlp()
    result = evaluate_docs(nlp, _gold_docs(nlp))
    s = result.scores
    assert s["ents_p"] == pytest.approx(5 / 8)
    assert s["ents_r"] == pytest.approx(5 / 8)
    assert s["ents_f"] == pytest.approx(5 / 8)
    per_type = s["ents_per_type"]
    assert per_type["name"] == pytest.approx({"p": 1.0, "r": 2 / 3, "f": 0.8})
    assert per_type["address"] == pytest.approx({"p": 2 / 3, "r": 2 / 3, "f": 2 / 3})
    assert per_type["company"] == pytest.approx({"p": 0.0, "r": 0.0, "f": 0.0})
    assert per_type["position"] == pytest.approx({"p": 1.0, "r": 1.0, "f": 1.0})
    assert (s["n_docs"], s["n_gold_ents"], s["n_pred_ents"]) == (5, 8, 8)
    assert s["gold_ents_per_type"] == {"name": 3, "address": 3, "company": 1, "position": 1}
    assert s["pred_ents_per_type"] == {"name": 2, "address": 3, "company": 2, "position": 1}
    assert s["chars_per_second"] > 0


def test_seqeval_agrees_with_spacy() -> None:
    nlp = _ruler_nlp()
    result = evaluate_docs(nlp, _gold_docs(nlp))
    assert result.seqeval_f1 == pytest.approx(5 / 8)
    assert abs(result.scores["spacy_minus_seqeval_f1_points"]) < 1e-9
    # The per-type report lines: "<label> precision recall f1 support".
    lines = [line.split() for line in result.seqeval_report.splitlines() if line.strip()]
    rows = {cells[0]: cells[1:] for cells in lines}
    assert rows["name"] == ["1.0000", "0.6667", "0.8000", "3"]
    assert rows["company"] == ["0.0000", "0.0000", "0.0000", "1"]


def test_unannotated_gold_docs_are_skipped() -> None:
    # spaCy ignores gold docs without entity annotation; seqeval must see the same docs.
    nlp = _ruler_nlp()
    docs = _gold_docs(nlp)
    docs[-1] = nlp.make_doc(GOLD[-1][0])  # 我在家, ents never set → not annotated
    result = evaluate_docs(nlp, docs)
    assert (result.scores["n_docs"], result.scores["n_docs_unannotated"]) == (4, 1)
    assert result.scores["ents_p"] == pytest.approx(5 / 7)
    assert result.seqeval_f1 == pytest.approx(result.scores["ents_f"])


def test_doc_to_iob() -> None:
    doc = _gold_docs(_ruler_nlp())[2]
    company = ["B-company", "I-company", "I-company", "I-company"]
    assert doc_to_iob(doc) == company + ["O", "B-address", "I-address"]


def test_check_agreement() -> None:
    assert check_agreement(0.625, 0.625) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="differ"):
        check_agreement(0.625, 0.6)


def _table_rows(report: str) -> List[List[str]]:
    """The cells of the report's score table (header first, without the rule)."""
    rows = [line for line in report.split("## seqeval")[0].splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows]


def test_report_order_and_published_numbers() -> None:
    nlp = _ruler_nlp()
    report = render_report(evaluate_docs(nlp, _gold_docs(nlp)), "ruler", "dev.spacy")
    header, *rows = _table_rows(report)
    # The data's own labels, in CLUENER's order; no rows for CLUENER labels it lacks.
    assert [row[0] for row in rows] == [
        "address", "company", "name", "position", "**overall (micro)**", "**overall (macro)**",
    ]
    # The headers say which numbers are ours (on which data) and which are published.
    assert header == [
        "Type", "P (dev.spacy)", "R (dev.spacy)", "F1 (dev.spacy)", "Gold", "Pred",
        "CLUENER2020 paper BiLSTM+CRF F1 (test)", "Re-impl. BiLSTM+CRF F1 (dev)",
    ]
    name_row = rows[2]
    assert name_row[1:4] == ["100.00", "66.67", "80.00"]
    assert name_row[6] == f"{PUBLISHED_BILSTM_CRF_TEST_F1['name']:.2f}"
    # The paper's overall F1 is a macro average, the re-implementation's a micro one:
    # each sits in the row of its own average.
    micro, macro = rows[-2], rows[-1]
    assert micro[1:4] == ["62.50"] * 3 and micro[6:] == ["–", "67.47"]
    assert macro[3] == "61.67" and macro[6:] == ["70.00", "–"]  # (80 + 66.67 + 0 + 100) / 4
    assert "**macro** average" in report and "**micro** average" in report
    assert "```" in report and "micro avg" in report


def test_macro_scores_agree_with_seqeval() -> None:
    nlp = _ruler_nlp()
    result = evaluate_docs(nlp, _gold_docs(nlp))
    macro_line = next(line for line in result.seqeval_report.splitlines() if "macro avg" in line)
    p, r, f = (float(cell) for cell in macro_line.split()[2:5])
    s = result.scores
    assert (s["ents_macro_p"], s["ents_macro_r"], s["ents_macro_f"]) == pytest.approx((p, r, f), abs=1e-4)
    assert s["ents_macro_f"] == pytest.approx((0.8 + 2 / 3 + 0.0 + 1.0) / 4)


# A People's-Daily-like corpus: other labels than CLUENER's.
PD_GOLD: List[Tuple[str, List[Tuple[int, int, str]]]] = [
    ("张三在北京工作", [(0, 2, "PER"), (3, 5, "LOC")]),
    ("李四去新华社", [(0, 2, "PER"), (3, 6, "ORG")]),
]
PD_PATTERNS = [
    {"label": "PER", "pattern": "张三"},
    {"label": "LOC", "pattern": "北京"},
    {"label": "LOC", "pattern": "新华社"},
]


def test_report_of_other_labels_has_no_cluener_rows_or_columns() -> None:
    nlp = spacy.blank("zh")
    nlp.add_pipe("entity_ruler").add_patterns(PD_PATTERNS)
    report = render_report(evaluate_docs(nlp, docs_with_ents(nlp, PD_GOLD)), "pd", "pd_dev.spacy")
    header, *rows = _table_rows(report)
    assert [row[0] for row in rows] == ["LOC", "ORG", "PER", "**overall (micro)**", "**overall (macro)**"]
    assert len(header) == 6 and not any("CLUENER" in cell or "Re-impl" in cell for cell in header)
    assert all("n/a" not in row for row in rows[:3])  # every label was scored
    # gold / predicted counts: LOC 1/2, ORG 1/0 (predicted as LOC), PER 2/1
    assert [row[4:6] for row in rows[:3]] == [["1", "2"], ["1", "0"], ["2", "1"]]
    assert rows[0][1:4] == ["50.00", "100.00", "66.67"]
    table = report.split("## seqeval")[0]
    assert "70.00" not in table and "67.47" not in table
    assert not any(label in table for label in CLUENER_LABELS)
    assert "not CLUENER's" in table


def _marks(html: str) -> List[Tuple[str, str]]:
    """The (entity text, label) of every displaCy mark on a page, in order."""
    found = re.findall(r'<mark class="entity"[^>]*>\s*(.*?)\s*<span[^>]*>(.*?)</span>', html, flags=re.S)
    return [(text.strip(), label.strip()) for text, label in found]


def test_displacy_page_shows_gold_above_prediction_and_marks_errors() -> None:
    nlp = _ruler_nlp()
    result = evaluate_docs(nlp, _gold_docs(nlp))
    html = render_displacy(result.predicted, limit=3, gold=result.gold)
    assert html.startswith("<!DOCTYPE html>")
    assert "王五" not in html  # only the first 3 docs
    assert _marks(html) == [
        # 1: both right
        ("张三", "name"), ("北京", "address"), ("张三", "name"), ("北京", "address"),
        # 2: 上海 missed
        ("李四", "name"), ("上海", "address ✗ missed"), ("李四", "name"),
        # 3: the boundary of 腾讯公司
        ("腾讯公司", "company ✗ missed"), ("深圳", "address"),
        ("腾讯", "company ✗ wrong"), ("深圳", "address"),
    ]
    assert "#2 gold" in html and "#2 predicted: 1 missed, 0 wrong" in html and "#1 predicted: correct" in html


def test_displacy_page_of_predictions_alone() -> None:
    nlp = _ruler_nlp()
    predicted = evaluate_docs(nlp, _gold_docs(nlp)).predicted
    html = render_displacy(predicted, limit=2)
    assert html.startswith("<!DOCTYPE html>")
    assert "张" in html and "腾讯" not in html  # only the first 2 docs
    assert ("上海", "address") not in _marks(html)


def test_cli_writes_files(model_and_data: Tuple[Path, Path], tmp_path: Path) -> None:
    model, data = model_and_data
    out = tmp_path / "metrics"
    args = [str(model), str(data), "--output", str(out), "--displacy-limit", "3"]
    result = _invoke(["evaluate", *args])
    assert result.exit_code == 0, result.output
    scores = srsly.read_json(out / "dev.json")
    assert scores["ents_f"] == pytest.approx(5 / 8)
    assert scores["ents_per_type"]["address"]["p"] == pytest.approx(2 / 3)
    assert scores["n_docs"] == 5 and scores["speed"] > 0
    assert "| address |" in (out / "dev_report.md").read_text(encoding="utf8")
    html = (out / "dev_displacy.html").read_text(encoding="utf8")
    assert "腾讯" in html and "王五" not in html  # --displacy-limit 3
    # The gold entities are on the page, next to the predictions (上海 was not predicted).
    assert ("上海", "address ✗ missed") in _marks(html) and ("腾讯公司", "company ✗ missed") in _marks(html)


@pytest.mark.parametrize("which", ["model", "data"])
def test_cli_missing_paths(model_and_data: Tuple[Path, Path], tmp_path: Path, which: str) -> None:
    model, data = model_and_data
    missing = tmp_path / "nope"
    args = [str(missing), str(data)] if which == "model" else [str(model), str(missing)]
    result = _invoke(["evaluate", *args, "--output", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "not found" in result.output and str(missing) in result.output
    assert not (tmp_path / "m").exists()


def test_published_numbers_match_the_cluener_readme() -> None:
    # Copied by hand from the CLUEbenchmark/CLUENER2020 README table, column "bilstm+crf".
    assert PUBLISHED_BILSTM_CRF_TEST_F1 == {
        "name": 74.04, "organization": 75.96, "position": 70.16, "company": 72.27,
        "address": 45.50, "game": 85.27, "government": 77.25, "scene": 52.42,
        "book": 67.20, "movie": 78.97, "overall": 70.00,
    }


# -- seqeval is an optional extra --------------------------------------------------------

SEQEVAL_MODULES = ("seqeval", "seqeval.metrics", "seqeval.scheme")


def test_evaluate_without_seqeval_says_how_to_install(
    model_and_data: Tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SEQEVAL_MODULES:  # None in sys.modules: "import seqeval" fails
        monkeypatch.setitem(sys.modules, name, None)
    nlp = _ruler_nlp()
    with pytest.raises(ImportError, match=r'pip install "spacy-bilstm-crf\[evaluate\]"'):
        evaluate_docs(nlp, _gold_docs(nlp))
    model, data = model_and_data
    result = _invoke(["evaluate", str(model), str(data), "--output", str(tmp_path / "m")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert 'pip install "spacy-bilstm-crf[evaluate]"' in result.output
    assert not (tmp_path / "m").exists()


def test_package_and_other_commands_work_without_seqeval(tmp_path: Path) -> None:
    # A fresh interpreter: the test process has seqeval imported already.
    code = f"""
import sys
import spacy
import spacy_bilstm_crf, spacy_bilstm_crf.pipe, spacy_bilstm_crf.cli, spacy_bilstm_crf.evaluation.scoring, spacy_bilstm_crf.evaluation.report
nlp = spacy.blank("zh")
nlp.add_pipe("bilstm_crf_ner")
loaded = [m for m in sys.modules if m.split(".")[0] == "seqeval"]
assert not loaded, loaded
for name in {SEQEVAL_MODULES!r}:
    sys.modules[name] = None
from typer.testing import CliRunner
source = {str(tmp_path / "in.json")!r}
open(source, "w", encoding="utf-8").write('{{"text": "张三", "label": {{"name": {{"张三": [[0, 1]]}}}}}}\\n')
result = CliRunner().invoke(spacy_bilstm_crf.cli.app, ["convert", source, {str(tmp_path / "out.spacy")!r}])
assert result.exit_code == 0, result.output
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
