"""Score an unlabelled pool with a pipeline: each text's entities, their scores and its uncertainty."""
from typing import TYPE_CHECKING, Iterable, Iterator, Tuple

from ..annotate.entities import Annotation, doc_annotation
from ..annotate.scoring import ScoreSettings, apply_scoring, doc_scores
from ..annotate.tagging import allow_lengths
from .selection import PoolRecord, pool_record

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

# What selection needs: the entities' probabilities (the record's kind) and the measures.
POOL_SCORING = ScoreSettings(confidence=True, threshold=None, uncertainty=True)


def scored_docs(nlp: "Language", texts: Iterable[str], batch_size: int = 256) -> Iterator["Doc"]:
    """Tag texts with the pipeline's BiLSTM-CRF component scoring them for selection.

    nlp (Language): The pipeline; its component is switched to ``POOL_SCORING`` in place.
    texts (Iterable[str]): The pool's texts.
    batch_size (int): Texts per ``nlp.pipe`` batch.
    YIELDS (Doc): The tagged docs, in order.
    """
    apply_scoring(nlp, POOL_SCORING)
    texts = list(texts)
    allow_lengths(nlp, texts)
    yield from nlp.pipe(texts, batch_size=batch_size)


def pool_records(nlp: "Language", texts: Iterable[str], batch_size: int = 256) -> Iterator[PoolRecord]:
    """The pool's texts as ``PoolRecord``s for ``selection.select``.

    nlp (Language): The pipeline (see ``scored_docs``).
    texts (Iterable[str]): The texts.
    batch_size (int): Texts per batch.
    YIELDS (PoolRecord): Each text's measures and kind, in order.
    """
    key = apply_scoring(nlp, POOL_SCORING)
    assert key is not None
    for doc in scored_docs(nlp, texts, batch_size):
        yield doc_pool_record(doc, key)


def doc_pool_record(doc: "Doc", spans_key: str) -> PoolRecord:
    """RETURNS (PoolRecord): A scored doc's measures and kind."""
    by_span, uncertainty = doc_scores(doc, spans_key)
    labels = [ent.label_ for ent in doc.ents]
    scores = [by_span.get((ent.start_char, ent.end_char, ent.label_), 1.0) for ent in doc.ents]
    return pool_record(doc.text, labels, scores, uncertainty)


def scored_pool(
    nlp: "Language", texts: Iterable[str], batch_size: int = 256
) -> Iterator[Tuple[PoolRecord, Annotation]]:
    """The pool's texts as ``PoolRecord``s, each with what annotate would write of it.

    One tagging gives both: what selection ranks by, and the pre-annotations (the
    entities with their scores, the uncertainty) written with the chosen records.

    nlp (Language): The pipeline (see ``scored_docs``).
    texts (Iterable[str]): The texts.
    batch_size (int): Texts per batch.
    YIELDS (Tuple[PoolRecord, Dict[str, Any]]): Each text's record and annotation
        (``annotate.entities.doc_annotation``: "entities" with "score", "uncertainty"), in order.
    """
    key = apply_scoring(nlp, POOL_SCORING)
    assert key is not None
    for doc in scored_docs(nlp, texts, batch_size):
        yield doc_pool_record(doc, key), doc_annotation(doc, POOL_SCORING, key)
