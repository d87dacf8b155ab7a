"""Character spans → a tokenized Doc with its entities, dropping what cannot be kept."""
from typing import List, Sequence, Set, Tuple

from spacy.lang.zh import ChineseTokenizer, Segmenter
from spacy.language import Language
from spacy.tokens import Doc, Span

from ..features.tokenizer import words_and_spaces
from .stats import CorpusStats

# A character-level entity: (start, end_exclusive, label).
CharSpan = Tuple[int, int, str]


class _Coverage:
    """Which of the segments between consecutive span boundaries are covered by a
    kept span, as a Fenwick tree: a range query and a segment update take
    O(log n). Kept spans do not overlap, so each segment is covered at most once.

    bounds (Sequence[int]): Every start and end of the spans, sorted, unique.
    """

    def __init__(self, bounds: Sequence[int]) -> None:
        self._index = {bound: i for i, bound in enumerate(bounds)}
        self._tree = [0] * (len(bounds) + 1)

    def _covered_before(self, segment: int) -> int:
        # How many of the segments 0 .. segment - 1 are covered.
        total = 0
        while segment > 0:
            total += self._tree[segment]
            segment -= segment & -segment
        return total

    def any_covered(self, start: int, end: int) -> bool:
        """RETURNS (bool): Whether a kept span overlaps ``[start, end)``."""
        return self._covered_before(self._index[end]) > self._covered_before(self._index[start])

    def cover(self, start: int, end: int) -> None:
        """Mark ``[start, end)`` as kept; it must not overlap a kept span."""
        for segment in range(self._index[start], self._index[end]):
            node = segment + 1
            while node < len(self._tree):
                self._tree[node] += 1
                node += node & -node


def resolve_overlaps(spans: Sequence[CharSpan]) -> Tuple[List[CharSpan], List[CharSpan]]:
    """Keep the longest spans; ties go to the earliest start, then to input order.

    Spans are taken greedily in that order, each kept unless it overlaps one kept
    before. Overlap is checked against the kept spans' coverage of the segments
    between span boundaries, so n spans take O(n log n) time (checking every
    kept span instead took O(n²): 40,000 entities of one record took 48 s).

    spans (Sequence[CharSpan]): ``(start, end_exclusive, label)`` triples, each
        non-empty (``start < end``).
    RETURNS (Tuple[List[CharSpan], List[CharSpan]]): Kept spans sorted by start, and
        the dropped ones in input order.
    RAISES (ValueError): A span is empty or reversed.
    """
    for start, end, label in spans:
        if not start < end:
            raise ValueError(f"span ({start}, {end}, {label!r}) is empty: its start must be before its end")
    order = sorted(range(len(spans)), key=lambda i: (spans[i][0] - spans[i][1], spans[i][0], i))
    coverage = _Coverage(sorted({bound for start, end, _ in spans for bound in (start, end)}))
    taken: List[CharSpan] = []
    dropped_ids: Set[int] = set()
    for i in order:
        start, end, _ = spans[i]
        if coverage.any_covered(start, end):
            dropped_ids.add(i)
        else:
            coverage.cover(start, end)
            taken.append(spans[i])
    dropped = [spans[i] for i in range(len(spans)) if i in dropped_ids]
    return sorted(taken), dropped


def tokenize(nlp: Language, text: str) -> Doc:
    """Tokenize a record's text, whatever its length.

    The tokenizer itself, not ``nlp.make_doc``: make_doc refuses texts over
    ``nlp.max_length`` (1,000,000 characters, spaCy's E088), a guard for the
    memory of parsers. A corpus record of any length is converted (the component
    tags long texts in windows); the reader holds one record at a time anyway.
    Chinese character segmentation (``spacy.blank("zh")``) is done here in linear
    time, with the same tokens as spaCy's (``features.tokenizer.words_and_spaces``).

    nlp (Language): Provides the tokenizer.
    text (str): The text.
    RETURNS (Doc): The tokenized doc.
    """
    tokenizer = nlp.tokenizer
    if type(tokenizer) is ChineseTokenizer and tokenizer.segmenter == Segmenter.char:
        words, spaces = words_and_spaces(list(text), text)
        return Doc(tokenizer.vocab, words=words, spaces=spaces)
    return tokenizer(text)


def mention(text: str, start: int, end: int, label: str) -> str:
    """RETURNS (str): ``label 'surface' [start, end_inclusive]``, for messages (CLUE's own notation)."""
    return f"{label} {text[start:end]!r} [{start}, {end - 1}]"


def make_doc(
    nlp: Language, text: str, spans: Sequence[CharSpan], stats: CorpusStats, where: str
) -> Doc:
    """Tokenize a text and set its entities, dropping (and counting) those that
    are misaligned with the tokens, duplicated or overlapping.

    nlp (Language): Provides the tokenizer (its ``max_length`` does not apply).
    text (str): The record's text.
    spans (Sequence[CharSpan]): Candidate entities, already range/surface checked.
    stats (CorpusStats): Receives the drop counts and the kept-entity counts.
    where (str): ``"file, line N"``, for the example messages.
    RETURNS (Doc): The doc, with ``doc.ents`` set and all other tokens ``O``.
    """
    doc = tokenize(nlp, text)
    aligned: List[CharSpan] = []
    seen: Set[CharSpan] = set()
    for start, end, label in spans:
        # Strict alignment: a span must start and end on token boundaries, so an
        # entity that begins or ends on a whitespace character is not representable.
        if doc.char_span(start, end, label=label) is None:
            stats.drop("misaligned", f"{where}: {mention(text, start, end, label)} is not on token boundaries")
        elif (start, end, label) in seen:
            stats.drop("duplicate", f"{where}: {mention(text, start, end, label)} is listed twice")
        else:
            seen.add((start, end, label))
            aligned.append((start, end, label))
    kept, dropped = resolve_overlaps(aligned)
    for start, end, label in dropped:
        stats.drop("overlap", f"{where}: {mention(text, start, end, label)} overlaps a longer or earlier entity")
    ents: List[Span] = [doc.char_span(start, end, label=label) for start, end, label in kept]
    # default="outside": the doc is fully annotated, every non-entity token is O.
    doc.set_ents(ents, default="outside")
    stats.entities_kept += len(ents)
    stats.labels.update(label for _, _, label in kept)
    return doc
