"""The plan of a batch at prediction time: windows, fixed tags, lattices, stitching, confidence.

``PredictionPlan.run`` is what the component's ``predict`` calls, once per batch: it
cuts every doc into windows (``windows``), fixes the tags of pre-set entities and
whitespace on each window, runs the windows through the network in groups of
similar length, decodes them with the constrained Viterbi, stitches the windows'
entities back into each doc's, and with confidence on scores each entity (and the
candidates above ``threshold``) on the window's lattice as the window is decoded
(``confidence``). It reads docs only as ``DocChars`` (``features.chars``) and the
network only through the thinc glue (``component.architectures``); it does not see
the spaCy component.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy
import torch
from thinc.api import Model, xp2torch

from ..component.architectures import featurize, get_torch_module, pad_batch
from ..features.chars import DocChars, whitespace_mask
from ..network.crf import BANNED, constrain
from ..network.tags import TagScheme
from .confidence import Lattice, candidate_spans, span_probabilities
from .uncertainty import Measures, measure_window, total
from .windows import Window, length_batches, plan_windows, stitch_spans

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
    uncertainty (Optional[Dict[str, float]]): With ``uncertain``, the doc's
        ``best_path``, ``tag_errors`` and ``entity_errors`` (``uncertainty``).
    """

    tags: numpy.ndarray
    spans: List[Tuple[int, int, int]]
    scores: Optional[numpy.ndarray] = None
    candidates: Optional[List[Tuple[int, int, int, float]]] = None
    # The doc's characters, and whether it had entities or blocked tokens set before
    # prediction: set_annotations then knows whether it may take the plain path.
    chars: Optional[DocChars] = None
    preset: bool = False
    uncertainty: Optional[Dict[str, float]] = None


@dataclass
class WindowScores:
    """What confidence found in one window, kept after its lattice is gone.

    spans (List[Tuple[int, int, int]]): The entities the window decoded (cut ones
        included), ``(start, end, label index)`` in the window's characters.
    scores (numpy.ndarray): Float64, the probability of each of them in the window.
    candidates (List[Tuple[int, int, int, float]]): The spans above ``threshold`` that
        start in the window's own part, in the doc's characters.
    measures (Optional[Measures]): With ``uncertain``, the window's uncertainty over
        the characters it owns.
    """

    spans: List[Tuple[int, int, int]]
    scores: numpy.ndarray
    candidates: List[Tuple[int, int, int, float]]
    measures: Optional[Measures] = None


