"""Long texts: windows, stitching and length batches (``windows.py``), and the pipe on long docs."""
import itertools
import random

import numpy
import pytest
import spacy

from spacy_bilstm_crf.prediction.windows import Window, length_batches, plan_windows, stitch_spans

from .conftest import TRAIN_DATA, ents_of


def cps(text: str) -> numpy.ndarray:
    return numpy.array([ord(c) for c in text], dtype="int64")


def test_short_sequence_is_one_window() -> None:
    assert plan_windows(cps("马云在杭州"), size=8, overlap=2) == [Window(0, 5, 0, 5)]
    assert plan_windows(cps(""), size=8, overlap=2) == [Window(0, 0, 0, 0)]


@pytest.mark.parametrize("seed", range(20))
def test_windows_tile_the_sequence_within_size(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "的一是在不了有和人这中大为上个国我以要他。，！ 、"
    n = rng.randint(1, 400)
    text = "".join(rng.choice(alphabet) for _ in range(n))
    size, overlap = rng.randint(10, 60), rng.randint(0, 4)
    windows = plan_windows(cps(text), size, overlap)
    assert windows[0].own_start == 0 and windows[-1].own_end == n
    for a, b in zip(windows, windows[1:]):
        assert a.own_end == b.own_start
    for w in windows:
        assert w.end - w.start <= size and w.own_end > w.own_start
        assert w.start == max(0, w.own_start - overlap) and w.end == min(n, w.own_end + overlap)


@pytest.mark.parametrize("seed", range(5))
def test_plan_and_stitch_take_plain_python_sequences(seed: int) -> None:
    """The exported tagger (torch only, no numpy) plans on lists of code points: the same
    windows as on the pipeline's numpy arrays."""
    rng = random.Random(seed)
    text = "".join(rng.choice("的一是在。，！ 、\n") for _ in range(rng.randint(100, 400)))
    size, overlap = rng.randint(10, 40), rng.randint(0, 4)
    windows = plan_windows([ord(c) for c in text], size, overlap)
    assert windows == plan_windows(cps(text), size, overlap)
    spans = [[(0, 2, 1), (w.end - w.start - 2, w.end - w.start, 0)] for w in windows]
    stitched = stitch_spans(windows, spans, len(text))
    assert stitched == sorted(stitched) and stitched
    assert all(a[1] <= b[0] for a, b in zip(stitched, stitched[1:]))  # never overlapping


def test_cuts_prefer_sentence_ends_then_commas() -> None:
    text = "甲" * 30 + "。" + "乙" * 10 + "，" + "丙" * 40
    windows = plan_windows(cps(text), size=50, overlap=2)
    assert windows[0].own_end == 31  # just after 。 (a comma is later, a sentence end wins)
    text = "甲" * 35 + "，" + "丙" * 40
    assert plan_windows(cps(text), size=50, overlap=2)[0].own_end == 36
    text = "甲" * 100  # no break at all: cut at the longest owned part
    assert plan_windows(cps(text), size=50, overlap=2)[0].own_end == 46


def test_stitch_keeps_an_entity_on_a_cut_and_drops_truncated_copies() -> None:
    # Sequence of 20: window 0 owns [0, 10) and sees [0, 13); window 1 owns [10, 20), sees [7, 20).
    windows = [Window(0, 13, 0, 10), Window(7, 20, 10, 20)]
    spans = [
        [(1, 3, 0), (8, 13, 1)],  # (8, 13) touches the cut edge 13: maybe truncated
        [(1, 5, 1), (5, 7, 2)],  # = (8, 12) and (12, 14) in the sequence
    ]
    assert stitch_spans(windows, spans, 20) == [(1, 3, 0), (8, 12, 1), (12, 14, 2)]


def test_stitch_prefers_the_owning_window_and_never_overlaps() -> None:
    windows = [Window(0, 13, 0, 10), Window(7, 20, 10, 20)]
    # Window 0 owns an entity crossing the cut; window 1 sees a different one over it.
    spans = [[(8, 12, 0)], [(2, 6, 1), (8, 10, 2)]]  # (9, 13) overlaps (8, 12); (15, 17) is free
    assert stitch_spans(windows, spans, 20) == [(8, 12, 0), (15, 17, 2)]


def test_length_batches_bound_the_padded_size() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(0, 300) for _ in range(500)]
    groups = length_batches(lengths, max_tokens=2000)
    assert sorted(itertools.chain.from_iterable(groups)) == list(range(500))
    for group in groups:
        assert len(group) == 1 or max(lengths[i] for i in group) * len(group) <= 2000
    assert length_batches([5000, 3], max_tokens=100) == [[0], [1]]


