"""Tokens ⇄ characters: the network tags characters, whatever the tokenizer.

The network reads one code point per position. Under ``spacy.blank("zh")``'s
character segmenter every token is one character and the mapping is the
identity. Under a word segmenter (jieba, pkuseg) or whitespace tokens
(``spacy.blank("en")``) each token gives all of its characters, in order;
whitespace after a token is not part of any token and is not read (as with
the character segmenter). Character spans found by the network are mapped
back to token spans by a boundary rule.
"""
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy
from spacy.attrs import ENT_IOB, ENT_TYPE, LENGTH, ORTH
from spacy.tokens import Doc

from ..network.tags import Span, TagScheme

BOUNDARY_RULES = ("expand", "contract", "drop")

# ent_iob values (spaCy): 0 missing, 1 inside, 2 outside, 3 begin.
INSIDE, OUTSIDE, BEGIN = 1, 2, 3

# Every code point for which ``str.isspace()`` is True lies at or below U+3000 (the
# ideographic space): a lookup table that size answers for any code point, the ones
# above it being looked up at the first entry past the table's last space.
_SPACE_LIMIT = 0x3001
_IS_SPACE = numpy.array([chr(c).isspace() for c in range(_SPACE_LIMIT + 1)], dtype=bool)


@dataclass
class DocChars:
    """A doc's characters as the network reads them, and where its tokens lie among them.

    codepoints (numpy.ndarray): Int64 (n_chars,) code points.
    token_starts (numpy.ndarray): Int64 (n_tokens,) index of each token's first character.
    token_ends (numpy.ndarray): Int64 (n_tokens,) index after each token's last character.
    """

    codepoints: numpy.ndarray
    token_starts: numpy.ndarray
    token_ends: numpy.ndarray

    @property
    def token_lengths(self) -> numpy.ndarray:
        """RETURNS (numpy.ndarray): Int64 (n_tokens,) the number of characters of each token."""
        return self.token_ends - self.token_starts

    @property
    def one_per_token(self) -> bool:
        """RETURNS (bool): Whether every token is one character (the identity mapping)."""
        return len(self.codepoints) == len(self.token_starts)

    def char_to_token(self) -> numpy.ndarray:
        """RETURNS (numpy.ndarray): Int64 (n_chars,) the token of each character."""
        return numpy.repeat(numpy.arange(len(self.token_starts), dtype="int64"), self.token_lengths)

    def token_spans_to_chars(self, spans: Sequence[Span]) -> List[Span]:
        """Token spans ``(start, end, label)`` → the same spans in characters."""
        if self.one_per_token:
            return list(spans)
        return [(int(self.token_starts[s]), int(self.token_ends[e - 1]), label) for s, e, label in spans]

    def token_mask_to_chars(self, mask: numpy.ndarray) -> numpy.ndarray:
        """A bool per token → a bool per character (each of its characters)."""
        if self.one_per_token:
            return mask
        return numpy.repeat(mask, self.token_lengths)


# Token text by ORTH hash, shared by all docs: a doc's text is its tokens' texts, and
# ``doc.text`` would build a Token object per character to join them. Entries never go
# stale (a hash names one string); the cache is emptied when it grows past its bound.
_TOKEN_TEXT: Dict[int, str] = {}
_TOKEN_TEXT_MAX = 2**18  # ~25 MB of short strings at most


def _token_texts(doc: Doc) -> List[str]:
    """RETURNS (List[str]): The verbatim text of each token, without its whitespace."""
    orths = doc.to_array(ORTH).tolist()
    try:
        return [_TOKEN_TEXT[orth] for orth in orths]
    except KeyError:
        strings = doc.vocab.strings
        texts = [strings[orth] for orth in orths]
        if len(_TOKEN_TEXT) > _TOKEN_TEXT_MAX:
            _TOKEN_TEXT.clear()
        _TOKEN_TEXT.update(zip(orths, texts))
        return texts


def doc_chars(doc: Doc) -> DocChars:
    """The characters of a doc's tokens, without a per-token Python object.

    RETURNS (DocChars): The code points and the token offsets among them.
    """
    if len(doc) == 0:
        empty = numpy.zeros(0, dtype="int64")
        return DocChars(empty, empty, empty)
    text = "".join(_token_texts(doc))
    codepoints = numpy.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype("int64")
    lengths = doc.to_array(LENGTH).astype("int64")
    ends = numpy.cumsum(lengths)
    return DocChars(codepoints, ends - lengths, ends)


def whitespace_mask(codepoints: numpy.ndarray) -> Optional[numpy.ndarray]:
    """Where the characters are whitespace (``str.isspace()``), or None when none is.

    Whitespace is never part of an entity (as in spaCy's ``ner``, which never starts
    or ends one on a whitespace token): the decoder forces these characters to ``O``.
    Under the character segmenter they are the characters of whitespace tokens (a
    newline, a run of spaces); the single space that spaCy keeps after a token as its
    ``whitespace_`` is not read at all.

    codepoints (numpy.ndarray): Int64 code points (``DocChars.codepoints``).
    RETURNS (Optional[numpy.ndarray]): Bool (n_chars,), or None when no character is
        whitespace, so that text without whitespace takes the unconstrained path.
    """
    if len(codepoints) == 0:
        return None
    mask = _IS_SPACE[numpy.minimum(codepoints, _SPACE_LIMIT)]
    return mask if mask.any() else None


