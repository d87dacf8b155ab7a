"""LAC-full's segmenter against a brute-force best path, and the mixed sequence it feeds LAC-full."""
import math
import random
from typing import Dict, List, Tuple

import pytest

from spacy_bilstm_crf.network.lac.segmenter import BEGIN, END, MIDDLE, SINGLE, UnigramSegmenter, mixed_sequence
from spacy_bilstm_crf.network.lac.word_vectors import LACVocab


def all_segmentations(n: int) -> List[List[Tuple[int, int]]]:
    """Every way to cut n characters into tokens, as (start, end) spans."""
    if n == 0:
        return [[]]
    out = []
    for first in range(1, n + 1):
        for rest in all_segmentations(n - first):
            out.append([(0, first)] + [(s + first, e + first) for s, e in rest])
    return out


def brute_force(text: str, counts: Dict[str, int], scoring: str) -> Tuple[float, List[Tuple[int, int]]]:
    """The best segmentation by enumeration, from the definition rather than the code.

    A token must be a dictionary word or a single character; its weight is its count
    ("counts") or its length ("lac"), 1 for a character outside the dictionary; the
    score is the sum of log(weight) - log(total), added from the last token (as LAC
    adds them, so that its float rounding, which decides near-ties, is the same).
    Among the best paths, the one whose tokens end latest, first token first, wins.
    """
    log_total = math.log(sum(counts.values()))
    scored = []
    for spans in all_segmentations(len(text)):
        tokens = [text[s:e] for s, e in spans]
        if any(len(t) > 1 and t not in counts for t in tokens):
            continue
        weights = [(len(t) if scoring == "lac" else counts[t]) if t in counts else 1 for t in tokens]
        score = 0.0
        for weight in reversed(weights):
            score = (math.log(weight) - log_total) + score
        scored.append((score, spans))
    best = max(score for score, _ in scored)
    ties = [spans for score, spans in scored if score == best]
    return best, max(ties, key=lambda spans: [e for _, e in spans])


def random_case(rng: random.Random, alphabet: str = "abcde") -> Tuple[str, Dict[str, int]]:
    words = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 12))}
    counts = {w: rng.choice([1, 2, 3, 5, 8, 100, 1000]) for w in words}
    text = "".join(rng.choice(alphabet + "xy") for _ in range(rng.randint(1, 10)))
    return text, counts


@pytest.mark.parametrize("scoring", ["lac", "counts"])
def test_best_path_equals_brute_force(scoring):
    rng = random.Random(7)
    for case in range(300):
        text, counts = random_case(rng)
        segmenter = UnigramSegmenter(counts, scoring=scoring, merge_alnum=False)
        score, spans = segmenter.best_path(text)
        best, expected = brute_force(text, counts, scoring)
        assert score == best, (case, text, counts)
        assert spans == expected, (case, text, counts)
        assert "".join(segmenter.cut(text)) == text


def test_scorings_differ_as_documented():
    counts = {"abc": 1000, "ab": 1, "cd": 1}
    # LAC weighs a word by its length, whatever its count: ab·cd (2 × 2) beats abc·d (3 × 1).
    assert UnigramSegmenter(counts, "lac").cut("abcd") == ["ab", "cd"]
    # jieba weighs by count: the frequent "abc" and a character win.
    assert UnigramSegmenter(counts, "counts").cut("abcd") == ["abc", "d"]
    # Fewer tokens win under LAC's scoring: each costs log(total), far more than log(length).
    assert UnigramSegmenter({"abc": 1, "ab": 1000, "bc": 1000}, "lac").cut("abcd") == ["abc", "d"]


def test_ties_go_to_the_longer_first_word():
    # "lac": ab+c and a+bc both score log 2 + 0 - 2 log T; LAC takes the larger end first.
    assert UnigramSegmenter({"ab": 5, "bc": 5}, "lac").cut("abc") == ["ab", "c"]


def test_characters_outside_the_dictionary_are_single_tokens():
    segmenter = UnigramSegmenter({"北京": 10, "大学": 10})
    assert segmenter.cut("我在北京大学") == ["我", "在", "北京", "大学"]
    assert segmenter.cut("") == []


def test_ascii_runs_are_joined_as_lac_does():
    segmenter = UnigramSegmenter({"北京": 10, "Ab": 3})
    # Single letters and digits join; a dictionary word ("Ab") and other characters break a run.
    assert segmenter.cut("LAC2在北京x") == ["LAC2", "在", "北京", "x"]
    assert segmenter.cut("12Ab34") == ["12", "Ab", "34"]
    assert segmenter.cut("a b") == ["a", " ", "b"]
    assert segmenter.cut("ＡＢ") == ["Ａ", "Ｂ"]  # full-width letters are not ASCII: LAC keeps them apart
    assert UnigramSegmenter({"北京": 10}, "counts").cut("ab") == ["a", "b"]  # jieba's scoring: no joining


def test_bad_dictionary_and_scoring():
    with pytest.raises(ValueError, match="scoring must be one of"):
        UnigramSegmenter({"ab": 1}, scoring="jieba")
    with pytest.raises(ValueError, match="count >= 1"):
        UnigramSegmenter({"ab": 0})


VOCAB = LACVocab(
    ids={" ": 0, "我": 1, "在": 2, "北": 3, "京": 4, "大": 5, "学": 6, "万": 7, "A": 8,
         "北京": 9, "北京大学": 10, "2019": 11, "OOV": 12},
    q2b={"萬": "万", "Ａ": "A"},
)  # fmt: skip


def test_mixed_sequence_words_and_characters():
    # "北京" is a segmenter word and a vocabulary word: one position; "大学" is a segmenter
    # word LAC lacks: two; "2019" is joined from digits and is a vocabulary word.
    segmenter = UnigramSegmenter({"北京": 10, "大学": 10})
    seq = mixed_sequence("我在北京大学2019", segmenter, VOCAB)
    assert seq.ids == [1, 2, 9, 5, 6, 11]
    assert seq.spans == [(0, 1), (1, 2), (2, 4), (4, 5), (5, 6), (6, 10)]
    assert seq.char_position == [0, 1, 2, 2, 3, 4, 5, 5, 5, 5]
    assert seq.char_place == [SINGLE, SINGLE, BEGIN, END, SINGLE, SINGLE, BEGIN, MIDDLE, MIDDLE, END]


def test_mixed_sequence_reads_characters_through_q2b():
    # Characters pass q2b before the lookup; ones LAC lacks get OOV; "北京大学" is in the
    # vocabulary but not a segmenter word, so LAC never reads it as one.
    seq = mixed_sequence("萬Ａ北京大学？", UnigramSegmenter({"北京": 10}), VOCAB)
    assert seq.ids == [7, 8, 9, 5, 6, 12]
    assert len(seq.char_position) == len(seq.char_place) == 7


@pytest.mark.parametrize("seed", range(5))
def test_mixed_sequence_maps_every_character_once(seed):
    rng = random.Random(seed)
    text, counts = random_case(rng, alphabet="北京大学在")
    vocab = LACVocab({**{c: i for i, c in enumerate("北京大学在xy")}, **{w: 100 + i for i, w in enumerate(counts)},
                      "OOV": 99}, {})  # fmt: skip
    seq = mixed_sequence(text, UnigramSegmenter(counts), vocab)
    assert "".join(text[s:e] for s, e in seq.spans) == text
    for char, (position, place) in enumerate(zip(seq.char_position, seq.char_place)):
        start, end = seq.spans[position]
        assert start <= char < end
        expected = SINGLE if end - start == 1 else BEGIN if char == start else END if char == end - 1 else MIDDLE
        assert place == expected
