"""The ``bilstm_crf_ner`` component: a TrainablePipe that sets ``doc.ents``."""
import os
import warnings
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy
import torch
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model

from .component import annotations, serialization
from .component.architectures import (
    TaggerInput,
    char_vectors,
    get_torch_module,
    tok2vec_layer,
    torch_layer,
)
from .component.network_build import build_network
from .features.chars import BOUNDARY_RULES, DocChars, doc_chars, preset_tags
from .network.tags import SCHEMES, TagScheme
from .prediction.plan import DocPrediction, PredictionPlan, char_marginals
from .training.gold import gold_char_spans, gold_tags
from .training.settings import scales_training, warn_about_training_settings

DEFAULT_MODEL_CONFIG = """
[model]
@architectures = "spacy-bilstm-crf.BiLSTMCRF.v1"
char_dim = 128
bigram_dim = 0
bigram_buckets = 100003
class_dim = 16
hidden_size = 256
depth = 1
dropout = 0.4
embed_dropout = 0.2
unk_rate = 0.02
layer_norm = true
lexicon = "jieba"
lexicon_max_len = 6
lexicon_dim = 64
lexicon_pos = true
lexicon_typed_sets = false
lexicon_vectors = null
gazetteer = true
gazetteer_max_len = 10
gazetteer_folds = 10
lac_embeddings = false
lac_features = true
lac_finetune = 1
lac_layers = 1
lac_full_states = null
mixed_precision = false
grad_scaler = null
quantize_int8 = false
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_MODEL_CONFIG)["model"]

# ``nlp.pipe(texts, n_process=2)`` forks on Linux. A forked child inherits torch's
# OpenMP thread pool in a broken state and hangs at its first parallel op, so each
# child runs torch on one thread, which is also what one-worker-per-core wants.
os.register_at_fork(after_in_child=lambda: torch.set_num_threads(1))


@Language.factory(
    "bilstm_crf_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type", "doc.spans"],
    default_config={
        "model": DEFAULT_MODEL,
        "scheme": "BIOES",
        "min_char_count": 1,
        "window_size": 512,
        "window_overlap": 64,
        "batch_chars": 16384,
        "preset_ents": "keep",
        "confidence": False,
        "spans_key": "bilstm_crf_ner",
        "threshold": None,
        "min_confidence": 0.0,
        "uncertainty": False,
        "boundary": "expand",
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_bilstm_crf_ner(
    nlp: Language,
    name: str,
    model: Model[TaggerInput, object],
    scheme: str,
    min_char_count: int,
    window_size: int,
    window_overlap: int,
    batch_chars: int,
    preset_ents: str,
    confidence: bool,
    spans_key: str,
    threshold: Optional[float],
    min_confidence: float,
    uncertainty: bool,
    boundary: str,
    scorer: Optional[Callable],
) -> "BiLSTMCRFNER":
    """Create a BiLSTM-CRF named-entity recognizer.

    model (Model): The network, e.g. ``spacy-bilstm-crf.BiLSTMCRF.v1``.
    scheme (str): Tag scheme, ``"BIOES"`` (default) or ``"BIO"``.
    min_char_count (int): Characters seen fewer times in training share the unknown row.
    window_size (int): Longer docs are tagged as overlapping windows of at most this many
        characters, cut after sentence punctuation where possible, so memory stays bounded.
    window_overlap (int): Characters of context each window adds on both sides of its cut.
    batch_chars (int): Most padded characters per forward pass in prediction; sequences
        are grouped by length so a long one does not pad a batch of short ones.
    preset_ents (str): ``"keep"`` (default): entities already on the Doc (e.g. from an
        ``entity_ruler``) are kept, with any label, and the CRF decodes the best valid
        tags around them; blocked tokens stay outside, tokens marked ``O`` are predicted
        (as spaCy's ``ner`` does: a ruler marks every token it did not match ``O``).
        ``"keep_outside"``: the same, and tokens marked ``O`` stay ``O`` too.
        ``"overwrite"``: everything already set is replaced.
    confidence (bool): Compute the exact probability of each predicted entity and put
        the entities in ``doc.spans[spans_key]``, with the probabilities in the group's
        ``attrs["scores"]``.
    spans_key (str): The key of ``doc.spans`` for the scored spans.
    threshold (Optional[float]): With confidence, also add every other span (of any
        label, up to 32 characters) whose probability is at least this to the group.
    min_confidence (float): Entities less probable than this are left out of
        ``doc.ents`` (they stay in ``doc.spans`` with their score). Above 0 it computes
        the confidence.
    uncertainty (bool): Also measure how unsure the CRF is about each doc, exactly
        (``prediction/uncertainty.py``): ``best_path`` (1 - P(decoded tags)),
        ``tag_errors`` (expected wrong tags) and ``entity_errors`` (expected false
        plus missed entities), in ``doc.spans[spans_key].attrs["uncertainty"]``, with
        the entities' scores (it implies ``confidence``).
    boundary (str): Under a tokenizer that is not the character segmenter, how a found
        entity that cuts a token maps to tokens: ``"expand"`` (default) to the tokens it
        touches, ``"contract"`` to the tokens it covers whole, or ``"drop"``.
    scorer (Optional[Callable]): The scoring method, by default ``spacy.ner_scorer.v1``.
    """
    return BiLSTMCRFNER(
        nlp.vocab,
        model,
        name,
        scheme=scheme,
        min_char_count=min_char_count,
        window_size=window_size,
        window_overlap=window_overlap,
        batch_chars=batch_chars,
        preset_ents=preset_ents,
        confidence=confidence,
        spans_key=spans_key,
        threshold=threshold,
        min_confidence=min_confidence,
        uncertainty=uncertainty,
        boundary=boundary,
        scorer=scorer,
    )


PRESET_MODES = ("keep", "keep_outside", "overwrite")


class BiLSTMCRFNER(TrainablePipe):
    """Character BiLSTM-CRF NER with batched, constrained Viterbi decoding.

    Every decoded tag sequence is valid under the tag scheme, so ``doc.ents``
    always comes from a well-formed sequence. The network tags characters: under
    ``spacy.blank("zh")`` each token is one, under a word tokenizer each token's
    characters are tagged and entities map back to tokens (``boundary``). Gold
    tokens with missing NER annotation (``ent_iob == 0``) are marginalized in
    training: every tagging consistent with the known tokens counts.

    The class holds spaCy's API and delegates the work (``docs/ARCHITECTURE.md``):
    the plan of a batch to ``prediction.plan``, annotations to
    ``component.annotations``, the network's tables to ``component.network_build``,
    gold tags to ``training.gold``, saving and loading to
    ``component.serialization``. It is ~320 lines, a little over the package's ~300,
    for the settings ``__init__`` validates and the docstrings of spaCy's methods.
    """

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "bilstm_crf_ner",
        *,
        scheme: str = "BIOES",
        min_char_count: int = 1,
        window_size: int = 512,
        window_overlap: int = 64,
        batch_chars: int = 16384,
        preset_ents: str = "keep",
        confidence: bool = False,
        spans_key: str = "bilstm_crf_ner",
        threshold: Optional[float] = None,
        min_confidence: float = 0.0,
        uncertainty: bool = False,
        boundary: str = "expand",
        scorer: Optional[Callable] = None,
    ) -> None:
        if preset_ents not in PRESET_MODES:
            raise ValueError(f"'{name}': preset_ents must be one of {list(PRESET_MODES)}, got '{preset_ents}'.")
        if boundary not in BOUNDARY_RULES:
            raise ValueError(f"'{name}': boundary must be one of {list(BOUNDARY_RULES)}, got '{boundary}'.")
        for setting, value in (("threshold", threshold), ("min_confidence", min_confidence)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"'{name}': {setting} must be a probability in [0, 1], got {value}.")
        if scheme not in SCHEMES:
            raise ValueError(f"Unknown tag scheme '{scheme}' for '{name}': use one of {sorted(SCHEMES)}.")
        if window_size - 2 * window_overlap < 2 or window_overlap < 0:
            raise ValueError(
                f"'{name}': window_size ({window_size}) must exceed twice window_overlap "
                f"({window_overlap}) by at least 2."
            )
        # Prediction settings, not part of the trained model: kept out of cfg.
        self.window_size = window_size
        self.window_overlap = window_overlap
        self.batch_chars = batch_chars
        self.preset_ents = preset_ents
        self.confidence = confidence
        self.spans_key = spans_key
        self.threshold = threshold
        self.min_confidence = min_confidence
        self.uncertainty = uncertainty
        self.boundary = boundary
        # How found entities mapped to tokens (word tokenizers): aligned, expanded,
        # contracted, dropped.
        self.boundary_counts: Counter = Counter()
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        # initialize() adds the table sizes the network is built with: "n_chars" and
        # "n_lexicon_keys". The tables themselves are buffers of the torch module.
        self.cfg: Dict[str, object] = {
            "labels": [],
            "scheme": scheme,
            "min_char_count": min_char_count,
        }
        self._scheme: Optional[TagScheme] = None
        self._warned_dropout = False
        # Where the last loaded cfg came from, for errors found while loading the weights.
        self._cfg_source = "cfg"

    # -- labels -------------------------------------------------------------------

    @property
    def labels(self) -> Tuple[str, ...]:
        """RETURNS (Tuple[str]): The entity labels."""
        return tuple(self.cfg["labels"])  # type: ignore[arg-type]

    @property
    def label_data(self) -> List[str]:
        """RETURNS (List[str]): The labels, as ``spacy init labels`` writes them."""
        return list(self.labels)

    @property
    def char_table(self) -> numpy.ndarray:
        """RETURNS (numpy.ndarray): Normalized code points (sorted) of the characters with an
            embedding row of their own; empty before initialization.
        """
        if torch_layer(self.model) is None:
            return numpy.zeros(0, dtype="int64")
        return get_torch_module(self.model).char_table[1:].cpu().numpy()

    @property
    def lexicon_keys(self) -> Optional[numpy.ndarray]:
        """RETURNS (Optional[numpy.ndarray]): Sorted keys of the lexicon words (soft-lexicon
            features); None when the model has no lexicon or is not initialized.
        """
        if torch_layer(self.model) is None:
            return None
        lexicon = get_torch_module(self.model).lexicon
        return None if lexicon is None else lexicon.keys[1:].cpu().numpy()

    @property
    def scheme(self) -> TagScheme:
        """RETURNS (TagScheme): The tag scheme over the current labels."""
        if self._scheme is None or self._scheme.labels != list(self.labels):
            self._scheme = TagScheme(self.labels, str(self.cfg["scheme"]))
        return self._scheme

    def add_label(self, label: str) -> int:
        """Add an entity label before initialization.

        label (str): The label to add.
        RETURNS (int): 0 if the label is already present, otherwise 1.
        """
        if not isinstance(label, str):
            raise ValueError(Errors.E187)
        if label in self.labels:
            return 0
        if torch_layer(self.model) is not None:
            raise ValueError(
                f"Cannot add label '{label}' to '{self.name}' after it is initialized: the "
                "CRF's size depends on the labels. Add all labels before nlp.initialize()."
            )
        self.cfg["labels"] = list(self.labels) + [label]
        return 1

    # -- initialization ---------------------------------------------------------

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> None:
        """Collect labels and the character table from the data and build the network.

        get_examples (Callable[[], Iterable[Example]]): The training examples.
        nlp (Language): The current nlp object.
        labels (Optional[Sequence[str]]): Labels to use (e.g. from ``spacy init labels``);
            collected from the examples (sorted) when not given.
        """
        validate_get_examples(get_examples, "BiLSTMCRFNER.initialize")
        self._check_trainable()
        # Re-initializing starts the network from scratch (an upstream encoder stays).
        self.model._layers[:] = [layer for layer in self.model.layers if layer is not torch_layer(self.model)]
        if labels is not None:
            self.cfg["labels"] = []
            for label in labels:
                self.add_label(label)
        else:
            found = {ent.label_ for eg in get_examples() for ent in eg.reference.ents}
            for label in sorted(found.union(self.labels)):
                self.add_label(label)
        self._require_labels()
        build_network(self, get_examples)
        if nlp is not None and not scales_training(nlp.config):
            # With scale_training, max_steps and eval_frequency are replaced after
            # initialize; the callback checks the values it writes itself.
            warn_about_training_settings(nlp.config.get("training", {}), self.name)
        # Check that gold data converts (labels known, spans aligned) on a sample.
        for eg in islice(get_examples(), 10):
            self._gold_tags(eg)

    # -- prediction ---------------------------------------------------------------

    def predict(self, docs: Iterable[Doc]) -> List[DocPrediction]:
        """Decode the best valid tag sequence of each doc (see ``PredictionPlan.run``).

        Entities already on a doc constrain its decoding (``preset_ents``), and
        whitespace characters are always ``O``; long docs are tagged as windows.
        RETURNS (List[DocPrediction]): Tags, entities (and scores) per doc, in characters.
        """
        docs = list(docs)
        chars = [doc_chars(doc) for doc in docs]
        plan = self.prediction_plan()
        if not any(len(c.codepoints) for c in chars):
            return plan.run(self.model, chars, [None] * len(chars))
        keep = self.preset_ents != "overwrite"
        outside = self.preset_ents == "keep_outside"
        presets = [preset_tags(doc, c, self.scheme, outside) if keep else None for doc, c in zip(docs, chars)]
        return plan.run(self.model, chars, presets, self._char_vectors(docs, chars))

    def prediction_plan(self) -> PredictionPlan:
        """RETURNS (PredictionPlan): How ``predict`` runs a batch under the current settings."""
        return PredictionPlan(
            self.scheme,
            self.window_size,
            self.window_overlap,
            self.batch_chars,
            scored=self.confidence or self.min_confidence > 0,
            threshold=self.threshold,
            uncertain=self.uncertainty,
        )

    def _char_vectors(self, docs: List[Doc], chars: List[DocChars]) -> Optional[List[object]]:
        """The upstream encoder's vectors per character of each doc; None without one."""
        tok2vec = tok2vec_layer(self.model)
        if tok2vec is None:
            return None
        return char_vectors(self.model, chars, tok2vec.predict(docs))

    def set_annotations(
        self, docs: Iterable[Doc], predictions: Sequence[Union[DocPrediction, numpy.ndarray]]
    ) -> None:
        """Set ``doc.ents`` (and with confidence ``doc.spans``) from the predictions,
        keeping pre-set entities (``preset_ents``); see ``component/annotations.py``.

        predictions (Sequence[Union[DocPrediction, numpy.ndarray]]): From ``predict``, or
            plain tag ids per character.
        """
        annotations.set_annotations(self, docs, predictions)

    # -- training -----------------------------------------------------------------

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Callable] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """Learn from a batch: the CRF negative log-likelihood of the gold tags.

        The loss reported is the summed NLL; the gradient is that of the mean, so
        gradient clipping does not depend on the batch size.
        RETURNS (Dict[str, float]): The updated losses.
        """
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        validate_examples(examples, "BiLSTMCRFNER.update")
        self._check_trainable()
        examples = list(examples)
        docs = [eg.predicted for eg in examples]
        if not any(len(doc) for doc in docs):
            return losses
        gold = [self._gold_tags(eg) for eg in examples]
        if drop and not self._warned_dropout:
            self._warned_dropout = True
            warnings.warn(
                f"'{self.name}' ignores the dropout of nlp.update / [training] dropout ({drop}): "
                "torch dropout is set in the model block (dropout, embed_dropout, unk_rate). "
                "Set [training] dropout = 0.0 to silence this."
            )
        nll, backprop = self.model.begin_update((docs, gold))
        loss = float(nll.sum())
        if numpy.isnan(loss):
            raise ValueError(Errors.E910.format(name=self.name))
        backprop(self.model.ops.alloc1f(len(docs)) + 1.0 / len(docs))
        if sgd not in (None, False):
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def _check_trainable(self) -> None:
        if self.model.attrs.get("quantize_int8", False):
            raise ValueError(
                f"'{self.name}' has quantize_int8 = true, which is for inference only (int8 "
                "layers have no gradients). Train with quantize_int8 = false, then convert "
                "the trained pipeline: python -m spacy_bilstm_crf quantize MODEL OUTPUT_DIR"
            )

    def get_loss(self, examples: Iterable[Example], scores: object) -> Tuple[float, object]:
        """The CRF loss is computed inside the network by ``update``."""
        raise NotImplementedError(
            f"'{self.name}' computes its CRF loss inside the model: use update()."
        )

    def _gold_tags(self, example: Example) -> numpy.ndarray:
        """An example's gold tags per character, -1 where missing (``training/gold.py``)."""
        return gold_tags(example, self.scheme, self.labels, self.name)

    def _gold_char_spans(self, example: Example) -> Tuple[numpy.ndarray, List[Tuple[int, int, int]]]:
        """An example's code points and gold character spans (``training/gold.py``)."""
        return gold_char_spans(example, self.labels, self.name)

    # -- confidence -------------------------------------------------------------

    def predict_marginals(self, docs: Iterable[Doc]) -> List[numpy.ndarray]:
        """Per-token tag marginals P(tag | doc) from the CRF (rows sum to 1).

        RETURNS (List[numpy.ndarray]): Float (len(doc), n_tags) per doc; column order
            is ``self.scheme.tags``.
        """
        docs = list(docs)
        chars = [doc_chars(doc) for doc in docs]
        marginals = char_marginals(self.model, chars, self._char_vectors(docs, chars))
        return [m[: len(doc)] for m, doc in zip(marginals, docs)]

    # -- serialization ------------------------------------------------------------

    @property
    def table_sizes(self) -> Tuple[int, Optional[int], Optional[int], Optional[int]]:
        """RETURNS (Tuple[int, Optional[int], Optional[int], Optional[int]]): ``(n_chars,
            n_lexicon_keys, n_gazetteer_keys, n_lexicon_vectors)`` from cfg.
        """
        if "n_chars" not in self.cfg:
            raise ValueError(f"'{self.name}' has no character table size in its cfg: is it initialized?")
        n_keys = self.cfg.get("n_lexicon_keys")
        n_entities = self.cfg.get("n_gazetteer_keys")
        n_vectors = self.cfg.get("n_lexicon_vectors")
        return (
            int(self.cfg["n_chars"]),  # type: ignore[call-overload]
            None if n_keys is None else int(n_keys),  # type: ignore[call-overload]
            None if n_entities is None else int(n_entities),  # type: ignore[call-overload]
            None if n_vectors is None else int(n_vectors),  # type: ignore[call-overload]
        )

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        """Serialize the pipe (cfg, vocab, weights with the character table and lexicon keys)."""
        return serialization.to_bytes(self, exclude)

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        """Serialize the pipe to a directory: one file per field (``component/serialization.py``)."""
        serialization.to_disk(self, path, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "BiLSTMCRFNER":
        """Load the pipe from a bytestring written by ``to_bytes``."""
        return serialization.from_bytes(self, bytes_data, exclude)

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> "BiLSTMCRFNER":
        """Load the pipe from a directory written by ``to_disk`` (or by version 0.1.0)."""
        return serialization.from_disk(self, path, exclude)
