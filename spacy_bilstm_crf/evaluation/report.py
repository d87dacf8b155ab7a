"""Evaluate a spaCy pipeline's entities with spaCy's scorer *and* seqeval.

Both metrics are computed from the same predicted ``Doc`` objects, so their
micro F1 must agree; a disagreement means that one side was fed something
different (a tokenization mismatch, partially annotated gold docs), and
:func:`check_agreement` raises instead of reporting two inconsistent numbers.

Scores are kept as spaCy gives them (floats in 0..1) in the returned dict and
``*.json``; the markdown report shows percentages, like the CLUENER tables.

When the pipeline has a component that scores its entities (attributes
``confidence`` and ``spans_key``), the pass runs with confidence on and the
scores also hold how well calibrated those confidences are (see
:mod:`.calibration`).
"""
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from spacy import displacy
from spacy.language import Language
from spacy.displacy.templates import TPL_PAGE
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.vocab import Vocab

from .calibration import calibrate_docs

# seqeval is an optional extra: it pulls scikit-learn and scipy, which training,
# serving and the other commands do not need, so it is imported only when scoring.
SEQEVAL_INSTALL = 'pip install "spacy-bilstm-crf[evaluate]"'

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

# Maximum |spaCy micro F1 - seqeval micro F1|, in percentage points. Both count
# exact (start, end, label) matches over the same tokens, so any real
# difference is a bug rather than rounding.
AGREEMENT_TOLERANCE = 0.01


@dataclass
class EvaluationResult:
    """Everything one evaluation pass produces.

    scores (Dict[str, Any]): spaCy's ``ents_p``, ``ents_r``, ``ents_f`` and
        ``ents_per_type`` (0..1 floats), plus counts and speed.
    seqeval_report (str): seqeval's entity-level ``classification_report``.
    seqeval_f1 (float): seqeval's micro F1 (0..1).
    predicted (List[Doc]): The predicted docs, in the order of the gold docs.
    gold (List[Doc]): The gold docs that were scored.
    """

    scores: Dict[str, Any]
    seqeval_report: str
    seqeval_f1: float
    predicted: List[Doc] = field(repr=False)
    gold: List[Doc] = field(repr=False)


def read_docs(path: Path, vocab: Vocab) -> List[Doc]:
    """Read the gold docs of a ``.spacy`` file.

    path (Path): A DocBin written by ``DocBin.to_disk``.
    vocab (Vocab): The vocab to deserialize into (the pipeline's).
    RETURNS (List[Doc]): The docs, in file order.
    """
    return list(DocBin().from_disk(path).get_docs(vocab))


def predict(
    nlp: Language, gold_docs: Sequence[Doc], batch_size: int = 256
) -> Tuple[List[Doc], float]:
    """Run the pipeline over unannotated copies of the gold docs.

    The copies keep the gold tokenization, so the predicted and gold docs are
    token-aligned and the per-token IOB tags for seqeval line up one to one.

    nlp (Language): The loaded pipeline.
    gold_docs (Sequence[Doc]): The gold docs.
    batch_size (int): Docs per ``nlp.pipe`` batch.
    RETURNS (Tuple[List[Doc], float]): The predicted docs and the seconds the
        pipeline pass took.
    """
    inputs = [
        Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
        for doc in gold_docs
    ]
    start = time.perf_counter()
    predicted = list(nlp.pipe(inputs, batch_size=batch_size))
    return predicted, time.perf_counter() - start


