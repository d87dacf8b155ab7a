"""Long texts as overlapping windows, and batches of similar length.

A BiLSTM-CRF's memory grows with the longest sequence of a batch times the
batch size, and everything in a batch is padded to its longest sequence. So a
long text is cut into windows, preferably just after sentence punctuation
(else after a comma or whitespace), each window extended by an overlap on both
sides so that an entity on a cut is seen whole by some window; the windows'
entities are stitched back into one non-overlapping set; and the sequences of a
batch are sorted by length and run in groups of bounded padded size.

Plain Python, standard library only: the spaCy component (``pipe.py``) and the
exported tagger (``serving/tagger.py``, which runs with torch alone and may be copied
next to an export together with this file) cut and stitch with this one code,
so both find the same entities in a long text.
"""
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

# Where a cut is best: right after the end of a sentence, then after a clause
# separator or whitespace (code points, full- and half-width forms).
_STRONG_BREAKS = frozenset(ord(c) for c in "。！？!?；;…\n\r")
_WEAK_BREAKS = _STRONG_BREAKS | frozenset(ord(c) for c in "，,、：:）)」』》 \t\u3000")

Span = Tuple[int, int, int]  # (start, end exclusive, label id), in token offsets


@dataclass(frozen=True)
class Window:
    """A slice ``[start, end)`` of a sequence that owns ``[own_start, own_end)``.

    start (int): First token of the window (the overlap before its own part included).
    end (int): End of the window (exclusive).
    own_start (int): First token this window decides entities for.
    own_end (int): End of the part it decides for (exclusive).
    """

    start: int
    end: int
    own_start: int
    own_end: int


def plan_windows(codepoints: Sequence[int], size: int, overlap: int) -> List[Window]:
    """Cut a sequence into windows of at most ``size`` tokens.

    A sequence of at most ``size`` tokens is one window. Otherwise the owned parts
    have at most ``size - 2 * overlap`` tokens each, and each window adds up to
    ``overlap`` tokens of context on both sides.

    codepoints (Sequence[int]): The code point of each token (a list, an
        ``array``, a numpy array: anything with ``len`` and, for a long sequence,
        ``tolist`` or iteration).
    size (int): Longest window.
    overlap (int): Context added on each side of a window's own part.
    RETURNS (List[Window]): The windows, in order; their own parts tile the sequence.
    """
    n = len(codepoints)
    if n <= size:
        return [Window(0, n, 0, n)]
    core = size - 2 * overlap
    if core < 2:
        raise ValueError(f"A window of {size} tokens leaves no room for an overlap of {overlap} on each side.")
    # Plain ints: indexing a numpy array element by element would cost more than the copy.
    points = codepoints.tolist() if hasattr(codepoints, "tolist") else list(codepoints)
    cuts = [0]
    while n - cuts[-1] > core:
        start = cuts[-1]
        # Cut after the last break in the second half of the owned part, so parts
        # stay at least half as long as they may be.
        lo, hi = start + core // 2, start + core
        cut = _last_break(points, lo - 1, hi, _STRONG_BREAKS)
        if cut is None:
            cut = _last_break(points, lo - 1, hi, _WEAK_BREAKS)
        cuts.append(hi if cut is None else cut)
    cuts.append(n)
    return [
        Window(max(0, a - overlap), min(n, b + overlap), a, b) for a, b in zip(cuts[:-1], cuts[1:])
    ]


def _last_break(points: List[int], lo: int, hi: int, breaks: frozenset) -> Optional[int]:
    """RETURNS (Optional[int]): The position right after the last of ``points[lo:hi]``
    that is in ``breaks``, or None."""
    for i in range(hi - 1, lo - 1, -1):
        if points[i] in breaks:
            return i + 1
    return None


def stitch_spans(windows: Sequence[Window], spans: Sequence[Iterable[Span]], length: int) -> List[Span]:
    """Combine the entities found in each window into the sequence's entities.

    An entity that touches a window's edge where the window was cut may be
    truncated, so it is not used. A window decides the entities that start in its
    own part; entities from the overlaps fill in where those leave room (e.g. an
    entity that crosses a cut). The result never overlaps.

    windows (Sequence[Window]): The windows, from ``plan_windows``.
    spans (Sequence[Iterable[Span]]): Each window's entities, offsets relative to the window.
    length (int): The sequence's length.
    RETURNS (List[Span]): The entities, sorted, offsets in the whole sequence.
    """
    owned: List[Span] = []
    others: List[Span] = []
    for window, window_spans in zip(windows, spans):
        for start, end, label in window_spans:
            start, end = start + window.start, end + window.start
            cut_before = start == window.start and window.start > 0
            cut_after = end == window.end and window.end < length
            if cut_before or cut_after:
                continue
            is_own = window.own_start <= start < window.own_end
            (owned if is_own else others).append((start, end, label))
    taken = bytearray(length)  # 1 where an entity already lies
    result: List[Span] = []
    for group in (owned, others):
        for start, end, label in sorted(group):
            if taken.find(1, start, end) == -1:
                taken[start:end] = b"\x01" * (end - start)
                result.append((start, end, label))
    return sorted(result)


def length_batches(
    lengths: Sequence[int], max_tokens: int, min_fill: float = 0.0, min_group: int = 1
) -> List[List[int]]:
    """Group sequences by length so that each group's padded size stays bounded.

    lengths (Sequence[int]): The length of each sequence.
    max_tokens (int): Most padded tokens (longest length × group size) in a group;
        a longer sequence goes alone.
    min_fill (float): For a network that runs every padded position (an exported
        graph): a sequence shorter than this fraction of its group's longest starts a
        new group, once that group holds ``min_group`` sequences. 0 keeps groups as
        large as ``max_tokens`` allows (the pipeline skips padding).
    min_group (int): Sequences a group holds before ``min_fill`` may close it (large
        groups keep the matrix products efficient).
    RETURNS (List[List[int]]): Indices of the sequences, grouped, longest first.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: List[List[int]] = []
    for i in order:
        # Sorted longest first: the group's first sequence sets its padded length.
        if groups:
            group, longest = groups[-1], max(lengths[groups[-1][0]], 1)
            fits = longest * (len(group) + 1) <= max_tokens
            too_short = len(group) >= min_group and lengths[i] < min_fill * longest
            if fits and not too_short:
                group.append(i)
                continue
        groups.append([i])
    return groups
