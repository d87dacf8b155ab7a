"""Deployment: INT8 pipelines, the exports (torch.export, and TorchScript for INT8 and
older exports) and their spaCy-free loader, and the mixed-precision code paths that
run without a GPU."""
import json
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import spacy
import torch

from spacy_bilstm_crf.serving import export_format
from spacy_bilstm_crf.serving import tagger as serving
from spacy_bilstm_crf.prediction import windows
from spacy_bilstm_crf.component.architectures import get_torch_module
from spacy_bilstm_crf.serving.deploy import (
    SELF_CHECK_TEXTS,
    compare_with_pipeline,
    cpu_has_bf16,
    export_module,
    export_pipeline,
    quantize_pipeline,
    script_module,
)
from spacy_bilstm_crf.network.model import BiLSTMCRF
from spacy_bilstm_crf.serving.quantize import is_quantized, quantize_module, quantized_submodules
from spacy_bilstm_crf.serving.tagger import Tagger, char_tokens
from spacy_bilstm_crf.network.tags import TagScheme

from .conftest import SMALL_MODEL, TRAIN_DATA, ents_of, every_feature_network, make_examples

# Whitespace of every kind and place, emoji (incl. a two-code-point flag), Latin,
# full-width forms, digits, characters never seen in training, control characters.
TEXTS = [text for text, _ in TRAIN_DATA] + [
    "",
    " ",
    "   ",
    "\n\t \u3000",
    "马云 在 阿里巴巴",
    "马云  在\n\n阿里巴巴 ",
    " 李明去北京大学读书",
    "李明\u3000去北京大学\u00a0读书\r\n",
    "😀马云在阿里巴巴😀🇨🇳",
    "Apple公司CEO Tim Cook 2024年访问北京123",
    "ＡＢＣ１２３张伟担任华为公司总经理",
    "龘靐齉爩",
    "马云\x00\x01\x1b在\x7f阿里巴巴",
    "王芳是腾讯的工程师" * 7,
    "",
]


