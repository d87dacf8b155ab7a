"""What both exported taggers share: ``tagger.json``, its checksums, spaCy's character
tokens, and tagging texts in the pipeline's windows.

``serving/tagger.py`` (torch) and ``serving/onnx_tagger.py`` (onnxruntime and numpy)
differ only in how a batch of character sequences becomes tag ids (``tag``): reading
and checking the export's files, tokenizing, windows, stitching and mapping spans
back to characters are the same, and live here. This file imports only the standard
library and ``prediction/windows.py``, so it can be copied next to an export (as
``export_format.py``, with ``windows.py``) and serve where the package is not installed.
"""
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Sequence, Tuple, Union

try:
    from ..prediction.windows import length_batches, plan_windows, stitch_spans
except ImportError:  # copied next to an export, with windows.py beside it
    from windows import length_batches, plan_windows, stitch_spans  # type: ignore[no-redef]

META_FILE = "tagger.json"
# tagger.json: the SHA-256 of each other file of the export, and of tagger.json itself
# (all its other keys, see :func:`meta_checksum`).
FILE_CHECKSUMS_KEY = "sha256"
CHECKSUM_KEY = "checksum"
# The pipeline component's defaults, for exports written before these were saved.
WINDOW_SIZE, WINDOW_OVERLAP, BATCH_CHARS = 512, 64, 16384
PAD_FILL, PAD_MIN_GROUP = 0.9, 8  # see WindowedTagger.__init__
# Bounds on tagger.json's numbers: each sizes a buffer.
MAX_MIN_WIDTH = 1024
MAX_WINDOW_SIZE = 1_000_000
MAX_BATCH_CHARS = 1 << 26
SCHEMES = {"BIOES": ("B", "I", "E", "S"), "BIO": ("B", "I")}
OUTSIDE = "O"

# (start_char, end_char_exclusive, label)
Entity = Tuple[int, int, str]
_WHITESPACE = re.compile(r"\s")  # the same characters as str.isspace()
# The code points for which str.isspace() is True (none lies above the BMP).
WHITESPACE_CODES = [c for c in range(0x10000) if chr(c).isspace()]


class ExportError(ValueError):
    """An export directory that cannot be loaded: the message names the file (and key)
    and what is wrong."""


def char_tokens(text: str) -> List[Tuple[int, int]]:
    """The tokens of spaCy's Chinese ``char`` segmenter, as character offsets.

    Mirrors ``spacy.util.get_words_and_spaces(list(text), text)``: every
    non-whitespace character is a token; one space (U+0020) right after a token
    becomes its trailing whitespace; any other whitespace run (leading, trailing,
    longer, or not a plain space) is one token of its own.

    text (str): The text.
    RETURNS (List[Tuple[int, int]]): ``(start, end_exclusive)`` of each token.
    """
    if not _WHITESPACE.search(text):
        return [(i, i + 1) for i in range(len(text))]
    tokens: List[Tuple[int, int]] = []
    pos = 0
    for i, char in enumerate(text):
        if char.isspace():
            continue
        if i > pos:  # the whitespace between the previous token and this one
            tokens.append((pos, i))
        tokens.append((i, i + 1))
        pos = i + 1
        if pos < len(text) and text[pos] == " ":
            pos += 1
    if pos < len(text):
        tokens.append((pos, len(text)))
    return tokens


