"""The evaluation report: score tables (with the CLUENER2020 references), the
calibration section, and the displaCy pages of predicted (and gold) entities.

It renders what ``scoring.evaluate_docs`` returns.
"""
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from spacy import displacy
from spacy.displacy.templates import TPL_PAGE
from spacy.tokens import Doc

from .scoring import AGREEMENT_TOLERANCE, EvaluationResult

# The 10 CLUENER2020 labels in the order the dataset's README and paper list them.
CLUENER_LABELS: Tuple[str, ...] = (
    "address",
    "book",
    "company",
    "game",
    "government",
    "movie",
    "name",
    "organization",
    "position",
    "scene",
)

# Published BiLSTM+CRF per-type F1 (percent) on the CLUENER2020 *test* set.
# Source: the "各个实体的评测结果(F1 score)" table, column "bilstm+crf", of the
# README of https://github.com/CLUEbenchmark/CLUENER2020 (Xu et al. 2020,
# "CLUENER2020: Fine-grained Named Entity Recognition Dataset and Benchmark for
# Chinese", arXiv:2001.04351). Only F1 is published, no P/R. The README labels
# the overall row "Overall@Macro"; 70.00 is also the "线上效果f1" (leaderboard
# test F1) it gives for "Bi-Lstm + CRF".
PUBLISHED_BILSTM_CRF_TEST_F1: Dict[str, float] = {
    "address": 45.50,
    "book": 67.20,
    "company": 72.27,
    "game": 85.27,
    "government": 77.25,
    "movie": 78.97,
    "name": 74.04,
    "organization": 75.96,
    "position": 70.16,
    "scene": 52.42,
    "overall": 70.00,
}

# The widely used re-implementation's BiLSTM+CRF F1 (percent) on the CLUENER2020
# *dev* set (it uses dev as its test set, since test labels are not public).
# Source: "Results" table, column "BiLSTM+CRF", of the README of
# https://github.com/hemingkx/CLUENER2020.
REIMPL_BILSTM_CRF_DEV_F1: Dict[str, float] = {
    "address": 47.37,
    "book": 65.71,
    "company": 71.06,
    "game": 76.28,
    "government": 71.29,
    "movie": 67.53,
    "name": 71.49,
    "organization": 73.29,
    "position": 72.33,
    "scene": 51.16,
    "overall": 67.47,
}

# displaCy colours, one per CLUENER label (pastel, so black text stays readable).
DISPLACY_COLORS: Dict[str, str] = {
    "address": "#7aecec",
    "book": "#bfeeb7",
    "company": "#feca74",
    "game": "#ff9561",
    "government": "#aa9cfc",
    "movie": "#c887fb",
    "name": "#9cc9cc",
    "organization": "#ffeb80",
    "position": "#ff8197",
    "scene": "#e4e7d2",
}


def report_labels(scores: Mapping[str, Any]) -> List[str]:
    """The table's row labels: those of the gold data and of the predictions.

    In CLUENER's order when every label is one of CLUENER's, else alphabetical.

    scores (Mapping[str, Any]): The ``scores`` of an :class:`EvaluationResult`.
    RETURNS (List[str]): The labels.
    """
    labels = set(scores["ents_per_type"]) | set(scores["gold_ents_per_type"]) | set(scores["pred_ents_per_type"])
    if is_cluener(labels):
        return [label for label in CLUENER_LABELS if label in labels]
    return sorted(labels)


def is_cluener(labels: Iterable[str]) -> bool:
    """Whether the published CLUENER2020 figures apply: every label is one of CLUENER's.

    labels (Iterable[str]): The labels of the gold data and the predictions.
    RETURNS (bool): True for a non-empty subset of :data:`CLUENER_LABELS`.
    """
    labels = set(labels)
    return bool(labels) and labels <= set(CLUENER_LABELS)


def _pct(value: Optional[float]) -> str:
    """A 0..1 score as a percentage cell, ``n/a`` for ``None``."""
    return "n/a" if value is None else f"{100 * value:.2f}"