@dataclass
class PredictionPlan:
    """How the component predicts a batch: its tags, windows, group size and confidence.

    scheme (TagScheme): The component's tags.
    window_size (int): Longest window, in characters.
    window_overlap (int): Characters shared by neighbouring windows.
    batch_chars (int): Most padded characters per forward pass.
    scored (bool): Whether entities get probabilities (confidence or min_confidence).
    threshold (Optional[float]): With ``scored``, the probability above which other
        spans are kept as candidates; None for none.
    uncertain (bool): Also measure each doc's uncertainty (``uncertainty``); implies
        ``scored``.
    """

    scheme: TagScheme
    window_size: int
    window_overlap: int
    batch_chars: int
    scored: bool
    threshold: Optional[float] = None
    uncertain: bool = False

    def __post_init__(self) -> None:
        # The measures are read off the same lattices as the entities' probabilities.
        self.scored = self.scored or self.uncertain

    def run(
        self,
        model: Model,
        chars: List[DocChars],
        presets: Sequence[Optional[numpy.ndarray]],
        doc_vectors: Optional[List[object]] = None,
    ) -> List[DocPrediction]:
        """Decode the best valid tag sequence of each doc.

        Docs longer than ``window_size`` characters are tagged as overlapping windows
        whose entities are stitched together; all sequences run in groups of similar
        length (at most ``batch_chars`` padded characters per forward pass). Fixed tags
        (``presets``: entities already on a doc) constrain a doc's decoding, and
        whitespace characters are always ``O``; with ``scored``, each entity's
        probability is computed on the same constrained lattice, window by window as
        they are decoded (see ``_decode_group``), so memory does not grow with the doc.

        model (Model): The component's model.
        chars (List[DocChars]): The characters of each doc (``features.chars.doc_chars``).
        presets (Sequence[Optional[numpy.ndarray]]): Each doc's fixed tags
            (``features.chars.preset_tags``), or None.
        doc_vectors (Optional[List[object]]): An upstream encoder's vectors per character
            of each doc, or None.
        RETURNS (List[DocPrediction]): Tags, entities (and scores) per doc, in characters.
        """
        scored = self.scored
        if not any(len(c.codepoints) for c in chars):
            empty = numpy.zeros(0, dtype="float64") if scored else None
            certain = Measures().to_dict() if self.uncertain else None
            return [
                DocPrediction(numpy.zeros(0, dtype="int64"), [], empty, [], c, uncertainty=certain) for c in chars
            ]
        # Every doc as windows (one, for all but long docs), every window as a sequence.
        plans = [plan_windows(c.codepoints, self.window_size, self.window_overlap) for c in chars]
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
                    model, group_seqs, [forced[i] for i in group], [windows[i] for i in group], scored, group_vectors
                )
                for i, row, found in zip(group, group_tags, group_scores):
                    tags[i], window_scores[i] = row, found
                continue
            batch = model.ops.to_numpy(model.predict((group_seqs, None, group_vectors)))
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
                if self.uncertain and prediction.uncertainty is None:  # an empty doc
                    prediction.uncertainty = Measures().to_dict()
            result.append(prediction)
        return result

    def decode_lattice(
        self,
        model: Model,
        sequences: List[numpy.ndarray],
        forced: List[Optional[numpy.ndarray]],
        scored: bool,
        vectors: Optional[List[object]] = None,
    ) -> Tuple[List[numpy.ndarray], List[Optional[Lattice]]]:
        """Constrained Viterbi, and with ``scored`` the forward-backward scores, of a group.

        The emissions are the prediction path's (no training noise, whatever the
        module's mode), so unconstrained tags equal those of ``model.predict``.
        """
        module = get_torch_module(model)
        device = next(module.parameters()).device
        batch = featurize(model, sequences, None, vectors)
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
        model: Model,
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
        rows, lattices = self.decode_lattice(model, sequences, forced, scored, vectors)
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
        probs = span_probabilities(lattice, scheme, spans)
        measures = None
        if self.uncertain:
            own = slice(None) if single else slice(window.own_start - window.start, window.own_end - window.start)
            measures = measure_window(lattice, scheme, tags, spans, probs, own)
        return WindowScores(spans, probs, candidates, measures)


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
    measured = [scores.measures for scores in found if scores is not None and scores.measures is not None]
    if measured:
        prediction.uncertainty = total(measured).to_dict()


def char_marginals(model: Model, chars: List[DocChars], doc_vectors: Optional[List[object]] = None) -> numpy.ndarray:
    """Tag marginals P(tag | doc) from the CRF, per character of each doc, padded.

    model (Model): The component's model.
    chars (List[DocChars]): The characters of each doc.
    doc_vectors (Optional[List[object]]): An upstream encoder's vectors per character, or None.
    RETURNS (numpy.ndarray): Float (docs, longest doc, n_tags); columns in ``scheme.tags`` order.
    """
    module = get_torch_module(model)
    device = next(module.parameters()).device
    batch = featurize(model, [c.codepoints for c in chars], None, doc_vectors)
    padded = xp2torch(batch.codepoints, device=device)
    lengths = xp2torch(batch.lengths, device=device)
    extra = None if batch.vectors is None else xp2torch(batch.vectors, device=device)
    # No mode switch: emissions without noise are the prediction's, whatever the
    # module's mode (switching it would reach other threads' predictions).
    with torch.no_grad():
        emissions = module.emissions(padded, lengths, vectors=extra)
    return module.crf.marginals(emissions, lengths).cpu().numpy()