@pytest.fixture(scope="module")
def saved_model(trained_nlp, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("deploy") / "fp32"
    trained_nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def int8_model(saved_model) -> Path:
    nlp = spacy.load(saved_model)
    quantize_pipeline(nlp)
    path = saved_model.parent / "int8"
    nlp.to_disk(path)
    return path


# -- INT8 ---------------------------------------------------------------------------


def test_quantized_pipeline_loads_with_spacy_load_and_predicts(saved_model, int8_model):
    nlp = spacy.load(int8_model)
    module = get_torch_module(nlp.get_pipe("bilstm_crf_ner").model)
    assert sorted(quantized_submodules(module)) == ["lstm", "project"]
    state = module.state_dict()
    assert any(key.startswith("lstm._all_weight_values") for key in state)
    assert state["project._packed_params._packed_params"][0].dtype == torch.qint8
    # The CRF and the embeddings stay float32.
    assert state["crf.transitions"].dtype == torch.float32
    assert state["char_embed.weight"].dtype == torch.float32
    assert nlp.config["components"]["bilstm_crf_ner"]["model"]["quantize_int8"] is True
    fp32_size = (saved_model / "bilstm_crf_ner" / "model").stat().st_size
    assert (int8_model / "bilstm_crf_ner" / "model").stat().st_size < fp32_size
    # INT8 keeps the overfit model's entities.
    for text, ents in TRAIN_DATA:
        assert ents_of(nlp(text)) == sorted(ents), text
    assert all(doc.text == text for doc, text in zip(nlp.pipe(TEXTS), TEXTS))
    # to_bytes/from_bytes go through the same int8 state dict.
    other = spacy.load(int8_model)
    other.get_pipe("bilstm_crf_ner").from_bytes(nlp.get_pipe("bilstm_crf_ner").to_bytes())
    assert [ents_of(d) for d in other.pipe(TEXTS)] == [ents_of(d) for d in nlp.pipe(TEXTS)]


def test_training_with_quantize_int8_is_a_clear_error(int8_model):
    nlp = spacy.blank("zh")
    nlp.add_pipe("bilstm_crf_ner", config={"model": {**SMALL_MODEL, "quantize_int8": True}})
    with pytest.raises(ValueError, match="inference only"):
        nlp.initialize(lambda: make_examples(nlp))
    loaded = spacy.load(int8_model)
    with pytest.raises(ValueError, match="inference only"):
        loaded.update(make_examples(loaded))


def test_quantizing_twice_is_an_error(int8_model):
    with pytest.raises(ValueError, match="already quantized"):
        quantize_pipeline(spacy.load(int8_model))


# -- export and serving ------------------------------------------------------------


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp32-torchscript"])
def test_exported_entities_equal_the_pipeline(saved_model, int8_model, tmp_path, variant):
    nlp = spacy.load(int8_model if variant == "int8" else saved_model)
    # float32: torch.export (version 2) by default; INT8: TorchScript (version 1), as
    # torch.export cannot take its quantized LSTM; version 1 on request.
    export_pipeline(nlp, tmp_path / "export", version=1 if variant == "fp32-torchscript" else None)
    version = 2 if variant == "fp32" else 1
    files = {"tagger.json", "model.pt2", "crf.pt"} if version == 2 else {"tagger.json", "model.pt"}
    assert {f.name for f in (tmp_path / "export").iterdir()} == files
    # TorchScript (version 1) runs code on load: only with the caller's trust.
    tagger = Tagger.load(tmp_path / "export", trust_torchscript=version == 1)
    assert tagger.version == tagger.meta["version"] == version
    assert tagger.meta["format"] == (serving.FORMAT if version == 2 else serving.TORCHSCRIPT_FORMAT)
    assert tagger.meta["quantized"] is (variant == "int8")
    expected = [ents_of(doc) for doc in nlp.pipe(TEXTS, batch_size=256)]
    assert tagger.batch(TEXTS) == expected
    if variant != "int8":
        # INT8 activations are quantized with one scale per batch, so only the same
        # batches give the same entities; float32 results do not depend on the batch.
        assert list(tagger.pipe(TEXTS, batch_size=5)) == expected
    assert [tagger(text) for text in TEXTS] == [ents_of(nlp(text)) for text in TEXTS]
    assert tagger.batch([]) == [] and tagger("") == []
    assert sum(len(ents) for ents in expected) > 20  # the comparison is not vacuous


def test_version_1_export_from_the_old_writer_still_loads(saved_model, tmp_path):
    """A TorchScript export as the earlier code wrote it (model.pt and tagger.json of
    format version 1, nothing else) loads and finds the pipeline's entities."""
    nlp = spacy.load(saved_model)
    module = get_torch_module(nlp.get_pipe("bilstm_crf_ner").model)
    out = tmp_path / "v1"
    out.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit
        torch.jit.save(script_module(module), str(out / "model.pt"))
    pipe = nlp.get_pipe("bilstm_crf_ner")
    meta = {
        "format": "spacy-bilstm-crf.torchscript",
        "version": 1,
        "labels": list(pipe.labels),
        "scheme": pipe.scheme.scheme,
        "tags": pipe.scheme.tags,
        "quantized": False,
        "tokenizer": "spacy.zh.ChineseTokenizer (segmenter = char)",
        "component": pipe.name,
        "spacy_bilstm_crf_version": "0.1.0",
        "torch_version": "2.5.1",
    }
    (out / "tagger.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf8")
    with pytest.raises(ValueError, match="trust_torchscript=True"):
        Tagger.load(out)
    tagger = Tagger.load(out, trust_torchscript=True)
    assert tagger.version == 1 and tagger.window_size == 512  # the pipeline's default windows
    assert tagger.batch(TEXTS) == [ents_of(doc) for doc in nlp.pipe(TEXTS, batch_size=256)]
    assert compare_with_pipeline(nlp, tagger, SELF_CHECK_TEXTS)["n_different"] == 0


def test_int8_export_is_torchscript_and_torch_export_refuses_it(int8_model, tmp_path):
    nlp = spacy.load(int8_model)
    with pytest.raises(NotImplementedError, match="INT8"):
        export_pipeline(nlp, tmp_path / "v2", version=2)
    export_pipeline(nlp, tmp_path / "v1")
    tagger = Tagger.load(tmp_path / "v1", trust_torchscript=True)
    assert tagger.meta["quantized"] and tagger.version == 1
    assert compare_with_pipeline(nlp, tagger, SELF_CHECK_TEXTS)["n_different"] == 0
    with pytest.raises(ValueError, match="CPU only"):
        Tagger.load(tmp_path / "v1", device="cuda:0", trust_torchscript=True)


def test_reexport_replaces_the_other_formats_files_and_unknown_formats_are_refused(
    saved_model, tmp_path
):
    nlp = spacy.load(saved_model)
    out = tmp_path / "export"
    export_pipeline(nlp, out, version=1)
    export_pipeline(nlp, out)
    assert not (out / "model.pt").exists() and Tagger.load(out).version == 2
    with pytest.raises(ValueError, match="CPU only"):
        Tagger.load(out, device="cuda:0")
    export_pipeline(nlp, out, version=1)
    assert not (out / "model.pt2").exists() and not (out / "crf.pt").exists()
    with pytest.raises(ValueError, match="format version 3"):
        export_pipeline(nlp, out, version=3)
    meta = json.loads((out / "tagger.json").read_text(encoding="utf8"))
    for fmt, version in [("spacy-bilstm-crf.torchscript", 2), ("spacy-bilstm-crf.export", 1), ("other", 2)]:
        (out / "tagger.json").write_text(json.dumps({**meta, "format": fmt, "version": version}))
        with pytest.raises(ValueError, match="Not a known export"):
            Tagger.load(out, trust_torchscript=True)


def test_exported_emissions_equal_eager_for_any_batch_and_width():
    """The exported program (lexicon flags, word types and SoftLexicon, gazetteer flags,
    two LSTM layers, LAC states) gives the eager emissions for batch sizes and widths other than the
    example's, and extra padding changes nothing."""
    module = every_feature_network()
    program = export_module(module).module()
    for batch, width in [(1, 7), (5, 23), (2, 9), (9, 40)]:
        codepoints = torch.randint(0x4E00, 0x4E00 + 12, (batch, width))
        lengths = torch.randint(0, width + 1, (batch,))
        lengths[0] = width
        mask = (torch.arange(width)[None, :] < lengths[:, None])[:, :, None]
        with torch.no_grad():
            expected = module.emissions(codepoints, lengths)
            actual = program(codepoints, lengths)
            wider = program(torch.nn.functional.pad(codepoints, (0, 5)), lengths)[:, :width]
        assert actual.shape == expected.shape
        assert torch.allclose(actual * mask, expected * mask, atol=1e-5), (batch, width)
        assert torch.allclose(wider * mask, expected * mask, atol=1e-5), (batch, width)
    assert module.lexicon(codepoints, lengths).sum() > 0  # the lexicon matched something
    assert module.gazetteer(codepoints, lengths).sum() > 0  # and the gazetteer


def test_viterbi_in_serving_equals_the_crf():
    torch.manual_seed(0)
    module = BiLSTMCRF(10, TagScheme(["a", "b", "c"], "BIOES"), hidden_size=8)
    crf = module.crf.masked_scores(float("-inf"))
    for batch, width in [(1, 1), (3, 17), (300, 12)]:
        emissions = torch.randn(batch, width, len(module.crf.allowed)) * 3
        lengths = torch.randint(1, width + 1, (batch,))
        assert torch.equal(serving.viterbi(emissions, lengths, *crf), module.crf.decode(emissions, lengths))


def test_char_tokens_match_spacy_zh_tokenizer():
    nlp = spacy.blank("zh")
    pieces = ["马", "a", "1", " ", "  ", "\n", "\t", "\u3000", "\u00a0", "\x1c", "😀", "\u200b", "\r\n"]
    rng = random.Random(0)
    texts = ["".join(rng.choices(pieces, k=rng.randint(0, 10))) for _ in range(2000)]
    for text in texts + TEXTS:
        expected = [(t.idx, t.idx + len(t.text)) for t in nlp.make_doc(text)]
        assert char_tokens(text) == expected, repr(text)


def test_serving_needs_only_torch(saved_model, tmp_path):
    """serving/tagger.py (as serving.py), export_format.py and prediction/windows.py, copied next to an
    export, load and run it with spaCy, thinc, numpy and the package unimportable."""
    export_pipeline(spacy.load(saved_model), tmp_path / "export")
    for module, name in ((serving, "serving.py"), (export_format, "export_format.py"), (windows, "windows.py")):
        shutil.copy(module.__file__, tmp_path / name)
    code = f"""
import json, sys
for name in ("numpy", "spacy", "thinc", "srsly", "spacy_bilstm_crf"):
    sys.modules[name] = None  # makes `import name` raise ImportError
sys.path.insert(0, {str(tmp_path)!r})
from serving import Tagger
tagger = Tagger.load({str(tmp_path / "export")!r})
print(json.dumps(tagger.batch({TEXTS[:2]!r})))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        '[[[0, 2, "name"], [3, 7, "company"], [7, 9, "address"]], [[0, 2, "name"], [3, 7, "organization"]]]'
    )


def test_scripted_module_equals_eager_with_lexicon_and_without_bigrams():
    torch.manual_seed(0)
    scheme = TagScheme(["name", "company"], "BIO")
    codepoints = torch.randint(0x4E00, 0x4E00 + 80, (5, 23))
    lengths = torch.tensor([23, 0, 1, 7, 22])
    for options in ({"lexicon_size": 3}, {"bigram_dim": 0, "class_dim": 0, "layer_norm": False}):
        module = BiLSTMCRF(50, scheme, bigram_buckets=101, hidden_size=16, **options).eval()
        module.set_char_table(torch.arange(0x4E00, 0x4E00 + 50))
        if module.lexicon is not None:
            module.lexicon.set_keys(torch.tensor([5, 17, 2**40]))
        quantized = quantize_module(module)
        assert is_quantized(quantized) and not is_quantized(module)
        for variant in (module, quantized):
            scripted = script_module(variant)
            with torch.no_grad():
                assert torch.equal(scripted(codepoints, lengths), variant(codepoints, lengths))
        with pytest.raises(torch.jit.Error, match="only decodes"):
            scripted(codepoints, lengths, torch.zeros_like(codepoints))


def test_export_needs_the_zh_char_tokenizer(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("bilstm_crf_ner")
    with pytest.raises(ValueError, match="character tokenizer"):
        export_pipeline(nlp, tmp_path / "export")


def test_quantize_and_export_commands(saved_model, tmp_path):
    run = [sys.executable, "-m", "spacy_bilstm_crf"]
    result = subprocess.run(
        run + ["quantize", str(saved_model), str(tmp_path / "int8")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run(
        run + ["export", str(tmp_path / "int8"), str(tmp_path / "export")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trust_torchscript=True" in result.stdout  # INT8 is TorchScript: the command says how to load it
    assert Tagger.load(tmp_path / "export", trust_torchscript=True)("李明去北京大学读书") == [
        (0, 2, "name"),
        (3, 7, "organization"),
    ]
    # A float32 pipeline, as TorchScript on request.
    result = subprocess.run(
        run + ["export", str(saved_model), str(tmp_path / "ts"), "--torchscript"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "ts" / "model.pt").exists() and not (tmp_path / "ts" / "model.pt2").exists()
    assert Tagger.load(tmp_path / "ts", trust_torchscript=True)("李明去北京大学读书") == [
        (0, 2, "name"),
        (3, 7, "organization"),
    ]


def test_quantize_bf16_writes_a_pipeline_that_loads_with_bfloat16_inference(saved_model, int8_model, tmp_path):
    run = [sys.executable, "-m", "spacy_bilstm_crf", "quantize"]
    result = subprocess.run(run + [str(saved_model), str(tmp_path / "bf16"), "--bf16"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bfloat16 pipeline" in result.stdout
    # A CPU without bfloat16 units is told how slow it is there; one with them is not.
    assert ("no bfloat16 units" in result.stdout) == (not cpu_has_bf16())
    nlp = spacy.load(tmp_path / "bf16")
    assert nlp.config["components"]["bilstm_crf_ner"]["model"]["bf16_inference"] is True
    module = get_torch_module(nlp.get_pipe("bilstm_crf_ner").model)
    assert module.bf16_inference and not is_quantized(module)
    assert module.char_embed.weight.dtype == torch.float32  # the weights are unchanged
    # The overfit model keeps its entities (batches of 8 or more take the bfloat16 path).
    texts = [text for text, _ in TRAIN_DATA] * 8
    expected = [sorted(ents) for _, ents in TRAIN_DATA] * 8
    assert [ents_of(doc) for doc in nlp.pipe(texts)] == expected
    # An INT8 pipeline cannot also be bfloat16: a clear error, nothing written.
    result = subprocess.run(run + [str(int8_model), str(tmp_path / "both"), "--bf16"], capture_output=True, text=True)
    assert result.returncode != 0 and "is INT8" in result.stdout + result.stderr
    assert not (tmp_path / "both").exists()


# -- mixed precision without a GPU ---------------------------------------------------


def test_autocast_forward_and_nll_give_float32_crf_and_finite_grads():
    """CPU bfloat16 autocast stands in for CUDA float16: same code path, no GPU."""
    torch.manual_seed(0)
    scheme = TagScheme(["name", "company"])
    module = BiLSTMCRF(30, scheme, bigram_buckets=101, hidden_size=16)
    module.set_char_table(torch.arange(0x4E00, 0x4E00 + 30))
    codepoints = torch.randint(0x4E00, 0x4E00 + 40, (4, 12))
    lengths = torch.tensor([12, 5, 0, 1])
    gold = torch.zeros(4, 12, dtype=torch.long)
    gold[0, 2:5] = torch.tensor([1, 2, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emissions = module.emissions(codepoints, lengths)
        nll = module.crf.nll(emissions, gold, lengths)
        tags = module.crf.decode(emissions, lengths)
    assert emissions.dtype == torch.bfloat16  # autocast did reach the network
    assert nll.dtype == torch.float32 and torch.isfinite(nll).all()
    nll.mean().backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert module.crf.transitions.grad.abs().sum() > 0
    assert module.crf.is_valid(tags, lengths).all()
    # The float32 decode of the same (bfloat16-rounded) emissions gives the same path.
    assert torch.equal(tags, module.crf.decode(emissions.float(), lengths))


def test_mixed_precision_config_falls_back_to_float32_without_gpu():
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("zh")
    nlp.add_pipe("bilstm_crf_ner", config={"model": {**SMALL_MODEL, "mixed_precision": True}})
    examples = make_examples(nlp)
    with pytest.warns(UserWarning, match="needs a CUDA GPU"):
        optimizer = nlp.initialize(lambda: examples)
    losses = [nlp.update(examples, sgd=optimizer)["bilstm_crf_ner"] for _ in range(3)]
    assert losses[-1] < losses[0]