def _ref(table: Mapping[str, float], key: str) -> str:
    """A published percentage cell, ``n/a`` when it was not published."""
    return f"{table[key]:.2f}" if key in table else "n/a"


# The published columns' headers say which data and which overall average each is:
# the paper's overall F1 is a macro average on the test set, the re-implementation's
# a micro average on the dev set (hemingkx/CLUENER2020, BiLSTM-CRF/metric.py, f1_score:
# P and R over one pool of all entities; its per-type F1 average to 66.75, not 67.47).
PAPER_HEADER = "CLUENER2020 paper BiLSTM+CRF F1 (test)"
REIMPL_HEADER = "Re-impl. BiLSTM+CRF F1 (dev)"


def score_table(scores: Mapping[str, Any], data: str = "this data") -> str:
    """The per-type markdown table; next to the published BiLSTM-CRF F1 for CLUENER's labels.

    scores (Mapping[str, Any]): The ``scores`` of an :class:`EvaluationResult`.
    data (str): How to name the evaluated data in the column headers (e.g. ``dev.spacy``).
    RETURNS (str): A markdown table: a row per label (see :func:`report_labels`),
        then the micro and the macro averages. The published columns are there
        only when :func:`is_cluener`; the paper's overall figure is in the macro row,
        the re-implementation's in the micro row, as each was computed.
    """
    labels = report_labels(scores)
    published = is_cluener(labels)
    per_type = scores["ents_per_type"]
    gold_counts, pred_counts = scores["gold_ents_per_type"], scores["pred_ents_per_type"]
    header = f"| Type | P ({data}) | R ({data}) | F1 ({data}) | Gold | Pred |"
    rule = "|:--|--:|--:|--:|--:|--:|"
    if published:
        header += f" {PAPER_HEADER} | {REIMPL_HEADER} |"
        rule += "--:|--:|"
    lines = [header, rule]

    def row(name: str, p: Optional[float], r: Optional[float], f: Optional[float], counts: str, refs: str) -> str:
        return f"| {name} | {_pct(p)} | {_pct(r)} | {_pct(f)} | {counts} |" + (refs if published else "")

    for label in labels:
        prf = per_type.get(label)
        p, r, f = (None, None, None) if prf is None else (prf["p"], prf["r"], prf["f"])
        counts = f"{gold_counts.get(label, 0)} | {pred_counts.get(label, 0)}"
        refs = f" {_ref(PUBLISHED_BILSTM_CRF_TEST_F1, label)} | {_ref(REIMPL_BILSTM_CRF_DEV_F1, label)} |"
        lines.append(row(label, p, r, f, counts, refs))
    totals = f"{scores['n_gold_ents']} | {scores['n_pred_ents']}"
    overall = _ref(PUBLISHED_BILSTM_CRF_TEST_F1, "overall"), _ref(REIMPL_BILSTM_CRF_DEV_F1, "overall")
    lines.append(
        row("**overall (micro)**", *(scores[f"ents_{key}"] for key in "prf"), totals, f" – | {overall[1]} |")
    )
    macro = [scores.get(f"ents_macro_{key}") for key in "prf"]
    lines.append(row("**overall (macro)**", *macro, " | ", f" {overall[0]} | – |"))
    return "\n".join(lines)


def table_note(scores: Mapping[str, Any]) -> str:
    """The paragraph under the table: what each column and average is.

    scores (Mapping[str, Any]): The ``scores`` of an :class:`EvaluationResult`.
    RETURNS (str): Markdown.
    """
    note = (
        "P/R/F1 are spaCy's exact-span entity scores (`spacy.scorer.get_ner_prf`) on the data "
        "evaluated here. *Micro*: one pool of all entities (spaCy's `ents_f`); *macro*: the "
        "unweighted mean over the rows' labels (seqeval's *macro avg*)."
    )
    if not is_cluener(report_labels(scores)):
        return note + (
            " The published CLUENER2020 figures are not shown: the labels are not CLUENER's."
        )
    return note + (
        " The paper column is the BiLSTM+CRF baseline of CLUENER2020 (Xu et al. 2020, "
        "arXiv:2001.04351; per-type table of the CLUEbenchmark/CLUENER2020 README) on the "
        "**test** set, F1 only; its overall figure (70.00) is a **macro** average (*Overall@Macro*), "
        "so it is in the macro row. The re-implementation column is the widely used "
        "hemingkx/CLUENER2020 BiLSTM+CRF on the **dev** set; its overall figure (67.47) is a "
        "**micro** average, in the micro row. Test and dev numbers are not directly comparable."
    )