class WindowedTagger:
    """Texts → entities as character offsets, for a subclass that tags sequences.

    The subclass gives ``tag(sequences) -> tag ids`` (its network and Viterbi) and
    sets ``min_width``; everything between texts and tag ids is the pipeline's:
    spaCy's character tokens, the windows of long texts, stitching, and entities
    mapped back to the tokens.

    meta (dict): The export's checked ``tagger.json`` (labels, tags, scheme, windows).
    """

    def __init__(self, meta: Dict[str, Any]) -> None:
        self.meta = meta
        # An exported graph runs every padded position, so a group of sequences is cut
        # where one is shorter than ``pad_fill`` of the group's longest (once the group
        # holds ``pad_min_group``; ``windows.length_batches``): on CLUENER dev, a batch
        # of 256 texts padded to its longest is 75% characters.
        self.pad_fill = PAD_FILL
        self.pad_min_group = PAD_MIN_GROUP
        self.window_size = int(meta.get("window_size", WINDOW_SIZE))
        self.window_overlap = int(meta.get("window_overlap", WINDOW_OVERLAP))
        self.batch_chars = int(meta.get("batch_chars", BATCH_CHARS))
        self.labels: List[str] = list(meta["labels"])
        self.scheme: str = meta["scheme"]
        tags: List[str] = meta["tags"]
        # Per tag id: its prefix ("O", "B", "I", "E", "S") and its label index (-1 for O).
        self._prefix = [tag.split("-", 1)[0] for tag in tags]
        self._label = [-1 if tag == OUTSIDE else self.labels.index(tag.split("-", 1)[1]) for tag in tags]

    def tag(self, sequences: Sequence[str]) -> List[List[int]]:
        """Tag ids per character of each sequence (the subclass's network)."""
        raise NotImplementedError

    def __call__(self, text: str) -> List[Entity]:
        """The entities of one text. RETURNS (List[Entity]): ``(start_char, end_char, label)``."""
        return self.batch([text])[0]

    def batch(self, texts: Sequence[str]) -> List[List[Entity]]:
        """The entities of each text. Texts longer than ``window_size`` characters are
        tagged as the pipeline tags them: as overlapping windows whose entities are
        stitched; the windows of all texts run in groups of similar length (at most
        ``batch_chars`` padded characters per forward pass).

        texts (Sequence[str]): The texts.
        RETURNS (List[List[Entity]]): Per text, ``(start_char, end_char, label)`` triples.
        """
        tokens = [char_tokens(text) for text in texts]
        # The characters the network reads: each token's (whitespace between tokens is
        # not part of one).
        reads = [
            text if len(toks) == len(text) else "".join(text[start:end] for start, end in toks)
            for text, toks in zip(texts, tokens)
        ]
        return [self.entities(toks, spans) for toks, spans in zip(tokens, self.spans(reads))]

    def pipe(self, texts: Iterable[str], batch_size: int = 256) -> Iterator[List[Entity]]:
        """Stream the entities of many texts, ``batch_size`` texts per :meth:`batch`."""
        chunk: List[str] = []
        for text in texts:
            chunk.append(text)
            if len(chunk) == batch_size:
                yield from self.batch(chunk)
                chunk = []
        if chunk:
            yield from self.batch(chunk)

    def spans(self, reads: Sequence[str]) -> List[List[Tuple[int, int, int]]]:
        """Entity spans ``(start, end_exclusive, label_index)`` among the read characters
        of each text, as ``pipe.BiLSTMCRFNER.predict`` finds them (``windows.py``)."""
        plans = [plan_windows(list(map(ord, read)), self.window_size, self.window_overlap) for read in reads]
        pieces = [(read, window) for read, plan in zip(reads, plans) for window in plan]
        found: List[List[Tuple[int, int, int]]] = [[] for _ in pieces]
        lengths = [w.end - w.start for _, w in pieces]
        for group in length_batches(lengths, self.batch_chars, self.pad_fill, self.pad_min_group):
            rows = self.tag([pieces[i][0][pieces[i][1].start : pieces[i][1].end] for i in group])
            for i, row in zip(group, rows):
                found[i] = self.tags_to_spans(row)
        result = []
        offset = 0
        for read, plan in zip(reads, plans):
            window_spans = found[offset : offset + len(plan)]
            offset += len(plan)
            result.append(window_spans[0] if len(plan) == 1 else stitch_spans(plan, window_spans, len(read)))
        return result

    def entities(self, tokens: List[Tuple[int, int]], spans: List[Tuple[int, int, int]]) -> List[Entity]:
        """Entities from spans among the characters of the tokens, as the pipeline maps
        them (its default ``boundary = "expand"``): an entity that cuts a token (only a
        whitespace run can be longer than one character here, and whitespace is never
        in an entity) covers the whole token, and one that overlaps an earlier entity
        after that is dropped.
        """
        n_chars = sum(end - start for start, end in tokens)
        if len(tokens) == n_chars:  # one character per token: the identity, no overlaps
            return [(tokens[start][0], tokens[end - 1][1], self.labels[label]) for start, end, label in spans]
        owner = [k for k, (start, end) in enumerate(tokens) for _ in range(end - start)]
        taken = [False] * len(tokens)
        found = []
        for start, end, label in spans:
            first, last = owner[start], owner[end - 1]
            if any(taken[first : last + 1]):
                continue
            taken[first : last + 1] = [True] * (last + 1 - first)
            found.append((tokens[first][0], tokens[last][1], self.labels[label]))
        return found

    def tags_to_spans(self, tags: List[int]) -> List[Tuple[int, int, int]]:
        """Spans ``(start_token, end_token_exclusive, label_index)`` of a valid tag sequence."""
        prefix = [self._prefix[t] for t in tags]
        starts = [i for i, p in enumerate(prefix) if p in ("B", "S")]
        if self.scheme == "BIOES":
            ends = [i for i, p in enumerate(prefix) if p in ("E", "S")]
        else:  # BIO: an entity ends where the next tag does not continue it
            ends = [
                i
                for i, p in enumerate(prefix)
                if p in ("B", "I") and (i + 1 == len(prefix) or prefix[i + 1] != "I")
            ]
        if len(starts) != len(ends):
            raise ValueError(f"Invalid {self.scheme} tag sequence: {tags}")
        return [(s, e + 1, self._label[tags[s]]) for s, e in zip(starts, ends)]


# -- tagger.json and the files ------------------------------------------------------


def read_meta(path: Path, command: str = "export") -> Dict[str, Any]:
    """RETURNS (Dict[str, Any]): The parsed ``tagger.json``. RAISES (ExportError): it is
    missing (the message names ``command``, which writes exports), not UTF-8, not valid
    JSON or not an object."""
    try:
        text = path.read_bytes().decode("utf8")
    except FileNotFoundError:
        raise ExportError(f"{path}: not found: not an export directory (see `{command}`).") from None
    except UnicodeDecodeError as err:
        raise ExportError(f"{path}: not UTF-8 text ({err}).") from None
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ExportError(f"{path}: not valid JSON ({err}).") from None
    if not isinstance(meta, dict):
        raise ExportError(f"{path}: expected a JSON object, found {type(meta).__name__}.")
    return meta


