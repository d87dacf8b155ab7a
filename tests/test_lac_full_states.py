"""LAC-full's states as character features (``lac_full_states``): each character's
vector against the network run on its text alone, long texts cut into rows, the
saved form, and a pipeline that trains, saves and loads in a fresh process without
the sdist."""
import numpy
import pytest
import spacy
import torch
from spacy.tokens import Doc

from spacy_bilstm_crf.features import lac_full_states
from spacy_bilstm_crf.features.lac_full_states import N_PLACES, LACFullEncoder, token_means
from spacy_bilstm_crf.network.lac.full_encoder import load_lac_full_encoder
from spacy_bilstm_crf.network.lac.sdist import SdistError, read_lac_full, tensor_shapes
from spacy_bilstm_crf.network.lac.segmenter import SINGLE, UnigramSegmenter, mixed_sequence
from spacy_bilstm_crf.network.lac.word_vectors import LACVocab
from spacy_bilstm_crf.serving.deploy import export_pipeline

from .conftest import SMALL_MODEL, TRAIN_DATA, ents_in_a_fresh_process, ents_of, make_examples, pipeline_trained_with_sdist
from .test_lac_full import N_TAGS, WORDS, build_sdist, paddle_bytes, sha

TEXTS = ["北京大学", "我在北京大学读书", "萬A大学2019", "", "北"]


def small_sdist(folder):
    """test_lac_full's small archive with weights of a trained network's scale: with
    unit-variance weights the recurrence is chaotic and float rounding grows step by step."""
    rng = numpy.random.default_rng(0)
    members = {
        f"model/{name}": paddle_bytes((0.1 * rng.normal(size=shape)).astype("float32"))
        for name, shape in tensor_shapes(len(WORDS), N_TAGS).items()
    }
    return build_sdist(folder, members)


@pytest.fixture
def sdist(tmp_path, monkeypatch):
    path = small_sdist(tmp_path)
    monkeypatch.setattr(read_lac_full, "__defaults__", (sha(path),))  # the small archive's checksum
    return path


def _reference(text, files, layers):
    """One text's character vectors, from LAC-full's own encoder (``encode_layers``)
    run on that text alone: its position's states, then the place one-hot."""
    seq = mixed_sequence(text, UnigramSegmenter(files.seg_counts, "lac"), LACVocab.from_files(files))
    if not seq.ids:
        return numpy.zeros((0, 256 * layers + N_PLACES), dtype="float32")
    encoder = load_lac_full_encoder(files)
    with torch.no_grad():
        first, second = encoder.encode_layers(torch.tensor([seq.ids]), torch.tensor([len(seq.ids)]))
    states = (second if layers == 1 else torch.cat([first, second], dim=-1))[0].numpy()
    rows = []
    for position, place in zip(seq.char_position, seq.char_place):
        rows.append(numpy.concatenate([states[position], numpy.eye(N_PLACES, dtype="float32")[place]]))
    return numpy.stack(rows)


@pytest.mark.parametrize("layers", [1, 2])
def test_char_vectors_match_the_network_on_each_text_alone(sdist, layers):
    files = read_lac_full(sdist)
    encoder = LACFullEncoder()
    encoder.load_sdist(str(sdist))
    batch = encoder.char_vectors(TEXTS, layers)
    assert [v.shape for v in batch] == [(len(t), 256 * layers + N_PLACES) for t in TEXTS]
    for text, vectors in zip(TEXTS, batch):
        numpy.testing.assert_allclose(vectors, _reference(text, files, layers), rtol=1e-4, atol=1e-5)
    # 北京 and 大学 are words of the segmenter and of LAC's vocabulary: one position each.
    first = batch[0]
    numpy.testing.assert_array_equal(first[0, :256], first[1, :256])
    assert not numpy.allclose(first[1, :256], first[2, :256])
    assert first[:, -N_PLACES:].argmax(axis=1).tolist() == [0, 2, 0, 2]


