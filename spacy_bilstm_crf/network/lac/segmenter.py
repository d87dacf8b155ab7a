"""LAC-full's segmenter and the mixed word/character sequence its network reads.

A unigram word graph (DAG) over a dictionary, as jieba's: every dictionary word
that occurs in the text is an edge, every character is an edge of its own; the
path with the highest sum of ``log(weight) - log(total)`` wins, ``total`` being the
sum of the dictionary's counts and characters outside any word weighing 1. At each
position, among equally good continuations, the longer word wins (LAC and jieba
both take ``max`` over ``(score, end)``).

``scoring="lac"`` reproduces LAC 2.1.2's ``Segment.fast_cut``, which its network
was trained and runs on: LAC stores each word's *length* where the count belongs
(``TriedTree.add_word``), so a word weighs its length and the counts only set the
total; the path with the fewest tokens wins, ties going to longer words. It then
joins runs of single ASCII letters and digits into one token (``"LAC2"``), so
numbers and Latin words can match the vocabulary's ``2019`` or ``iPhone``.
``scoring="counts"`` weighs each word by its count, as jieba does.

:func:`mixed_sequence` turns the tokens into what LAC-full reads: each vocabulary
word one position, every other character a position of its own; it keeps each
position's characters and each character's place in its position (B/M/E/S).
"""
import math
from dataclasses import dataclass
from typing import List, Mapping, Optional, Tuple

from .word_vectors import LACVocab

SCORINGS = ("lac", "counts")
# A character's place in its position of the mixed sequence.
BEGIN, MIDDLE, END, SINGLE = 0, 1, 2, 3

Span = Tuple[int, int]


def _is_ascii_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


class UnigramSegmenter:
    """Maximum-probability segmentation over a word graph.

    counts (Mapping[str, int]): Dictionary words (``small_seg.dic``) and their counts.
    scoring (str): ``"lac"`` (LAC 2.1.2's own, see the module) or ``"counts"`` (jieba's).
    merge_alnum (Optional[bool]): Join runs of single ASCII letters and digits (LAC does). By
        default on with ``"lac"`` and off with ``"counts"``.
    """

    def __init__(self, counts: Mapping[str, int], scoring: str = "lac", merge_alnum: Optional[bool] = None) -> None:
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        bad = [(word, count) for word, count in counts.items() if not word or count < 1]
        if bad:
            raise ValueError(f"dictionary words need a count >= 1, got {bad[:3]}")
        total = sum(counts.values())
        self.scoring = scoring
        self.merge_alnum = scoring == "lac" if merge_alnum is None else merge_alnum
        self.log_total = math.log(total) if total else 0.0
        self.max_len = max((len(word) for word in counts), default=1)
        self.scores = {word: self._log_weight(word, count) - self.log_total for word, count in counts.items()}
        # A character that is not a word weighs 1 (LAC and jieba: ``log(... or 1)``).
        self.char_score = -self.log_total

    def _log_weight(self, word: str, count: int) -> float:
        return math.log(len(word) if self.scoring == "lac" else count)

    def best_path(self, text: str) -> Tuple[float, List[Span]]:
        """RETURNS (Tuple[float, List[Span]]): the best path's score and its (start, end) spans,
            before ASCII runs are joined.
        """
        n = len(text)
        scores, char_score, max_len = self.scores, self.char_score, self.max_len
        # best[i]: the best score of text[i:], from the right; ends[i]: the end of its first
        # token. (score, end) pairs compare as LAC's ``max``: on equal scores the later end.
        best, ends = [0.0] * (n + 1), [0] * (n + 1)
        for start in range(n - 1, -1, -1):
            top = (scores.get(text[start], char_score) + best[start + 1], start + 1)
            for end in range(start + 2, min(n, start + max_len) + 1):
                score = scores.get(text[start:end])
                if score is not None and (score + best[end], end) > top:
                    top = (score + best[end], end)
            best[start], ends[start] = top
        spans, start = [], 0
        while start < n:
            spans.append((start, ends[start]))
            start = ends[start]
        return best[0], spans

    def cut_spans(self, text: str) -> List[Span]:
        """RETURNS (List[Span]): the tokens of ``text`` as (start, end) character offsets."""
        spans = self.best_path(text)[1]
        return _merge_alnum(text, spans) if self.merge_alnum else spans

    def cut(self, text: str) -> List[str]:
        """RETURNS (List[str]): the tokens of ``text``; they join back to it."""
        return [text[start:end] for start, end in self.cut_spans(text)]


def _merge_alnum(text: str, spans: List[Span]) -> List[Span]:
    """Join consecutive single-character tokens that are ASCII letters or digits."""
    out: List[Span] = []
    joinable = False  # whether out[-1] is such a run
    for start, end in spans:
        single = end - start == 1 and _is_ascii_alnum(text[start])
        if single and joinable:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
        joinable = single
    return out


@dataclass
class MixedSequence:
    """A text as LAC-full reads it.

    ids (List[int]): One vocabulary id per position.
    spans (List[Span]): Each position's characters as (start, end) offsets in the text.
    char_position (List[int]): Per character, the index of its position in ``ids``.
    char_place (List[int]): Per character, its place in its position: ``BEGIN``,
        ``MIDDLE``, ``END`` (a word's characters) or ``SINGLE`` (a position of one character).
    """

    ids: List[int]
    spans: List[Span]
    char_position: List[int]
    char_place: List[int]


def mixed_sequence(text: str, segmenter: UnigramSegmenter, vocab: LACVocab) -> MixedSequence:
    """The positions LAC-full reads for ``text`` (LAC's ``Model.texts2tensor``).

    A token of the segmenter that is a vocabulary word is one position; any other
    token is split into its characters, one position each.
    RETURNS (MixedSequence): The ids and the map between positions and characters.
    """
    ids: List[int] = []
    spans: List[Span] = []
    char_position: List[int] = []
    char_place: List[int] = []
    for start, end in segmenter.cut_spans(text):
        token = text[start:end]
        if vocab.is_word(token):
            char_position.extend([len(ids)] * (end - start))
            char_place.extend([BEGIN] + [MIDDLE] * (end - start - 2) + [END])
            ids.append(vocab.ids[token])
            spans.append((start, end))
            continue
        for offset, char in enumerate(token):
            char_position.append(len(ids))
            char_place.append(SINGLE)
            ids.append(vocab.char_id(char))
            spans.append((start + offset, start + offset + 1))
    return MixedSequence(ids, spans, char_position, char_place)
