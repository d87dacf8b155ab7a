"""Serve an ONNX export with onnxruntime and numpy alone: no torch, spaCy or thinc.

This file imports only numpy, onnxruntime, the standard library and
``prediction/windows.py`` (the windowing the spaCy component uses). ``export --onnx``
copies both next to the export (as ``onnx_tagger.py`` and ``windows.py``), so the
directory works where the package is not installed::

    from onnx_tagger import OnnxTagger

    tagger = OnnxTagger.load("exported/")
    tagger("马云在阿里巴巴杭州总部发表演讲")
    # [(0, 2, 'name'), (3, 7, 'company'), (7, 9, 'address')]

``model.onnx`` is the network from raw code points to tag scores (emissions):
normalization, character table, bigrams, character classes, lexicon, gazetteer and
LAC are inside the graph. ``crf.json`` holds the CRF's masked scores; the
constrained Viterbi, spaCy's character tokenization and the pipeline's windows run
here, as in ``serving/tagger.py``. Whitespace takes the ``O`` tag, as in the pipeline.

``tagger.json`` holds a SHA-256 of itself and of every file; each file is checked
before it is parsed, and the graph is given to onnxruntime as the checked bytes (so
it cannot name external weight files).
"""
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnxruntime as ort

try:
    from ..prediction.windows import length_batches, plan_windows, stitch_spans
except ImportError:  # this file copied next to an export, with windows.py beside it
    from windows import length_batches, plan_windows, stitch_spans  # type: ignore[no-redef]

META_FILE = "tagger.json"
FORMAT = "spacy-bilstm-crf.onnx"
FORMAT_VERSION = 1
GRAPH_FILE = "model.onnx"
CRF_FILE = "crf.json"  # the CRF's masked (transitions, start, end): banned entries null
CODE_FILES = ("onnx_tagger.py", "windows.py")  # copies of the code that serves the export
FILE_CHECKSUMS_KEY = "sha256"
CHECKSUM_KEY = "checksum"
WINDOW_SIZE, WINDOW_OVERLAP, BATCH_CHARS = 512, 64, 16384
MAX_MIN_WIDTH = 1024
MAX_WINDOW_SIZE = 1_000_000
MAX_BATCH_CHARS = 1 << 26
SCHEMES = {"BIOES": ("B", "I", "E", "S"), "BIO": ("B", "I")}
OUTSIDE = "O"
_WHITESPACE = re.compile(r"\s")  # the same characters as str.isspace()
# The code points for which str.isspace() is True (none lies above the BMP).
_WHITESPACE_CODES = np.array([c for c in range(0x10000) if chr(c).isspace()], dtype=np.int64)

Entity = Tuple[int, int, str]


class ExportError(ValueError):
    """An export directory that cannot be loaded: the message names the file (and key)
    and what is wrong."""


