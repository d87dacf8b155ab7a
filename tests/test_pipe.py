"""The bilstm_crf_ner component: training, prediction, robustness, serialization."""
import multiprocessing
import subprocess
import sys

import numpy
import pytest
import spacy
import srsly
import torch
from spacy.training import Example

from spacy_bilstm_crf.component.architectures import get_torch_module

from .conftest import REPO, SMALL_MODEL, TRAIN_DATA, ents_of, make_examples, train_small


def test_factory_is_found_through_entry_points_without_import():
    code = (
        "import sys, spacy\n"
        "nlp = spacy.blank('zh')\n"
        "ner = nlp.add_pipe('bilstm_crf_ner')\n"
        "print(type(ner).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert result.stdout.strip() == "BiLSTMCRFNER"


@pytest.mark.parametrize("scheme", ["BIOES", "BIO"])
def test_overfits_small_sample_to_all_correct_entities(scheme, trained_nlp):
    nlp = trained_nlp if scheme == "BIOES" else train_small(scheme=scheme)
    for text, ents in TRAIN_DATA:
        assert ents_of(nlp(text)) == sorted(ents), text


def test_loss_goes_down_and_is_reported():
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("zh")
    nlp.add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    first = nlp.update(examples, sgd=optimizer)["bilstm_crf_ner"]
    for _ in range(30):
        last = nlp.update(examples, sgd=optimizer)["bilstm_crf_ner"]
    assert first > 0 and last < first / 2


def test_sets_token_iob_and_type(trained_nlp):
    doc = trained_nlp("马云在阿里巴巴杭州总部发表演讲")
    assert [t.ent_iob_ for t in doc[:4]] == ["B", "I", "O", "B"]
    assert doc[0].ent_type_ == "name" and doc[2].ent_type_ == ""


def test_batch_consistency_pipe_equals_single_calls(trained_nlp):
    texts = ["", "马云", "李明去北京大学读书", "", "王芳是腾讯的工程师" * 7, "我在上海看了电影《流浪地球》", "a"]
    piped = [ents_of(doc) for doc in trained_nlp.pipe(texts, batch_size=3)]
    single = [ents_of(trained_nlp(text)) for text in texts]
    assert piped == single
    assert piped[2] == [(0, 2, "name"), (3, 7, "organization")]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\n\t \u3000",
        "马云" * 10000,
        "😀马云在阿里巴巴😀🇨🇳",
        "Apple公司CEO Tim Cook 2024年访问北京123",
        "龘靐齉爩",  # characters never seen in training
        "马云\x00\x01\x1b在\x7f阿里巴巴",
        "马云  在\n\n阿里巴巴",
    ],
)
def test_bad_input_gives_doc_with_aligned_entities(trained_nlp, text):
    doc = trained_nlp(text)
    assert doc.text == text
    for ent in doc.ents:
        assert ent.text == text[ent.start_char : ent.end_char]
        assert ent.label_ in trained_nlp.get_pipe("bilstm_crf_ner").labels
    assert len(doc) == len(trained_nlp.make_doc(text))


