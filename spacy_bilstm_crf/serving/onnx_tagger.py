"""Serve an ONNX export with onnxruntime and numpy alone: no torch, spaCy or thinc.

This file imports only numpy, onnxruntime, the standard library,
``serving/export_format.py`` (``tagger.json``, spaCy's character tokens, the windowed
tagging both exported taggers share) and ``prediction/windows.py`` (the windowing
the spaCy component uses). ``export --onnx`` copies the three next to the export (as
``onnx_tagger.py``, ``export_format.py`` and ``windows.py``), so the directory works
where the package is not installed::

    from onnx_tagger import OnnxTagger

    tagger = OnnxTagger.load("exported/")
    tagger("马云在阿里巴巴杭州总部发表演讲")
    # [(0, 2, 'name'), (3, 7, 'company'), (7, 9, 'address')]

``onnx_features.py`` computes the network's input features in numpy from the tables
in ``features.npz`` (normalization, character table, bigrams, character classes,
lexicon, gazetteer, LAC's vocabulary); ``model.onnx`` is the network from those
features to tag scores (emissions). ``crf.json`` holds the CRF's masked scores; the
constrained Viterbi, spaCy's character tokenization and the pipeline's windows run
here, as in ``serving/tagger.py``. Whitespace takes the ``O`` tag, as in the pipeline.

``tagger.json`` holds a SHA-256 of itself and of every file; each file is checked
before it is parsed, and the graph is given to onnxruntime as the checked bytes (so
it cannot name external weight files).
"""
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnxruntime as ort

# Names re-exported for ``onnx_export`` too (CHECKSUM_KEY, meta_checksum, ...).
try:
    from .export_format import (  # noqa: F401
        CHECKSUM_KEY, FILE_CHECKSUMS_KEY, META_FILE, WHITESPACE_CODES, Entity, ExportError, WindowedTagger,
        char_tokens, check_meta, check_meta_checksum, meta_checksum, read_checked, read_meta,
    )
    from .onnx_features import FeatureTables, load_tables
except ImportError:  # this file copied next to an export, with the files of CODE_FILES
    from export_format import (  # type: ignore[no-redef]  # noqa: F401
        CHECKSUM_KEY, FILE_CHECKSUMS_KEY, META_FILE, WHITESPACE_CODES, Entity, ExportError, WindowedTagger,
        char_tokens, check_meta, check_meta_checksum, meta_checksum, read_checked, read_meta,
    )
    from onnx_features import FeatureTables, load_tables  # type: ignore[no-redef]

FORMAT = "spacy-bilstm-crf.onnx"
# 2: the features in numpy (features.npz, onnx_features.py), the graph from features.
FORMAT_VERSION = 2
GRAPH_FILE = "model.onnx"
CRF_FILE = "crf.json"  # the CRF's masked (transitions, start, end): banned entries null
TABLES_FILE = "features.npz"  # the tables of onnx_features.FeatureTables
# Copies of the code that serves the export, written next to it.
CODE_FILES = ("onnx_tagger.py", "export_format.py", "windows.py", "onnx_features.py")
# Whitespace by code point (all of it lies below 0x10000): one lookup, not a set test.
_IS_WHITESPACE = np.zeros(0x10000, dtype=bool)
_IS_WHITESPACE[WHITESPACE_CODES] = True