def test_length_batches_cut_where_padding_would_fill_a_group() -> None:
    """min_fill: past its first min_group sequences, a group takes no sequence shorter
    than that fraction of its longest (an exported graph runs every padded position)."""
    rng = random.Random(1)
    lengths = [rng.randint(1, 60) for _ in range(400)]
    groups = length_batches(lengths, max_tokens=40000, min_fill=0.9, min_group=8)
    assert sorted(itertools.chain.from_iterable(groups)) == list(range(400))
    assert len(groups) > 1  # all 400 fit max_tokens: only min_fill cuts them
    for group in groups:
        longest = lengths[group[0]]
        assert all(lengths[i] <= longest for i in group)
        assert all(lengths[i] >= 0.9 * longest for i in group[8:])
    # Without min_fill, one group: the padded size alone bounds it.
    assert len(length_batches(lengths, max_tokens=40000)) == 1
    assert length_batches([10, 9, 5, 4], max_tokens=100, min_fill=0.8, min_group=1) == [[0, 1], [2, 3]]


def test_long_doc_gets_the_stitched_entities_of_its_windows(trained_nlp) -> None:
    """A long doc's entities are those of its windows, each tagged on its own, stitched;
    and nearly all of them are those its sentences get alone."""
    ner = trained_nlp.get_pipe("bilstm_crf_ner")
    sentences = [text + "。" for text, _ in TRAIN_DATA] * 12
    old = (ner.window_size, ner.window_overlap, ner.batch_chars)
    ner.window_size, ner.window_overlap = 64, 12  # many windows, cut at the 。
    try:
        doc = trained_nlp("".join(sentences))
        windows = plan_windows(cps(doc.text), 64, 12)
        window_tags = [ner.predict([trained_nlp.make_doc(doc.text[w.start : w.end])])[0].tags for w in windows]
    finally:
        ner.window_size, ner.window_overlap, _ = old
    assert len(doc) > 10 * 64 and len(windows) > 10
    assert all(w.own_end == w.start + doc.text[w.start : w.end].index("。", w.own_end - w.start - 1) + 1
               for w in windows[:-1])  # every cut right after a 。
    spans = stitch_spans(windows, [ner.scheme.tags_to_spans(t) for t in window_tags], len(doc))
    assert ents_of(doc) == [(s, e, ner.labels[label]) for s, e, label in spans]
    assert ner.scheme.is_valid(list(ner.predict([doc])[0].tags))
    # Against the doc tagged as one sequence (what the component did before windows):
    # nearly the same entities, the context cut off by a window being far away.
    ner.window_size = ner.batch_chars = len(doc) + 1
    try:
        whole = set(ents_of(trained_nlp(doc.text)))
    finally:
        ner.window_size, ner.window_overlap, ner.batch_chars = old
    found = set(ents_of(doc))
    assert len(found & whole) >= 0.9 * max(len(whole), len(found)), (len(found & whole), len(whole), len(found))


def test_a_long_doc_does_not_change_its_batch(trained_nlp) -> None:
    texts = [text for text, _ in TRAIN_DATA]
    alone = [ents_of(doc) for doc in trained_nlp.pipe(texts)]
    mixed = list(trained_nlp.pipe(texts + ["今天天气很好。" * 400]))
    assert [ents_of(doc) for doc in mixed[: len(texts)]] == alone


def test_window_settings_are_validated() -> None:
    nlp = spacy.blank("zh")
    with pytest.raises(ValueError, match="window_size"):
        nlp.add_pipe("bilstm_crf_ner", config={"window_size": 10, "window_overlap": 5})
