"""Serve an exported tagger with torch alone: no spaCy, thinc or numpy.

This file imports only torch, the standard library and ``prediction/windows.py``
(the windowing the spaCy component uses), so the two files can be copied next to an
exported model (``python -m spacy_bilstm_crf export``), this one as ``serving.py``
and the other as ``windows.py``, and used where the package is not installed::

    from serving import Tagger

    tagger = Tagger.load("exported/")
    tagger("马云在阿里巴巴杭州总部发表演讲")
    # [(0, 2, 'name'), (3, 7, 'company'), (7, 9, 'address')]
    tagger.batch(["李明去北京大学读书", ""])

An export (format version 2) holds the network as a ``torch.export`` program from
raw code points to tag scores (emissions): normalization, character table, bigram
hashing, character classes, the lexicon and LAC are all inside it. The CRF's
transition scores are saved next to it, and the constrained Viterbi runs here, in
plain torch. What else is left here is spaCy's tokenization (see
:func:`char_tokens`), the pipeline's windows for long texts (``windows.py``), and
tags → character spans. It is one file of ~900 lines, over the package's ~500, for
that reason: it is what is copied next to an export. Whitespace characters are never part of an entity: the
Viterbi gives them the ``O`` tag, as the pipeline does.

Loading an export is as safe as loading a pipeline: ``tagger.json`` holds a SHA-256
of itself and of every other file, checked before a file is read; the program
archive is checked before torch reads it (tensors only, nothing unpickled; only
known tensor operators; no code strings), and ``crf.pt`` is read with
``weights_only``. Exports written before (format version 1, TorchScript) hold code
that torch runs when it loads them: they load only with
``Tagger.load(path, trust_torchscript=True)``. INT8 networks are still exported that
way (torch.export cannot take their quantized LSTM; see ``deploy.export_pipeline``).
"""
import ast
import hashlib
import io
import json
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

try:
    from ..prediction.windows import length_batches, plan_windows, stitch_spans
except ImportError:  # this file copied next to an export, with windows.py beside it
    from windows import length_batches, plan_windows, stitch_spans  # type: ignore[no-redef]

META_FILE = "tagger.json"
# Version 2: the emissions as a torch.export program, the CRF's scores, Viterbi here.
FORMAT = "spacy-bilstm-crf.export"
FORMAT_VERSION = 2
PROGRAM_FILE = "model.pt2"
CRF_FILE = "crf.pt"  # the CRF's masked (transitions, start, end): banned entries -inf
# The program's smallest input width (the lexicon's longest word + 1); narrower
# batches are padded, which changes no result.
MIN_WIDTH = 7
# Version 1: the whole network, Viterbi included, as TorchScript.
TORCHSCRIPT_FORMAT = "spacy-bilstm-crf.torchscript"
TORCHSCRIPT_VERSION = 1
MODEL_FILE = "model.pt"
FORMATS = {FORMAT: FORMAT_VERSION, TORCHSCRIPT_FORMAT: TORCHSCRIPT_VERSION}
FILES = {FORMAT_VERSION: (PROGRAM_FILE, CRF_FILE), TORCHSCRIPT_VERSION: (MODEL_FILE,)}

# tagger.json: the SHA-256 of each other file of the export, and of tagger.json itself
# (all its other keys, see :func:`meta_checksum`).
FILE_CHECKSUMS_KEY = "sha256"
CHECKSUM_KEY = "checksum"
# The pipeline component's defaults, for exports written before these were saved.
WINDOW_SIZE, WINDOW_OVERLAP, BATCH_CHARS = 512, 64, 16384
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
_WHITESPACE_CODES = torch.tensor([c for c in range(0x10000) if chr(c).isspace()], dtype=torch.long)


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