def meta_checksum(meta: Dict[str, Any]) -> str:
    """The SHA-256 of ``tagger.json``'s keys other than ``checksum`` (which holds it),
    in a canonical JSON form. RETURNS (str): ``"sha256:"`` and the hex digest."""
    content = {key: value for key, value in meta.items() if key != CHECKSUM_KEY}
    text = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf8")).hexdigest()


def check_meta_checksum(meta: Dict[str, Any], source: Union[str, Path], required: bool = True) -> None:
    """RAISES (ExportError): ``tagger.json`` differs from what its checksum was made of
    (a label renamed, a number changed), or has none where one is ``required``."""
    expected = meta.get(CHECKSUM_KEY)
    if expected is None and not required:
        return
    if not isinstance(expected, str):
        raise ExportError(
            f"{source}: no '{CHECKSUM_KEY}' (written before exports were checksummed, or edited): "
            "export the pipeline again."
        )
    found = meta_checksum(meta)
    if found != expected:
        raise ExportError(
            f"{source}: its content does not match its '{CHECKSUM_KEY}' ({expected}, found {found}): "
            "it was edited or damaged after export. Export the pipeline again."
        )


def expected_tags(labels: Sequence[str], scheme: str) -> List[str]:
    """RETURNS (List[str]): The tags of ``tags.TagScheme(labels, scheme)``, in its order."""
    return [OUTSIDE] + [f"{prefix}-{label}" for label in labels for prefix in SCHEMES[scheme]]


def check_meta(meta: Dict[str, Any], source: Union[str, Path], checksums_required: bool = False) -> None:
    """Check ``tagger.json``'s keys before any is used.

    checksums_required (bool): Refuse a ``tagger.json`` without file checksums (formats
        that always had them).
    RAISES (ExportError): A key is missing, of the wrong type or out of bounds; the
        message names the file and the key.
    """

    def bad(key: str, what: str) -> ExportError:
        return ExportError(f"{source}: key '{key}': {what} (found {meta.get(key)!r:.200}).")

    labels = meta.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise bad("labels", "expected a non-empty list of non-empty strings")
    if len(set(labels)) != len(labels):
        raise bad("labels", "expected each label once")
    if meta.get("scheme") not in SCHEMES:
        raise bad("scheme", f"expected one of {sorted(SCHEMES)}")
    if meta.get("tags") != expected_tags(labels, meta["scheme"]):
        raise bad("tags", f"expected the {meta['scheme']} tags of the labels, 'O' first")
    if not isinstance(meta.get("quantized", False), bool):
        raise bad("quantized", "expected true or false")
    bounds = {
        "min_width": (1, MAX_MIN_WIDTH),
        "window_size": (2, MAX_WINDOW_SIZE),
        "window_overlap": (0, MAX_WINDOW_SIZE),
        "batch_chars": (1, MAX_BATCH_CHARS),
    }
    for key, (low, high) in bounds.items():
        value = meta.get(key, low)
        if type(value) is not int or not low <= value <= high:
            raise bad(key, f"expected a whole number from {low} to {high}")
    size, overlap = meta.get("window_size", WINDOW_SIZE), meta.get("window_overlap", WINDOW_OVERLAP)
    if size - 2 * overlap < 2:
        raise bad("window_overlap", f"window_size ({size}) must exceed twice window_overlap by at least 2")
    checksums = meta.get(FILE_CHECKSUMS_KEY) if checksums_required else meta.get(FILE_CHECKSUMS_KEY, {})
    if not isinstance(checksums, dict) or not all(
        isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in checksums.values()
    ):
        raise bad(FILE_CHECKSUMS_KEY, "expected file names with SHA-256 hex digests")


def read_checked(path: Path, name: str, meta: Dict[str, Any], required: bool = True) -> bytes:
    """A file of the export, read once and checked against its SHA-256 in ``tagger.json``
    before anything parses it (the bytes checked are the bytes used).

    required (bool): Refuse a file ``tagger.json`` has no checksum for.
    RAISES (ExportError): The file is missing, unlisted or does not match.
    """
    expected = meta.get(FILE_CHECKSUMS_KEY, {}).get(name)
    if expected is None and required:
        raise ExportError(f"{path / META_FILE}: key '{FILE_CHECKSUMS_KEY}': no checksum for {name}.")
    try:
        data = (path / name).read_bytes()
    except FileNotFoundError:
        raise ExportError(f"{path / name}: not found (the export is incomplete).") from None
    if expected is not None:
        found = hashlib.sha256(data).hexdigest()
        if found != expected:
            raise ExportError(
                f"{path / name}: does not match its SHA-256 in {META_FILE} ({expected}, found "
                f"{found}): the file was changed or damaged after export. Export the pipeline again."
            )
    return data