class OnnxTagger(WindowedTagger):
    """An ONNX export of a BiLSTM-CRF: texts → entities as character offsets (tokens,
    windows and entities as in ``export_format.WindowedTagger``; the graph and the
    Viterbi here).

    session (ort.InferenceSession): The graph ``features → emissions``.
    meta (dict): The export's ``tagger.json`` (labels, tags, scheme, windows).
    crf (Tuple[np.ndarray, np.ndarray, np.ndarray]): The CRF's masked (transitions,
        start, end) scores, ``-inf`` where banned.
    tables (FeatureTables): What the graph's input features are computed from.
    """

    def __init__(
        self,
        session: "ort.InferenceSession",
        meta: dict,
        crf: Tuple[np.ndarray, np.ndarray, np.ndarray],
        tables: FeatureTables,
    ) -> None:
        check_meta(meta, META_FILE, checksums_required=True)
        super().__init__(meta)
        self.session = session
        self.crf = crf
        self.tables = tables
        self._inputs = [i.name for i in session.get_inputs()]
        self.min_width = int(meta.get("min_width", 1))

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
        meta = read_meta(path / META_FILE, "export --onnx")
        check_format(meta, path / META_FILE)
        check_meta_checksum(meta, path / META_FILE)
        check_meta(meta, path / META_FILE, checksums_required=True)
        graph = read_checked(path, GRAPH_FILE, meta)
        crf = load_crf(read_checked(path, CRF_FILE, meta), path / CRF_FILE, len(meta["tags"]))
        tables = load_tables_checked(read_checked(path, TABLES_FILE, meta), path / TABLES_FILE)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise ExportError(f"{path / GRAPH_FILE}: onnxruntime cannot load it ({err}).") from None
        tagger = cls(session, meta, crf, tables)
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
        """The network's tag scores: the features, then the graph.

        codepoints (np.ndarray): int64 (batch, width) raw code points, width at least
            ``min_width``; lengths (np.ndarray): int64 (batch,).
        RETURNS (np.ndarray): float32 (batch, width, n_tags)."""
        features = self.tables.features(codepoints, lengths)
        return self.session.run(None, {name: features[name] for name in self._inputs})[0]

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
        codes_in = padded[:, :width]
        space = _IS_WHITESPACE[np.where(codes_in < len(_IS_WHITESPACE), codes_in, 0)] & within
        emissions = self.emissions(padded, lengths)[:, :width].astype(np.float32, copy=True)
        # The constraint of the pipeline: whitespace is never part of an entity.
        emissions[:, :, 1:][space] = -np.inf
        # Empty sequences are given length 1, as in the network; their tags are dropped.
        tags = viterbi(emissions, np.maximum(lengths, 1), *self.crf)
        return [row[:n] for row, n in zip(tags.tolist(), lengths.tolist())]

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
    # Five numpy calls a step, none allocating (single texts are short: per-call
    # overhead is their cost), the reduction over contiguous memory: (to, from). The
    # best score is read at the argmax (a gather), not reduced again: numpy's max over
    # rows of a few dozen is several times slower than its argmax.
    into = np.ascontiguousarray(trans.T)
    candidates = np.empty((batch, n_tags, n_tags), dtype=emissions.dtype)
    flat = candidates.reshape(-1)
    row_starts = np.arange(batch * n_tags, dtype=np.int64).reshape(batch, n_tags) * n_tags
    where, best = np.empty((batch, n_tags), dtype=np.int64), np.empty((batch, n_tags), dtype=emissions.dtype)
    scores = np.empty((max_len, batch, n_tags), dtype=emissions.dtype)
    pointers = np.zeros((max_len, batch, n_tags), dtype=np.int64)
    np.add(start[None, :], emissions[:, 0], out=scores[0])
    for t in range(1, max_len):
        np.add(scores[t - 1][:, None, :], into, out=candidates)  # (batch, to, from)
        candidates.argmax(axis=2, out=pointers[t])
        flat.take(np.add(row_starts, pointers[t], out=where), out=best)  # (the method: no wrapper)
        np.add(best, emissions[:, t], out=scores[t])
    rows = np.arange(batch)
    # Each sentence ends on its best final tag at its own last step.
    tag = (scores[lengths - 1, rows] + end[None, :]).argmax(axis=1)
    tags = np.full((batch, max_len), -1, dtype=np.int64)
    if batch == 1:  # one path: plain Python indexing is cheaper than array steps
        path, last = [int(tag[0])], int(lengths[0]) - 1
        pointer_rows = pointers[:, 0].tolist()
        for t in range(last, 0, -1):
            path.append(pointer_rows[t][path[-1]])
        tags[0, : last + 1] = path[::-1]
        return tags
    for t in range(max_len - 1, -1, -1):
        inside = t < lengths
        tags[inside, t] = tag[inside]
        if t > 0:
            # A sentence not yet begun (t at or past its length) keeps its final tag.
            tag = np.where(t < lengths, pointers[t][rows, tag], tag)
    return tags


# -- tagger.json and the files ------------------------------------------------------


def check_format(meta: Dict[str, Any], source: Union[str, Path]) -> None:
    """RAISES (ExportError): Not an ONNX export of this format version."""
    if meta.get("format") == FORMAT and meta.get("version") == 1:
        raise ExportError(
            f"{source}: an ONNX export of format version 1 (code points in the graph), which this "
            f"tagger no longer reads: export the pipeline again (export --onnx) for version {FORMAT_VERSION}."
        )
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise ExportError(
            f"{source}: not an ONNX export ({FORMAT} version {FORMAT_VERSION}): format "
            f"{meta.get('format')!r}, version {meta.get('version')!r}. A torch export loads with "
            "serving.Tagger.load."
        )


def load_tables_checked(data: bytes, source: Path) -> FeatureTables:
    """The feature tables of ``features.npz``. RAISES (ExportError): Not such tables."""
    try:
        return load_tables(data)
    except Exception as err:  # numpy and zipfile raise many types for a bad archive
        raise ExportError(f"{source}: not the feature tables of an export ({type(err).__name__}: {err}).") from None


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
