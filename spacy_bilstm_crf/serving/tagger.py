"""Serve an exported tagger with torch alone: no spaCy, thinc or numpy.

This file imports only torch, the standard library, ``serving/export_format.py``
(``tagger.json``, spaCy's character tokens, the windowed tagging both exported
taggers share) and ``prediction/windows.py`` (the windowing the spaCy component
uses), so the three files can be copied next to an exported model
(``python -m spacy_bilstm_crf export``), this one as ``serving.py``, the others as
``export_format.py`` and ``windows.py``, and used where the package is not installed::

    from serving import Tagger

    tagger = Tagger.load("exported/")
    tagger("马云在阿里巴巴杭州总部发表演讲")
    # [(0, 2, 'name'), (3, 7, 'company'), (7, 9, 'address')]
    tagger.batch(["李明去北京大学读书", ""])

An export (format version 2) holds the network as a ``torch.export`` program from
raw code points to tag scores (emissions): normalization, character table, bigram
hashing, character classes, the lexicon and LAC are all inside it. The CRF's
transition scores are saved next to it, and the constrained Viterbi runs here, in
plain torch; spaCy's tokenization, the pipeline's windows and tags → character
spans are ``export_format.WindowedTagger``'s. Whitespace characters are never part
of an entity: the Viterbi gives them the ``O`` tag, as the pipeline does.

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
import io
import json
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

# Names re-exported for ``deploy`` and ``serving/__init__.py`` too (CHECKSUM_KEY, Entity, ...).
try:
    from .export_format import (  # noqa: F401
        CHECKSUM_KEY, FILE_CHECKSUMS_KEY, META_FILE, Entity, ExportError, WindowedTagger, char_tokens,
        check_meta_checksum, expected_tags, meta_checksum, read_checked, read_meta, WHITESPACE_CODES,
    )
    from .export_format import check_meta as check_meta_keys
except ImportError:  # this file copied next to an export, with export_format.py and windows.py
    from export_format import (  # type: ignore[no-redef]  # noqa: F401
        CHECKSUM_KEY, FILE_CHECKSUMS_KEY, META_FILE, Entity, ExportError, WindowedTagger, char_tokens,
        check_meta_checksum, expected_tags, meta_checksum, read_checked, read_meta, WHITESPACE_CODES,
    )
    from export_format import check_meta as check_meta_keys  # type: ignore[no-redef]

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
_WHITESPACE_CODES = torch.tensor(WHITESPACE_CODES, dtype=torch.long)


class Tagger(WindowedTagger):
    """An exported BiLSTM-CRF: texts → entities as character offsets (tokens, windows
    and entities as in ``export_format.WindowedTagger``; the network and the Viterbi here).

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
        super().__init__(meta)
        if crf is None:
            if self.version == FORMAT_VERSION:
                raise ExportError(f"A version {FORMAT_VERSION} export needs the CRF's scores ({CRF_FILE}).")
            crf = scripted_crf(module)
        self.module = module
        self.device = torch.device(device)
        trans, start, end = (scores.to(self.device) for scores in crf)
        self.crf: Tuple[Tensor, Tensor, Tensor] = (trans, start, end)
        self.min_width = int(meta.get("min_width", MIN_WIDTH)) if self.version == FORMAT_VERSION else 1
        if meta.get("quantized"):
            # Dynamic INT8 quantizes each batch's activations with one scale: the same
            # entities as the quantized pipeline need its groups, which padding never cuts.
            self.pad_fill = 0.0
        # Whitespace may take the O tag only (tag 0): True where a tag is banned on it.
        self._banned_on_space = torch.arange(len(meta["tags"]), device=self.device) != 0

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


def _format_version(meta: dict, source: Union[str, Path] = META_FILE) -> int:
    """RETURNS (int): The export's format version. RAISES (ExportError): an unknown format."""
    fmt, version = meta.get("format"), meta.get("version")
    if fmt not in FORMATS or type(version) is not int or version != FORMATS[fmt]:
        known = ", ".join(f"{name} version {number}" for name, number in FORMATS.items())
        raise ExportError(f"{source}: Not a known export ({known}): format {fmt!r}, version {version!r}")
    return version


def check_meta(meta: Dict[str, Any], source: Union[str, Path]) -> None:
    """Check ``tagger.json``'s keys before any is used (``export_format.check_meta``;
    version 1 exports may have no file checksums).

    RAISES (ExportError): A key is missing, of the wrong type or out of bounds.
    """
    check_meta_keys(meta, source)


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
    flip floor_divide fmod full full_like gather ge gt index index_add index_put index_put_ index_select
    layer_norm le lerp lift_fresh_copy linear log log_softmax logical_and logical_not logical_or
    logsumexp lt masked_fill masked_fill_ matmul max maximum mean min minimum mkldnn_rnn_layer mm mul
    mul_ ne neg new_empty new_full new_ones new_zeros nonzero ones ones_like pad permute pow relu remainder
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
