"""Character spans → a tokenized Doc with its entities, dropping what cannot be kept."""
from typing import List, Sequence, Set, Tuple

from spacy.language import Language
from spacy.tokens import Doc, Span

from .stats import CorpusStats

# A character-level entity: (start, end_exclusive, label).
CharSpan = Tuple[int, int, str]


def resolve_overlaps(spans: Sequence[CharSpan]) -> Tuple[List[CharSpan], List[CharSpan]]:
    """Keep the longest spans; ties go to the earliest start, then to input order.

    spans (Sequence[CharSpan]): ``(start, end_exclusive, label)`` triples.
    RETURNS (Tuple[List[CharSpan], List[CharSpan]]): Kept spans sorted by start, and
        the dropped ones in input order.
    """
    order = sorted(range(len(spans)), key=lambda i: (spans[i][0] - spans[i][1], spans[i][0], i))
    taken: List[CharSpan] = []
    dropped_ids: Set[int] = set()
    for i in order:
        start, end, _ = spans[i]
        if any(start < t_end and t_start < end for t_start, t_end, _ in taken):
            dropped_ids.add(i)
        else:
            taken.append(spans[i])
    dropped = [spans[i] for i in range(len(spans)) if i in dropped_ids]
    return sorted(taken), dropped


def mention(text: str, start: int, end: int, label: str) -> str:
    """RETURNS (str): ``label 'surface' [start, end_inclusive]``, for messages (CLUE's own notation)."""
    return f"{label} {text[start:end]!r} [{start}, {end - 1}]"


def make_doc(
    nlp: Language, text: str, spans: Sequence[CharSpan], stats: CorpusStats, where: str
) -> Doc:
    """Tokenize a text and set its entities, dropping (and counting) those that
    are misaligned with the tokens, duplicated or overlapping.

    nlp (Language): Provides the tokenizer (``make_doc``).
    text (str): The record's text.
    spans (Sequence[CharSpan]): Candidate entities, already range/surface checked.
    stats (CorpusStats): Receives the drop counts and the kept-entity counts.
    where (str): ``"file, line N"``, for the example messages.
    RETURNS (Doc): The doc, with ``doc.ents`` set and all other tokens ``O``.
    """
    doc = nlp.make_doc(text)
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
