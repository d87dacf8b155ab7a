"""Counting a conversion: every record converted or skipped, every entity kept or dropped."""
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

if TYPE_CHECKING:  # spaCy is not imported for the counts alone (the CLI's --help stays fast)
    from spacy.tokens import Doc

# How many example messages to keep per reason, so reports stay short.
MAX_EXAMPLES = 5

# Entity-level drop reasons, in the order they are checked.
DROP_REASONS = ("unknown_label", "out_of_range", "text_mismatch", "misaligned", "duplicate", "overlap")
# Record-level reasons (fatal unless skip_invalid).
SKIP_REASONS = (
    "invalid_json",
    "too_deep",
    "bad_record",
    "bad_text",
    "empty_text",
    "lone_surrogate",
    "bad_label",
    "bad_offsets",
    "bad_line",
    "bad_tag",
    "invalid_tag_sequence",
)


class CorpusError(ValueError):
    """A record that cannot be converted, located by file and line (or record index).

    path (Path): The input file.
    location (str): Where in the file, e.g. ``"line 12"`` or ``"record 3"``.
    reason (str): A key of ``SKIP_REASONS``.
    detail (str): What is wrong.
    """

    def __init__(self, path: Path, location: str, reason: str, detail: str) -> None:
        self.path = path
        self.location = location
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}, {location}: {detail} [{reason}]")


@dataclass
class CorpusStats:
    """Counts of one conversion. Invariants (see ``check``):
    ``records_read == docs_written + sum(skipped)`` and
    ``entities_in == entities_kept + sum(dropped)``.

    records_read (int): Records (JSON objects, sentences) seen.
    docs_written (int): Docs yielded.
    unlabeled (int): Docs from records without a ``label`` field (no entities).
    entities_in (int): Entity mentions found in the yielded docs' records.
    entities_kept (int): Entities set on the yielded docs.
    dropped (Counter): Dropped entities by reason (``DROP_REASONS``).
    skipped (Counter): Skipped records by reason (``SKIP_REASONS``).
    repaired (Counter): Repaired tag-sequence problems by kind.
    labels (Counter): Kept entities by label.
    unknown_labels (Counter): Entities dropped as ``unknown_label``, by label.
    examples (Dict[str, List[str]]): Up to ``MAX_EXAMPLES`` messages per reason.
    """

    records_read: int = 0
    docs_written: int = 0
    unlabeled: int = 0
    entities_in: int = 0
    entities_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    unknown_labels: Counter = field(default_factory=Counter)
    examples: Dict[str, List[str]] = field(default_factory=dict)

    def note(self, reason: str, message: str) -> None:
        """Keep an example message for a reason, up to ``MAX_EXAMPLES``."""
        kept = self.examples.setdefault(reason, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(message)

    def drop(self, reason: str, message: str) -> None:
        """Count a dropped entity. reason (str): One of ``DROP_REASONS``."""
        self.dropped[reason] += 1
        self.note(reason, message)

    def skip(self, error: CorpusError) -> None:
        """Count a skipped record. error (CorpusError): Why it was skipped."""
        self.skipped[error.reason] += 1
        self.note(error.reason, str(error))

    def check(self) -> None:
        """Raise AssertionError if a record or an entity went uncounted."""
        n_skipped = sum(self.skipped.values())
        if self.records_read != self.docs_written + n_skipped:
            raise AssertionError(
                f"records_read {self.records_read} != docs_written {self.docs_written} + skipped {n_skipped}"
            )
        n_dropped = sum(self.dropped.values())
        if self.entities_in != self.entities_kept + n_dropped:
            raise AssertionError(
                f"entities_in {self.entities_in} != kept {self.entities_kept} + dropped {n_dropped}"
            )

    def to_dict(self) -> Dict[str, Any]:
        """RETURNS (Dict[str, Any]): JSON-serializable counts, reasons sorted by name."""
        return {
            "records_read": self.records_read,
            "docs_written": self.docs_written,
            "records_skipped": sum(self.skipped.values()),
            "skipped": dict(sorted(self.skipped.items())),
            "unlabeled": self.unlabeled,
            "entities_in": self.entities_in,
            "entities_kept": self.entities_kept,
            "entities_dropped": sum(self.dropped.values()),
            "dropped": dict(sorted(self.dropped.items())),
            "repaired": dict(sorted(self.repaired.items())),
            "labels": dict(sorted(self.labels.items())),
            "unknown_labels": dict(sorted(self.unknown_labels.items())),
            "examples": self.examples,
        }


def count_and_convert(
    records: Iterable[Tuple[Any, Any, Optional[CorpusError]]],
    to_doc: Callable[[Any, Any], "Doc"],
    stats: CorpusStats,
    skip_invalid: bool,
) -> Iterator["Doc"]:
    """Convert ``(location, record, parse_error)`` triples, counting every record:
    each one is either written as a doc or, with ``skip_invalid``, skipped by reason.
    """
    for location, record, error in records:
        stats.records_read += 1
        try:
            if error is not None:
                raise error
            doc = to_doc(location, record)
        except CorpusError as err:
            if not skip_invalid:
                raise
            stats.skip(err)
            continue
        stats.docs_written += 1
        yield doc