class Tagger:
    """An exported BiLSTM-CRF: texts → entities as character offsets.

    module (torch.nn.Module): Version 2: the exported program's module; version 1:
        the scripted network. Either gives ``emissions(codepoints, lengths)``.
    meta (dict): The export's ``tagger.json`` (labels, tags, scheme, windows).
    device (str): Where the network runs.
    crf (Optional[Tuple[Tensor, Tensor, Tensor]]): The CRF's masked (transitions,
        start, end) scores; version 1: read from the scripted network when None.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        meta: dict,
        device: str = "cpu",
        crf: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
    ) -> None:
        self.version = _format_version(meta, META_FILE)
        check_meta(meta, META_FILE)
        if crf is None:
            if self.version == FORMAT_VERSION:
                raise ExportError(f"A version {FORMAT_VERSION} export needs the CRF's scores ({CRF_FILE}).")
            crf = scripted_crf(module)
        self.module = module
        self.meta = meta
        self.device = torch.device(device)
        trans, start, end = (scores.to(self.device) for scores in crf)
        self.crf: Tuple[Tensor, Tensor, Tensor] = (trans, start, end)
        self.min_width = int(meta.get("min_width", MIN_WIDTH)) if self.version == FORMAT_VERSION else 1
        self.window_size = int(meta.get("window_size", WINDOW_SIZE))
        self.window_overlap = int(meta.get("window_overlap", WINDOW_OVERLAP))
        self.batch_chars = int(meta.get("batch_chars", BATCH_CHARS))
        self.labels: List[str] = list(meta["labels"])
        self.scheme: str = meta["scheme"]
        tags: List[str] = meta["tags"]
        # Per tag id: its prefix ("O", "B", "I", "E", "S") and its label index (-1 for O).
        self._prefix = [tag.split("-", 1)[0] for tag in tags]
        self._label = [-1 if tag == OUTSIDE else self.labels.index(tag.split("-", 1)[1]) for tag in tags]
        # Whitespace may take the O tag only (tag 0): True where a tag is banned on it.
        self._banned_on_space = torch.arange(len(tags), device=self.device) != 0

    @classmethod
    def load(cls, path: Union[str, Path], device: str = "cpu", trust_torchscript: bool = False) -> "Tagger":
        """Load an export directory: ``tagger.json`` with ``model.pt2`` and ``crf.pt``
        (version 2), or with ``model.pt`` (version 1, TorchScript).

        Every file is checked against its SHA-256 in ``tagger.json`` before it is read,
        and ``tagger.json`` against its own. Version 2 runs no code from the directory.
        A version 1 (TorchScript) directory holds code that ``torch.jit.load`` runs
        (e.g. a module's ``__setstate__``): it is refused unless ``trust_torchscript``.

        path (Union[str, Path]): The directory written by ``export``.
        device (str): ``"cpu"``; version 1 float32 exports also run on e.g. ``"cuda:0"``.
        trust_torchscript (bool): Load a TorchScript (version 1) export: only for a
            directory from a source you trust as you would trust code.
        RETURNS (Tagger): The loaded tagger.
        RAISES (ExportError): The directory is not a valid export, was changed after it
            was written, or is TorchScript and not trusted.
        """
        path = Path(path)
        meta = read_meta(path / META_FILE)
        version = _format_version(meta, path / META_FILE)
        if version == TORCHSCRIPT_VERSION and not trust_torchscript:
            raise ExportError(
                f"{path / META_FILE}: a TorchScript export (format {TORCHSCRIPT_FORMAT!r}, version "
                f"{TORCHSCRIPT_VERSION}). Loading it runs the code the directory holds; pass "
                "trust_torchscript=True only for a directory you trust as you would trust code, "
                "or export the pipeline again without --torchscript (format version 2)."
            )
        check_meta_checksum(meta, path / META_FILE, required=version == FORMAT_VERSION)
        check_meta(meta, path / META_FILE)
        if version == FORMAT_VERSION:
            if torch.device(device).type != "cpu":
                raise ValueError(f"A version {version} export runs on the CPU only, not on {device}.")
            program_bytes = read_checked(path, PROGRAM_FILE, meta)
            crf = load_crf(read_checked(path, CRF_FILE, meta), path / CRF_FILE, len(meta["tags"]))
            program = load_program(program_bytes, path / PROGRAM_FILE)
            tagger = cls(program.module(), meta, device, crf)
            tagger.check_network(path / PROGRAM_FILE)
            return tagger
        if meta.get("quantized") and torch.device(device).type != "cpu":
            raise ValueError(f"An INT8 export runs on the CPU only, not on {device}.")
        data = read_checked(path, MODEL_FILE, meta, required=False)
        with warnings.catch_warnings():
            # torch.jit is deprecated in favour of torch.export: version 1 exports still load.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(io.BytesIO(data), map_location=device)
        return cls(module.eval(), meta, device)

    def check_network(self, source: Union[str, Path]) -> None:
        """RAISES (ExportError): The network gives another number of tag scores than
        ``tagger.json`` has tags (e.g. a truncated ``tags`` list)."""
        probe = torch.full((1, self.min_width), 0x4E00, dtype=torch.long)
        with torch.inference_mode():
            emissions = self.module(probe, torch.tensor([1]))
        if emissions.dim() != 3 or emissions.shape[-1] != len(self._prefix):
            raise ExportError(
                f"{source}: the network gives {emissions.shape[-1]} scores per character, "
                f"{META_FILE} has {len(self._prefix)} tags."
            )

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

    def spans(self, reads: Sequence[str]) -> List[List[Tuple[int, int, int]]]:
        """Entity spans ``(start, end_exclusive, label_index)`` among the read characters
        of each text, as ``pipe.BiLSTMCRFNER.predict`` finds them (``windows.py``)."""
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

    def tag(self, sequences: Sequence[str]) -> List[List[int]]:
        """Tag ids per character of each sequence, in one forward pass: the best path
        under the CRF in which whitespace takes the ``O`` tag.

        sequences (Sequence[str]): The characters the network reads (window by window).
        RETURNS (List[List[int]]): Tag ids, one per character.
        """
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
        width = int(lengths.max()) if len(sequences) else 0
        if width == 0:
            return [[] for _ in sequences]
        # One UTF-32 buffer for the whole batch: code points without a per-character loop.
        flat = bytearray("".join(sequences).encode("utf-32-le"))
        codes = torch.frombuffer(flat, dtype=torch.int32).long()
        padded = torch.zeros(len(sequences), max(width, self.min_width), dtype=torch.long)
        within = torch.arange(width)[None, :] < lengths[:, None]
        padded[:, :width][within] = codes
        space = (torch.isin(padded[:, :width], _WHITESPACE_CODES) & within).to(self.device)
        with torch.inference_mode():
            if self.version == FORMAT_VERSION:
                emissions: Tensor = self.module(padded, lengths)
            else:
                emissions = self.module.emissions(padded.to(self.device), lengths.to(self.device))
            emissions = emissions[:, :width].float()
            # The constraint of the pipeline: whitespace is never part of an entity.
            emissions = emissions.masked_fill(space[:, :, None] & self._banned_on_space, float("-inf"))
            # Empty sequences are given length 1, as in the network; their tags are dropped.
            tags = viterbi(emissions, lengths.clamp_min(1).to(self.device), *self.crf)
        return [row[:n] for row, n in zip(tags.cpu().tolist(), lengths.tolist())]

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


def scripted_crf(module: torch.nn.Module) -> Tuple[Tensor, Tensor, Tensor]:
    """A scripted network's CRF scores, masked as ``crf.LinearChainCRF.masked_scores``
    masks them (``-inf`` where banned): the Viterbi here then finds the network's paths.
    """
    crf = module.crf
    fill = torch.tensor(float("-inf"))
    with torch.no_grad():
        return (
            torch.where(crf.allowed, crf.transitions.detach().float(), fill),
            torch.where(crf.allowed_start, crf.start_transitions.detach().float(), fill),
            torch.where(crf.allowed_end, crf.end_transitions.detach().float(), fill),
        )


# -- tagger.json ----------------------------------------------------------------------


def read_meta(path: Path) -> Dict[str, Any]:
    """RETURNS (Dict[str, Any]): The parsed ``tagger.json``. RAISES (ExportError): it is
    missing, not UTF-8, not valid JSON or not an object."""
    try:
        text = path.read_bytes().decode("utf8")
    except FileNotFoundError:
        raise ExportError(f"{path}: not found: not an export directory (see `export`).") from None
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


def _format_version(meta: dict, source: Union[str, Path] = META_FILE) -> int:
    """RETURNS (int): The export's format version. RAISES (ExportError): an unknown format."""
    fmt, version = meta.get("format"), meta.get("version")
    if fmt not in FORMATS or type(version) is not int or version != FORMATS[fmt]:
        known = ", ".join(f"{name} version {number}" for name, number in FORMATS.items())
        raise ExportError(f"{source}: Not a known export ({known}): format {fmt!r}, version {version!r}")
    return version


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
    checksums = meta.get(FILE_CHECKSUMS_KEY, {})
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


def load_crf(data: bytes, source: Path, n_tags: int) -> Tuple[Tensor, Tensor, Tensor]:
    """The CRF's masked scores from ``crf.pt`` (tensors only: ``weights_only``).

    RAISES (ExportError): Not three float tensors of the tags' shapes.
    """
    try:
        scores = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a bad or unsafe file
        raise ExportError(f"{source}: not a file of tensors ({err})") from None
    shapes = {"transitions": (n_tags, n_tags), "start": (n_tags,), "end": (n_tags,)}
    if not isinstance(scores, dict) or set(scores) != set(shapes):
        raise ExportError(f"{source}: expected the tensors {sorted(shapes)}.")
    for key, shape in shapes.items():
        value = scores[key]
        if not isinstance(value, Tensor) or tuple(value.shape) != shape or not value.is_floating_point():
            raise ExportError(f"{source}: '{key}' should be a float tensor of shape {shape} ({n_tags} tags).")
    return scores["transitions"], scores["start"], scores["end"]


# -- the program archive (model.pt2) ---------------------------------------------------
#
# ``torch.export.load`` unpickles weights and constants marked ``use_pickle``, tries
# the example inputs with ``weights_only`` and falls back to full unpickling, loads
# custom objects and AOTInductor libraries, evaluates symbolic shapes with sympy
# (``eval``), runs the guards as Python code and calls whatever the graph names. So
# the archive is checked first: only tensors stored raw, example inputs that load
# with ``weights_only``, only the tensor operators below, and shape expressions and
# guards of a fixed grammar (checked on their syntax trees).

# The operators a network's graph may call: pure tensor computations (those our
# networks export to, and their near relatives). Nothing that reads or writes files.
_ATEN_OPS = frozenset(
    """
    __and__ __or__ __xor__ __not__ _assert_tensor_metadata _local_scalar_dense _to_copy abs add add_
    addmm alias amax amin any all arange argmax argmin baddbmm bitwise_and bitwise_not bitwise_or
    bitwise_xor bmm cat clamp clamp_ clamp_max clamp_min clamp_min_ clone constant_pad_nd contiguous
    copy copy_ cumsum detach detach_ div div_ dropout embedding empty empty_like eq exp expand fill_
    flip floor_divide fmod full full_like gather ge gt index index_put index_put_ index_select
    layer_norm le lerp lift_fresh_copy linear log log_softmax logical_and logical_not logical_or
    logsumexp lt masked_fill masked_fill_ matmul max maximum mean min minimum mkldnn_rnn_layer mm mul
    mul_ ne neg new_empty new_full new_ones new_zeros ones ones_like pad permute pow relu remainder
    repeat reshape rsqrt scalar_tensor scatter searchsorted select sigmoid slice softmax split
    split_with_sizes sqrt squeeze stack sub sub_ sum sym_constrain_range_for_size sym_numel sym_size
    sym_storage_offset sym_stride t tanh to topk transpose unbind unsqueeze view where zeros
    zeros_like _assert_scalar
    """.split()
)
_OTHER_TARGETS = frozenset(
    ["torch.ops.higher_order.scan"]
    + [f"_operator.{name}" for name in "add sub mul floordiv mod truediv neg pos getitem".split()]
    + [f"_operator.{name}" for name in "eq ne lt le gt ge and_ or_ not_".split()]
    + [f"torch.{name}" for name in "sym_max sym_min sym_not sym_float sym_int sym_ite".split()]
)
_ARCHIVE_FILES = frozenset(
    [
        "archive_format",
        "archive_version",
        "byteorder",
        ".data/version",
        ".data/serialization_id",
        "models/model.json",
        "data/sample_inputs/model.pt",
        "data/weights/model_weights_config.json",
        "data/constants/model_constants_config.json",
    ]
)
_ARCHIVE_PAYLOADS = re.compile(r"data/weights/weight_[0-9]+|data/constants/tensor_[0-9]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Shape expressions: sympy constructors and torch's sympy functions only.
_SYMPY_CALLS = frozenset(
    """
    Symbol Integer Rational Float Add Mul Pow Max Min Abs Eq Ne Lt Le Gt Ge StrictLessThan
    StrictGreaterThan LessThan GreaterThan Equality Unequality And Or Not FloorDiv ModularIndexing
    Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift PowByNatural FloatPow
    FloatTrueDiv IntTrueDiv TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity
    BitwiseFn_bitwise_and BitwiseFn_bitwise_or
    """.split()
)
_SYMBOL_FLAGS = frozenset(["positive", "integer", "nonnegative", "real", "finite", "negative", "zero"])
_NODE_METADATA = frozenset(["stack_trace", "nn_module_stack", "torch_fn", "source_fn_stack"])
_GUARD_METHODS = frozenset(["size", "stride", "storage_offset", "dim", "numel"])


def load_program(data: bytes, source: Union[str, Path]) -> Any:
    """The exported program in ``data`` (``model.pt2``), after :func:`check_program_archive`.

    RAISES (ExportError): The archive holds anything but tensors and a checked graph.
    """
    check_program_archive(data, source)
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as err:  # a checked archive that torch still cannot read
        raise ExportError(f"{source}: torch.export cannot load it ({type(err).__name__}: {err})") from None


def check_program_archive(data: bytes, source: Union[str, Path]) -> None:
    """Check a ``torch.export`` archive before torch reads it (see the comment above).

    RAISES (ExportError): An entry, a payload or a string of the graph is not allowed.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise ExportError(f"{source}: not a torch.export archive ({err}).") from None
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or len(set(names)) != len(names) or not all("/" in name for name in names):
        raise ExportError(f"{source}: expected the entries of one program under one folder, once each.")
    root = roots.pop() + "/"
    entries = {name[len(root) :] for name in names}
    for entry in sorted(entries):
        if entry not in _ARCHIVE_FILES and not _ARCHIVE_PAYLOADS.fullmatch(entry):
            raise ExportError(f"{source}: entry '{root}{entry}' is not allowed (tensors and one graph only).")

    def read_json(entry: str) -> Any:
        try:
            return json.loads(archive.read(root + entry).decode("utf8"))
        except (KeyError, ValueError, RecursionError) as err:
            raise ExportError(f"{source}: entry '{root}{entry}' is missing or not valid JSON ({err}).") from None

    for folder, prefix in (("weights", "weight_"), ("constants", "tensor_")):
        config = read_json(f"data/{folder}/model_{folder}_config.json")
        _check_payloads(config, archive, root, f"data/{folder}/", prefix, source)
    _check_graph(read_json("models/model.json"), source)
    try:  # torch tries weights_only first, and unpickles anything if that fails
        torch.load(io.BytesIO(archive.read(root + "data/sample_inputs/model.pt")), weights_only=True)
    except Exception as err:
        raise ExportError(f"{source}: the example inputs are not plain tensors ({err}).") from None


def _check_payloads(
    config: Any, archive: zipfile.ZipFile, root: str, folder: str, prefix: str, source: Union[str, Path]
) -> None:
    """RAISES (ExportError): A weight or constant is pickled, or not a tensor stored raw
    in an entry of its own folder (a zero-byte entry makes torch allocate its shape)."""
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise ExportError(f"{source}: '{root}{folder}' has no payload config.")
    for fqn, payload in entries.items():
        where = f"{source}: '{root}{folder}' entry {fqn!r}"
        if not isinstance(payload, dict) or payload.get("use_pickle") is not False:
            raise ExportError(f"{where}: pickled (only raw tensors are allowed).")
        path_name, tensor_meta = payload.get("path_name"), payload.get("tensor_meta")
        if not isinstance(path_name, str) or not re.fullmatch(prefix + "[0-9]+", path_name):
            raise ExportError(f"{where}: not a tensor entry ({path_name!r}).")
        try:
            size = archive.getinfo(root + folder + path_name).file_size
            sizes = [dim["as_int"] for dim in tensor_meta["sizes"]]
        except (KeyError, TypeError) as err:
            raise ExportError(f"{where}: missing or malformed ({err}).") from None
        numel = 1
        for dim in sizes:
            numel *= dim if type(dim) is int and dim >= 0 else -1
        if numel < 0 or (size == 0 and numel > 0):
            raise ExportError(f"{where}: shape {sizes} does not fit its {size} bytes.")


def _check_graph(program: Any, source: Union[str, Path]) -> None:
    """RAISES (ExportError): The graph calls an operator not allowed, or holds a shape
    expression, a guard or a string torch would run as code that is not of their grammar."""
    if not isinstance(program, dict):
        raise ExportError(f"{source}: the graph is not a JSON object.")
    guards = program.get("guards_code", [])
    if not isinstance(guards, list) or not all(isinstance(g, str) and _is_guard(g) for g in guards):
        raise ExportError(f"{source}: a guard is not a comparison of input sizes: {guards!r:.300}")
    ranges = program.get("range_constraints", {})
    if not isinstance(ranges, dict) or not all(_NAME.fullmatch(k) for k in ranges):
        raise ExportError(f"{source}: malformed range constraints.")
    stack: List[Any] = [program]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("target", "as_operator") and isinstance(item, str):
                    if not _is_allowed_target(item):
                        raise ExportError(f"{source}: the graph calls {item!r}, which is not allowed.")
                elif key == "expr_str" and not (isinstance(item, str) and _is_shape_expression(item)):
                    raise ExportError(f"{source}: a shape expression is not of the allowed form: {item!r:.300}")
                elif key == "metadata" and "target" in value and isinstance(item, dict):
                    if not set(item) <= _NODE_METADATA:
                        extra = sorted(set(item) - _NODE_METADATA)
                        raise ExportError(f"{source}: node metadata {extra} not allowed.")
                elif key in ("custom_obj_values",) and item:
                    raise ExportError(f"{source}: the graph holds custom objects.")
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and ("\r" in value or "\x00" in value):
            # torch.fx writes node metadata into the Python code it generates, as comments.
            raise ExportError(f"{source}: a string of the graph holds a carriage return or NUL.")


def _is_allowed_target(target: str) -> bool:
    """RETURNS (bool): Whether the graph may call ``target`` (see ``_ATEN_OPS``)."""
    if target in _OTHER_TARGETS:
        return True
    parts = target.split(".")
    return len(parts) == 5 and parts[:3] == ["torch", "ops", "aten"] and parts[3] in _ATEN_OPS and bool(
        _NAME.fullmatch(parts[4])
    )


def _parse_expression(text: str) -> Optional[ast.Expression]:
    """RETURNS (Optional[ast.Expression]): ``text`` parsed as one expression, or None."""
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return None


def _accepts(ok: Callable[[ast.AST], bool], tree: ast.Expression) -> bool:
    """RETURNS (bool): Whether ``ok`` accepts the expression (a tree too deep to walk is not)."""
    try:
        return ok(tree.body)
    except RecursionError:
        return False


def _is_shape_expression(text: str) -> bool:
    """RETURNS (bool): Whether ``text`` is a call tree of sympy constructors with number
    arguments, and names only in ``Symbol('s0', positive=True, ...)`` (sympy evaluates it)."""
    tree = _parse_expression(text)
    if tree is None:
        return False

    def ok(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return type(node.value) in (int, float, bool)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return ok(node.operand)
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS):
            return False
        if node.func.id == "Symbol":
            first = node.args[0] if len(node.args) == 1 else None
            return (
                isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and bool(_NAME.fullmatch(first.value))
                and all(
                    k.arg in _SYMBOL_FLAGS and isinstance(k.value, ast.Constant) and type(k.value.value) is bool
                    for k in node.keywords
                )
            )
        return not node.keywords and all(ok(arg) for arg in node.args)

    return _accepts(ok, tree)


def _is_guard(text: str) -> bool:
    """RETURNS (bool): Whether ``text`` only compares sizes of the inputs (``L['name']``)
    with numbers and arithmetic: the guards torch turns into Python code and runs."""
    tree = _parse_expression(text)
    if tree is None:
        return False

    def ok(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return type(node.value) in (int, bool)
        if isinstance(node, ast.Compare):
            return ok(node.left) and all(ok(c) for c in node.comparators) and all(
                isinstance(op, (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in node.ops
            )
        if isinstance(node, ast.BoolOp):
            return all(ok(v) for v in node.values)
        if isinstance(node, ast.UnaryOp):
            return isinstance(node.op, (ast.Not, ast.USub)) and ok(node.operand)
        if isinstance(node, ast.BinOp):
            arithmetic = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)
            return isinstance(node.op, arithmetic) and ok(node.left) and ok(node.right)
        if isinstance(node, ast.Subscript):  # L['name'] or a size's [index]
            key = node.slice
            if isinstance(node.value, ast.Name):
                return node.value.id == "L" and isinstance(key, ast.Constant) and isinstance(key.value, str)
            return isinstance(key, ast.Constant) and type(key.value) is int and _is_size_call(node.value, ok)
        return _is_size_call(node, ok)

    return _accepts(ok, tree)


def _is_size_call(node: ast.AST, ok: Any) -> bool:
    """RETURNS (bool): Whether ``node`` is ``L['name'].size()`` (or ``.stride(0)``, ...)."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _GUARD_METHODS
        and not node.keywords
        and all(isinstance(a, ast.Constant) and type(a.value) is int for a in node.args)
        and isinstance(node.func.value, ast.Subscript)
        and isinstance(node.func.value.value, ast.Name)
        and ok(node.func.value)
    )


# Sentences whose Viterbi buffer is filled at once.
VITERBI_CHUNK = 128


# The Viterbi lives here, in plain torch, because this file must work as a copy on its
# own; ``crf.LinearChainCRF`` decodes with these functions on a GPU and in scripted
# copies, and on the CPU with a compiled kernel that adds the same numbers in the same
# order (``kernels.py``), so every copy of a network finds the same paths.


def viterbi(
    emissions: Tensor,
    lengths: Tensor,
    trans: Tensor,
    start: Tensor,
    end: Tensor,
    pad: int = -1,
    chunk: int = VITERBI_CHUNK,
) -> Tensor:
    """The best path of each sentence under the CRF's masked scores (``-inf`` where banned).

    emissions (Tensor): Float (batch, max_len, n_tags), max_len >= 1.
    lengths (Tensor): Long (batch,), each in [0, max_len].
    trans, start, end (Tensor): Float (n_tags, n_tags), (n_tags,), (n_tags,).
    pad (int): The value written past each sentence's end.
    chunk (int): Sentences whose Viterbi buffer is filled at once.
    RETURNS (Tensor): Long (batch, max_len).
    """
    trans, start, end = trans.to(emissions.dtype), start.to(emissions.dtype), end.to(emissions.dtype)
    emissions, lengths, order = sort_by_length(emissions, lengths, chunk)
    scores = viterbi_scores(emissions, lengths, trans, start, chunk)
    return restore_order(viterbi_backtrack(scores, lengths, trans, end, pad), order)


def sort_by_length(emissions: Tensor, lengths: Tensor, chunk: int) -> Tuple[Tensor, Tensor, Tensor]:
    """With more than ``chunk`` sentences, the batch sorted by length, longest first, so
    that each chunk of :func:`viterbi_scores` stops at its own longest sentence.

    RETURNS (Tuple[Tensor, Tensor, Tensor]): emissions, lengths and the order taken
        (empty when the batch is left as it is).
    """
    if emissions.shape[0] <= chunk:
        return emissions, lengths, lengths[:0]
    order = torch.argsort(lengths, descending=True)
    return emissions.index_select(0, order), lengths.index_select(0, order), order


def restore_order(tags: Tensor, order: Tensor) -> Tensor:
    """The rows of ``tags`` back in the callers' order (see :func:`sort_by_length`)."""
    return tags if order.numel() == 0 else tags.index_select(0, torch.argsort(order))


def viterbi_scores(emissions: Tensor, lengths: Tensor, trans: Tensor, start: Tensor, chunk: int) -> Tensor:
    """The Viterbi forward pass: the best score of each tag at each position.

    Batch-last layout, (n_tags, batch): the max over the previous tag runs over the
    outermost dimension of a (from, to, batch) buffer, an elementwise max of contiguous
    slabs, several times faster than a max over a short innermost dimension. The buffer
    is filled for at most ``chunk`` sentences at a time, so it stays in cache, and each
    chunk stops at its longest sentence. Values only: no argmax here. Past a sentence's
    end (up to its chunk's longest) the scores run on unused; further on they are not
    computed (the buffer holds whatever was there).

    emissions (Tensor): Float (batch, max_len, n_tags), max_len >= 1.
    RETURNS (Tensor): Float (max_len, n_tags, batch).
    """
    batch, max_len, n_tags = emissions.shape
    emit = emissions.permute(1, 2, 0).contiguous()  # (max_len, n_tags, batch)
    trans_3d = trans.unsqueeze(2)  # (from, to, 1)
    chunk = max(1, min(batch, chunk))
    buffer = emissions.new_empty(n_tags, n_tags, chunk)
    scores = emissions.new_empty(max_len, n_tags, batch)
    torch.add(start.unsqueeze(1), emit[0], out=scores[0])
    # Chunks are independent, so each runs its whole time loop; the per-step views are
    # made up front (unbind), as indexing inside the loop costs as much Python time as
    # the arithmetic at small batch sizes.
    for lo in range(0, batch, chunk):
        hi = min(lo + chunk, batch)
        part = buffer[:, :, : hi - lo]
        block = scores[:, :, lo:hi]
        stop = max(1, int(lengths[lo:hi].max()))
        previous = block[: stop - 1].unsqueeze(2).unbind(0)  # (n_tags, 1, chunk) each
        following = block[1:stop].unbind(0)
        emitted = emit[1:stop, :, lo:hi].unbind(0)
        for prev, nxt, emit_t in zip(previous, following, emitted):
            torch.add(prev, trans_3d, out=part)
            torch.amax(part, dim=0, out=nxt)
            nxt.add_(emit_t)
    return scores


def viterbi_backtrack(scores: Tensor, lengths: Tensor, trans: Tensor, end: Tensor, pad: int) -> Tensor:
    """Viterbi backtracking in torch, in (batch, n_tags) layout: each step recomputes the
    chosen tag's predecessor scores (the same float sums as the forward, so ties break
    the same way) and takes the max over the innermost dimension, with its index.

    scores (Tensor): Float (max_len, n_tags, batch), from :func:`viterbi_scores`.
    RETURNS (Tensor): Long (batch, max_len), ``pad`` past each sentence's end.
    """
    max_len, n_tags, batch = scores.shape
    by_batch = scores.transpose(1, 2).contiguous()  # (max_len, batch, n_tags)
    last = (lengths - 1).clamp_min(0)
    final = by_batch.gather(0, last.view(1, -1, 1).expand(1, batch, n_tags))[0] + end
    final_tag = final.max(dim=1)[1]
    into = trans.t().contiguous()  # (to, from)
    within = (torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]).t()
    tag = final_tag
    path = [tag]
    for t in range(max_len - 1, 0, -1):
        candidates = into.index_select(0, tag).add_(by_batch[t - 1])
        prev = candidates.max(dim=1)[1]
        # A sentence that ends at t - 1 starts from its own best final tag there.
        tag = torch.where(within[t], prev, final_tag)
        path.append(tag)
    path.reverse()
    tags = torch.stack(path, dim=1)
    return torch.where(within.t(), tags, torch.full_like(tags, pad))
