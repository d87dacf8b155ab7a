"""The ONNX export (``export --onnx``): the graph gives the network's emissions, the
tagger (onnxruntime and numpy) the pipeline's entities, long texts in the pipeline's
windows, and a changed file is refused."""
import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from spacy_bilstm_crf.component.architectures import get_torch_module
from spacy_bilstm_crf.serving.deploy import SELF_CHECK_TEXTS, compare_with_pipeline, find_pipe
from spacy_bilstm_crf.serving.onnx_export import export_onnx
from spacy_bilstm_crf.serving.onnx_tagger import ExportError, OnnxTagger, viterbi

from .conftest import TRAIN_DATA
from .test_export_windows import long_texts

REPO = Path(__file__).resolve().parents[1]
SIZE, OVERLAP = 64, 12
TEXTS = [text for text, _ in TRAIN_DATA] + SELF_CHECK_TEXTS + ["王芳 是 腾讯的工程师", "\n马云\t在阿里巴巴  "]


@pytest.fixture(scope="module")
def exported(trained_nlp, tmp_path_factory):
    """The trained pipeline with small windows, and its ONNX export's directory."""
    ner = trained_nlp.get_pipe("bilstm_crf_ner")
    old = (ner.window_size, ner.window_overlap, ner.batch_chars)
    ner.window_size, ner.window_overlap, ner.batch_chars = SIZE, OVERLAP, 4 * SIZE
    path = tmp_path_factory.mktemp("onnx") / "exported"
    try:
        export_onnx(trained_nlp, path)
        yield trained_nlp, path
    finally:
        ner.window_size, ner.window_overlap, ner.batch_chars = old


def test_graph_gives_the_networks_emissions(exported):
    nlp, path = exported
    tagger = OnnxTagger.load(path, threads=1)
    module = get_torch_module(find_pipe(nlp).model)
    generator = torch.Generator().manual_seed(0)
    for batch, width in [(1, tagger.min_width), (3, 40), (5, 130)]:
        codepoints = torch.randint(0x4E00, 0x9FA5, (batch, width), generator=generator)
        known = torch.tensor([ord("王"), ord("芳"), ord(" ")])[:width]  # known characters, a space
        codepoints[0, : len(known)] = known
        lengths = torch.randint(1, width + 1, (batch,), generator=generator)
        lengths[0] = width
        with torch.no_grad():
            expected = module.emissions(codepoints, lengths).numpy()
        found = tagger.emissions(codepoints.numpy(), lengths.numpy())
        assert found.shape == expected.shape
        within = np.arange(width)[None, :] < lengths.numpy()[:, None]
        # Only positions inside a sentence are read (the Viterbi stops at its length).
        np.testing.assert_allclose(found[within], expected[within], rtol=1e-4, atol=1e-4)


def test_tagger_finds_the_pipelines_entities(exported):
    nlp, path = exported
    tagger = OnnxTagger.load(path)
    check = compare_with_pipeline(nlp, tagger, TEXTS)
    assert check["n_different"] == 0, check["differences"]
    assert tagger(TRAIN_DATA[0][0])  # not vacuous: the overfit pipeline finds entities


def test_long_texts_in_the_pipelines_windows(exported):
    nlp, path = exported
    tagger = OnnxTagger.load(path)
    assert (tagger.window_size, tagger.window_overlap, tagger.batch_chars) == (SIZE, OVERLAP, 4 * SIZE)
    texts = long_texts(n=3, length=600)
    check = compare_with_pipeline(nlp, tagger, texts)
    assert check["n_different"] == 0, check["differences"]
    check = compare_with_pipeline(nlp, tagger, texts, batch_size=1)
    assert check["n_different"] == 0, check["differences"]


@pytest.mark.parametrize("name", ["model.onnx", "crf.json", "features.npz", "tagger.json"])
def test_a_changed_file_is_refused(exported, tmp_path, name):
    _, path = exported
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    target = copy / name
    if name == "tagger.json":
        meta = json.loads(target.read_text(encoding="utf8"))
        meta["labels"][0], meta["labels"][1] = meta["labels"][1], meta["labels"][0]
        meta["tags"] = ["O"] + [f"{p}-{label}" for label in meta["labels"] for p in "BIES"]
        target.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf8")
    else:
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 1
        target.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=name):
        OnnxTagger.load(copy)


def test_a_version_1_export_is_refused_with_what_to_do(exported, tmp_path):
    from spacy_bilstm_crf.serving.onnx_tagger import check_format

    _, path = exported
    meta = json.loads((path / "tagger.json").read_text(encoding="utf8"))
    assert meta["version"] == 2 and "features.npz" in meta["sha256"]
    with pytest.raises(ExportError, match="version 1.*export --onnx"):
        check_format({**meta, "version": 1}, path / "tagger.json")


def test_numpy_viterbi_keeps_to_allowed_transitions():
    """Banned (-inf) transitions are never taken, even where emissions favour them;
    sentences of several lengths in one batch each end on their own best tag."""
    trans = np.array([[0.0, 0.0, -np.inf], [-np.inf, -np.inf, 0.0], [0.0, 0.0, -np.inf]], dtype=np.float32)
    start = np.array([0.0, 0.0, -np.inf], dtype=np.float32)
    end = np.array([0.0, -np.inf, 0.0], dtype=np.float32)
    emissions = np.zeros((2, 4, 3), dtype=np.float32)
    emissions[:, :, 2] = 5.0  # tag 2 alone is banned at the start and after itself
    tags = viterbi(emissions, np.array([4, 2]), trans, start, end)
    assert tags.tolist() == [[1, 2, 1, 2], [1, 2, -1, -1]]


