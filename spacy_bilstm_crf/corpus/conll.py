"""Char-per-line (CoNLL-style) files ⇄ Docs: tag sequences decoded, checked or repaired."""
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc

from .docs import CharSpan, make_doc
from .stats import CorpusError, CorpusStats, count_and_convert
from .textio import DEFAULT_ENCODING, iter_lines

# Tag prefixes per scheme. ``I`` and ``M`` both continue an entity.
SCHEME_PREFIXES: Dict[str, Tuple[str, ...]] = {
    "BIO": ("B", "I"),
    "BIOES": ("B", "I", "E", "S"),
    "BMES": ("B", "M", "E", "S"),
}
OUTSIDE = "O"
DOCSTART = "-DOCSTART-"


class TagSequenceError(ValueError):
    """A tag outside the scheme or an invalid tag sequence, at a token position.

    position (int): The token index (``len(tags)`` for the end of the sentence).
    reason (str): ``"bad_tag"`` or ``"invalid_tag_sequence"``.
    detail (str): What is wrong.
    """

    def __init__(self, position: int, reason: str, detail: str) -> None:
        self.position = position
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


def split_tag(tag: str) -> Tuple[str, str]:
    """Split ``"B-PER"`` into ``("B", "PER")``; ``"O"`` gives ``("O", "")``.
    Whitespace around the prefix and the label is stripped.

    tag (str): A tag in ``PREFIX-LABEL`` form.
    RETURNS (Tuple[str, str]): The prefix and the label.
    RAISES (ValueError): If the tag is neither ``O`` nor ``PREFIX-LABEL``.
    """
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, sep, label = tag.partition("-")
    # "B- name" has the label name, as a CLUE label key " name " does.
    prefix, label = prefix.strip(), label.strip()
    if not sep or not label or not prefix:
        raise ValueError(f"tag {tag!r} is neither 'O' nor PREFIX-LABEL")
    return prefix, label


def tags_to_spans(
    tags: Sequence[str], scheme: str = "BIOES", repair: bool = False
) -> Tuple[List[CharSpan], List[Tuple[int, str]]]:
    """Decode one sentence's tags into spans.

    tags (Sequence[str]): One tag per token, e.g. ``["B-PER", "E-PER", "O"]``.
    scheme (str): ``"BIO"``, ``"BIOES"`` or ``"BMES"``.
    repair (bool): Repair invalid sequences (conlleval rule: a stray ``I-``/``M-``/
        ``E-`` starts a new entity; an unclosed BIOES/BMES entity ends at its
        last tag) instead of raising.
    RETURNS (Tuple[List[CharSpan], List[Tuple[int, str]]]): The spans
        ``(start, end_exclusive, label)`` and the repairs ``(position, kind)``,
        kind ``"stray_continuation"`` or ``"unclosed_entity"``.
    RAISES (TagSequenceError): On a tag outside the scheme, or an invalid
        sequence when ``repair`` is False.
    """
    if scheme not in SCHEME_PREFIXES:
        raise ValueError(f"Unknown tag scheme {scheme!r}: use one of {sorted(SCHEME_PREFIXES)}")
    prefixes = SCHEME_PREFIXES[scheme]
    must_close = scheme != "BIO"  # BIOES/BMES entities end with E- or S-.
    spans: List[CharSpan] = []
    repairs: List[Tuple[int, str]] = []
    open_start = -1  # -1: no entity open
    open_label = ""

    def close(position: int) -> None:
        # End the open entity (if any) before ``position``.
        nonlocal open_start
        if open_start < 0:
            return
        if must_close:
            if not repair:
                raise TagSequenceError(
                    position, "invalid_tag_sequence",
                    f"the {open_label} entity started at token {open_start + 1} is not closed by E-/S-",
                )
            repairs.append((position, "unclosed_entity"))
        spans.append((open_start, position, open_label))
        open_start = -1

    for i, tag in enumerate(tags):
        try:
            prefix, label = split_tag(tag)
        except ValueError as err:
            raise TagSequenceError(i, "bad_tag", str(err)) from None
        if prefix != OUTSIDE and prefix not in prefixes:
            raise TagSequenceError(
                i, "bad_tag", f"tag {tag!r} is not in the {scheme} scheme (prefixes {', '.join(prefixes)}, O)"
            )
        if prefix in ("I", "M", "E"):
            if open_start < 0 or label != open_label:
                if not repair:
                    raise TagSequenceError(
                        i, "invalid_tag_sequence", f"tag {tag!r} does not continue an open {label} entity"
                    )
                repairs.append((i, "stray_continuation"))
                close(i)
                open_start, open_label = i, label
            if prefix == "E":
                spans.append((open_start, i + 1, label))
                open_start = -1
        else:  # O, B or S all end whatever is open
            close(i)
            if prefix == "S":
                spans.append((i, i + 1, label))
            elif prefix == "B":
                open_start, open_label = i, label
    close(len(tags))
    return spans, repairs


