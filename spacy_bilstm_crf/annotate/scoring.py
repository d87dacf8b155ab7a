"""What the component scores when a pipeline tags for annotation or selection.

The component scores its entities (``confidence``), other likely spans
(``threshold``) and whole docs (``uncertainty``) on request; these settings are
prediction settings, not part of the trained model, so a loaded pipeline can be
switched to them in place. Every engine switches its own copy the same way.
"""
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # only for the type hints: importing this module must stay light
    from spacy.language import Language
    from spacy.tokens import Doc


@dataclass(frozen=True)
class ScoreSettings:
    """What to score.

    confidence (bool): Each entity's probability.
    threshold (Optional[float]): Also other spans at least this probable (candidates).
    uncertainty (bool): Each doc's uncertainty measures.
    """

    confidence: bool = True
    threshold: Optional[float] = None
    uncertainty: bool = False

    @property
    def any(self) -> bool:
        """RETURNS (bool): Whether anything is scored."""
        return self.confidence or self.threshold is not None or self.uncertainty

    def to_dict(self) -> Dict[str, Any]:
        """RETURNS (Dict[str, Any]): The settings, JSON-ready."""
        return asdict(self)


def scoring_components(nlp: "Language") -> List[Tuple[str, Any]]:
    """RETURNS (List[Tuple[str, BiLSTMCRFNER]]): The pipeline's BiLSTM-CRF components."""
    from ..pipe import BiLSTMCRFNER

    return [(name, pipe) for name, pipe in nlp.pipeline if isinstance(pipe, BiLSTMCRFNER)]


def apply_scoring(nlp: "Language", settings: ScoreSettings) -> Optional[str]:
    """Switch the pipeline's BiLSTM-CRF component to score as ``settings`` say.

    nlp (Language): The pipeline; changed in place.
    settings (ScoreSettings): What to score.
    RETURNS (Optional[str]): The ``doc.spans`` key the scores are put under; None when
        nothing is scored.
    RAISES (ValueError): Scores asked of a pipeline without a BiLSTM-CRF component.
    """
    if not settings.any:
        return None
    components = scoring_components(nlp)
    if not components:
        names = ", ".join(nlp.pipe_names) or "none"
        raise ValueError(
            f"Scores need a bilstm_crf_ner component, and this pipeline has none (components: {names}). "
            "Turn scoring off (annotate --no-confidence) to tag with it."
        )
    # The last one sets doc.ents last: its entities are the ones written.
    _, pipe = components[-1]
    pipe.confidence = settings.confidence or settings.threshold is not None
    pipe.threshold = settings.threshold
    pipe.uncertainty = settings.uncertainty
    return pipe.spans_key


def doc_scores(doc: "Doc", spans_key: str) -> Tuple[Dict[Tuple[int, int, str], float], Optional[Dict[str, float]]]:
    """The scores the component put on a doc.

    doc (Doc): A doc tagged with scoring on.
    spans_key (str): The component's ``spans_key``.
    RETURNS (Tuple[Dict[Tuple[int, int, str], float], Optional[Dict[str, float]]]): The
        probability of each scored span by (start_char, end_char, label), entities and
        candidates alike, and the doc's uncertainty measures (None when not measured).
    """
    group = doc.spans.get(spans_key)
    if group is None:
        return {}, None
    scores = group.attrs.get("scores", [])
    by_span = {(span.start_char, span.end_char, span.label_): float(p) for span, p in zip(group, scores)}
    uncertainty = group.attrs.get("uncertainty")
    return by_span, None if uncertainty is None else {k: float(v) for k, v in uncertainty.items()}