def test_numpy_viterbi_equals_the_crf():
    """Against the network's own decoding, on random scores: batches of one (the
    single-text path) and of many, sentences of every length down to one."""
    from spacy_bilstm_crf.network.model import BiLSTMCRF
    from spacy_bilstm_crf.network.tags import TagScheme

    torch.manual_seed(0)
    module = BiLSTMCRF(10, TagScheme(["a", "b", "c"], "BIOES"), hidden_size=8)
    crf = [scores.numpy() for scores in module.crf.masked_scores(float("-inf"))]
    for batch, width in [(1, 1), (1, 30), (7, 12), (64, 25)]:
        emissions = torch.randn(batch, width, len(module.crf.allowed)) * 3
        lengths = torch.randint(1, width + 1, (batch,))
        lengths[0] = width
        expected = module.crf.decode(emissions, lengths).numpy()
        assert np.array_equal(viterbi(emissions.numpy(), lengths.numpy(), *crf), expected), (batch, width)


def test_copied_tagger_runs_without_torch(exported, tmp_path):
    """The directory serves itself: its onnx_tagger.py and windows.py, with torch
    and spaCy made unimportable."""
    nlp, path = exported
    copy = tmp_path / "served"
    shutil.copytree(path, copy)
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None; sys.modules['spacy'] = None; sys.modules['thinc'] = None\n"
        "from onnx_tagger import OnnxTagger\n"
        f"print(json.dumps(OnnxTagger.load('.').batch({TEXTS!r}), ensure_ascii=False))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=copy)
    assert result.returncode == 0, result.stderr
    found = [[tuple(e) for e in ents] for ents in json.loads(result.stdout)]
    expected = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(TEXTS)]
    assert found == expected


def _serving_venv(root: Path) -> Path:
    """A fresh virtualenv holding the ONNX tagger's requirements only: onnxruntime, numpy
    and what they require, taken from this environment's installed files (linked, so no
    download), and neither torch nor spaCy. RETURNS (Path): Its python."""
    import sysconfig
    from importlib import metadata

    from packaging.requirements import Requirement

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    here = Path(sysconfig.get_paths()["purelib"])
    todo, seen = ["onnxruntime", "numpy"], set()
    while todo:
        dist = metadata.distribution(todo.pop())
        if dist.metadata["Name"].lower() in seen:
            continue
        seen.add(dist.metadata["Name"].lower())
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            source = here / top
            target = Path(site) / top
            if source.exists() and not target.exists() and not top.endswith(".pth"):
                target.symlink_to(source)
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    assert "torch" not in seen and "spacy" not in seen
    return python


def test_export_serves_from_a_fresh_venv_without_torch(exported, tmp_path):
    """The export directory's own code, in a virtualenv with onnxruntime and numpy only."""
    nlp, path = exported
    copy = tmp_path / "served"
    shutil.copytree(path, copy)
    python = _serving_venv(tmp_path)
    missing = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, cwd=copy)
    assert missing.returncode != 0 and "No module named 'torch'" in missing.stderr
    code = (
        "import sys, json\n"
        "from onnx_tagger import OnnxTagger\n"
        "assert 'torch' not in sys.modules and 'spacy' not in sys.modules\n"
        f"print(json.dumps(OnnxTagger.load('.').batch({TEXTS!r}), ensure_ascii=False))\n"
    )
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=copy)
    assert result.returncode == 0, result.stderr
    found = [[tuple(e) for e in ents] for ents in json.loads(result.stdout)]
    assert found == [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(TEXTS)]


def _imported(path: Path) -> set:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add("." * node.level + (node.module or "").split(".")[0])
    return modules


def test_onnx_tagger_imports_numpy_and_onnxruntime_only():
    serving = REPO / "spacy_bilstm_crf" / "serving"
    # The code it shares with the torch tagger imports the standard library only.
    shared = _imported(serving / "export_format.py")
    assert shared <= {"hashlib", "json", "re", "pathlib", "typing", "..prediction", "windows"}
    modules = _imported(serving / "onnx_tagger.py")
    assert modules <= {"hashlib", "json", "re", "pathlib", "typing", "numpy", "onnxruntime", "..prediction",
                       "windows", ".export_format", "export_format", ".onnx_features", "onnx_features"}  # fmt: skip
    # The features: numpy and the standard library.
    assert _imported(serving / "onnx_features.py") <= {"io", "typing", "numpy"}


def test_int8_export(trained_nlp, tmp_path):
    path = export_onnx(trained_nlp, tmp_path / "int8", int8=True)
    tagger = OnnxTagger.load(path)
    assert tagger.meta["quantized"] is True
    ops = {node.op_type for node in __import__("onnx").load(str(path / "model.onnx")).graph.node}
    # The LSTM's weights are quantized too (they were not while their gate reordering
    # was left to ONNX Runtime's load-time folding), and the matrix products.
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops, ops
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}, ops
    check = compare_with_pipeline(trained_nlp, tagger, [text for text, _ in TRAIN_DATA])
    # INT8 weights may move a boundary; on the texts the network was overfit to, few do.
    assert check["n_different"] <= 1, check["differences"]
