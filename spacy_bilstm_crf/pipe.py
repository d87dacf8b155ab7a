"""The ``bilstm_crf_ner`` component: a TrainablePipe that sets ``doc.ents``."""
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy
import srsly
import torch
from spacy import util
from spacy.attrs import ENT_IOB, IDX
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, xp2torch

from .component.architectures import (
    TaggerInput,
    build_torch_layer,
    char_vectors,
    doc_codepoints,
    featurize,
    get_torch_module,
    pad_batch,
    tok2vec_layer,
    torch_layer,
)
from .features.chars import (
    BOUNDARY_RULES,
    DocChars,
    blocked_tokens,
    chars_to_tokens,
    doc_chars,
    preset_tags,
    whitespace_mask,
)
from .prediction.confidence import Lattice, candidate_spans, span_probabilities
from .network.crf import BANNED, constrain
from .features.gazetteer_table import build_gazetteer_table
from .component.integrity import CHECKSUM_KEY, SIZE_KEYS, check_table_sizes, check_weights, parse_cfg, weights_checksum
from .network.lac import load_lac_encoder
from .network.lexicon import load_lexicon
from .features.lexicon_table import build_lexicon_table
from .network.model import normalize_codepoints
from .network.tags import SCHEMES, TagScheme
from .prediction.windows import Window, length_batches, plan_windows, stitch_spans

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
gazetteer = true
gazetteer_max_len = 10
gazetteer_folds = 10
lac_embeddings = false
lac_features = true
lac_finetune = 1
lac_layers = 1
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
        boundary=boundary,
        scorer=scorer,
    )


PRESET_MODES = ("keep", "keep_outside", "overwrite")
# The longest candidate span scored when ``threshold`` is set, in characters.
CANDIDATE_MAX_LEN = 32


@dataclass
class DocPrediction:
    """What ``predict`` found in one doc, in the characters the network reads.

    tags (numpy.ndarray): Int64 tag ids, one per character (``chars.py``).
    spans (List[Tuple[int, int, int]]): The entities, ``(start, end, label index)`` in characters.
    scores (Optional[numpy.ndarray]): The probability of each entity, with confidence on.
    candidates (List[Tuple[int, int, int, float]]): Other spans above ``threshold``, with
        their probabilities.
    chars (Optional[DocChars]): The doc's characters.
    preset (bool): Whether the doc had annotation to keep (``preset_ents``).
    """

    tags: numpy.ndarray
    spans: List[Tuple[int, int, int]]
    scores: Optional[numpy.ndarray] = None
    candidates: Optional[List[Tuple[int, int, int, float]]] = None
    # The doc's characters, and whether it had entities or blocked tokens set before
    # prediction: set_annotations then knows whether it may take the plain path.
    chars: Optional[DocChars] = None
    preset: bool = False


@dataclass
class WindowScores:
    """What confidence found in one window, kept after its lattice is gone.

    spans (List[Tuple[int, int, int]]): The entities the window decoded (cut ones
        included), ``(start, end, label index)`` in the window's characters.
    scores (numpy.ndarray): Float64, the probability of each of them in the window.
    candidates (List[Tuple[int, int, int, float]]): The spans above ``threshold`` that
        start in the window's own part, in the doc's characters.
    """

    spans: List[Tuple[int, int, int]]
    scores: numpy.ndarray
    candidates: List[Tuple[int, int, int, float]]