def doc_to_iob(doc: Doc) -> List[str]:
    """The per-token IOB2 tags of a doc's entities, e.g. ``["B-name", "I-name", "O"]``.

    Tokens with missing entity annotation (``ent_iob_ == ""``) count as ``O``.

    doc (Doc): The doc.
    RETURNS (List[str]): One tag per token.
    """
    return [f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O" for t in doc]


def spacy_scores(examples: Iterable[Example]) -> Dict[str, Any]:
    """spaCy's entity scores, as its NER component reports them.

    examples (Iterable[Example]): Examples with the predictions as ``x``.
    RETURNS (Dict[str, Any]): ``ents_p``, ``ents_r``, ``ents_f`` (0..1) and
        ``ents_per_type`` (label → ``{"p", "r", "f"}``). With neither gold nor
        predicted entities spaCy gives ``None``; this returns 0.0 and ``{}``.
    """
    scores = get_ner_prf(examples)
    return {
        "ents_p": scores["ents_p"] or 0.0,
        "ents_r": scores["ents_r"] or 0.0,
        "ents_f": scores["ents_f"] or 0.0,
        "ents_per_type": scores["ents_per_type"] or {},
    }


def macro_scores(per_type: Mapping[str, Mapping[str, float]]) -> Dict[str, Optional[float]]:
    """The unweighted means of the per-type P, R and F1 (what seqeval calls "macro avg").

    CLUENER2020's paper reports its overall F1 as this macro average, while spaCy's
    ``ents_f`` is the micro F1 over all entities, so both are kept.

    per_type (Mapping[str, Mapping[str, float]]): spaCy's ``ents_per_type``: every
        label that is in the gold data or was predicted.
    RETURNS (Dict[str, Optional[float]]): ``ents_macro_p``, ``ents_macro_r`` and
        ``ents_macro_f`` (0..1), ``None`` without any label.
    """
    names = {"p": "ents_macro_p", "r": "ents_macro_r", "f": "ents_macro_f"}
    if not per_type:
        return {name: None for name in names.values()}
    return {name: sum(prf[key] for prf in per_type.values()) / len(per_type) for key, name in names.items()}


def require_seqeval() -> None:
    """Check that seqeval can be imported, or say how to install it.

    RAISES (ImportError): seqeval is not installed; the message gives the pip command.
    """
    try:
        import seqeval.metrics  # noqa: F401
        import seqeval.scheme  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"Evaluation needs seqeval, which is not installed: {SEQEVAL_INSTALL} (or pip install seqeval)"
        ) from err


def seqeval_scores(gold: Sequence[Doc], predicted: Sequence[Doc]) -> Tuple[str, float]:
    """seqeval's entity-level report and micro F1 (strict IOB2 mode).

    gold (Sequence[Doc]): The gold docs.
    predicted (Sequence[Doc]): The predicted docs, token-aligned with ``gold``.
    RETURNS (Tuple[str, float]): The ``classification_report`` text and the
        micro F1 (0..1).
    RAISES (ImportError): seqeval is not installed.
    """
    require_seqeval()
    from seqeval.metrics import classification_report, f1_score
    from seqeval.scheme import IOB2

    y_true = [doc_to_iob(doc) for doc in gold]
    y_pred = [doc_to_iob(doc) for doc in predicted]
    kwargs: Dict[str, Any] = {"mode": "strict", "scheme": IOB2}
    # zero_division=0: a label that is never predicted gets P = 0 silently.
    report = classification_report(y_true, y_pred, digits=4, zero_division=0, **kwargs)
    f1 = f1_score(y_true, y_pred, average="micro", zero_division=0, **kwargs)
    return report, float(f1)


def check_agreement(
    spacy_f1: float, seqeval_f1: float, tolerance: float = AGREEMENT_TOLERANCE
) -> float:
    """Raise if spaCy's and seqeval's micro F1 differ by more than ``tolerance``.

    spacy_f1 (float): spaCy's ``ents_f`` (0..1).
    seqeval_f1 (float): seqeval's micro F1 (0..1).
    tolerance (float): The allowed difference, in percentage points.
    RETURNS (float): The difference ``spacy_f1 - seqeval_f1`` in percentage points.
    """
    diff = 100 * (spacy_f1 - seqeval_f1)
    if abs(diff) > tolerance:
        raise ValueError(
            f"spaCy micro F1 ({100 * spacy_f1:.4f}) and seqeval micro F1 "
            f"({100 * seqeval_f1:.4f}) differ by {diff:+.4f} points (> {tolerance}). "
            "The gold docs may be partially annotated or not token-aligned with the predictions."
        )
    return diff


def count_ents(docs: Iterable[Doc]) -> Dict[str, int]:
    """Entities per label.

    docs (Iterable[Doc]): The docs.
    RETURNS (Dict[str, int]): label → count.
    """
    counts: Dict[str, int] = {}
    for doc in docs:
        for ent in doc.ents:
            counts[ent.label_] = counts.get(ent.label_, 0) + 1
    return counts


def find_confidence_pipe(nlp: Language) -> Optional[Tuple[str, Any]]:
    """The first component that can score its entities.

    nlp (Language): The pipeline.
    RETURNS (Optional[Tuple[str, Any]]): ``(name, component)`` of the first
        component with the attributes ``confidence`` and ``spans_key``, or ``None``.
    """
    for name, pipe in nlp.pipeline:
        if hasattr(pipe, "confidence") and hasattr(pipe, "spans_key"):
            return name, pipe
    return None


