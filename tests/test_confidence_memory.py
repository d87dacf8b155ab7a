"""With confidence on, each group of windows is scored as soon as it is decoded and its
lattices are dropped: memory does not grow with the doc, and the results are those of
scoring every window at the end."""
import gc
import weakref
from typing import Dict, List, Tuple

import numpy
import pytest

import spacy_bilstm_crf.prediction.plan as plan_module
from spacy_bilstm_crf.prediction.confidence import Lattice, candidate_spans, span_probabilities
from spacy_bilstm_crf.prediction.plan import CANDIDATE_MAX_LEN, DocPrediction, PredictionPlan
from spacy_bilstm_crf.prediction.windows import Window, plan_windows

from .conftest import TRAIN_DATA

# Several windows of 24 characters, several groups of them (batch_chars).
TEXT = "。".join(text for text, _ in TRAIN_DATA * 2)
SETTINGS = {"window_size": 24, "window_overlap": 4, "batch_chars": 60}


@pytest.fixture
def scoring(trained_nlp):
    ner = trained_nlp.get_pipe("bilstm_crf_ner")
    saved = {key: getattr(ner, key) for key in (*SETTINGS, "confidence", "threshold")}
    for key, value in SETTINGS.items():
        setattr(ner, key, value)
    ner.confidence, ner.threshold = True, 0.05
    yield ner
    for key, value in saved.items():
        setattr(ner, key, value)


def test_at_most_one_groups_lattices_are_alive(scoring, trained_nlp, monkeypatch) -> None:
    made: List[weakref.ref] = []  # (a dataclass with eq is not hashable: no WeakSet)

    def alive() -> int:
        return sum(ref() is not None for ref in made)

    class Tracked(Lattice):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    monkeypatch.setattr(plan_module, "Lattice", Tracked)
    original = PredictionPlan.decode_lattice
    alive_before: List[int] = []

    def decode(*args, **kwargs):
        gc.collect()
        alive_before.append(alive())
        return original(*args, **kwargs)

    monkeypatch.setattr(PredictionPlan, "decode_lattice", decode)
    doc = trained_nlp(TEXT)
    gc.collect()
    assert len(alive_before) >= 3, "the text should run as several groups"
    assert len(made) >= len(alive_before)
    assert alive_before == [0] * len(alive_before), "a group's lattices outlived it"
    assert alive() == 0
    assert len(doc.spans["bilstm_crf_ner"]) >= len(doc.ents) > 0


def reference_scores(ner, text: str) -> Tuple[List[Window], List[Lattice], List[list]]:
    """Every window decoded at once and kept, as before windows were scored when decoded."""
    codepoints = numpy.array([ord(c) for c in text], dtype="int64")
    plan = plan_windows(codepoints, ner.window_size, ner.window_overlap)
    sequences = [codepoints[w.start : w.end] for w in plan]
    rows, lattices = ner.prediction_plan().decode_lattice(ner.model, sequences, [None] * len(plan), True)
    found = [ner.scheme.tags_to_spans(row) for row in rows]
    return plan, lattices, found


def test_scores_equal_those_of_scoring_every_window_at_the_end(scoring, trained_nlp) -> None:
    """An entity is scored in the window that owns its start, when that window decoded it
    (as before); one stitched in from a neighbour that the owner did not decode is scored
    in the neighbour that decoded it whole (before: in the owner, which had not chosen it)."""
    doc = trained_nlp(TEXT)
    group = doc.spans["bilstm_crf_ner"]
    scores: Dict[Tuple[int, int, str], float] = {
        (s.start, s.end, s.label_): p for s, p in zip(group, group.attrs["scores"])
    }
    plan, lattices, found = reference_scores(scoring, TEXT)
    assert len(plan) >= 4
    labels = scoring.labels
    ents = [(e.start, e.end, labels.index(e.label_)) for e in doc.ents]
    for start, end, label in ents:
        owner = next(k for k, w in enumerate(plan) if w.own_start <= start < w.own_end)
        w = plan[owner]
        local = (start - w.start, end - w.start, label)
        if local in found[owner]:
            expected = span_probabilities(lattices[owner], scoring.scheme, [local])[0]
        else:
            source = next(
                k for k, v in enumerate(plan)
                if (start - v.start, end - v.start, label) in found[k] and v.start < start and end <= v.end
            )  # fmt: skip
            v = plan[source]
            local = (start - v.start, end - v.start, label)
            expected = span_probabilities(lattices[source], scoring.scheme, [local])[0]
        assert scores[(start, end, labels[label])] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # The candidates: those of each window's own part, other than the entities.
    expected_candidates = {}
    for w, lattice in zip(plan, lattices):
        for start, end, label, p in candidate_spans(lattice, scoring.scheme, 0.05, CANDIDATE_MAX_LEN):
            if w.own_start <= start + w.start < w.own_end and (start + w.start, end + w.start, label) not in ents:
                expected_candidates[(start + w.start, end + w.start, labels[label])] = p
    candidates = {key: p for key, p in scores.items() if (key[0], key[1], labels.index(key[2])) not in ents}
    assert candidates.keys() == expected_candidates.keys()
    for key, p in candidates.items():
        assert p == pytest.approx(expected_candidates[key], rel=1e-5, abs=1e-7)


def test_entities_do_not_change_with_confidence(scoring, trained_nlp) -> None:
    with_scores = [(e.start, e.end, e.label_) for e in trained_nlp(TEXT).ents]
    scoring.confidence = False
    assert [(e.start, e.end, e.label_) for e in trained_nlp(TEXT).ents] == with_scores


def test_collect_scores_prefers_the_owner_then_a_whole_copy() -> None:
    from spacy_bilstm_crf.prediction.plan import WindowScores, _collect_scores

    # Two windows of a 20-character doc, cut at 10 with an overlap of 4.
    plan = [Window(0, 14, 0, 10), Window(6, 20, 10, 20)]
    first = WindowScores(
        spans=[(2, 4, 0), (8, 14, 1)],  # (8, 14) touches the first window's cut edge
        scores=numpy.array([0.9, 0.2]),
        candidates=[(3, 5, 0, 0.5)],
    )
    second = WindowScores(
        spans=[(2, 6, 1), (7, 10, 0)],  # doc (8, 12): starts in the first window's part; (13, 16) its own
        scores=numpy.array([0.7, 0.6]),
        candidates=[(13, 16, 0, 0.6), (15, 17, 1, 0.3)],
    )
    prediction = DocPrediction(numpy.zeros(20, dtype="int64"), [(2, 4, 0), (8, 12, 1), (13, 16, 0)])
    _collect_scores(prediction, plan, [first, second])
    # (8, 12): the owner (first window) decoded (8, 14), not it; the second decoded it whole.
    assert prediction.scores.tolist() == [0.9, 0.7, 0.6]
    assert prediction.candidates == [(3, 5, 0, 0.5), (15, 17, 1, 0.3)]
