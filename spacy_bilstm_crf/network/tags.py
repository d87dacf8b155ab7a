"""Tag schemes: entity labels → tag inventory, allowed transitions, spans ⇄ tag ids.

Pure numpy, no spaCy and no torch, so the CRF and the readers can share it.
Tag id 0 is always ``O``. For each label, in the order given, the scheme adds
its prefixes: BIOES → ``B- I- E- S-``, BIO → ``B- I-``. 10 labels under BIOES
give 41 tags.
"""
from typing import Dict, List, Sequence, Tuple

import numpy

SCHEMES: Dict[str, Tuple[str, ...]] = {"BIOES": ("B", "I", "E", "S"), "BIO": ("B", "I")}
OUTSIDE = "O"

# A span is (start_token, end_token_exclusive, label_index).
Span = Tuple[int, int, int]


class TagScheme:
    """The tag inventory and transition rules for a set of entity labels.

    labels (Sequence[str]): The entity labels, e.g. ``["address", "book"]``.
    scheme (str): ``"BIOES"`` (default) or ``"BIO"``.
    """

    def __init__(self, labels: Sequence[str], scheme: str = "BIOES") -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"Unknown tag scheme '{scheme}': use one of {sorted(SCHEMES)}.")
        if len(set(labels)) != len(labels):
            raise ValueError(f"Duplicate entity labels: {list(labels)}")
        self.labels: List[str] = list(labels)
        self.scheme = scheme
        self.prefixes = SCHEMES[scheme]
        self.tags: List[str] = [OUTSIDE] + [
            f"{prefix}-{label}" for label in self.labels for prefix in self.prefixes
        ]
        n_prefix = len(self.prefixes)
        # Per tag id: its prefix ("O" for 0) and its label index (-1 for O).
        self.tag_prefix = numpy.array([OUTSIDE] + list(self.prefixes) * len(self.labels))
        self.tag_label = numpy.array(
            [-1] + [i for i in range(len(self.labels)) for _ in range(n_prefix)], dtype="int64"
        )
        self._first_tag = 1 + n_prefix * numpy.arange(len(self.labels), dtype="int64")

    def __len__(self) -> int:
        return len(self.tags)

    def tag_id(self, prefix: str, label_index: int) -> int:
        """The id of ``prefix-label``. prefix (str): one of the scheme's prefixes."""
        return int(self._first_tag[label_index]) + self.prefixes.index(prefix)

    # -- transition rules ---------------------------------------------------------

    def _opens(self, tag: int) -> bool:
        """Whether a tag may follow a completed entity or O (it starts something)."""
        return self.tag_prefix[tag] in (OUTSIDE, "B", "S")

    def _closes(self, tag: int) -> bool:
        """Whether the entity (if any) is complete after this tag."""
        if self.scheme == "BIO":
            return True
        return self.tag_prefix[tag] in (OUTSIDE, "E", "S")

    def allowed_transitions(self) -> numpy.ndarray:
        """RETURNS (numpy.ndarray): Bool (n_tags, n_tags); ``[i, j]`` is whether tag j may follow tag i."""
        n = len(self.tags)
        allowed = numpy.zeros((n, n), dtype=bool)
        for i in range(n):
            for j in range(n):
                if self._closes(i) and self._opens(j):
                    allowed[i, j] = True
                elif self.tag_prefix[j] in ("I", "E") and self.tag_label[i] == self.tag_label[j]:
                    # Continue the same entity: B/I → I/E (BIOES), B/I → I (BIO).
                    allowed[i, j] = self.tag_prefix[i] in ("B", "I")
        return allowed

    def allowed_start(self) -> numpy.ndarray:
        """RETURNS (numpy.ndarray): Bool (n_tags,); which tags may start a sentence."""
        return numpy.array([self._opens(t) for t in range(len(self.tags))])

    def allowed_end(self) -> numpy.ndarray:
        """RETURNS (numpy.ndarray): Bool (n_tags,); which tags may end a sentence."""
        return numpy.array([self._closes(t) for t in range(len(self.tags))])

    # -- spans ⇄ tags ---------------------------------------------------------------

    def spans_to_tags(self, length: int, spans: Sequence[Span]) -> numpy.ndarray:
        """Encode non-overlapping entity spans as tag ids.

        length (int): Number of tokens.
        spans (Sequence[Span]): ``(start, end_exclusive, label_index)`` triples.
        RETURNS (numpy.ndarray): Int64 (length,) tag ids.
        """
        tags = numpy.zeros(length, dtype="int64")
        for start, end, label in spans:
            if not 0 <= start < end <= length:
                raise ValueError(f"Span ({start}, {end}) out of range for {length} tokens.")
            if tags[start:end].any():
                raise ValueError(f"Span ({start}, {end}) overlaps another span.")
            first = self._first_tag[label]
            if self.scheme == "BIOES" and end - start == 1:
                tags[start] = first + 3  # S
                continue
            tags[start] = first  # B
            tags[start + 1 : end] = first + 1  # I
            if self.scheme == "BIOES":
                tags[end - 1] = first + 2  # E
        return tags

    def tags_to_spans(self, tags: numpy.ndarray) -> List[Span]:
        """Decode a valid tag sequence into spans, vectorized (no per-token loop).

        tags (numpy.ndarray): Int tag ids of one sentence, a valid sequence (as the
            constrained Viterbi decoder returns).
        RETURNS (List[Span]): ``(start, end_exclusive, label_index)`` triples.
        """
        tags = numpy.asarray(tags, dtype="int64")
        prefix = self.tag_prefix[tags]
        starts = numpy.flatnonzero((prefix == "B") | (prefix == "S"))
        if self.scheme == "BIOES":
            ends = numpy.flatnonzero((prefix == "E") | (prefix == "S"))
        else:
            in_entity = (prefix == "B") | (prefix == "I")
            next_is_inside = numpy.append(prefix[1:] == "I", False)
            ends = numpy.flatnonzero(in_entity & ~next_is_inside)
        if len(starts) != len(ends):
            raise ValueError(f"Invalid {self.scheme} tag sequence: {[self.tags[t] for t in tags]}")
        labels = self.tag_label[tags[starts]]
        return list(zip(starts.tolist(), (ends + 1).tolist(), labels.tolist()))

    def is_valid(self, tags: Sequence[int]) -> bool:
        """Whether a tag sequence obeys the scheme's start, transition and end rules."""
        if len(tags) == 0:
            return True
        allowed = self.allowed_transitions()
        tags = numpy.asarray(tags, dtype="int64")
        return bool(
            self.allowed_start()[tags[0]]
            and self.allowed_end()[tags[-1]]
            and allowed[tags[:-1], tags[1:]].all()
        )