@contextmanager
def confidence_on(pipe: Any) -> Iterator[None]:
    """Switch a component's confidence on, and back to its old value afterwards.

    pipe (Any): A component with a ``confidence`` attribute.
    """
    old = pipe.confidence
    pipe.confidence = True
    try:
        yield
    finally:
        pipe.confidence = old


def evaluate_docs(
    nlp: Language,
    gold_docs: Sequence[Doc],
    batch_size: int = 256,
    calibration: bool = True,
    n_bins: int = 10,
) -> EvaluationResult:
    """Predict on the gold docs and score the predictions with spaCy and seqeval.

    Gold docs without any entity annotation are dropped first, because
    spaCy's scorer skips them and seqeval would otherwise count their
    predictions as false positives. (A doc whose entities were set, even to
    ``[]``, is annotated.)

    If a component can score its entities (see :func:`find_confidence_pipe`)
    and ``calibration`` is True, the pass runs with its confidence on (the
    entities are the same; the speed is that of scoring them too) and
    ``scores["calibration"]`` holds ``ece``, ``brier``, ``n_spans``, ``bins``,
    ``spans_key`` and ``component`` over every span of ``doc.spans[spans_key]``.

    nlp (Language): The loaded pipeline.
    gold_docs (Sequence[Doc]): The gold docs.
    batch_size (int): Docs per ``nlp.pipe`` batch.
    calibration (bool): Measure the calibration of entity confidences, if a
        component provides them.
    n_bins (int): Equal-width confidence bins for the calibration error.
    RETURNS (EvaluationResult): Scores, reports and the predicted docs.
    RAISES (ImportError): seqeval is not installed.
    """
    require_seqeval()  # before the prediction pass, not after it
    gold = [doc for doc in gold_docs if doc.has_annotation("ENT_IOB")]
    scorer = find_confidence_pipe(nlp) if calibration else None
    if scorer is None:
        predicted, seconds = predict(nlp, gold, batch_size=batch_size)
    else:
        with confidence_on(scorer[1]):
            predicted, seconds = predict(nlp, gold, batch_size=batch_size)
    examples = [Example(pred, ref) for pred, ref in zip(predicted, gold)]
    scores = spacy_scores(examples)
    report, seq_f1 = seqeval_scores(gold, predicted)
    diff = check_agreement(scores["ents_f"], seq_f1)
    n_chars = sum(len(doc.text) for doc in gold)
    n_tokens = sum(len(doc) for doc in gold)
    seconds = max(seconds, 1e-9)
    gold_counts, pred_counts = count_ents(gold), count_ents(predicted)
    scores.update(
        {
            # "speed" is what ``spacy evaluate`` calls tokens per second.
            "speed": n_tokens / seconds,
            "chars_per_second": n_chars / seconds,
            "seconds": seconds,
            "n_docs": len(gold),
            "n_docs_unannotated": len(gold_docs) - len(gold),
            "n_chars": n_chars,
            "n_tokens": n_tokens,
            "n_gold_ents": sum(gold_counts.values()),
            "n_pred_ents": sum(pred_counts.values()),
            "gold_ents_per_type": gold_counts,
            "pred_ents_per_type": pred_counts,
            **macro_scores(scores["ents_per_type"]),
            "seqeval_micro_f1": seq_f1,
            "spacy_minus_seqeval_f1_points": diff,
            "score_scale": "0-1",
        }
    )
    if scorer is not None:
        name, pipe = scorer
        result = calibrate_docs(predicted, gold, pipe.spans_key, n_bins=n_bins)
        scores["calibration"] = {**result.to_dict(), "spans_key": pipe.spans_key, "component": name}
    return EvaluationResult(scores, report, seq_f1, predicted, gold)


def evaluate_docbin(
    nlp: Language, path: Path, batch_size: int = 256, calibration: bool = True
) -> EvaluationResult:
    """:func:`evaluate_docs` on the docs of a ``.spacy`` file.

    nlp (Language): The loaded pipeline.
    path (Path): The DocBin with the gold docs.
    batch_size (int): Docs per ``nlp.pipe`` batch.
    calibration (bool): Measure the calibration of entity confidences, if a
        component provides them.
    RETURNS (EvaluationResult): Scores, reports and the predicted docs.
    """
    return evaluate_docs(nlp, read_docs(path, nlp.vocab), batch_size=batch_size, calibration=calibration)


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