def char_tokens(text: str) -> List[Tuple[int, int]]:
    """The tokens of spaCy's Chinese ``char`` segmenter, as character offsets (the
    same function as ``serving.tagger.char_tokens``, which this file cannot import:
    that module imports torch).

    Every non-whitespace character is a token; one space (U+0020) right after a token
    becomes its trailing whitespace; any other whitespace run is one token of its own.

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


class OnnxTagger:
    """An ONNX export of a BiLSTM-CRF: texts → entities as character offsets.

    session (ort.InferenceSession): The graph ``(codepoints, lengths) → emissions``.
    meta (dict): The export's ``tagger.json`` (labels, tags, scheme, windows).
    crf (Tuple[np.ndarray, np.ndarray, np.ndarray]): The CRF's masked (transitions,
        start, end) scores, ``-inf`` where banned.
    """

    def __init__(self, session: "ort.InferenceSession", meta: dict, crf: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        check_meta(meta, META_FILE)
        self.session = session
        self.meta = meta
        self.crf = crf
        self._inputs = [i.name for i in session.get_inputs()]
        self.min_width = int(meta.get("min_width", 1))
        self.window_size = int(meta.get("window_size", WINDOW_SIZE))
        self.window_overlap = int(meta.get("window_overlap", WINDOW_OVERLAP))
        self.batch_chars = int(meta.get("batch_chars", BATCH_CHARS))
        self.labels: List[str] = list(meta["labels"])
        self.scheme: str = meta["scheme"]
        tags: List[str] = meta["tags"]
        # Per tag id: its prefix ("O", "B", "I", "E", "S") and its label index (-1 for O).
        self._prefix = [tag.split("-", 1)[0] for tag in tags]
        self._label = [-1 if tag == OUTSIDE else self.labels.index(tag.split("-", 1)[1]) for tag in tags]

    @classmethod
    def load(cls, path: Union[str, Path], threads: Optional[int] = None) -> "OnnxTagger":
        """Load an export directory written by ``export --onnx``.

        Every file is checked against its SHA-256 in ``tagger.json`` before it is read,
        and ``tagger.json`` against its own.

        path (Union[str, Path]): The export directory.
        threads (Optional[int]): onnxruntime's intra-op threads (None: its default).
        RETURNS (OnnxTagger): The loaded tagger.
        RAISES (ExportError): Not a valid export, or changed after it was written.
        """
        path = Path(path)
        meta = read_meta(path / META_FILE)
        check_format(meta, path / META_FILE)
        check_meta_checksum(meta, path / META_FILE)
        check_meta(meta, path / META_FILE)
        graph = read_checked(path, GRAPH_FILE, meta)
        crf = load_crf(read_checked(path, CRF_FILE, meta), path / CRF_FILE, len(meta["tags"]))
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise ExportError(f"{path / GRAPH_FILE}: onnxruntime cannot load it ({err}).") from None
        tagger = cls(session, meta, crf)
        tagger.check_network(path / GRAPH_FILE)
        return tagger

    def check_network(self, source: Union[str, Path]) -> None:
        """RAISES (ExportError): The graph gives another number of tag scores than
        ``tagger.json`` has tags."""
        probe = np.full((1, max(1, self.min_width)), 0x4E00, dtype=np.int64)
        emissions = self.emissions(probe, np.array([1], dtype=np.int64))
        if emissions.ndim != 3 or emissions.shape[-1] != len(self._prefix):
            raise ExportError(
                f"{source}: the network gives {emissions.shape[-1]} scores per character, "
                f"{META_FILE} has {len(self._prefix)} tags."
            )

    def emissions(self, codepoints: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The graph's tag scores. codepoints (np.ndarray): int64 (batch, width), width
        at least ``min_width``; lengths (np.ndarray): int64 (batch,).
        RETURNS (np.ndarray): float32 (batch, width, n_tags)."""
        feed = dict(zip(self._inputs, (codepoints, lengths)))
        return self.session.run(None, feed)[0]

    def __call__(self, text: str) -> List[Entity]:
        """The entities of one text. RETURNS (List[Entity]): ``(start_char, end_char, label)``."""
        return self.batch([text])[0]

    def batch(self, texts: Sequence[str]) -> List[List[Entity]]:
        """The entities of each text; long texts in the pipeline's windows.

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
        of each text, cut and stitched in windows as ``pipe.BiLSTMCRFNER.predict`` does."""
        plans = [plan_windows(list(map(ord, read)), self.window_size, self.window_overlap) for read in reads]
        pieces = [(read, window) for read, plan in zip(reads, plans) for window in plan]
        found: List[List[Tuple[int, int, int]]] = [[] for _ in pieces]
        for group in length_batches([w.end - w.start for _, w in pieces], self.batch_chars):
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
        them (``boundary = "expand"``; see ``serving.tagger.Tagger.entities``)."""
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

    def tag(self, sequences: Sequence[str]) -> List[List[int]]:
        """Tag ids per character of each sequence, in one run of the graph: the best
        path under the CRF in which whitespace takes the ``O`` tag.

        sequences (Sequence[str]): The characters the network reads (window by window).
        RETURNS (List[List[int]]): Tag ids, one per character.
        """
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        width = int(lengths.max()) if len(sequences) else 0
        if width == 0:
            return [[] for _ in sequences]
        codes = np.frombuffer("".join(sequences).encode("utf-32-le"), dtype=np.int32)
        padded = np.zeros((len(sequences), max(width, self.min_width)), dtype=np.int64)
        within = np.arange(width)[None, :] < lengths[:, None]
        padded[:, :width][within] = codes
        space = np.isin(padded[:, :width], _WHITESPACE_CODES) & within
        emissions = self.emissions(padded, lengths)[:, :width].astype(np.float32, copy=True)
        # The constraint of the pipeline: whitespace is never part of an entity.
        emissions[:, :, 1:][space] = -np.inf
        # Empty sequences are given length 1, as in the network; their tags are dropped.
        tags = viterbi(emissions, np.maximum(lengths, 1), *self.crf)
        return [row[:n] for row, n in zip(tags.tolist(), lengths.tolist())]

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


def viterbi(
    emissions: np.ndarray, lengths: np.ndarray, trans: np.ndarray, start: np.ndarray, end: np.ndarray
) -> np.ndarray:
    """The best path of each sentence under the CRF's masked scores (``-inf`` where
    banned), in numpy: the forward pass keeps each step's best predecessor (the first
    of equal scores, as ``serving.tagger.viterbi_backtrack`` takes).

    emissions (np.ndarray): float32 (batch, max_len, n_tags), max_len >= 1.
    lengths (np.ndarray): int64 (batch,), each in [1, max_len].
    trans, start, end (np.ndarray): float32 (n_tags, n_tags), (n_tags,), (n_tags,).
    RETURNS (np.ndarray): int64 (batch, max_len), -1 past each sentence's end.
    """
    batch, max_len, n_tags = emissions.shape
    score = start[None, :] + emissions[:, 0]  # (batch, n_tags)
    best_final = score + end[None, :]
    finals = np.empty((batch, n_tags), dtype=emissions.dtype)
    finals[:] = best_final
    pointers = np.zeros((max_len, batch, n_tags), dtype=np.int64)
    for t in range(1, max_len):
        candidates = score[:, :, None] + trans[None, :, :]  # (batch, from, to)
        pointers[t] = candidates.argmax(axis=1)
        score = np.take_along_axis(candidates, pointers[t][:, None, :], axis=1)[:, 0] + emissions[:, t]
        ends_here = lengths == t + 1
        finals[ends_here] = score[ends_here] + end[None, :]
    tag = finals.argmax(axis=1)
    tags = np.full((batch, max_len), -1, dtype=np.int64)
    rows = np.arange(batch)
    for t in range(max_len - 1, -1, -1):
        # A sentence that ends at t starts from its best final tag there.
        tag = np.where(lengths - 1 == t, finals.argmax(axis=1), tag)
        inside = t < lengths
        tags[inside, t] = tag[inside]
        if t > 0:
            tag = np.where(inside, pointers[t][rows, tag], tag)
    return tags


# -- tagger.json and the files ------------------------------------------------------


def read_meta(path: Path) -> Dict[str, Any]:
    """RETURNS (Dict[str, Any]): The parsed ``tagger.json``. RAISES (ExportError): it is
    missing, not UTF-8, not valid JSON or not an object."""
    try:
        text = path.read_bytes().decode("utf8")
    except FileNotFoundError:
        raise ExportError(f"{path}: not found: not an export directory (see `export --onnx`).") from None
    except UnicodeDecodeError as err:
        raise ExportError(f"{path}: not UTF-8 text ({err}).") from None
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ExportError(f"{path}: not valid JSON ({err}).") from None
    if not isinstance(meta, dict):
        raise ExportError(f"{path}: expected a JSON object, found {type(meta).__name__}.")
    return meta


def check_format(meta: Dict[str, Any], source: Union[str, Path]) -> None:
    """RAISES (ExportError): Not an ONNX export of this format version."""
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise ExportError(
            f"{source}: not an ONNX export ({FORMAT} version {FORMAT_VERSION}): format "
            f"{meta.get('format')!r}, version {meta.get('version')!r}. A torch export loads with "
            "serving.Tagger.load."
        )


def meta_checksum(meta: Dict[str, Any]) -> str:
    """The SHA-256 of ``tagger.json``'s keys other than ``checksum``, in a canonical
    JSON form (as ``serving.tagger.meta_checksum``). RETURNS (str): ``"sha256:"`` and
    the hex digest."""
    content = {key: value for key, value in meta.items() if key != CHECKSUM_KEY}
    text = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf8")).hexdigest()


def check_meta_checksum(meta: Dict[str, Any], source: Union[str, Path]) -> None:
    """RAISES (ExportError): ``tagger.json`` has no checksum or differs from what it
    was made of (edited or damaged after export)."""
    expected = meta.get(CHECKSUM_KEY)
    if not isinstance(expected, str):
        raise ExportError(f"{source}: no '{CHECKSUM_KEY}': export the pipeline again.")
    found = meta_checksum(meta)
    if found != expected:
        raise ExportError(
            f"{source}: its content does not match its '{CHECKSUM_KEY}' ({expected}, found {found}): "
            "it was edited or damaged after export. Export the pipeline again."
        )


def expected_tags(labels: Sequence[str], scheme: str) -> List[str]:
    """RETURNS (List[str]): The tags of ``tags.TagScheme(labels, scheme)``, in its order."""
    return [OUTSIDE] + [f"{prefix}-{label}" for label in labels for prefix in SCHEMES[scheme]]


def check_meta(meta: Dict[str, Any], source: Union[str, Path]) -> None:
    """Check ``tagger.json``'s keys before any is used.

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
    checksums = meta.get(FILE_CHECKSUMS_KEY)
    if not isinstance(checksums, dict) or not all(
        isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in checksums.values()
    ):
        raise bad(FILE_CHECKSUMS_KEY, "expected file names with SHA-256 hex digests")


