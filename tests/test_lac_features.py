"""The pretrained features in the network: LAC-small (embeddings, BiGRU states),
SoftLexicon vectors and word-type flags; and the training-entity gazetteer."""
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import spacy
import torch

from spacy_bilstm_crf.component.architectures import get_torch_module
from spacy_bilstm_crf.serving.deploy import export_pipeline, quantize_pipeline, script_module
from spacy_bilstm_crf.network.lac import load_lac_encoder
from spacy_bilstm_crf.serving.tagger import Tagger

from .conftest import SMALL_MODEL, TRAIN_DATA, ents_of, make_examples, train_small

ALL_FEATURES = {
    **SMALL_MODEL,
    "lac_finetune": 1,
    "char_dim": 128,
    "lexicon_dim": 16,
    "lexicon_pos": True,
    "lac_embeddings": True,
    "lac_features": True,
    "gazetteer": True,
}
TEXTS = [text for text, _ in TRAIN_DATA] + [
    "", " ", "😀马云在阿里巴巴😀", "Apple公司CEO Tim Cook 2024年访问北京123",
    "ＡＢＣ１２３张伟担任华为公司总经理", "龘靐齉爩", "王芳是腾讯的工程师" * 7,
]  # fmt: skip


def train(model: dict, steps: int):
    return train_small(steps=steps, model=model)


@pytest.fixture(scope="module")
def featured_nlp():
    return train(ALL_FEATURES, 80)