class BiLSTMCRFNER(TrainablePipe):
    """Character BiLSTM-CRF NER with batched, constrained Viterbi decoding.

    Every decoded tag sequence is valid under the tag scheme, so ``doc.ents``
    always comes from a well-formed sequence. The network tags characters: under
    ``spacy.blank("zh")`` each token is one, under a word tokenizer each token's
    characters are tagged and entities map back to tokens (``boundary``). Gold
    tokens with missing NER annotation (``ent_iob == 0``) are marginalized in
    training: every tagging consistent with the known tokens counts.
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
        codepoints = [doc_codepoints(eg.predicted) for eg in get_examples()]
        char_table = build_char_table(codepoints, int(self.cfg["min_char_count"]))
        lexicon = self.model.attrs.get("lexicon")
        table = None
        if lexicon is not None:
            table = build_lexicon_table(load_lexicon(lexicon), self.model.attrs["hyper"]["lexicon_max_len"])
        hyper = self.model.attrs["hyper"]
        uses_lac = hyper.get("lac_features") or self.model.attrs.get("lac_embeddings")
        self.cfg["n_chars"] = len(char_table)
        self.cfg["n_lexicon_keys"] = None if table is None else len(table.keys)
        gazetteer = None
        if self.model.attrs.get("gazetteer"):
            gazetteer = build_gazetteer_table(
                (self._gold_char_spans(eg) for eg in get_examples()),
                len(self.labels),
                int(hyper["gazetteer_max_len"]),
                int(hyper["gazetteer_folds"]),
            )
        self.cfg["n_gazetteer_keys"] = None if gazetteer is None else len(gazetteer.keys)
        build_torch_layer(
            self.model,
            self.scheme,
            *self.table_sizes,
            char_table=char_table,
            lexicon_keys=None if table is None else table.keys,
            lexicon_weights=None if table is None else table.weights,
            lexicon_pos=None if table is None else table.pos,
            gazetteer=gazetteer,
            lac=load_lac_encoder() if uses_lac else None,
        )
        if nlp is not None and not scales_training(nlp.config):
            # With scale_training, max_steps and eval_frequency are replaced after
            # initialize; the callback checks the values it writes itself.
            warn_about_training_settings(nlp.config.get("training", {}), self.name)
        # Check that gold data converts (labels known, spans aligned) on a sample.
        for eg in islice(get_examples(), 10):
            self._gold_tags(eg)

    # -- prediction ---------------------------------------------------------------

    def predict(self, docs: Iterable[Doc]) -> List[DocPrediction]:
        """Decode the best valid tag sequence of each doc.

        Docs longer than ``window_size`` characters are tagged as overlapping windows
        whose entities are stitched together; all sequences run in groups of similar
        length (at most ``batch_chars`` padded characters per forward pass). Entities
        already on a doc constrain its decoding (``preset_ents``), and whitespace
        characters are always ``O``; with confidence on, each entity's probability is
        computed on the same constrained lattice, window by window as they are decoded
        (see ``_decode_group``), so memory does not grow with the doc.
        RETURNS (List[DocPrediction]): Tags, entities (and scores) per doc, in characters.
        """
        docs = list(docs)
        chars = [doc_chars(doc) for doc in docs]
        scored = self.confidence or self.min_confidence > 0
        if not any(len(c.codepoints) for c in chars):
            empty = numpy.zeros(0, dtype="float64") if scored else None
            return [DocPrediction(numpy.zeros(0, dtype="int64"), [], empty, [], c) for c in chars]
        keep = self.preset_ents != "overwrite"
        outside = self.preset_ents == "keep_outside"
        presets = [preset_tags(doc, c, self.scheme, outside) if keep else None for doc, c in zip(docs, chars)]
        # Every doc as windows (one, for all but long docs), every window as a sequence.
        plans = [plan_windows(c.codepoints, self.window_size, self.window_overlap) for c in chars]
        doc_vectors = self._char_vectors(docs, chars)
        sequences, forced, vectors, windows = [], [], [], []
        for k, (c, preset, plan) in enumerate(zip(chars, presets, plans)):
            spaces = whitespace_mask(c.codepoints)
            for w in plan:
                sequences.append(c.codepoints[w.start : w.end])
                forced.append(window_constraints(preset, spaces, w, self.scheme))
                vectors.append(None if doc_vectors is None else doc_vectors[k][w.start : w.end])
                windows.append((w, len(plan) == 1))
        tags: List[numpy.ndarray] = [numpy.zeros(0, dtype="int64")] * len(sequences)
        window_scores: List[Optional[WindowScores]] = [None] * len(sequences)
        for group in length_batches([len(seq) for seq in sequences], self.batch_chars):
            group_seqs = [sequences[i] for i in group]
            group_vectors = None if doc_vectors is None else [vectors[i] for i in group]
            if scored or any(forced[i] is not None for i in group):
                group_tags, group_scores = self._decode_group(
                    group_seqs, [forced[i] for i in group], [windows[i] for i in group], scored, group_vectors
                )
                for i, row, found in zip(group, group_tags, group_scores):
                    tags[i], window_scores[i] = row, found
                continue
            batch = self.model.ops.to_numpy(self.model.predict((group_seqs, None, group_vectors)))
            for row, i in zip(batch, group):
                tags[i] = row[: len(sequences[i])]
        result = []
        offset = 0
        for c, preset, plan in zip(chars, presets, plans):
            window_tags = tags[offset : offset + len(plan)]
            doc_scores = window_scores[offset : offset + len(plan)]
            offset += len(plan)
            if len(plan) == 1:
                doc_tags, spans = window_tags[0], self.scheme.tags_to_spans(window_tags[0])
            else:
                found = [self.scheme.tags_to_spans(t) for t in window_tags]
                spans = stitch_spans(plan, found, len(c.codepoints))
                doc_tags = self.scheme.spans_to_tags(len(c.codepoints), spans)
            prediction = DocPrediction(doc_tags, spans, chars=c, preset=preset is not None)
            if scored:
                _collect_scores(prediction, plan, doc_scores)
            result.append(prediction)
        return result

    def _char_vectors(self, docs: List[Doc], chars: List[DocChars]) -> Optional[List[object]]:
        """The upstream encoder's vectors per character of each doc; None without one."""
        tok2vec = tok2vec_layer(self.model)
        if tok2vec is None:
            return None
        return char_vectors(self.model, chars, tok2vec.predict(docs))

    def _decode_lattice(
        self,
        sequences: List[numpy.ndarray],
        forced: List[Optional[numpy.ndarray]],
        scored: bool,
        vectors: Optional[List[object]] = None,
    ) -> Tuple[List[numpy.ndarray], List[Optional[Lattice]]]:
        """Constrained Viterbi, and with ``scored`` the forward-backward scores, of a group.

        The emissions are the prediction path's (no training noise, whatever the
        module's mode), so unconstrained tags equal those of ``model.predict``.
        """
        module = get_torch_module(self.model)
        device = next(module.parameters()).device
        batch = featurize(self.model, sequences, None, vectors)
        padded = xp2torch(batch.codepoints, device=device)
        lengths = xp2torch(batch.lengths, device=device)
        extra = None if batch.vectors is None else xp2torch(batch.vectors, device=device)
        fixed = torch.as_tensor(
            pad_batch([numpy.full(len(s), -1) if f is None else f for s, f in zip(sequences, forced)], -1),
            device=device,
        )
        with torch.no_grad():
            emissions = module.emissions(padded, lengths, vectors=extra).float()
            tags = module.crf.decode(constrain(emissions, fixed, float("-inf")), lengths).cpu().numpy()
            rows = [row[: len(seq)] for row, seq in zip(tags, sequences)]
            if not scored:
                return rows, [None] * len(sequences)
            # float64: a probability near 1 is exp of a small difference of scores in the
            # hundreds, which float32 rounds at ~1e-5; float64 keeps it batch-independent.
            allowed = constrain(emissions.double(), fixed, BANNED)
            alpha, beta, log_z = module.crf.forward_backward(allowed, lengths)
            trans, _, end = module.crf.masked_scores(BANNED)
        arrays = [t.double().cpu().numpy() for t in (alpha, beta, allowed)]
        trans_np, end_np, log_z_np = trans.double().cpu().numpy(), end.double().cpu().numpy(), log_z.double().cpu().numpy()
        lattices: List[Optional[Lattice]] = [
            Lattice(arrays[0][b, :n], arrays[1][b, :n], arrays[2][b, :n], trans_np, end_np, float(log_z_np[b]))
            for b, n in enumerate(len(seq) for seq in sequences)
        ]
        return rows, lattices

    def _decode_group(
        self,
        sequences: List[numpy.ndarray],
        forced: List[Optional[numpy.ndarray]],
        windows: List[Tuple[Window, bool]],
        scored: bool,
        vectors: Optional[List[object]] = None,
    ) -> Tuple[List[numpy.ndarray], List[Optional["WindowScores"]]]:
        """Decode a group of windows and, with ``scored``, score each window's entities
        (and candidates) on its lattice at once.

        The lattices (three float64 arrays per window and tag, ~1 KB per character
        under 10 labels) die when this returns: only one group's are ever alive, so
        memory with confidence on stays bounded however long the doc.

        windows (List[Tuple[Window, bool]]): Each sequence's window, and whether it is
            its doc's only one.
        RETURNS (Tuple[List[numpy.ndarray], List[Optional[WindowScores]]]): The tags,
            and the scores (None when not ``scored``) of each sequence.
        """
        rows, lattices = self._decode_lattice(sequences, forced, scored, vectors)
        if not scored:
            return rows, [None] * len(rows)
        found = []
        for row, lattice, (window, single) in zip(rows, lattices, windows):
            assert lattice is not None
            found.append(self._score_window(row, lattice, window, single))
        return rows, found

    def _score_window(self, tags: numpy.ndarray, lattice: Lattice, window: Window, single: bool) -> "WindowScores":
        """The probability of each entity a window decoded (offsets in the window), and
        the candidates above ``threshold`` that start in its own part (offsets in the doc).
        """
        scheme = self.scheme
        spans = scheme.tags_to_spans(tags)
        candidates: List[Tuple[int, int, int, float]] = []
        if self.threshold is not None:
            for start, end, label, p in candidate_spans(lattice, scheme, self.threshold, CANDIDATE_MAX_LEN):
                if single or window.own_start <= start + window.start < window.own_end:
                    candidates.append((start + window.start, end + window.start, label, p))
        return WindowScores(spans, span_probabilities(lattice, scheme, spans), candidates)

    def set_annotations(
        self, docs: Iterable[Doc], predictions: Sequence[Union[DocPrediction, numpy.ndarray]]
    ) -> None:
        """Set ``doc.ents`` (and so ``token.ent_iob``/``ent_type``) from the predictions,
        keeping pre-set entities (``preset_ents``), and with confidence ``doc.spans``.

        predictions (Sequence[Union[DocPrediction, numpy.ndarray]]): From ``predict``, or
            plain tag ids per character.
        """
        scheme = self.scheme
        keep = self.preset_ents != "overwrite"
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
            token_spans = chars_to_tokens(prediction.spans, chars, self.boundary, self.boundary_counts)
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
                if score is None or score >= self.min_confidence:
                    ents.append(span)
                if score is not None:
                    scored.append((span, score))
            doc.set_ents(preset + ents, blocked=blocked, default="outside")
            if prediction.scores is not None and self.confidence:
                self._set_spans(doc, chars, scored, prediction.candidates or [])

    def _set_spans(
        self, doc: Doc, chars: DocChars, scored: List[Tuple[Span, float]], candidates: List[Tuple[int, int, int, float]]
    ) -> None:
        """Put the scored entities, then the candidates, in ``doc.spans[spans_key]``."""
        mapped = chars_to_tokens(candidates, chars, self.boundary)
        seen = {(span.start, span.end, span.label_) for span, _ in scored}
        for (start, end, label, p), token_span in zip(candidates, mapped):
            if token_span is None:
                continue
            span = Span(doc, token_span[0], token_span[1], label=self.scheme.labels[label])
            if (span.start, span.end, span.label_) not in seen:
                seen.add((span.start, span.end, span.label_))
                scored.append((span, p))
        group = SpanGroup(doc, name=self.spans_key, spans=[span for span, _ in scored])
        group.attrs["scores"] = [score for _, score in scored]
        doc.spans[self.spans_key] = group

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
        """Gold entity spans of an example as tag ids over the characters of its predicted
        tokens; -1 on the characters of tokens whose annotation is missing.
        """
        codepoints, spans = self._gold_char_spans(example)
        tags = self.scheme.spans_to_tags(len(codepoints), spans)
        missing = missing_tokens(example)
        if missing is not None:
            chars = doc_chars(example.predicted)
            tags[chars.token_mask_to_chars(missing) & (tags == 0)] = -1
        return tags

    def _gold_char_spans(self, example: Example) -> Tuple[numpy.ndarray, List[Tuple[int, int, int]]]:
        """RETURNS (Tuple[numpy.ndarray, List[Tuple[int, int, int]]]): The code points of an
            example's predicted doc as the network reads them, and its gold entities as
            character spans ``(start, end, label index)``.
        """
        chars = doc_chars(example.predicted)
        index = {label: i for i, label in enumerate(self.labels)}
        spans = example.get_aligned_spans_y2x(example.reference.ents, allow_overlap=False)
        triples = []
        for span in spans:
            if span.label_ not in index:
                raise ValueError(
                    f"Entity label '{span.label_}' in '{example.reference.text[:50]}' is not "
                    f"one of the labels of '{self.name}': {list(self.labels)}."
                )
            triples.append((span.start, span.end, index[span.label_]))
        return chars.codepoints, chars.token_spans_to_chars(triples)

    # -- confidence -------------------------------------------------------------

    def predict_marginals(self, docs: Iterable[Doc]) -> List[numpy.ndarray]:
        """Per-token tag marginals P(tag | doc) from the CRF (rows sum to 1).

        RETURNS (List[numpy.ndarray]): Float (len(doc), n_tags) per doc; column order
            is ``self.scheme.tags``.
        """
        docs = list(docs)
        module = get_torch_module(self.model)
        device = next(module.parameters()).device
        chars = [doc_chars(doc) for doc in docs]
        batch = featurize(self.model, [c.codepoints for c in chars], None, self._char_vectors(docs, chars))
        padded = xp2torch(batch.codepoints, device=device)
        lengths = xp2torch(batch.lengths, device=device)
        extra = None if batch.vectors is None else xp2torch(batch.vectors, device=device)
        # No mode switch: emissions without noise are the prediction's, whatever the
        # module's mode (switching it would reach other threads' predictions).
        with torch.no_grad():
            emissions = module.emissions(padded, lengths, vectors=extra)
        marginals = module.crf.marginals(emissions, lengths).cpu().numpy()
        return [m[: len(doc)] for m, doc in zip(marginals, docs)]

    # -- serialization ------------------------------------------------------------

    @property
    def table_sizes(self) -> Tuple[int, Optional[int], Optional[int]]:
        """RETURNS (Tuple[int, Optional[int], Optional[int]]): ``(n_chars, n_lexicon_keys,
            n_gazetteer_keys)`` from cfg.
        """
        if "n_chars" not in self.cfg:
            raise ValueError(f"'{self.name}' has no character table size in its cfg: is it initialized?")
        n_keys = self.cfg.get("n_lexicon_keys")
        n_entities = self.cfg.get("n_gazetteer_keys")
        return (
            int(self.cfg["n_chars"]),  # type: ignore[call-overload]
            None if n_keys is None else int(n_keys),  # type: ignore[call-overload]
            None if n_entities is None else int(n_entities),  # type: ignore[call-overload]
        )

    def _dump(self) -> Dict[str, bytes]:
        """The serialized fields besides the vocab: cfg (with the weights' checksum) and the weights."""
        model_bytes = self.model.to_bytes()
        cfg = dict(self.cfg)
        # The checksum covers the table sizes too: they are read before the weights.
        cfg.pop(CHECKSUM_KEY, None)
        cfg[CHECKSUM_KEY] = weights_checksum(model_bytes, self.labels, str(self.cfg["scheme"]), cfg)
        return {"cfg": srsly.json_dumps(cfg).encode("utf8"), "model": model_bytes}

    def _loaders(self) -> Dict[str, Callable[[bytes, str], None]]:
        """Loaders of the fields besides the vocab, each given the bytes and where they come from.

        cfg loads before the model: the network is rebuilt for the sizes in it, then
        its weights (which include the character table and lexicon keys) are
        checked against cfg's checksum and loaded.
        """
        return {"cfg": self._load_cfg, **self._legacy_size_loaders(), "model": self._load_model}

    def _load_cfg(self, data: bytes, source: str) -> None:
        cfg = parse_cfg(data, source, self.name)
        # The table sizes and checksum come from the loaded cfg (or the legacy fields),
        # never from an earlier initialization of this pipe.
        for key in (*SIZE_KEYS, CHECKSUM_KEY):
            self.cfg.pop(key, None)
        self.cfg.update(cfg)
        self._cfg_source = source  # for errors about cfg found while loading the weights
        if "n_gazetteer_keys" not in cfg:
            # Saved by a version without the gazetteer: its weights have none. spaCy fills
            # the missing ``gazetteer`` setting of its config from the factory's default
            # (on), which would build a network that the weights do not fit.
            self.model.attrs["gazetteer"] = False

    def _legacy_size_loaders(self) -> Dict[str, Callable[[bytes, str], None]]:
        """Pipelines saved by version 0.1.0 also wrote the character table and the lexicon
        keys as fields of their own, and no sizes in cfg: take the sizes from those.
        """

        def set_size(key: str, values: Optional[list]) -> None:
            if key not in self.cfg:
                self.cfg[key] = None if values is None else len(values)

        return {
            "char_table": lambda b, _: set_size("n_chars", srsly.json_loads(b)),
            "lexicon": lambda b, _: set_size("n_lexicon_keys", srsly.msgpack_loads(b)),
        }

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        """Serialize the pipe (cfg, vocab, weights with the character table and lexicon keys)."""
        self._validate_serialization_attrs()
        serializers = {key: (lambda data=data: data) for key, data in self._dump().items()}
        serializers["vocab"] = lambda: self.vocab.to_bytes(exclude=exclude)
        return util.to_bytes(serializers, exclude)

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        """Serialize the pipe to a directory: one file per field."""
        self._validate_serialization_attrs()
        writers = {
            key: (lambda p, data=data: Path(p).write_bytes(data)) for key, data in self._dump().items()
        }
        writers["vocab"] = lambda p: self.vocab.to_disk(p, exclude=exclude)
        util.to_disk(util.ensure_path(path), writers, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "BiLSTMCRFNER":
        """Load the pipe from a bytestring written by ``to_bytes``."""
        self._validate_serialization_attrs()
        loaders = {key: (lambda b, load=load: load(b, "bytes")) for key, load in self._loaders().items()}
        loaders["vocab"] = lambda b: self.vocab.from_bytes(b, exclude=exclude)
        util.from_bytes(bytes_data, loaders, exclude)
        return self

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> "BiLSTMCRFNER":
        """Load the pipe from a directory written by ``to_disk``."""
        self._validate_serialization_attrs()
        path = util.ensure_path(path)
        if not path.is_dir():
            raise ValueError(f"Cannot load '{self.name}': directory not found: {path}")
        for required in ("cfg", "model"):
            if required not in exclude and not (path / required).exists():
                raise ValueError(
                    f"Cannot load '{self.name}' from {path}: the file '{required}' is missing. "
                    "Was it saved with nlp.to_disk() by spacy-bilstm-crf?"
                )
        legacy = self._legacy_size_loaders()

        def reader(key: str, load: Callable[[bytes, str], None]) -> Callable[[Path], None]:
            def read(p: Path) -> None:
                if key in legacy and not Path(p).exists():  # those exist in 0.1.0 pipelines only
                    return
                load(Path(p).read_bytes(), str(p))

            return read

        loaders = {key: reader(key, load) for key, load in self._loaders().items()}
        loaders["vocab"] = lambda p: self.vocab.from_disk(p, exclude=exclude)
        util.from_disk(path, loaders, exclude)
        return self

    def _load_model(self, data: bytes, source: str) -> None:
        """Check the weights and the table sizes against cfg, then rebuild the torch module
        for its sizes and load them: nothing is allocated for sizes that were not checked.
        """
        check_weights(self.cfg, data, source, self.name, self._cfg_source)
        check_table_sizes(self.cfg, data, source, self.name, self._cfg_source)
        # No sizes: the pipe was saved before initialize(), there is no network yet.
        if "n_chars" in self.cfg:
            build_torch_layer(self.model, self.scheme, *self.table_sizes)
        try:
            self.model.from_bytes(data)
        except Exception as err:
            raise ValueError(
                f"Cannot load the weights of '{self.name}' from {source}: {err}. The file is "
                "corrupt or was saved with a different config (labels, sizes)."
            ) from err


SCALE_TRAINING = "spacy-bilstm-crf.scale_training.v1"


def scales_training(config: Dict[str, object]) -> bool:
    """Whether ``[initialize.after_init]`` is the ``scale_training`` callback.

    config (Dict[str, object]): The nlp's config.
    RETURNS (bool): True when the training length is set after initialize.
    """
    initialize = config.get("initialize") or {}
    after_init = initialize.get("after_init") if isinstance(initialize, dict) else None
    return isinstance(after_init, dict) and after_init.get("@callbacks") == SCALE_TRAINING


def warn_about_training_settings(training: Dict[str, object], name: str) -> None:
    """Warn about ``[training]`` settings under which ``spacy train`` keeps a worse model.

    spaCy evaluates (and saves ``model-best``) every ``eval_frequency`` steps only: with
    ``max_steps`` below it, ``model-best`` is the untrained model of step 0, and steps
    after the last evaluation are never candidates for ``model-best``.

    training (Dict[str, object]): The ``[training]`` block of the nlp's config.
    name (str): The component's name, for the message.
    """
    max_steps, eval_frequency = training.get("max_steps"), training.get("eval_frequency")
    if not isinstance(max_steps, int) or not isinstance(eval_frequency, int):
        return  # not resolved yet (e.g. a reference to another block): nothing to check
    if max_steps <= 0 or eval_frequency <= 0 or max_steps % eval_frequency == 0:
        return
    last_eval = max_steps - max_steps % eval_frequency
    if last_eval == 0:
        what = "model-best will be the UNTRAINED model of step 0 (the only evaluation)"
    else:
        what = f"the last {max_steps - last_eval} steps are never evaluated for model-best"
    warnings.warn(
        f"[training] max_steps = {max_steps} is not a multiple of eval_frequency = "
        f"{eval_frequency}: {what}. Set eval_frequency to a divisor of max_steps "
        f"(e.g. --training.eval_frequency {max_steps if last_eval == 0 else eval_frequency}"
        f"{'' if last_eval == 0 else f' --training.max_steps {last_eval + eval_frequency}'}). ('{name}')"
    )


def window_presets(preset: numpy.ndarray, window: Window, scheme: TagScheme) -> numpy.ndarray:
    """A doc's fixed tags (see ``chars.preset_tags``) on one window.

    A pre-set entity cut by the window's edge cannot be decoded as a valid part of
    an entity there (e.g. a window would start inside it), so its part in the window
    is fixed to ``O`` instead: no found entity overlaps it, and the entity itself is
    kept from the doc by ``set_annotations``.
    """
    fixed = preset[window.start : window.end].copy()
    prefix = scheme.tag_prefix
    if window.start > 0:
        k = 0
        while k < len(fixed) and fixed[k] > 0 and prefix[fixed[k]] in ("I", "E"):
            fixed[k] = 0
            k += 1
    if window.end < len(preset):
        k = len(fixed) - 1
        while k >= 0 and fixed[k] > 0 and prefix[fixed[k]] in ("B", "I"):
            fixed[k] = 0
            k -= 1
    return fixed


def window_constraints(
    preset: Optional[numpy.ndarray], spaces: Optional[numpy.ndarray], window: Window, scheme: TagScheme
) -> Optional[numpy.ndarray]:
    """The tags fixed on one window: the doc's pre-set ones (``window_presets``), and
    ``O`` on its whitespace characters; None when nothing is fixed, so that windows
    without either decode on the unconstrained path.

    A pre-set entity keeps its tags on whitespace inside it: it is kept as it was set.

    preset (Optional[numpy.ndarray]): The doc's fixed tags (``chars.preset_tags``).
    spaces (Optional[numpy.ndarray]): The doc's whitespace (``chars.whitespace_mask``).
    window (Window): The window.
    scheme (TagScheme): The component's tags.
    RETURNS (Optional[numpy.ndarray]): Int64 (window length,): a tag id, or -1 where free.
    """
    fixed = None if preset is None else window_presets(preset, window, scheme)
    if spaces is None:
        return fixed
    local = spaces[window.start : window.end]
    if not local.any():
        return fixed
    if fixed is None:
        fixed = numpy.full(len(local), -1, dtype="int64")
    fixed[local & (fixed < 0)] = 0  # tag 0 is O
    return fixed


def _collect_scores(prediction: DocPrediction, plan: Sequence[Window], found: Sequence[Optional[WindowScores]]) -> None:
    """Fill in a doc's entity probabilities and candidates from its windows' scores.

    An entity is scored in the window that owns its start when that window decoded
    it (for a doc of one window, always); an entity stitched in from a neighbour that
    the owner did not decode is scored in the window whose whole copy was stitched in
    (the first in the doc, if several): the lattice its tags came from.
    """
    if len(plan) == 1:
        only = found[0]
        assert only is not None
        prediction.scores = only.scores
        candidates = only.candidates
    else:
        owned: Dict[Tuple[int, int, int], float] = {}
        others: Dict[Tuple[int, int, int], float] = {}
        candidates = []
        n = len(prediction.tags)
        for window, scores in zip(plan, found):
            assert scores is not None
            candidates.extend(scores.candidates)
            for (start, end, label), p in zip(scores.spans, scores.scores):
                start, end = start + window.start, end + window.start
                if window.own_start <= start < window.own_end:
                    owned[(start, end, label)] = float(p)
                elif not (start == window.start > 0 or end == window.end < n):  # a whole copy
                    others.setdefault((start, end, label), float(p))
        prediction.scores = numpy.array(
            [owned[span] if span in owned else others.get(span, 0.0) for span in prediction.spans], dtype="float64"
        )
    predicted = set(prediction.spans)
    prediction.candidates = [c for c in candidates if c[:3] not in predicted]


def blocked_spans(doc: Doc) -> List[Span]:
    """The runs of tokens spaCy marks as blocked (see ``chars.blocked_tokens``)."""
    blocked = blocked_tokens(doc)
    if not blocked.any():
        return []
    edges = numpy.diff(numpy.concatenate([[0], blocked.astype("int8"), [0]]))
    starts, ends = numpy.flatnonzero(edges == 1), numpy.flatnonzero(edges == -1)
    return [Span(doc, int(a), int(b)) for a, b in zip(starts, ends)]


def missing_tokens(example: Example) -> Optional[numpy.ndarray]:
    """RETURNS (Optional[numpy.ndarray]): Bool per predicted token, True where the gold
        entity annotation is missing (every aligned reference token has ``ent_iob == 0``);
        None when nothing is missing.
    """
    iob = example.reference.to_array(ENT_IOB).reshape(-1)
    if not (iob == 0).any():
        return None
    predicted = example.predicted
    if len(predicted) == len(example.reference) and numpy.array_equal(
        predicted.to_array([IDX]), example.reference.to_array([IDX])
    ):
        return iob == 0
    x2y = example.alignment.x2y
    lengths = numpy.asarray(x2y.lengths)
    owners = numpy.repeat(numpy.arange(len(predicted)), lengths)
    missing_refs = (iob == 0)[numpy.asarray(x2y.data).ravel()]
    counts = numpy.bincount(owners, weights=missing_refs, minlength=len(predicted))
    return (lengths > 0) & (counts == lengths)


def build_char_table(codepoints: Iterable[numpy.ndarray], min_count: int) -> numpy.ndarray:
    """Sorted unique normalized code points seen at least ``min_count`` times.

    codepoints (Iterable[numpy.ndarray]): Code points per doc.
    min_count (int): Minimum count to get an own embedding row.
    RETURNS (numpy.ndarray): Int64, sorted.
    """
    arrays = [c for c in codepoints if len(c)]
    if not arrays:
        return numpy.zeros(0, dtype="int64")
    normalized = normalize_codepoints(torch.as_tensor(numpy.concatenate(arrays))).numpy()
    values, counts = numpy.unique(normalized, return_counts=True)
    return values[counts >= max(min_count, 1)].astype("int64")