def read_checked(path: Path, name: str, meta: Dict[str, Any]) -> bytes:
    """A file of the export, read once and checked against its SHA-256 in
    ``tagger.json`` before anything parses it (the bytes checked are the bytes used).

    RAISES (ExportError): The file is missing, unlisted or does not match.
    """
    expected = meta.get(FILE_CHECKSUMS_KEY, {}).get(name)
    if expected is None:
        raise ExportError(f"{path / META_FILE}: key '{FILE_CHECKSUMS_KEY}': no checksum for {name}.")
    try:
        data = (path / name).read_bytes()
    except FileNotFoundError:
        raise ExportError(f"{path / name}: not found (the export is incomplete).") from None
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise ExportError(
            f"{path / name}: does not match its SHA-256 in {META_FILE} ({expected}, found "
            f"{found}): the file was changed or damaged after export. Export the pipeline again."
        )
    return data


def load_crf(data: bytes, source: Path, n_tags: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CRF's masked scores from ``crf.json`` (``null`` where banned → ``-inf``).

    RAISES (ExportError): Not the three score lists of the tags' shapes.
    """
    try:
        scores = json.loads(data.decode("utf8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ExportError(f"{source}: not valid JSON ({err}).") from None
    shapes = {"transitions": (n_tags, n_tags), "start": (n_tags,), "end": (n_tags,)}
    if not isinstance(scores, dict) or set(scores) != set(shapes):
        raise ExportError(f"{source}: expected the keys {sorted(shapes)}.")
    arrays = []
    for key, shape in shapes.items():
        try:
            array = np.array(scores[key], dtype=object)
            if array.shape != shape:
                raise ValueError
            array = np.where(array == None, -np.inf, array).astype(np.float32)  # noqa: E711
        except (ValueError, TypeError):
            raise ExportError(f"{source}: '{key}' should be numbers (or null) of shape {shape} ({n_tags} tags).") from None
        arrays.append(array)
    return arrays[0], arrays[1], arrays[2]
