"""How well entity confidences match how often the entities are right.

With confidence on, the component scores every span of ``doc.spans[spans_key]``
with the CRF's probability that the span is one entity with its label. A
calibrated model is right 80% of the time when it says 0.8: this module pairs
each score with whether the gold doc has that exact entity, and summarizes the
pairs as the expected calibration error (ECE, over equal-width bins), the Brier
score and a reliability diagram.

Spans are matched by character offsets and label, so predicted and gold docs may
be tokenized differently. Nothing here needs torch; matplotlib is needed only
for the picture, and only if it is installed.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from spacy.tokens import Doc

Entity = Tuple[int, int, str]

# Scores may leave [0, 1] by float32 rounding (a probability computed as
# exp(log Z(span) - log Z) can come out as 1.0000001). Within this margin they
# are clipped; further out they are a bug and raise.
SCORE_TOLERANCE = 1e-4


@dataclass
class CalibrationResult:
    """The calibration of a set of scored spans.

    ece (Optional[float]): Expected calibration error (0..1), ``None`` without spans.
    brier (Optional[float]): Mean squared difference between score and correctness
        (0..1), ``None`` without spans.
    n_spans (int): How many scored spans were summarized.
    bins (List[Dict[str, Any]]): One row per bin: ``lower``, ``upper``, ``count``,
        ``confidence`` (the mean score) and ``accuracy`` (the share correct); the
        last two are ``None`` for an empty bin.
    """

    ece: Optional[float]
    brier: Optional[float]
    n_spans: int
    bins: List[Dict[str, Any]]

    def to_dict(self) -> Dict[str, Any]:
        """RETURNS (Dict[str, Any]): The fields, ready for JSON."""
        return {"ece": self.ece, "brier": self.brier, "n_spans": self.n_spans, "bins": self.bins}


def doc_entities(doc: Doc) -> Set[Entity]:
    """The entities of a doc as ``(start_char, end_char, label)``.

    doc (Doc): The doc.
    RETURNS (Set[Entity]): Its entities.
    """
    return {(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents}


def scored_spans(doc: Doc, spans_key: str) -> List[Tuple[Entity, float]]:
    """The spans of ``doc.spans[spans_key]`` with their scores.

    doc (Doc): A doc annotated with confidence.
    spans_key (str): The span group's key.
    RETURNS (List[Tuple[Entity, float]]): ``((start_char, end_char, label), score)``
        in the group's order; ``[]`` when the doc has no such group.
    RAISES (ValueError): The group's ``scores`` attribute is missing or does not
        have one score per span.
    """
    if spans_key not in doc.spans:
        return []
    group = doc.spans[spans_key]
    scores = group.attrs.get("scores")
    if scores is None or len(scores) != len(group):
        n_scores = "no" if scores is None else len(scores)
        raise ValueError(
            f"doc.spans[{spans_key!r}] has {len(group)} spans and {n_scores} scores "
            f"in attrs['scores']; expected one score per span (text: {doc.text[:30]!r})"
        )
    return [
        ((span.start_char, span.end_char, span.label_), float(score))
        for span, score in zip(group, scores)
    ]


def entity_scores(doc: Doc, spans_key: str) -> Dict[Entity, float]:
    """The score of each scored span, looked up by ``(start_char, end_char, label)``.

    doc (Doc): A doc annotated with confidence.
    spans_key (str): The span group's key.
    RETURNS (Dict[Entity, float]): span → score.
    """
    return dict(scored_spans(doc, spans_key))


def pair_scores(
    predicted: Iterable[Doc],
    gold: Iterable[Doc],
    spans_key: str,
    ents_only: bool = False,
) -> Tuple[List[float], List[bool]]:
    """Pair every scored span with whether the gold doc has exactly that entity.

    A span is correct when the gold doc's ``ents`` hold an entity with the same
    start and end character and the same label; a wrong boundary or a wrong
    label is incorrect.

    predicted (Iterable[Doc]): Docs annotated with confidence.
    gold (Iterable[Doc]): The gold docs, one per predicted doc, same texts.
    spans_key (str): The key of the scored span group.
    ents_only (bool): Pair only the spans that are also predicted entities
        (``doc.ents``), leaving out any extra candidate spans.
    RETURNS (Tuple[List[float], List[bool]]): The scores and their correctness.
    RAISES (ValueError): A predicted doc's text differs from its gold doc's, or
        the two sequences differ in length.
    """
    scores: List[float] = []
    correct: List[bool] = []
    for i, (pred_doc, gold_doc) in enumerate(_zip_strict(predicted, gold)):
        if pred_doc.text != gold_doc.text:
            raise ValueError(
                f"Predicted and gold doc {i} have different texts: "
                f"{pred_doc.text[:30]!r} vs {gold_doc.text[:30]!r}"
            )
        truth = doc_entities(gold_doc)
        ents = doc_entities(pred_doc) if ents_only else None
        for span, score in scored_spans(pred_doc, spans_key):
            if ents is None or span in ents:
                scores.append(score)
                correct.append(span in truth)
    return scores, correct


def _zip_strict(predicted: Iterable[Doc], gold: Iterable[Doc]) -> Iterable[Tuple[Doc, Doc]]:
    """``zip`` that raises when one side runs out first (``strict=`` needs Python 3.10)."""
    sentinel = object()
    pred_iter, gold_iter = iter(predicted), iter(gold)
    while True:
        pred_doc, gold_doc = next(pred_iter, sentinel), next(gold_iter, sentinel)
        if pred_doc is sentinel and gold_doc is sentinel:
            return
        if pred_doc is sentinel or gold_doc is sentinel:
            raise ValueError("Predicted and gold docs differ in number")
        yield pred_doc, gold_doc  # type: ignore[misc]


def _check_score(score: float) -> float:
    """A score in [0, 1]: clipped within :data:`SCORE_TOLERANCE`, else an error."""
    if math.isnan(score) or not -SCORE_TOLERANCE <= score <= 1 + SCORE_TOLERANCE:
        raise ValueError(f"Confidence scores must lie in [0, 1], got {score}")
    return min(max(score, 0.0), 1.0)


def expected_calibration_error(
    scores: Sequence[float], correct: Sequence[bool], n_bins: int = 10
) -> CalibrationResult:
    """ECE, Brier score and the reliability table of scored predictions.

    The bins split [0, 1] into ``n_bins`` equal intervals, each closed below and
    open above except the last, which also holds 1.0. Then
    ``ECE = sum over bins of count / N * |accuracy - mean confidence|``.

    scores (Sequence[float]): Confidences in [0, 1].
    correct (Sequence[bool]): Whether each prediction is right.
    n_bins (int): The number of bins.
    RETURNS (CalibrationResult): ECE and Brier (``None`` for no scores) and the bins.
    RAISES (ValueError): The sequences differ in length, a score is outside
        [0, 1], or ``n_bins`` < 1.
    """
    if len(scores) != len(correct):
        raise ValueError(f"{len(scores)} scores but {len(correct)} correctness values")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    counts = [0] * n_bins
    score_sums = [0.0] * n_bins
    hits = [0] * n_bins
    squared_error = 0.0
    for raw, right in zip(scores, correct):
        score = _check_score(float(raw))
        i = min(int(score * n_bins), n_bins - 1)  # 1.0 belongs to the last bin
        counts[i] += 1
        score_sums[i] += score
        hits[i] += bool(right)
        squared_error += (score - bool(right)) ** 2
    n = len(scores)
    bins: List[Dict[str, Any]] = []
    ece = 0.0
    for i in range(n_bins):
        confidence = score_sums[i] / counts[i] if counts[i] else None
        accuracy = hits[i] / counts[i] if counts[i] else None
        if counts[i]:
            ece += counts[i] / n * abs(accuracy - confidence)  # type: ignore[operator]
        bins.append(
            {
                "lower": i / n_bins,
                "upper": (i + 1) / n_bins,
                "count": counts[i],
                "confidence": confidence,
                "accuracy": accuracy,
            }
        )
    if not n:
        return CalibrationResult(None, None, 0, bins)
    return CalibrationResult(ece, squared_error / n, n, bins)


def calibrate_docs(
    predicted: Iterable[Doc],
    gold: Iterable[Doc],
    spans_key: str,
    n_bins: int = 10,
    ents_only: bool = False,
) -> CalibrationResult:
    """:func:`expected_calibration_error` of the scored spans of predicted docs.

    predicted (Iterable[Doc]): Docs annotated with confidence.
    gold (Iterable[Doc]): The gold docs, same texts.
    spans_key (str): The key of the scored span group.
    n_bins (int): The number of bins.
    ents_only (bool): Only the spans that are predicted entities.
    RETURNS (CalibrationResult): ECE, Brier and bins.
    """
    scores, correct = pair_scores(predicted, gold, spans_key, ents_only=ents_only)
    return expected_calibration_error(scores, correct, n_bins=n_bins)


def threshold_prf(
    predicted: Sequence[Doc], gold: Sequence[Doc], spans_key: str, threshold: float
) -> Dict[str, float]:
    """Exact-span P/R/F of the predicted entities whose confidence is at least ``threshold``.

    This is what dropping low-confidence entities would give, computed from one
    scored pass: an entity of ``doc.ents`` is kept when its span in
    ``doc.spans[spans_key]`` scores ``>= threshold``.

    predicted (Sequence[Doc]): Docs annotated with confidence.
    gold (Sequence[Doc]): The gold docs, same texts.
    spans_key (str): The key of the scored span group.
    threshold (float): The lowest confidence kept.
    RETURNS (Dict[str, float]): ``p``, ``r``, ``f`` (0..1) and the counts
        ``n_kept`` (entities kept) and ``n_dropped``.
    RAISES (ValueError): A predicted entity has no score.
    """
    n_true = n_kept = n_dropped = n_gold = 0
    for pred_doc, gold_doc in _zip_strict(predicted, gold):
        scores = entity_scores(pred_doc, spans_key)
        truth = doc_entities(gold_doc)
        n_gold += len(truth)
        for ent in doc_entities(pred_doc):
            if ent not in scores:
                raise ValueError(
                    f"Entity {ent} of {pred_doc.text[:30]!r} is not in doc.spans[{spans_key!r}]: "
                    "every predicted entity must be scored"
                )
            if scores[ent] >= threshold:
                n_kept += 1
                n_true += ent in truth
            else:
                n_dropped += 1
    p = n_true / n_kept if n_kept else 0.0
    r = n_true / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": p, "r": r, "f": f, "n_kept": n_kept, "n_dropped": n_dropped}


def ece_of_bins(bins: Sequence[Mapping[str, Any]]) -> Optional[float]:
    """The ECE of a reliability table (e.g. one read back from JSON).

    bins (Sequence[Mapping[str, Any]]): Rows as :func:`expected_calibration_error` gives.
    RETURNS (Optional[float]): The ECE, ``None`` when every bin is empty.
    """
    n = sum(row["count"] for row in bins)
    if not n:
        return None
    return sum(
        row["count"] / n * abs(row["accuracy"] - row["confidence"]) for row in bins if row["count"]
    )


def save_reliability_diagram(
    bins: Sequence[Mapping[str, Any]], path: Path, title: str = "Reliability"
) -> Optional[Path]:
    """Draw the reliability diagram as a PNG, if matplotlib is installed.

    Bars show each bin's accuracy over its interval, the diagonal is perfect
    calibration, the number above a bar is how many spans the bin holds.

    bins (Sequence[Mapping[str, Any]]): Rows as :func:`expected_calibration_error` gives.
    path (Path): Where to write the PNG.
    title (str): The picture's title; the ECE is added to it.
    RETURNS (Optional[Path]): ``path``, or ``None`` when matplotlib is not installed
        (then nothing is written).
    """
    try:
        # Figure + Agg canvas rather than pyplot: no global backend or figure
        # state is touched in the caller's process.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for row in bins:
        width = row["upper"] - row["lower"]
        if row["count"]:
            axes.bar(row["lower"], row["accuracy"], width=width, align="edge",
                     color="#4c72b0", edgecolor="white")  # fmt: skip
            axes.text(row["lower"] + width / 2, row["accuracy"] + 0.01, str(row["count"]),
                      ha="center", va="bottom", fontsize=7)  # fmt: skip
    axes.plot([0, 1], [0, 1], linestyle="--", color="#c44e52", label="perfect calibration")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.08)
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy (share of spans that are gold entities)")
    ece = ece_of_bins(bins)
    axes.set_title(title if ece is None else f"{title} (ECE {ece:.4f})")
    axes.legend(loc="upper left")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