def test_to_disk_and_spacy_load_round_trip(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    texts = [text for text, _ in TRAIN_DATA] + ["龘靐齉爩 unseen", ""]
    assert [ents_of(d) for d in loaded.pipe(texts)] == [ents_of(d) for d in trained_nlp.pipe(texts)]
    before = get_torch_module(trained_nlp.get_pipe("bilstm_crf_ner").model).state_dict()
    after = get_torch_module(loaded.get_pipe("bilstm_crf_ner").model).state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert loaded.get_pipe("bilstm_crf_ner").labels == trained_nlp.get_pipe("bilstm_crf_ner").labels


def test_to_bytes_round_trip(trained_nlp):
    ner = trained_nlp.get_pipe("bilstm_crf_ner")
    fresh = spacy.blank("zh")
    fresh_ner = fresh.add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
    fresh_ner.from_bytes(ner.to_bytes())
    assert numpy.array_equal(fresh_ner.char_table, ner.char_table)
    text = "张伟担任华为公司总经理"
    assert ents_of(fresh(text)) == ents_of(trained_nlp(text))


def test_loading_missing_or_corrupt_directory_gives_clear_error(trained_nlp, tmp_path):
    ner = trained_nlp.get_pipe("bilstm_crf_ner")
    fresh = spacy.blank("zh").add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
    with pytest.raises(ValueError, match="directory not found"):
        fresh.from_disk(tmp_path / "nowhere")
    ner.to_disk(tmp_path / "ner")
    (tmp_path / "ner" / "model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="Cannot load the weights"):
        fresh.from_disk(tmp_path / "ner")
    (tmp_path / "ner" / "cfg").unlink()
    with pytest.raises(ValueError, match="'cfg' is missing"):
        fresh.from_disk(tmp_path / "ner")


def test_round_trip_before_initialize(tmp_path):
    nlp = spacy.blank("zh")
    ner = nlp.add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
    ner.add_label("PER")
    fresh = spacy.blank("zh").add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
    fresh.from_bytes(ner.to_bytes())
    assert fresh.labels == ("PER",) and not fresh.model.layers
    nlp.to_disk(tmp_path / "blank")
    loaded = spacy.load(tmp_path / "blank")
    loaded_ner = loaded.get_pipe("bilstm_crf_ner")
    assert loaded_ner.labels == ("PER",) and not loaded_ner.model.layers
    loaded.initialize(lambda: make_examples(loaded))
    assert loaded_ner.cfg["n_chars"] > 0 and loaded_ner.model.layers


def test_tables_are_saved_once_in_the_weights(trained_nlp, tmp_path):
    ner = trained_nlp.get_pipe("bilstm_crf_ner")
    ner.to_disk(tmp_path / "ner")
    assert sorted(p.name for p in (tmp_path / "ner").iterdir()) == ["cfg", "model", "vocab"]
    assert ner.cfg["n_chars"] == len(ner.char_table) > 0
    fresh = spacy.blank("zh").add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
    fresh.from_disk(tmp_path / "ner")
    assert numpy.array_equal(fresh.char_table, ner.char_table)


def test_loads_pipelines_saved_with_table_files(trained_nlp, tmp_path):
    """Version 0.1.0 wrote the character table and lexicon keys as files, no sizes in cfg."""
    ner = trained_nlp.get_pipe("bilstm_crf_ner")
    ner.to_disk(tmp_path / "ner")
    cfg = srsly.read_json(tmp_path / "ner" / "cfg")
    # None of them in 0.1.0: it loads with a warning (no checksum to verify).
    del cfg["n_chars"], cfg["n_lexicon_keys"], cfg["n_gazetteer_keys"], cfg["checksum"]
    srsly.write_json(tmp_path / "ner" / "cfg", cfg)
    srsly.write_json(tmp_path / "ner" / "char_table", ner.char_table.tolist())
    keys = None if ner.lexicon_keys is None else ner.lexicon_keys.tolist()
    (tmp_path / "ner" / "lexicon").write_bytes(srsly.msgpack_dumps(keys))
    fresh_nlp = spacy.blank("zh")
    fresh = fresh_nlp.add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
    with pytest.warns(UserWarning, match="NOT verified"):
        fresh.from_disk(tmp_path / "ner")
    assert fresh.cfg["n_chars"] == len(ner.char_table)
    texts = [text for text, _ in TRAIN_DATA]
    assert [ents_of(d) for d in fresh_nlp.pipe(texts)] == [ents_of(d) for d in trained_nlp.pipe(texts)]
    legacy_bytes = srsly.msgpack_dumps({
        "cfg": srsly.json_dumps(cfg).encode("utf8"),
        "char_table": srsly.json_dumps(ner.char_table.tolist()).encode("utf8"),
        "lexicon": srsly.msgpack_dumps(keys),
        "model": ner.model.to_bytes(),
        "vocab": ner.vocab.to_bytes(),
    })  # fmt: skip
    from_bytes = spacy.blank("zh").add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
    with pytest.warns(UserWarning, match="NOT verified"):
        from_bytes.from_bytes(legacy_bytes)
    assert numpy.array_equal(from_bytes.char_table, ner.char_table)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_n_process_2_equals_single_process(trained_nlp, start_method):
    texts = [text for text, _ in TRAIN_DATA] * 3 + ["", "马云"]
    single = [ents_of(doc) for doc in trained_nlp.pipe(texts)]
    previous = multiprocessing.get_start_method()
    multiprocessing.set_start_method(start_method, force=True)
    try:
        multi = [ents_of(doc) for doc in trained_nlp.pipe(texts, n_process=2, batch_size=4)]
    finally:
        multiprocessing.set_start_method(previous, force=True)
    assert multi == single


def test_initialize_with_given_labels_and_add_label_rules():
    nlp = spacy.blank("zh")
    ner = nlp.add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
    examples = make_examples(nlp)
    labels = ["address", "book", "company", "game", "government", "movie", "name",
              "organization", "position", "scene"]  # fmt: skip
    ner.initialize(lambda: examples, nlp=nlp, labels=labels)
    assert ner.labels == tuple(labels)
    assert len(ner.scheme.tags) == 41
    assert ner.label_data == labels
    with pytest.raises(ValueError, match="after it is initialized"):
        ner.add_label("product")
    assert ner.add_label("name") == 0


def test_unknown_gold_label_is_a_clear_error():
    nlp = spacy.blank("zh")
    ner = nlp.add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
    examples = make_examples(nlp)
    # Checked on a sample at initialize, so a wrong label set fails before training.
    with pytest.raises(ValueError, match="'company'.*not one of the labels"):
        ner.initialize(lambda: examples, nlp=nlp, labels=["name"])


def test_nan_loss_is_an_error(trained_nlp):
    nlp = train_small(steps=1)
    module = get_torch_module(nlp.get_pipe("bilstm_crf_ner").model)
    with torch.no_grad():
        module.project.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        nlp.update(make_examples(nlp)[:2])


def test_empty_batch_is_skipped():
    nlp = train_small(steps=1)
    losses = nlp.update([Example.from_dict(nlp.make_doc(""), {"entities": []})])
    assert losses["bilstm_crf_ner"] == 0.0
    assert nlp.get_pipe("bilstm_crf_ner").predict([nlp.make_doc("")])[0].tags.shape == (0,)


def test_marginals_sum_to_one_and_agree_with_decoding(trained_nlp):
    ner = trained_nlp.get_pipe("bilstm_crf_ner")
    docs = [trained_nlp.make_doc(t) for t in ["马云在阿里巴巴杭州总部发表演讲", "", "李明"]]
    marginals = ner.predict_marginals(docs)
    n_tags = 1 + 4 * len(ner.labels)
    assert [m.shape for m in marginals] == [(15, n_tags), (0, n_tags), (2, n_tags)]
    numpy.testing.assert_allclose(marginals[0].sum(axis=1), 1.0, atol=1e-5)
    # On an overfit sentence, the most probable tag per token is the decoded one.
    assert marginals[0].argmax(axis=1).tolist() == ner.predict(docs[:1])[0].tags.tolist()


def test_uninitialized_model_gives_clear_error():
    nlp = spacy.blank("zh")
    nlp.add_pipe("bilstm_crf_ner")
    with pytest.raises(ValueError, match="not initialized"):
        nlp("马云")


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("*.cfg")), ids=lambda p: p.name)
def test_configs_pass_fill_config_and_debug_config(config, tmp_path):
    filled = tmp_path / "filled.cfg"
    run = [sys.executable, "-m", "spacy"]
    subprocess.run(run + ["init", "fill-config", str(config), str(filled)], check=True)
    result = subprocess.run(
        run + ["debug", "config", str(filled), "-F", "--paths.train", "x.spacy", "--paths.dev", "y.spacy"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Config is valid" in result.stdout


def test_lexicon_travels_with_the_model(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("阿里巴巴\n北京大学\n杭州\n流浪地球 3 nz\n", encoding="utf8")
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("zh")
    config = {"model": {**SMALL_MODEL, "lexicon": str(words)}}
    ner = nlp.add_pipe("bilstm_crf_ner", config=config)
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    assert len(ner.lexicon_keys) == 4
    module = get_torch_module(ner.model)
    flags = module.lexicon(torch.tensor([[ord(c) for c in "在阿里巴巴"]]), torch.tensor([5]))
    assert flags[0, :, :].sum(dim=1).tolist() == [0, 1, 1, 1, 1]  # B4+, M4+, M4+, E4+
    for _ in range(5):
        nlp.update(examples, sgd=optimizer)
    nlp.to_disk(tmp_path / "model")
    words.unlink()  # loading must not need the word list
    loaded = spacy.load(tmp_path / "model")
    texts = [text for text, _ in TRAIN_DATA]
    assert [ents_of(d) for d in loaded.pipe(texts)] == [ents_of(d) for d in nlp.pipe(texts)]
    assert numpy.array_equal(loaded.get_pipe("bilstm_crf_ner").lexicon_keys, ner.lexicon_keys)