def _num(value: Optional[float]) -> str:
    """A 0..1 number with 4 decimals, ``n/a`` for ``None``."""
    return "n/a" if value is None else f"{value:.4f}"


def calibration_section(calibration: Mapping[str, Any], image: Optional[str] = None) -> str:
    """The report's calibration section: ECE, Brier, the bin table and the picture.

    calibration (Mapping[str, Any]): ``scores["calibration"]`` of an evaluation.
    image (Optional[str]): The reliability diagram's file name, relative to the
        report; ``None`` when no picture was drawn (matplotlib is not installed).
    RETURNS (str): Markdown, ending with a blank line.
    """
    c = calibration
    lines = [
        "## Calibration of entity confidence",
        "",
        f"Over the {c['n_spans']} scored spans of `doc.spans[\"{c['spans_key']}\"]` "
        f"(component `{c['component']}`; a span is correct when a gold entity has the same "
        "start, end and label): expected calibration error (ECE) "
        f"**{_num(c['ece'])}**, Brier score **{_num(c['brier'])}** (0..1, lower is better).",
        "",
        "| Confidence | Spans | Mean confidence | Accuracy |",
        "|:--|--:|--:|--:|",
    ]
    for row in c["bins"]:
        lines.append(
            f"| {row['lower']:.2f}–{row['upper']:.2f} | {row['count']} "
            f"| {_num(row['confidence'])} | {_num(row['accuracy'])} |"
        )
    lines.append("")
    if image is not None:
        lines.append(f"![reliability]({image})")
    else:
        lines.append(
            "No reliability diagram: matplotlib is not installed "
            '(`pip install matplotlib`, or `pip install "spacy-bilstm-crf[bench]"`).'
        )
    lines.append("")
    return "\n".join(lines)


def render_report(
    result: EvaluationResult, model: str, data: str, reliability_image: Optional[str] = None
) -> str:
    """The markdown evaluation report.

    result (EvaluationResult): The evaluation.
    model (str): How to name the model in the title (e.g. its directory name).
    data (str): How to name the data (e.g. ``dev.spacy``).
    reliability_image (Optional[str]): The reliability diagram's file name next
        to the report, if one was written.
    RETURNS (str): The markdown text.
    """
    s = result.scores
    calibration = s.get("calibration")
    confidence_note = " (entity confidence on)" if calibration is not None else ""
    sections = [
        f"# Evaluation of `{model}` on `{data}`",
        "",
        "## Scores per entity type (percent)",
        "",
        score_table(s, data),
        "",
        table_note(s),
        "",
        "## seqeval (entity level, strict IOB2)",
        "",
        "```",
        result.seqeval_report.rstrip(),
        "```",
        "",
        f"Micro F1: spaCy {100 * s['ents_f']:.4f}, seqeval {100 * result.seqeval_f1:.4f}, "
        f"difference {s['spacy_minus_seqeval_f1_points']:+.4f} points "
        f"(tolerance {AGREEMENT_TOLERANCE}).",
        "",
        "## Counts",
        "",
        f"- Docs: {s['n_docs']} (skipped without entity annotation: {s['n_docs_unannotated']})",
        f"- Gold entities: {s['n_gold_ents']}",
        f"- Predicted entities: {s['n_pred_ents']}",
        f"- Characters: {s['n_chars']}, tokens: {s['n_tokens']}",
        f"- Evaluation pass: {s['seconds']:.3f} s, "
        f"{s['chars_per_second']:.0f} chars/s, {s['speed']:.0f} tokens/s{confidence_note}",
        "",
    ]
    if calibration is not None:
        sections.append(calibration_section(calibration, reliability_image))
    return "\n".join(sections)


