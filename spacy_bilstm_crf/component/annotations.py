"""The component's ``set_annotations``: predicted entities onto docs.

Character spans from ``prediction.plan`` become token spans (``features.chars``: a
word tokenizer's tokens hold several characters, ``boundary`` says how an entity
that cuts one maps), pre-set and blocked tokens are kept (``preset_ents``), and
with confidence on the scored entities and candidates go to ``doc.spans``. The
functions take the component (``pipe.BiLSTMCRFNER``) for its settings.
"""
from typing import TYPE_CHECKING, Iterable, List, Sequence, Tuple, Union

import numpy
from spacy.tokens import Doc, Span, SpanGroup

from ..features.chars import DocChars, blocked_tokens, chars_to_tokens, doc_chars
from ..prediction.plan import DocPrediction

if TYPE_CHECKING:
    from ..pipe import BiLSTMCRFNER


def set_annotations(
    pipe: "BiLSTMCRFNER", docs: Iterable[Doc], predictions: Sequence[Union[DocPrediction, numpy.ndarray]]
) -> None:
    """Set ``doc.ents`` (and so ``token.ent_iob``/``ent_type``) from the predictions,
    keeping pre-set entities (``preset_ents``), and with confidence ``doc.spans``.

    predictions (Sequence[Union[DocPrediction, numpy.ndarray]]): From ``predict``, or
        plain tag ids per character.
    """
    scheme = pipe.scheme
    keep = pipe.preset_ents != "overwrite"
    for doc, prediction in zip(docs, predictions):
        if not isinstance(prediction, DocPrediction):
            prediction = DocPrediction(
                prediction, scheme.tags_to_spans(prediction), preset=doc.has_annotation("ENT_IOB")
            )
        chars = prediction.chars if prediction.chars is not None else doc_chars(doc)
        if prediction.scores is None and chars.one_per_token and not (keep and prediction.preset):
            # The plain path: one token per character, nothing to keep, no scores.
            labels = scheme.labels
            ents = [Span(doc, start, end, label=labels[label]) for start, end, label in prediction.spans]
            doc.set_ents(ents, default="outside")
            continue
        token_spans = chars_to_tokens(prediction.spans, chars, pipe.boundary, pipe.boundary_counts)
        taken = numpy.zeros(len(doc), dtype=bool)
        preset: List[Span] = []
        blocked: List[Span] = []
        if keep:
            preset = list(doc.ents)
            for ent in preset:
                taken[ent.start : ent.end] = True
            blocked = blocked_spans(doc)
            for span in blocked:
                taken[span.start : span.end] = True
        ents: List[Span] = []
        scored: List[Tuple[Span, float]] = []
        for k, mapped in enumerate(token_spans):
            if mapped is None or taken[mapped[0] : mapped[1]].any():
                continue  # dropped by the boundary rule, or a pre-set entity
            taken[mapped[0] : mapped[1]] = True
            span = Span(doc, mapped[0], mapped[1], label=scheme.labels[prediction.spans[k][2]])
            score = None if prediction.scores is None else float(prediction.scores[k])
            if score is None or score >= pipe.min_confidence:
                ents.append(span)
            if score is not None:
                scored.append((span, score))
        doc.set_ents(preset + ents, blocked=blocked, default="outside")
        if prediction.scores is not None and (pipe.confidence or pipe.uncertainty):
            set_spans(pipe, doc, chars, scored, prediction.candidates or [])
            if prediction.uncertainty is not None:
                doc.spans[pipe.spans_key].attrs["uncertainty"] = dict(prediction.uncertainty)


def set_spans(
    pipe: "BiLSTMCRFNER", doc: Doc, chars: DocChars, scored: List[Tuple[Span, float]], candidates: List[Tuple[int, int, int, float]]
) -> None:
    """Put the scored entities, then the candidates, in ``doc.spans[spans_key]``."""
    mapped = chars_to_tokens(candidates, chars, pipe.boundary)
    seen = {(span.start, span.end, span.label_) for span, _ in scored}
    for (start, end, label, p), token_span in zip(candidates, mapped):
        if token_span is None:
            continue
        span = Span(doc, token_span[0], token_span[1], label=pipe.scheme.labels[label])
        if (span.start, span.end, span.label_) not in seen:
            seen.add((span.start, span.end, span.label_))
            scored.append((span, p))
    group = SpanGroup(doc, name=pipe.spans_key, spans=[span for span, _ in scored])
    group.attrs["scores"] = [score for _, score in scored]
    doc.spans[pipe.spans_key] = group


def blocked_spans(doc: Doc) -> List[Span]:
    """The runs of tokens spaCy marks as blocked (see ``chars.blocked_tokens``)."""
    blocked = blocked_tokens(doc)
    if not blocked.any():
        return []
    edges = numpy.diff(numpy.concatenate([[0], blocked.astype("int8"), [0]]))
    starts, ends = numpy.flatnonzero(edges == 1), numpy.flatnonzero(edges == -1)
    return [Span(doc, int(a), int(b)) for a, b in zip(starts, ends)]