def test_long_texts_are_cut_into_rows(sdist, monkeypatch):
    files = read_lac_full(sdist)
    encoder = LACFullEncoder()
    encoder.load_sdist(str(sdist))
    monkeypatch.setattr(lac_full_states, "MAX_POSITIONS", 3)
    text = "北京大学萬A北京大学北"  # positions: 北京 大学 萬 A 北京 大学 北
    vectors = encoder.char_vectors([text], 1)[0]
    seq = mixed_sequence(text, UnigramSegmenter(files.seg_counts, "lac"), LACVocab.from_files(files))
    assert len(seq.ids) == 7
    # Rows of three positions, each encoded on its own.
    cut = [seq.ids[0:3], seq.ids[3:6], seq.ids[6:7]]
    net = load_lac_full_encoder(files)
    states = []
    with torch.no_grad():
        for ids in cut:
            states.append(net.encode_layers(torch.tensor([ids]), torch.tensor([len(ids)]))[1][0].numpy())
    expected = numpy.concatenate(states)[numpy.asarray(seq.char_position)]
    numpy.testing.assert_allclose(vectors[:, :256], expected, rtol=1e-4, atol=1e-5)
    assert vectors[-1, -N_PLACES:].argmax() == SINGLE


def test_saved_form_round_trips(sdist):
    encoder = LACFullEncoder()
    assert LACFullEncoder.from_bytes(encoder.to_bytes()).ready is False
    with pytest.raises(ValueError, match="not initialized"):
        encoder.char_vectors(["北京"], 1)
    encoder.load_sdist(str(sdist))
    loaded = LACFullEncoder.from_bytes(encoder.to_bytes())
    assert loaded.vocab.ids == encoder.vocab.ids and loaded.vocab.q2b == encoder.vocab.q2b
    assert loaded.segmenter.cut("北京大学") == encoder.segmenter.cut("北京大学") == ["北京", "大学"]
    # The table is stored in float16: the states agree to its rounding.
    for a, b in zip(loaded.char_vectors(TEXTS, 1), encoder.char_vectors(TEXTS, 1)):
        numpy.testing.assert_allclose(a, b, atol=2e-2)


def test_token_vectors_are_their_characters_mean():
    nlp = spacy.blank("zh")
    chars = numpy.arange(7 * 3, dtype="float32").reshape(7, 3)
    doc = Doc(nlp.vocab, words=["北京", "大", "学", "读书"], spaces=[False, True, False, False])  # "北京大 学读书"
    means = token_means(chars, doc)
    expected = [chars[0:2].mean(0), chars[2], chars[4], chars[5:7].mean(0)]
    numpy.testing.assert_allclose(means, numpy.stack(expected))
    one_each = nlp.make_doc("北京大学")
    numpy.testing.assert_array_equal(token_means(chars[:4], one_each), chars[:4])
    assert token_means(numpy.zeros((0, 3), dtype="float32"), nlp.make_doc("")).shape == (0, 3)


STATES_MODEL = {**SMALL_MODEL, "bigram_dim": 0}


@pytest.fixture(scope="module")
def states_pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lac_full_states")
    sdist = small_sdist(folder)
    return pipeline_trained_with_sdist(folder, sdist, {**STATES_MODEL, "lac_full_states": str(sdist)})


def test_pipeline_trains_and_loads_in_a_fresh_process_without_the_sdist(states_pipeline, tmp_path):
    nlp, path = states_pipeline
    texts = [text for text, _ in TRAIN_DATA]
    assert [ents_of(nlp(text)) for text in texts] == [[tuple(e) for e in ents] for _, ents in TRAIN_DATA]
    assert ents_in_a_fresh_process(path, texts, tmp_path) == [ents_of(nlp(text)) for text in texts]


def test_pipeline_with_states_is_not_exported_alone(states_pipeline, tmp_path):
    nlp, _ = states_pipeline
    with pytest.raises(NotImplementedError, match="upstream encoder"):
        export_pipeline(nlp, tmp_path / "export")


def test_settings_that_exclude_each_other_and_a_wrong_sdist(tmp_path):
    tok2vec = {"@architectures": "spacy.HashEmbedCNN.v2", "width": 8, "depth": 1, "embed_size": 50,
               "window_size": 1, "maxout_pieces": 2, "subword_features": False, "pretrained_vectors": None}  # fmt: skip
    model = {"@architectures": "spacy-bilstm-crf.BiLSTMCRF.v2", "tok2vec": tok2vec, "lac_full_states": "lac"}
    with pytest.raises(ValueError, match="cannot be combined with a tok2vec"):
        spacy.blank("zh").add_pipe("bilstm_crf_ner", config={"model": {**STATES_MODEL, **model}})
    bad = tmp_path / "LAC-2.1.2.tar.gz"
    bad.write_bytes(b"not the archive")
    nlp = spacy.blank("zh")
    nlp.add_pipe("bilstm_crf_ner", config={"model": {**STATES_MODEL, "lac_full_states": str(bad)}})
    with pytest.raises(SdistError, match="LAC-2.1.2.tar.gz: SHA-256"):
        nlp.initialize(lambda: make_examples(nlp))