# displaCy colour of an entity that is wrong: a gold entity that was not predicted
# (label "<label> ✗ missed") or a predicted one that is not in the gold data ("<label> ✗ wrong").
ERROR_COLOR = "#ff6f61"
MISSED, WRONG = "✗ missed", "✗ wrong"

DISPLACY_LEGEND = (
    '<p style="margin-bottom: 3rem">Each doc: its <b>gold</b> entities above the '
    "<b>predicted</b> ones. Red, with ✗: an entity that is not in the other row with the "
    f"same start, end and label (<b>{MISSED}</b>: gold, not predicted; <b>{WRONG}</b>: "
    "predicted, not gold).</p>"
)


def render_displacy(docs: Sequence[Doc], limit: int = 50, gold: Optional[Sequence[Doc]] = None) -> str:
    """A standalone displaCy ``ent`` page of the first ``limit`` docs.

    With ``gold``, each doc's gold entities are shown above its predicted ones
    and every entity that the other row lacks (same start, end and label) is
    marked, so the errors can be read off the page. Without, the predictions alone.

    docs (Sequence[Doc]): The predicted docs.
    limit (int): How many docs to show.
    gold (Optional[Sequence[Doc]]): The gold docs, in the order of ``docs``.
    RETURNS (str): The HTML page.
    """
    sample = list(docs[: max(limit, 0)])
    colors = {**DISPLACY_COLORS}
    if gold is None:
        labels = sorted({ent.label_ for doc in sample for ent in doc.ents})
        options = {"ents": labels, "colors": colors}
        return displacy.render(sample, style="ent", page=True, options=options, jupyter=False)
    figures = []
    for i, (gold_doc, pred_doc) in enumerate(zip(gold, sample), start=1):
        rows = comparison_rows(gold_doc, pred_doc, i)
        labels = sorted({ent["label"] for row in rows for ent in row["ents"]})
        colors.update({label: ERROR_COLOR for label in labels if "✗" in label})
        options = {"ents": labels, "colors": colors}
        html = displacy.render(rows, style="ent", manual=True, page=False, options=options, jupyter=False)
        figures.append(f'<figure style="margin: 0 0 4rem 0">{html}</figure>')
    content = DISPLACY_LEGEND + "".join(figures)
    return TPL_PAGE.format(lang="zh", dir="ltr", content=content).strip()


def comparison_rows(gold: Doc, predicted: Doc, number: int) -> List[Dict[str, Any]]:
    """displaCy's manual input for one doc: its gold row and its predicted row.

    gold (Doc): The gold doc.
    predicted (Doc): The predicted doc (the same text).
    number (int): The doc's number on the page, for the titles.
    RETURNS (List[Dict[str, Any]]): Two ``{"text", "ents", "title"}`` dicts; an
        entity missing from the other row has ``MISSED`` or ``WRONG`` after its label.
    """
    gold_ents = {(e.start_char, e.end_char, e.label_) for e in gold.ents}
    pred_ents = {(e.start_char, e.end_char, e.label_) for e in predicted.ents}

    def ents(own: set, other: set, mark: str) -> List[Dict[str, Any]]:
        return [
            {"start": start, "end": end, "label": label if (start, end, label) in other else f"{label} {mark}"}
            for start, end, label in sorted(own)
        ]

    missed, wrong = len(gold_ents - pred_ents), len(pred_ents - gold_ents)
    verdict = "correct" if missed == wrong == 0 else f"{missed} missed, {wrong} wrong"
    return [
        {"text": gold.text, "ents": ents(gold_ents, pred_ents, MISSED), "title": f"#{number} gold"},
        {"text": predicted.text, "ents": ents(pred_ents, gold_ents, WRONG), "title": f"#{number} predicted: {verdict}"},
    ]
