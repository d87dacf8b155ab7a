"""The ONNX export's two halves: the numpy features (``serving/onnx_features.py``) and
the graph module (``serving/onnx_graph.py``), each against the network they split and
against brute force on small inputs; then the exported graph in onnxruntime."""
import itertools

import numpy as np
import pytest
import torch

from spacy_bilstm_crf.network.lexicon import padded_word_keys
from spacy_bilstm_crf.serving.onnx_features import INPUT_NAMES, Windows, load_tables
from spacy_bilstm_crf.serving.onnx_graph import FeatureEmissions, feature_tables, soft_lexicon

from .conftest import every_feature_network

# Widths at and around the lexicon's and the gazetteer's longest words (6 and 5).
SHAPES = [(1, 2), (1, 7), (5, 23), (2, 9), (9, 40)]


@pytest.fixture(scope="module")
def network():
    return every_feature_network()


def batch_of(batch: int, width: int, seed: int):
    """Code points from a 12-character alphabet (the stored words' characters, so
    words match often), with a full-width letter, a space and an unknown character;
    lengths from 0 to ``width``. RETURNS: (codepoints, lengths) as int64 arrays."""
    generator = torch.Generator().manual_seed(seed)
    codepoints = torch.randint(0x4E00, 0x4E00 + 12, (batch, width), generator=generator)
    codepoints[0, 0] = 0xFF21  # Ａ, folded to a
    if width > 2:
        codepoints[-1, 1:3] = torch.tensor([0x20, 0x9F99])  # a space, a character the table lacks
    lengths = torch.randint(0, width + 1, (batch,), generator=generator)
    lengths[0] = width
    return codepoints.numpy(), lengths.numpy()


def graph_inputs(feed):
    return [torch.from_numpy(np.ascontiguousarray(feed[name])) for name in INPUT_NAMES]


def test_features_and_graph_give_the_networks_emissions(network):
    tables = load_tables(feature_tables(network))
    graph = FeatureEmissions(network)
    for seed, (batch, width) in enumerate(SHAPES):
        codepoints, lengths = batch_of(batch, width, seed)
        feed = tables.features(codepoints, lengths)
        with torch.no_grad():
            expected = network.emissions(torch.from_numpy(codepoints), torch.from_numpy(lengths))
            found = graph(*graph_inputs(feed))
        inside = torch.from_numpy(np.arange(width)[None, :] < lengths[:, None])
        assert found.shape == expected.shape
        torch.testing.assert_close(found[inside], expected[inside], rtol=1e-5, atol=1e-5)
    # Not vacuous: the last batch matched words and entities.
    assert feed["word_flags"].sum() > 0 and feed["entity_flags"].sum() > 0 and len(feed["place_target"]) > 10


def test_matched_words_against_brute_force(network):
    """Every (sentence, start, length) whose characters spell a stored word, found by
    hashing each substring on its own, and no other."""
    matcher = load_tables(feature_tables(network)).lexicon
    keys = network.lexicon.keys.numpy()
    for seed, (batch, width) in enumerate(SHAPES):
        codepoints, lengths = batch_of(batch, width, seed)
        codepoints = np.where(codepoints == 0xFF21, 0x61, codepoints)  # normalized
        words = matcher.words(Windows(codepoints, lengths, matcher.max_len))
        found = set(zip(words.batch.tolist(), words.start.tolist(), words.length.tolist(), words.row.tolist()))
        expected = set()
        for b, start, length in itertools.product(range(batch), range(width), range(1, matcher.max_len + 1)):
            if start + length > lengths[b]:
                continue
            piece = torch.from_numpy(codepoints[b, start : start + length])[None, :]
            key = int(padded_word_keys(piece, torch.tensor([length]), unique=False)[0])
            row = int(np.searchsorted(keys, key))
            if row < len(keys) and keys[row] == key:
                expected.add((b, start, length, row))
        assert found == expected, (batch, width)
    assert expected  # the last batch holds words


def test_soft_lexicon_against_brute_force(network):
    """SoftLexicon from the places equals each set's weighted mean of its words'
    character means, computed word by word."""
    tables = load_tables(feature_tables(network))
    weights = network.lexicon.weights.numpy()
    generator = torch.Generator().manual_seed(1)
    for seed, (batch, width) in enumerate(SHAPES):
        codepoints, lengths = batch_of(batch, width, seed)
        feed = tables.features(codepoints, lengths)
        chars = torch.randn(batch, width, 3, generator=generator)
        found = soft_lexicon(
            chars, *(torch.from_numpy(feed[n]) for n in ("place_target", "place_low", "place_high", "place_weight"))
        ).numpy().reshape(batch, width, 4, 3)
        sums = np.zeros((batch, width, 4, 3))
        totals = np.zeros((batch, width, 4))
        normalized = np.where(codepoints == 0xFF21, 0x61, codepoints)
        words = tables.lexicon.words(Windows(normalized, lengths, tables.lexicon.max_len))
        for b, start, length, row in zip(words.batch, words.start, words.length, words.row):
            mean = chars[b, start : start + length].numpy().mean(axis=0)
            for offset in range(length):
                which = 3 if length == 1 else 0 if offset == 0 else 2 if offset == length - 1 else 1
                sums[b, start + offset, which] += weights[row] * mean
                totals[b, start + offset, which] += weights[row]
        expected = sums / np.maximum(totals, 1e-6)[..., None]
        np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5)


def test_exported_graph_in_onnxruntime(network):
    """The whole chain as served: numpy features, the ONNX graph in onnxruntime."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from spacy_bilstm_crf.serving.onnx_export import onnx_graph

    tables_bytes = feature_tables(network)
    tables = load_tables(tables_bytes)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_graph(network, tables_bytes), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
    for seed, (batch, width) in enumerate(SHAPES):
        codepoints, lengths = batch_of(batch, width, seed)
        feed = tables.features(codepoints, lengths)
        found = session.run(None, feed)[0]
        with torch.no_grad():
            expected = network.emissions(torch.from_numpy(codepoints), torch.from_numpy(lengths)).numpy()
        inside = np.arange(width)[None, :] < lengths[:, None]
        np.testing.assert_allclose(found[inside], expected[inside], rtol=1e-4, atol=1e-4)


def test_broken_tables_are_a_clear_error(tmp_path):
    """What ``OnnxTagger.load`` reads after the checksum: an archive that is not the
    tables is refused with the file's name."""
    pytest.importorskip("onnxruntime")
    import io

    from spacy_bilstm_crf.serving.onnx_tagger import ExportError, load_tables_checked

    with pytest.raises(ExportError, match="features.npz"):
        load_tables_checked(b"not a zip archive", tmp_path / "features.npz")
    archive = io.BytesIO()
    np.savez(archive, char_table=np.arange(3))  # no sizes
    with pytest.raises(ExportError, match="features.npz.*KeyError"):
        load_tables_checked(archive.getvalue(), tmp_path / "features.npz")
