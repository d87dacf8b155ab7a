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

from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.vocab import Vocab

from .calibration import calibrate_docs


# seqeval is an optional extra: it pulls scikit-learn and scipy, which training,
# serving and the other commands do not need, so it is imported only when scoring.
SEQEVAL_INSTALL = 'pip install "spacy-bilstm-crf[evaluate]"'

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