def blocked_tokens(doc: Doc) -> numpy.ndarray:
    """RETURNS (numpy.ndarray): Bool per token, True where spaCy marks it blocked: outside
        on purpose (``doc.set_ents(..., blocked=...)``: an entity tag with no label).
    """
    iob_type = doc.to_array([ENT_IOB, ENT_TYPE])
    return numpy.isin(iob_type[:, 0], (BEGIN, INSIDE)) & (iob_type[:, 1] == 0)


def preset_tags(doc: Doc, chars: DocChars, scheme: TagScheme, outside: bool = False) -> Optional[numpy.ndarray]:
    """The tags already fixed on a doc's characters, or None when nothing is fixed.

    Entities already in ``doc.ents`` fix their characters: to their tags when the
    label is known, else to ``O`` (so no predicted entity overlaps them). Tokens
    that spaCy marks as blocked (``doc.set_ents(..., blocked=...)``: outside on
    purpose) are fixed to ``O``. Tokens marked ``O`` are fixed only with ``outside``;
    missing ones stay free.

    doc (Doc): The doc, as earlier components left it.
    chars (DocChars): Its characters.
    scheme (TagScheme): The component's tags.
    outside (bool): Fix the tokens marked ``O`` (``ent_iob == 2``) to ``O`` too.
    RETURNS (Optional[numpy.ndarray]): Int64 (n_chars,): a tag id, or -1 where free.
    """
    if len(doc) == 0 or not doc.has_annotation("ENT_IOB"):  # a fresh doc: nothing set
        return None
    iob = doc.to_array(ENT_IOB)
    fixed_outside = blocked_tokens(doc)
    if outside:
        fixed_outside |= iob == OUTSIDE
    if not ((iob == BEGIN) | (iob == INSIDE)).any() and not fixed_outside.any():
        return None
    forced = numpy.full(len(chars.codepoints), -1, dtype="int64")
    forced[chars.token_mask_to_chars(fixed_outside)] = 0
    index = {label: i for i, label in enumerate(scheme.labels)}
    spans = [(ent.start, ent.end, index.get(ent.label_, -1)) for ent in doc.ents]
    for start, end, label in chars.token_spans_to_chars(spans):
        if label < 0:  # a label the model does not know: no entity of ours may overlap it
            forced[start:end] = 0
        else:
            forced[start:end] = scheme.spans_to_tags(end - start, [(0, end - start, label)])
    return forced


def chars_to_tokens(
    spans: Sequence[Tuple], chars: DocChars, rule: str, counts: Optional[Counter] = None
) -> List[Optional[Tuple[int, int]]]:
    """Map character spans to token spans.

    A span whose ends fall on token boundaries maps exactly. One that cuts a token is
    expanded to the whole tokens it touches (``"expand"``), shrunk to the tokens it
    covers whole (``"contract"``; dropped if none), or dropped (``"drop"``).

    spans (Sequence[Tuple]): ``(start, end, ...)`` in characters.
    chars (DocChars): The doc's characters.
    rule (str): One of ``BOUNDARY_RULES``.
    counts (Optional[Counter]): Counts ``"aligned"``, ``"expanded"``, ``"contracted"``
        and ``"dropped"`` spans, when given.
    RETURNS (List[Optional[Tuple[int, int]]]): ``(start, end)`` in tokens per span, None if dropped.
    """
    if rule not in BOUNDARY_RULES:
        raise ValueError(f"Unknown boundary rule '{rule}': use one of {list(BOUNDARY_RULES)}.")
    if chars.one_per_token:
        if counts is not None:
            counts["aligned"] += len(spans)
        return [(span[0], span[1]) for span in spans]
    owner = chars.char_to_token()
    result: List[Optional[Tuple[int, int]]] = []
    for span in spans:
        start, end = span[0], span[1]
        first, last = int(owner[start]), int(owner[end - 1])
        aligned = chars.token_starts[first] == start and chars.token_ends[last] == end
        if aligned:
            outcome, mapped = "aligned", (first, last + 1)
        elif rule == "expand":
            outcome, mapped = "expanded", (first, last + 1)
        elif rule == "contract":
            lo = first if chars.token_starts[first] == start else first + 1
            hi = last + 1 if chars.token_ends[last] == end else last
            outcome, mapped = ("contracted", (lo, hi)) if lo < hi else ("dropped", None)
        else:
            outcome, mapped = "dropped", None
        if counts is not None:
            counts[outcome] += 1
        result.append(mapped)
    return result
