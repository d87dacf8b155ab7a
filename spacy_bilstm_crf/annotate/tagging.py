"""Tagging one batch of texts: what every engine runs, in whatever process it runs.

A batch is tagged on its own (one `nlp.pipe` call): the entities of a text may
depend on the batch it is tagged in (INT8's dynamic quantization scales by the
batch), so batches are the same on every engine and every run, resumed or not.
"""
from typing import TYPE_CHECKING, List, Optional

from .engines import Batch, BatchAnnotations
from .entities import doc_annotation
from .scoring import ScoreSettings, apply_scoring

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc


def allow_lengths(nlp: "Language", texts: List[str]) -> None:
    """Raise `nlp.max_length` so that every text of `texts` can be tagged.

    spaCy refuses texts over `max_length` (1,000,000 by default, error E088) to
    protect components whose memory grows with the square of a text; the
    BiLSTM-CRF tags long texts in windows, so its memory grows with the text
    only, and a long record is tagged rather than stopping the run.

    nlp (Language): The pipeline; changed in place, for this process only.
    texts (List[str]): The texts about to be tagged.
    """
    longest = max((len(text) for text in texts), default=0)
    if longest > nlp.max_length:
        nlp.max_length = longest


def tag_batch(nlp: "Language", texts: Batch, settings: Optional[ScoreSettings] = None) -> BatchAnnotations:
    """Tag one batch of texts as one `nlp.pipe` batch.

    nlp (Language): The pipeline; with `settings`, its component is switched to them
        (in place, in whatever process tags: every engine's copy scores the same way).
    texts (List[str]): The batch.
    settings (Optional[ScoreSettings]): What to score; None: nothing.
    RETURNS (List[Dict[str, Any]]): Each text's annotation (`entities.doc_annotation`), in order.
    """
    spans_key = apply_scoring(nlp, settings) if settings is not None else None
    allow_lengths(nlp, texts)
    docs = nlp.pipe(texts, batch_size=max(1, len(texts)))
    return [doc_annotation(doc, settings, spans_key) for doc in docs]


def make_doc(nlp: "Language", text: str) -> "Doc":
    """`nlp.make_doc` for a text of any length (see `allow_lengths`).

    nlp (Language): The pipeline, for its tokenizer.
    text (str): The text.
    RETURNS (Doc): The tokenized text.
    """
    allow_lengths(nlp, [text])
    return nlp.make_doc(text)
