"""Loading an export directory runs no code from it: crafted program archives, tampered
files and a format switched to TorchScript are refused before anything is unpickled,
and a bad tagger.json is a clear error naming the file and the key."""
import builtins
import hashlib
import importlib.util
import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Dict

import pytest
import torch

from spacy_bilstm_crf.serving import tagger as serving
from spacy_bilstm_crf.serving.deploy import export_pipeline
from spacy_bilstm_crf.serving.tagger import ExportError, Tagger


class _Payload:
    """A pickle that creates ``marker`` when it is unpickled (as os.system could run anything)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def _pickled(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(_Payload(marker), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(trained_nlp, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "exported"
    export_pipeline(trained_nlp, path)
    return path


@pytest.fixture
def export_copy(exported, tmp_path) -> Path:
    path = tmp_path / "export"
    path.mkdir()
    for file in exported.iterdir():
        (path / file.name).write_bytes(file.read_bytes())
    return path


def resign(path: Path) -> None:
    """Recompute every checksum of an export, as whoever crafts a directory can."""
    meta = json.loads((path / "tagger.json").read_text(encoding="utf8"))
    meta["sha256"] = {name: hashlib.sha256((path / name).read_bytes()).hexdigest() for name in meta["sha256"]}
    meta["checksum"] = serving.meta_checksum(meta)
    (path / "tagger.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf8")


def edit_meta(path: Path, edit: Callable[[Dict], None], sign: bool = True) -> None:
    meta = json.loads((path / "tagger.json").read_text(encoding="utf8"))
    edit(meta)
    (path / "tagger.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf8")
    if sign:
        resign(path)


def rewrite_archive(path: Path, edit: Callable[[str, bytes], Dict[str, bytes]]) -> None:
    """Rewrite model.pt2 entry by entry: ``edit(entry, data)`` gives the entries to write
    for it (relative to the archive's folder)."""
    source = zipfile.ZipFile(io.BytesIO((path / "model.pt2").read_bytes()))
    root = source.namelist()[0].split("/")[0]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            for entry, data in edit(name[len(root) + 1 :], source.read(name)).items():
                target.writestr(f"{root}/{entry}", data)
    (path / "model.pt2").write_bytes(out.getvalue())
    resign(path)


def _edit_json(entry: str, data: bytes, target: str, edit: Callable[[Dict], None]) -> Dict[str, bytes]:
    if entry != target:
        return {entry: data}
    content = json.loads(data)
    edit(content)
    return {entry: json.dumps(content).encode("utf8")}


def _first_node(program: Dict) -> Dict:
    return program["graph_module"]["graph"]["nodes"][0]


def _set_expr(program: Dict, expr: str) -> None:
    def walk(value):
        if isinstance(value, dict):
            if "expr_str" in value:
                value["expr_str"] = expr
                return True
            return any(walk(v) for v in value.values())
        return isinstance(value, list) and any(walk(v) for v in value)

    assert walk(program)


def crafted(kind: str, marker: Path) -> Callable[[str, bytes], Dict[str, bytes]]:
    """An edit of model.pt2 that makes torch.export.load (or the program) create ``marker``."""
    run = f"__import__('builtins').open({str(marker)!r}, 'w')"

    def pickle_weight(config: Dict) -> None:
        entry = next(iter(config["config"].values()))
        entry["use_pickle"], entry["path_name"] = True, "weight_999"

    def pickle_constant(config: Dict) -> None:
        entry = {"path_name": "tensor_999", "is_param": False, "use_pickle": True, "tensor_meta": None}
        config["config"]["evil"] = entry

    edits = {
        "pickled weight": lambda e, d: {
            **_edit_json(e, d, "data/weights/model_weights_config.json", pickle_weight),
            **({"data/weights/weight_999": _pickled(marker)} if e == "archive_format" else {}),
        },
        "pickled constant": lambda e, d: {
            **_edit_json(e, d, "data/constants/model_constants_config.json", pickle_constant),
            **({"data/constants/tensor_999": _pickled(marker)} if e == "archive_format" else {}),
        },
        "pickled example inputs": lambda e, d: {e: _pickled(marker) if e == "data/sample_inputs/model.pt" else d},
        "guard code": lambda e, d: _edit_json(
            e, d, "models/model.json", lambda p: p["guards_code"].append(f"{run} is None")
        ),
        "shape expression": lambda e, d: _edit_json(e, d, "models/model.json", lambda p: _set_expr(p, run)),
        "graph target": lambda e, d: _edit_json(
            e, d, "models/model.json", lambda p: _first_node(p).update(target="torch.from_file")
        ),
        "extra library": lambda e, d: {
            e: d,
            **({"data/aotinductor/model/model.so": b"\x7fELF"} if e == "archive_format" else {}),
        },
    }
    return edits[kind]


def test_torch_export_load_would_run_a_crafted_pickle(export_copy, tmp_path):
    """The attack the loader must stop: torch.export.load itself unpickles a weight marked
    ``use_pickle`` (so the crafted archive of the next test is a real one)."""
    marker = tmp_path / "ran"
    rewrite_archive(export_copy, crafted("pickled weight", marker))
    with pytest.raises(Exception):  # the payload is not a tensor: loading fails after running it
        torch.export.load(str(export_copy / "model.pt2"))
    assert marker.exists()


@pytest.mark.parametrize(
    "kind",
    [
        "pickled weight",
        "pickled constant",
        "pickled example inputs",
        "guard code",
        "shape expression",
        "graph target",
        "extra library",
    ],
)
def test_crafted_program_is_refused_and_runs_nothing(export_copy, tmp_path, kind):
    marker = tmp_path / "ran"
    rewrite_archive(export_copy, crafted(kind, marker))
    with pytest.raises(ExportError, match="model.pt2"):
        Tagger.load(export_copy)
    assert not marker.exists()


def test_crafted_torchscript_runs_only_when_trusted(export_copy, tmp_path):
    """A format-2 directory switched to format 1 (TorchScript whose __setstate__ writes a
    file, checksums recomputed) is refused without the caller's trust, and runs nothing."""
    marker = tmp_path / "ran"
    source = tmp_path / "evil_module.py"
    source.write_text(
        f'''
from typing import Tuple
import torch
from torch import Tensor

class Evil(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.x = torch.zeros(1)

    def forward(self, x: Tensor) -> Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[Tensor, bool]:
        return (self.x, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[Tensor, bool]) -> None:
        self.x = torch.from_file({str(marker)!r}, shared=True, size=1)
        self.training = state[1]
''',
        encoding="utf8",
    )
    spec = importlib.util.spec_from_file_location("evil_module", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module.Evil()), str(export_copy / "model.pt"))
    for name in ("model.pt2", "crf.pt"):
        (export_copy / name).unlink()

    def downgrade(meta: Dict) -> None:
        meta.update(format="spacy-bilstm-crf.torchscript", version=1, sha256={"model.pt": ""})

    edit_meta(export_copy, downgrade)
    with pytest.raises(ExportError, match="trust_torchscript=True"):
        Tagger.load(export_copy)
    assert not marker.exists()
    # Only the caller's word loads it, and then its code runs (what the flag says).
    with pytest.raises(Exception):
        Tagger.load(export_copy, trust_torchscript=True)
    assert marker.exists()