@pytest.fixture(scope="module")
def featured_path(featured_nlp, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("features") / "fp32"
    featured_nlp.to_disk(path)
    return path


def padded_codepoints(texts):
    """RETURNS: Long (batch, max_len) code points, zero-padded, and Long (batch,) lengths."""
    lengths = torch.tensor([len(t) for t in texts])
    codepoints = torch.zeros(len(texts), int(lengths.max()), dtype=torch.long)
    for row, text in enumerate(texts):
        codepoints[row, : len(text)] = torch.tensor([ord(c) for c in text], dtype=torch.long)
    return codepoints, lengths


def module_of(nlp):
    return get_torch_module(nlp.get_pipe("bilstm_crf_ner").model)


def test_learns_the_training_data(featured_nlp):
    for text, ents in TRAIN_DATA:
        assert ents_of(featured_nlp(text)) == sorted(ents), text


def test_shapes_and_padding(featured_nlp):
    """Each sequence's emissions are the same alone and in a padded batch."""
    module = module_of(featured_nlp)
    texts = ["马云在阿里巴巴杭州总部发表演讲", "", "李明", "王芳是腾讯的工程师" * 3]
    codepoints, lengths = padded_codepoints(texts)
    with torch.no_grad():
        batch = module.emissions(codepoints, lengths)
        assert batch.shape == (4, int(lengths.max()), len(featured_nlp.get_pipe("bilstm_crf_ner").scheme))
        for row, text in enumerate(texts):
            if not text:
                continue
            alone = module.emissions(codepoints[row : row + 1, : len(text)], lengths[row : row + 1])
            assert torch.allclose(batch[row, : len(text)], alone[0], atol=1e-5), text
    # The LSTM's input: chars 128 + classes 8 + bigrams 2x16 + flags 9 + word types 8
    # + SoftLexicon 16 + gazetteer 4 x 8 labels + LAC 256.
    assert module.lstm.input_size == 128 + 8 + 32 + 9 + 8 + 16 + 4 * 8 + 256


@pytest.mark.parametrize("lac_layers", [1, 2])
def test_predictions_give_lac_states_to_the_lstm_as_rows(monkeypatch, lac_layers):
    """A prediction of 8 sentences or more runs LAC over the real characters and gives
    its states to the LSTM as rows (``LACEncoder.encode_rows``, no padded copy): the
    emissions equal those of the padded path (gradients on), an empty sentence too."""
    from spacy_bilstm_crf.network.lac import LACEncoder

    module = module_of(train({**ALL_FEATURES, "lac_layers": lac_layers}, 2))
    calls = []
    encode_rows = LACEncoder.encode_rows

    def counted(self, *args, **kwargs):
        calls.append(1)
        return encode_rows(self, *args, **kwargs)

    monkeypatch.setattr(LACEncoder, "encode_rows", counted)
    texts = [text for text, _ in TRAIN_DATA][:7] + ["", "ＡＢＣ１２３张伟担任华为公司总经理"]
    codepoints, lengths = padded_codepoints(texts)
    with torch.no_grad():
        rows = module.emissions(codepoints, lengths)
    assert len(calls) == 1
    with torch.enable_grad():
        padded = module.emissions(codepoints, lengths).detach()
    assert len(calls) == 1
    inside = torch.arange(codepoints.shape[1])[None, :] < lengths.clamp_min(1)[:, None]
    torch.testing.assert_close(rows[inside], padded[inside], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("finetune", [0, 1, 2])
def test_lac_layers_train_from_the_top(finetune):
    """0: LAC frozen; 1: its top BiGRU layer trains; 2: both. Its embeddings never do."""
    lac = load_lac_encoder()
    module = module_of(train({**ALL_FEATURES, "lac_finetune": finetune}, 3))
    trained = {"layer2": finetune >= 1, "layer1": finetune >= 2, "embed": False, "output": False}
    for prefix, should_change in trained.items():
        for name, value in lac.state_dict().items():
            if name.startswith(prefix):
                changed = not torch.equal(module.lac.state_dict()[name], value)
                assert changed is should_change or (not value.is_floating_point()), (finetune, name)
    assert torch.equal(module.lac.vocab_codepoints, lac.vocab_codepoints)


def test_lac_lr_scale_scales_the_lac_updates_only():
    """One Adam step moves each weight by about lr · lr_scale (its first step is
    ±lr): LAC's trained layer by lac_lr_scale of the others' step, the rest alike."""
    lac = load_lac_encoder()

    def first_step(scale: float):
        nlp = train_small(steps=0, model={**ALL_FEATURES, "lac_lr_scale": scale})
        before = {name: value.clone() for name, value in module_of(nlp).state_dict().items()}
        optimizer = nlp.initialize(lambda: make_examples(nlp))
        nlp.update(make_examples(nlp), sgd=optimizer)
        after = module_of(nlp).state_dict()
        return {name: (after[name] - before[name]).abs().max().item() for name in before if after[name].is_floating_point()}

    full, quarter = first_step(1.0), first_step(0.25)
    lac_trained = [f"lac.layer2.{name}" for name, _ in lac.layer2.named_parameters()]
    for name in lac_trained:
        assert full[name] > 0
        assert quarter[name] == pytest.approx(full[name] / 4, rel=0.05), name
    assert quarter["lstm.weight_hh_l0"] == pytest.approx(full["lstm.weight_hh_l0"], rel=0.05)
    assert quarter["lac.layer1.in_weight"] == full["lac.layer1.in_weight"] == 0.0  # frozen


def test_character_table_starts_from_lac_embeddings():
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("zh")
    nlp.add_pipe("bilstm_crf_ner", config={"model": {**ALL_FEATURES, "lac_features": False}})
    nlp.initialize(lambda: make_examples(nlp))
    module, lac = module_of(nlp), load_lac_encoder()
    table = module.char_table[1:]
    assert "马" in "".join(chr(c) for c in table.tolist())
    for row, cp in enumerate(table.tolist()):
        expected = lac.embed.weight[lac.char_ids(torch.tensor([cp]))[0]]
        assert torch.equal(module.char_embed.weight[row + 2], expected), chr(cp)
    assert module.lac is None


def test_lac_embeddings_need_lac_width():
    with pytest.raises(ValueError, match="char_dim = 128"):
        nlp = spacy.blank("zh")
        nlp.add_pipe("bilstm_crf_ner", config={"model": {**ALL_FEATURES, "char_dim": 64}})


def test_saved_pipeline_loads_in_a_fresh_process_without_jieba(featured_nlp, featured_path):
    """Everything taken from LAC and jieba's dictionary is stored in the model."""
    code = (
        "import sys, json\n"
        "sys.modules['jieba'] = None  # any import of jieba now fails\n"
        "import spacy\n"
        f"nlp = spacy.load({str(featured_path)!r})\n"
        f"texts = {TEXTS!r}\n"
        "print(json.dumps([[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    expected = [[list(e) for e in ents_of(doc)] for doc in featured_nlp.pipe(TEXTS)]
    assert loaded == expected
    assert sum(len(ents) for ents in expected) > 10


def test_loading_zeroes_subnormal_weights(featured_nlp, featured_path, tmp_path):
    """A pipeline saved with subnormal weights (as LAC's files hold) loads without
    them (they slow x86 products) and predicts the same."""
    nlp = spacy.load(featured_path)
    tiny = torch.finfo(torch.float32).tiny
    with torch.no_grad():
        module_of(nlp).lac.layer1.in_weight[0, :4, 0] = tiny / 3
    nlp.to_disk(tmp_path / "subnormal")
    loaded = spacy.load(tmp_path / "subnormal")
    for name, tensor in module_of(loaded).state_dict().items():
        if tensor.is_floating_point():
            assert not ((tensor != 0) & (tensor.abs() < tiny)).any(), name
    assert [ents_of(doc) for doc in loaded.pipe(TEXTS)] == [ents_of(doc) for doc in featured_nlp.pipe(TEXTS)]


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_export_and_int8_keep_the_pipeline_entities(featured_path, tmp_path, variant):
    nlp = spacy.load(featured_path)
    if variant == "int8":
        quantize_pipeline(nlp)
        nlp.to_disk(tmp_path / "int8")
        nlp = spacy.load(tmp_path / "int8")
        for text, ents in TRAIN_DATA:
            assert ents_of(nlp(text)) == sorted(ents), text
    export_pipeline(nlp, tmp_path / "export")
    # An INT8 network is exported as TorchScript, which runs code when loaded: trusted here,
    # since this test wrote it.
    tagger = Tagger.load(tmp_path / "export", trust_torchscript=variant == "int8")
    expected = [ents_of(doc) for doc in nlp.pipe(TEXTS, batch_size=256)]
    assert tagger.batch(TEXTS) == expected
    assert sum(len(ents) for ents in expected) > 10


def test_scripted_module_equals_eager(featured_nlp):
    module = module_of(featured_nlp)
    codepoints = torch.randint(0x4E00, 0x4E00 + 300, (4, 19))
    lengths = torch.tensor([19, 0, 1, 11])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = script_module(module)
    with torch.no_grad():
        assert torch.equal(scripted(codepoints, lengths), module(codepoints, lengths))
