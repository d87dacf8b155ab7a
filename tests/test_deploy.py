"""Deployment: INT8 pipelines, the TorchScript export and its spaCy-free loader,
and the mixed-precision code paths that run without a GPU."""
import random
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import torch

from spacy_bilstm_crf import serving
from spacy_bilstm_crf.architectures import get_torch_module
from spacy_bilstm_crf.deploy import export_pipeline, quantize_pipeline, script_module
from spacy_bilstm_crf.model import BiLSTMCRF
from spacy_bilstm_crf.quantize import is_quantized, quantize_module, quantized_submodules
from spacy_bilstm_crf.serving import Tagger, char_tokens
from spacy_bilstm_crf.tags import TagScheme

from .conftest import SMALL_MODEL, TRAIN_DATA, ents_of, make_examples

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


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_exported_entities_equal_the_pipeline(saved_model, int8_model, tmp_path, variant):
    nlp = spacy.load(saved_model if variant == "fp32" else int8_model)
    export_pipeline(nlp, tmp_path / "export")
    tagger = Tagger.load(tmp_path / "export")
    assert tagger.meta["quantized"] is (variant == "int8")
    expected = [ents_of(doc) for doc in nlp.pipe(TEXTS, batch_size=256)]
    assert tagger.batch(TEXTS) == expected
    if variant == "fp32":
        # INT8 activations are quantized with one scale per batch, so only the same
        # batches give the same entities; float32 results do not depend on the batch.
        assert list(tagger.pipe(TEXTS, batch_size=5)) == expected
    assert [tagger(text) for text in TEXTS] == [ents_of(nlp(text)) for text in TEXTS]
    assert tagger.batch([]) == [] and tagger("") == []
    assert sum(len(ents) for ents in expected) > 20  # the comparison is not vacuous


def test_char_tokens_match_spacy_zh_tokenizer():
    nlp = spacy.blank("zh")
    pieces = ["马", "a", "1", " ", "  ", "\n", "\t", "\u3000", "\u00a0", "\x1c", "😀", "\u200b", "\r\n"]
    rng = random.Random(0)
    texts = ["".join(rng.choices(pieces, k=rng.randint(0, 10))) for _ in range(2000)]
    for text in texts + TEXTS:
        expected = [(t.idx, t.idx + len(t.text)) for t in nlp.make_doc(text)]
        assert char_tokens(text) == expected, repr(text)


def test_serving_needs_only_torch(saved_model, tmp_path):
    """Load and run an export with spaCy, thinc and even numpy unimportable."""
    export_pipeline(spacy.load(saved_model), tmp_path / "export")
    code = f"""
import importlib.util, json, sys
for name in ("numpy", "spacy", "thinc", "srsly", "spacy_bilstm_crf"):
    sys.modules[name] = None  # makes `import name` raise ImportError
spec = importlib.util.spec_from_file_location("serving", {serving.__file__!r})
serving = importlib.util.module_from_spec(spec)
spec.loader.exec_module(serving)
tagger = serving.Tagger.load({str(tmp_path / "export")!r})
print(json.dumps(tagger.batch({TEXTS[:2]!r})))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
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
    assert Tagger.load(tmp_path / "export")("李明去北京大学读书") == [
        (0, 2, "name"),
        (3, 7, "organization"),
    ]


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