@pytest.mark.parametrize("name", ["model.pt2", "crf.pt"])
def test_flipped_bytes_are_refused(export_copy, name):
    data = bytearray((export_copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (export_copy / name).write_bytes(bytes(data))
    with pytest.raises(ExportError, match=f"{name}: does not match its SHA-256"):
        Tagger.load(export_copy)


def test_edited_tagger_json_is_refused(export_copy):
    """A renamed label (labels and tags alike), a changed window, a deleted checksum."""

    def rename(meta: Dict) -> None:
        old = meta["labels"][0]
        meta["labels"][0] = "renamed"
        meta["tags"] = [tag[: -len(old)] + "renamed" if tag.endswith(f"-{old}") else tag for tag in meta["tags"]]

    original = (export_copy / "tagger.json").read_text(encoding="utf8")
    for edit in (rename, lambda meta: meta.update(window_size=meta["window_size"] + 1)):
        edit_meta(export_copy, edit, sign=False)
        with pytest.raises(ExportError, match="does not match its 'checksum'"):
            Tagger.load(export_copy)
        (export_copy / "tagger.json").write_text(original, encoding="utf8")
    edit_meta(export_copy, lambda meta: meta.pop("checksum"), sign=False)
    with pytest.raises(ExportError, match="no 'checksum'"):
        Tagger.load(export_copy)
    (export_copy / "tagger.json").write_text(original, encoding="utf8")
    assert Tagger.load(export_copy).labels[0] != "renamed"


def test_a_file_missing_from_the_checksums_is_refused(export_copy):
    edit_meta(export_copy, lambda meta: meta["sha256"].pop("crf.pt"))
    with pytest.raises(ExportError, match="no checksum for crf.pt"):
        Tagger.load(export_copy)


@pytest.mark.parametrize(
    "edit,key",
    [
        (lambda meta: meta.update(tags=meta["tags"][:-3]), "tags"),
        (lambda meta: meta.update(min_width=10**9), "min_width"),
        (lambda meta: meta.update(min_width=1e9), "min_width"),
        (lambda meta: meta.update(window_size=10, window_overlap=5), "window_overlap"),
        (lambda meta: meta.update(batch_chars=-1), "batch_chars"),
        (lambda meta: meta.update(labels=["name", "name"]), "labels"),
        (lambda meta: meta.update(scheme="BIOLU"), "scheme"),
    ],
)
def test_bad_tagger_json_values_are_clear_errors(export_copy, edit, key):
    """Even with its checksums recomputed: each value is checked before it is used (a
    truncated tags list gave an IndexError, min_width 1e9 allocated 8 GB)."""
    edit_meta(export_copy, edit)
    with pytest.raises(ExportError, match=rf"tagger\.json: key '{key}'"):
        Tagger.load(export_copy)


def test_tagger_json_that_is_not_json_is_a_clear_error(export_copy, tmp_path):
    (export_copy / "tagger.json").write_text('{"format": "spacy-bilstm-crf.export", "vers', encoding="utf8")
    with pytest.raises(ExportError, match=r"tagger\.json: not valid JSON"):
        Tagger.load(export_copy)
    with pytest.raises(ExportError, match=r"tagger\.json: not found"):
        Tagger.load(tmp_path / "nothing")


def test_network_with_other_tags_than_tagger_json_is_refused(export_copy):
    """tagger.json and crf.pt for fewer labels than the network has, checksums
    recomputed: the network's scores per character do not match the tags."""

    def fewer_labels(meta: Dict) -> None:
        meta["labels"] = meta["labels"][:1]
        meta["tags"] = serving.expected_tags(meta["labels"], meta["scheme"])

    edit_meta(export_copy, fewer_labels)
    n_tags = len(json.loads((export_copy / "tagger.json").read_text(encoding="utf8"))["tags"])
    torch.save(
        {"transitions": torch.zeros(n_tags, n_tags), "start": torch.zeros(n_tags), "end": torch.zeros(n_tags)},
        str(export_copy / "crf.pt"),
    )
    resign(export_copy)
    with pytest.raises(ExportError, match="scores per character"):
        Tagger.load(export_copy)
