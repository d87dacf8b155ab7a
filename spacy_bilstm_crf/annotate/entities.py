"""Entities of a Doc (with their scores) as plain, JSON- and Arrow-friendly records."""
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .scoring import ScoreSettings, doc_scores

if TYPE_CHECKING:  # only for the type hints: importing this module must stay light
    from spacy.tokens import Doc

# The fields of one entity, in the order they are written. "score" (its
# probability under the CRF) only when entities are scored: a field that is
# always missing would only mislead.
ENTITY_FIELDS = ("start", "end", "label", "text")
SCORED_ENTITY_FIELDS = ENTITY_FIELDS + ("score",)
# The record fields annotate adds besides the entities, when asked for.
CANDIDATES_FIELD = "candidates"
UNCERTAINTY_FIELD = "uncertainty"

Entity = Dict[str, Any]
# What annotate writes of one text: "entities", and "candidates" and
# "uncertainty" when the run's ScoreSettings ask for them.
Annotation = Dict[str, Any]
SpanKey = Tuple[int, int, str]


def doc_entities(doc: "Doc", scores: Optional[Dict[SpanKey, float]] = None) -> List[Entity]:
    """The entities of a tagged Doc, with character offsets.

    doc (Doc): A Doc that went through the pipeline.
    scores (Optional[Dict[Tuple[int, int, str], float]]): The scored spans'
        probabilities (``scoring.doc_scores``); None: entities without a score.
    RETURNS (List[Dict[str, Any]]): One dict per entity: `start` and `end` (character
        offsets into the text, end exclusive), `label` and `text`, and with `scores`
        a `score` (None for an entity the component did not score, e.g. one set by
        another component).
    """
    entities = []
    for ent in doc.ents:
        entity: Entity = {"start": ent.start_char, "end": ent.end_char, "label": ent.label_, "text": ent.text}
        if scores is not None:
            entity["score"] = scores.get((ent.start_char, ent.end_char, ent.label_))
        entities.append(entity)
    return entities


def doc_candidates(doc: "Doc", scores: Dict[SpanKey, float], threshold: float) -> List[Entity]:
    """The scored spans that are not entities (the component's ``threshold`` candidates).

    doc (Doc): A tagged Doc.
    scores (Dict[Tuple[int, int, str], float]): The scored spans' probabilities.
    threshold (float): The least probability of a candidate: an entity that the
        component's ``min_confidence`` left out of ``doc.ents`` is scored too, and is
        a candidate only if it is this probable.
    RETURNS (List[Dict[str, Any]]): `start`, `end`, `label`, `text` and `score` of
        each, by start, end and label.
    """
    entities = {(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents}
    return [
        {"start": start, "end": end, "label": label, "text": doc.text[start:end], "score": score}
        for (start, end, label), score in sorted(scores.items())
        if (start, end, label) not in entities and score >= threshold
    ]


def doc_annotation(doc: "Doc", settings: Optional[ScoreSettings] = None, spans_key: Optional[str] = None) -> Annotation:
    """What annotate writes of a tagged Doc.

    doc (Doc): A Doc that went through the pipeline.
    settings (Optional[ScoreSettings]): What was scored; None: nothing.
    spans_key (Optional[str]): The component's ``doc.spans`` key (with ``settings``).
    RETURNS (Dict[str, Any]): "entities" (with a "score" each when ``settings.confidence``),
        "candidates" with ``settings.threshold``, "uncertainty" with ``settings.uncertainty``.
    """
    if settings is None or not settings.any or spans_key is None:
        return {"entities": doc_entities(doc)}
    scores, uncertainty = doc_scores(doc, spans_key)
    annotation: Annotation = {"entities": doc_entities(doc, scores if settings.confidence else None)}
    if settings.threshold is not None:
        annotation[CANDIDATES_FIELD] = doc_candidates(doc, scores, settings.threshold)
    if settings.uncertainty:
        annotation[UNCERTAINTY_FIELD] = uncertainty
    return annotation