def spans_to_tags(length: int, spans: Sequence[CharSpan], scheme: str = "BIOES") -> List[str]:
    """Encode non-overlapping spans as tags (the inverse of ``tags_to_spans``).

    length (int): Number of tokens.
    spans (Sequence[CharSpan]): ``(start, end_exclusive, label)`` triples.
    scheme (str): ``"BIO"``, ``"BIOES"`` or ``"BMES"``.
    RETURNS (List[str]): One tag per token.
    """
    inside = "M" if scheme == "BMES" else "I"
    single = scheme != "BIO"
    tags = [OUTSIDE] * length
    for start, end, label in spans:
        if single and end - start == 1:
            tags[start] = f"S-{label}"
            continue
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"{inside}-{label}"
        if single:
            tags[end - 1] = f"E-{label}"
    return tags


def doc_to_conll(doc: Doc, scheme: str = "BIOES") -> str:
    """Write a doc in the char-per-line format (one ``char TAG`` line per non-space
    character, a blank line after the sentence), e.g. to make test fixtures.

    doc (Doc): A doc with entities.
    scheme (str): ``"BIO"``, ``"BIOES"`` or ``"BMES"``.
    RETURNS (str): The lines.
    """
    chars = [(i, c) for i, c in enumerate(doc.text) if not c.isspace()]
    position = {char_i: n for n, (char_i, _) in enumerate(chars)}
    spans = [(position[e.start_char], position[e.end_char - 1] + 1, e.label_) for e in doc.ents]
    tags = spans_to_tags(len(chars), spans, scheme)
    return "".join(f"{c}\t{tag}\n" for (_, c), tag in zip(chars, tags)) + "\n"


# One line of a char-per-line file: (line_no, char, tag).
Row = Tuple[int, str, str]


def _iter_conll_sentences(
    path: Path, encoding: str = DEFAULT_ENCODING
) -> Iterator[Tuple[int, List[Row], Optional[CorpusError]]]:
    """Yield ``(first_line, [(line_no, char, tag)], error)`` per sentence.

    Blank lines separate sentences; ``-DOCSTART-`` lines are ignored. A line is
    ``CHAR TAG`` separated by a tab or by whitespace; whitespace around either
    field is stripped, except that with a tab a CHAR of only whitespace (a
    space character) is kept.
    A malformed line makes its sentence an error, reported once the sentence ends.
    """
    rows: List[Row] = []
    error: Optional[CorpusError] = None
    first = 0
    for line_no, line in iter_lines(path, encoding):
        if not line.strip():
            if rows or error:
                yield first, rows, error
            rows, error = [], None
            continue
        if line.split()[0] == DOCSTART:
            continue
        if not rows and error is None:
            first = line_no
        if "\t" in line:
            raw_char, _, tag = line.rpartition("\t")
            # "马 \tB-name" is the character 马: whitespace around a field is not
            # part of it. Only a field that is all whitespace is kept as written
            # (" \tO" is a space character).
            char = raw_char.strip() or raw_char
            tag = tag.strip()
        else:
            parts = line.split()
            char, tag = (parts[0], parts[1]) if len(parts) == 2 else ("", "")
        if not char or not tag:
            if error is None:
                detail = f"expected 'CHAR TAG', got {line!r}"
                error = CorpusError(path, f"line {line_no}", "bad_line", detail)
            continue
        rows.append((line_no, char, tag))
    if rows or error:
        yield first, rows, error


