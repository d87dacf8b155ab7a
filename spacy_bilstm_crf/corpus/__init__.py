"""Streaming corpus readers: CLUE JSON and char-per-line (CoNLL-style) files → spaCy Docs.

The readers are pure generators (no CLI, no output): they yield one ``Doc`` per
record, built with the language's own tokenizer (``spacy.blank("zh")`` segments
one token per character), with ``doc.ents`` set and every other token ``O``.
Nothing is lost silently: every record is either yielded or counted as skipped
by reason, and every entity is either kept or counted as dropped by reason, in a
``CorpusStats`` object the caller passes in.

Rules, stated once:

* Record-level problems (bad JSON, JSON nested too deeply (``too_deep``; more
  than ``MAX_JSON_DEPTH`` levels in an array, more than the parser can take in
  a line), ``text`` not a non-empty string, a lone UTF-16 surrogate such as
  ``"\\ud800"`` in the text or a label, ``label`` not an object, an empty label,
  offsets not a list of ``[int, int]`` pairs, an invalid tag sequence) raise
  ``CorpusError`` naming the file, the line (the record index for JSON arrays)
  and the problem, unless ``skip_invalid=True``: then the record is skipped and
  counted under ``stats.skipped[reason]``. A syntax error inside a JSON array
  always raises: the parser cannot find the next record after it.
* Texts of any length are converted: spaCy's ``nlp.max_length`` does not apply
  (it guards the memory of parsers; the component tags long texts in windows).
* Labels are stripped of surrounding whitespace wherever they come from (a CLUE
  key ``" name "``, a tag ``B- name``, the label set); one that is empty after
  stripping is a record-level error (``bad_label``; ``bad_tag`` in a tag).
* Char-per-line fields are stripped (``"马 \\tB-name"`` is the character 马); with
  a tab separator, a character field of only whitespace is kept (a space).
* Bytes that are not valid in the file's encoding (``encoding=``, UTF-8 by
  default) raise ``InputEncodingError`` naming the line and byte offset, even
  with ``skip_invalid``: a wrong encoding is a property of the file, not of a
  record.
* Entity-level problems never stop the conversion: the entity is dropped and
  counted under ``stats.dropped[reason]``, checked in this order:
  ``unknown_label`` (not in the given label set), ``out_of_range``
  (``not 0 <= start <= end < len(text)``), ``text_mismatch``
  (``text[start:end + 1]`` differs from the surface key), ``misaligned`` (the
  span does not fall on token boundaries, e.g. it starts or ends on a
  whitespace), ``duplicate`` (same span and label listed twice), ``overlap``.
* Overlaps: the longest span wins; ties go to the earliest start, then to the
  span listed first in the record. Every span that overlaps a kept span is
  dropped as ``overlap``. Resolving n spans takes O(n log n).
* Tag sequences (char-per-line format): an ``I-``/``M-``/``E-`` tag that does not
  continue an open entity of the same label, or (BIOES/BMES) an entity that is
  not closed by ``E-``/``S-``, is invalid. By default that is a record-level
  error; with ``repair_tags=True`` it is repaired the conlleval way (the stray
  tag starts a new entity, an unclosed entity ends at its last tag) and each
  repair is counted under ``stats.repaired[reason]``.
"""
import importlib
from typing import TYPE_CHECKING, Any, Dict, List

if TYPE_CHECKING:  # the names for type checkers and IDEs, without the imports at runtime
    from .clue import clue_record_to_doc, parse_clue_record, read_clue
    from .conll import (
        DOCSTART, OUTSIDE, SCHEME_PREFIXES, TagSequenceError, conll_sentence_to_doc, doc_to_conll,
        read_conll, spans_to_tags, split_tag, tags_to_spans,
    )
    from .docs import CharSpan, make_doc, resolve_overlaps
    from .nesting import MAX_JSON_DEPTH, NestingGuard
    from .stats import DROP_REASONS, MAX_EXAMPLES, SKIP_REASONS, CorpusError, CorpusStats
    from .textio import DEFAULT_ENCODING, InputEncodingError, NotATextEncoding, codec_name

# Where each public name lives. They are imported on first use (PEP 562), so that
# importing a light submodule (textio, stats) does not import spaCy: the CLI's
# --help must not pay for it.
_EXPORTS: Dict[str, str] = {
    "clue_record_to_doc": "clue", "parse_clue_record": "clue", "read_clue": "clue",
    "DOCSTART": "conll", "OUTSIDE": "conll", "SCHEME_PREFIXES": "conll", "TagSequenceError": "conll",
    "conll_sentence_to_doc": "conll", "doc_to_conll": "conll", "read_conll": "conll",
    "spans_to_tags": "conll", "split_tag": "conll", "tags_to_spans": "conll",
    "CharSpan": "docs", "make_doc": "docs", "resolve_overlaps": "docs",
    "MAX_JSON_DEPTH": "nesting", "NestingGuard": "nesting",
    "DROP_REASONS": "stats", "MAX_EXAMPLES": "stats", "SKIP_REASONS": "stats",
    "CorpusError": "stats", "CorpusStats": "stats",
    "DEFAULT_ENCODING": "textio", "InputEncodingError": "textio", "NotATextEncoding": "textio",
    "codec_name": "textio",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name from its submodule on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))
