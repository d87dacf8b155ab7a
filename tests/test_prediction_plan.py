"""The plan of a batch (``prediction/plan.py``): fixed tags per window, and a plan run
on its own gives what the component's ``predict`` gives."""
import numpy
import spacy

from spacy_bilstm_crf.features.chars import doc_chars
from spacy_bilstm_crf.network.tags import TagScheme
from spacy_bilstm_crf.prediction.plan import PredictionPlan, window_constraints, window_presets
from spacy_bilstm_crf.prediction.windows import Window

SCHEME = TagScheme(["name"], "BIOES")  # O B-name I-name E-name S-name


def test_a_window_without_presets_or_whitespace_fixes_nothing() -> None:
    assert window_constraints(None, numpy.zeros(6, dtype=bool), Window(0, 6, 0, 6), SCHEME) is None
    assert window_constraints(None, None, Window(0, 6, 0, 6), SCHEME) is None


def test_whitespace_is_fixed_to_outside_and_a_preset_entity_keeps_its_tags() -> None:
    spaces = numpy.array([False, True, False, False, True, False])
    preset = numpy.array([-1, -1, 1, 2, 3, -1])  # B I E on characters 2-4, one of them a space
    fixed = window_constraints(preset, spaces, Window(0, 6, 0, 6), SCHEME)
    assert fixed.tolist() == [-1, 0, 1, 2, 3, -1]
    assert window_constraints(None, spaces, Window(0, 6, 0, 6), SCHEME).tolist() == [-1, 0, -1, -1, 0, -1]


def test_a_preset_entity_cut_by_a_window_edge_is_outside_in_that_window() -> None:
    preset = numpy.array([1, 2, 2, 3, -1, -1, -1, -1])  # an entity on characters 0-3
    assert window_presets(preset, Window(2, 8, 4, 8), SCHEME).tolist() == [0, 0, -1, -1, -1, -1]
    assert window_presets(preset, Window(0, 3, 0, 3), SCHEME).tolist() == [0, 0, 0]
    assert window_presets(preset, Window(0, 8, 0, 8), SCHEME).tolist() == preset.tolist()


def test_a_plan_run_alone_gives_the_components_entities_and_scores(trained_nlp) -> None:
    ner = trained_nlp.get_pipe("bilstm_crf_ner")
    texts = ["马云在阿里巴巴杭州总部发表演讲", "", "李明去北京大学读书。" * 6]
    docs = [trained_nlp.make_doc(text) for text in texts]
    plan = PredictionPlan(ner.scheme, 24, 4, 60, scored=True, threshold=0.1)
    found = plan.run(ner.model, [doc_chars(doc) for doc in docs], [None] * len(docs))
    saved = (ner.window_size, ner.window_overlap, ner.batch_chars, ner.confidence, ner.threshold)
    try:
        ner.window_size, ner.window_overlap, ner.batch_chars, ner.confidence, ner.threshold = 24, 4, 60, True, 0.1
        assert ner.prediction_plan() == plan
        expected = ner.predict(docs)
    finally:
        ner.window_size, ner.window_overlap, ner.batch_chars, ner.confidence, ner.threshold = saved
    assert [p.spans for p in found] == [p.spans for p in expected]
    assert found[0].spans and found[2].spans and found[1].spans == []
    for ours, theirs in zip(found, expected):
        numpy.testing.assert_allclose(ours.scores, theirs.scores, rtol=1e-5, atol=1e-7)
        assert [c[:3] for c in ours.candidates] == [c[:3] for c in theirs.candidates]


def test_a_batch_of_empty_docs_gives_empty_predictions() -> None:
    chars = [doc_chars(spacy.blank("zh").make_doc(""))]
    for scored in (False, True):
        [empty] = PredictionPlan(SCHEME, 512, 64, 16384, scored=scored).run(None, chars, [None])
        assert empty.spans == [] and len(empty.tags) == 0
        assert (empty.scores is not None) == scored