def conll_sentence_to_doc(
    nlp: Language,
    rows: Sequence[Row],
    path: Path,
    stats: CorpusStats,
    scheme: str = "BIOES",
    labels: Optional[Set[str]] = None,
    repair_tags: bool = False,
) -> Doc:
    """Convert one char-per-line sentence into a Doc.

    The text is the characters joined; entity char offsets come from the tags,
    so a multi-character "char" field is fine as long as spans fall on tokens.

    nlp (Language): Provides the tokenizer.
    rows (Sequence[Tuple[int, str, str]]): ``(line_no, char, tag)`` per line.
    path (Path): The input file, for messages.
    stats (CorpusStats): Receives the entity and repair counts.
    scheme (str): ``"BIO"``, ``"BIOES"`` or ``"BMES"``.
    labels (Optional[Set[str]]): Allowed labels; ``None`` allows all.
    repair_tags (bool): Repair invalid tag sequences instead of raising.
    RETURNS (Doc): The converted doc.
    """
    chars = [char for _, char, _ in rows]
    offsets = [0]
    for char in chars:
        offsets.append(offsets[-1] + len(char))
    text = "".join(chars)
    where = f"{path}, line {rows[0][0]}"
    if not text.strip():
        raise CorpusError(path, f"line {rows[0][0]}", "empty_text", "the sentence is only whitespace")
    try:
        spans, repairs = tags_to_spans([tag for _, _, tag in rows], scheme, repair_tags)
    except TagSequenceError as err:
        # Name the line of the offending tag (the last line for "not closed at the end").
        line_no = rows[min(err.position, len(rows) - 1)][0]
        raise CorpusError(path, f"line {line_no}", err.reason, err.detail) from None
    for position, kind in repairs:
        stats.repaired[kind] += 1
        line_no = rows[min(position, len(rows) - 1)][0]
        stats.note(kind, f"{path}, line {line_no}: repaired ({kind})")
    stats.entities_in += len(spans)
    candidates: List[CharSpan] = []
    for start, end, label in spans:
        if labels is not None and label not in labels:
            surface = text[offsets[start] : offsets[end]]
            stats.unknown_labels[label] += 1
            stats.drop("unknown_label", f"{where}: label {label!r} ({surface!r}) is not in the label set")
        else:
            candidates.append((offsets[start], offsets[end], label))
    return make_doc(nlp, text, candidates, stats, where)


def read_conll(
    path: Union[str, Path],
    nlp: Language,
    stats: CorpusStats,
    scheme: str = "BIOES",
    labels: Optional[Iterable[str]] = None,
    skip_invalid: bool = False,
    repair_tags: bool = False,
    encoding: str = DEFAULT_ENCODING,
) -> Iterator[Doc]:
    """Stream a char-per-line file (``char TAG`` per line, blank line between
    sentences, ``-DOCSTART-`` ignored) as Docs, one per sentence.

    path (Union[str, Path]): The input file.
    nlp (Language): Provides the tokenizer, e.g. ``spacy.blank("zh")``.
    stats (CorpusStats): Receives all counts.
    scheme (str): ``"BIO"``, ``"BIOES"`` or ``"BMES"``.
    labels (Optional[Iterable[str]]): Allowed labels; others are dropped as
        ``unknown_label``. ``None`` allows all.
    skip_invalid (bool): Skip (and count) malformed sentences instead of raising.
    repair_tags (bool): Repair invalid tag sequences (counted) instead of
        treating them as malformed.
    encoding (str): The file's encoding, e.g. ``"gbk"``; a UTF-8 byte order
        mark is skipped.
    YIELDS (Doc): One doc per valid sentence.
    RAISES (InputEncodingError): The file is not in ``encoding`` (even with
        ``skip_invalid``).
    """
    if scheme not in SCHEME_PREFIXES:
        raise ValueError(f"Unknown tag scheme {scheme!r}: use one of {sorted(SCHEME_PREFIXES)}")
    path = Path(path)
    label_set = {label.strip() for label in labels} if labels is not None else None
    yield from count_and_convert(
        _iter_conll_sentences(path, encoding),
        lambda _, rows: conll_sentence_to_doc(
            nlp, rows, path, stats, scheme, label_set, repair_tags
        ),
        stats,
        skip_invalid,
    )
