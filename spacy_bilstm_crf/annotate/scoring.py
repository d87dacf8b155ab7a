"""What the component scores when a pipeline tags for annotation or selection.

The component scores its entities (``confidence``), other likely spans
(``threshold``) and whole docs (``uncertainty``) on request; these settings are
prediction settings, not part of the trained model, so a loaded pipeline can be
switched to them in place. Every engine switches its own copy the same way.
"""
from dataclasses import asdict, dataclass
from pathlib import Path
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

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> "ScoreSettings":
        """RETURNS (ScoreSettings): Settings from ``to_dict``; None: nothing scored."""
        return NO_SCORES if data is None else cls(**data)


NO_SCORES = ScoreSettings(confidence=False, threshold=None, uncertainty=False)
FACTORY = "bilstm_crf_ner"


def has_scoring_component(model: str) -> bool:
    """Whether a saved pipeline has an enabled BiLSTM-CRF component, read off its config.

    Read from config.cfg, without loading the pipeline: the ray engine's driver
    never loads it, and the choice must be made before the run's plan is written.

    model (str): A pipeline directory, an installed package or "blank:LANG".
    RETURNS (bool): Whether a component of the ``bilstm_crf_ner`` factory is enabled.
    """
    from spacy.util import load_config

    from .identity import BLANK_PREFIX, model_dir

    if model.startswith(BLANK_PREFIX) and not Path(model).exists():
        return False
    directory = model_dir(model)
    # A package's pipeline is in a folder of the package (name-version).
    configs = [directory / "config.cfg"]
    if not configs[0].exists():
        configs = sorted(directory.glob("*/config.cfg"))
    if not configs:
        return False
    config = load_config(configs[0], interpolate=False)
    nlp = config.get("nlp", {})
    disabled = set(nlp.get("disabled", []))
    components = config.get("components", {})
    return any(
        components.get(name, {}).get("factory") == FACTORY for name in nlp.get("pipeline", []) if name not in disabled
    )


def resolve_settings(
    model: str, confidence: Optional[bool] = None, threshold: Optional[float] = None, uncertainty: bool = False
) -> ScoreSettings:
    """What a run scores: asked for, or by default everything the pipeline can score.

    Entities are scored by default when the pipeline has a BiLSTM-CRF component
    (the probabilities cost about 5% more time in batches, and are what review
    tools and selection need); a pipeline without one tags without scores, and
    asking it for scores is an error.

    model (str): The pipeline (see ``has_scoring_component``).
    confidence (Optional[bool]): Score the entities; None: when the pipeline can.
    threshold (Optional[float]): Also write other spans at least this probable, in (0, 1].
    uncertainty (bool): Also write each record's uncertainty measures.
    RETURNS (ScoreSettings): The settings.
    RAISES (ValueError): A bad threshold, or scores asked of a pipeline without the component.
    """
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ValueError(f"The candidates' threshold must be a probability in (0, 1], not {threshold}")
    asked = [
        flag
        for flag, on in (("confidence", confidence), ("threshold", threshold is not None), ("uncertainty", uncertainty))
        if on
    ]
    if not has_scoring_component(model):
        if asked:
            raise ValueError(
                f"Scores ({', '.join(asked)}) need a {FACTORY} component, and the pipeline {model} has none "
                "(or it is disabled): leave out --confidence, --threshold and --uncertainty to tag without scores."
            )
        return NO_SCORES
    scored = True if confidence is None else confidence
    return ScoreSettings(confidence=scored, threshold=threshold, uncertainty=uncertainty)


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
        return None  # the component is left as it was configured
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
