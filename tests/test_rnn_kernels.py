"""The compiled recurrences (``rnn_kernels.py``): Paddle's BiGRU and the BiLSTM against
their tensor twins, LAC's tags through them, and where the model takes them."""
import json
from pathlib import Path

import numpy
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from spacy_bilstm_crf.network import kernels, rnn_kernels
from spacy_bilstm_crf.network.lac.encoder import PaddleBiGRU

FIXTURE = Path(__file__).parent / "fixtures" / "lac_reference.json"


def _inside(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return (torch.arange(max_len)[None, :] < lengths[:, None])[:, :, None]


def test_activations_are_close_to_the_exact_ones():
    numba = pytest.importorskip("numba")
    tanh = numba.njit(rnn_kernels._tanh32)
    rnn_kernels._kernel("BiLSTM", rnn_kernels._bilstm, rnn_kernels._probe_bilstm)  # registers the activations
    sigmoid = numba.njit(rnn_kernels._sigmoid32)
    x = numpy.linspace(-30, 30, 20001).astype(numpy.float32)
    got_tanh = numpy.array([tanh(v) for v in x])
    got_sigmoid = numpy.array([sigmoid(v) for v in x])
    exact = x.astype(numpy.float64)
    assert numpy.abs(got_tanh - numpy.tanh(exact)).max() < 5e-7
    assert numpy.abs(got_sigmoid - 1 / (1 + numpy.exp(-exact))).max() < 5e-7
    assert got_tanh[0] == -1.0 and got_tanh[-1] == 1.0


@pytest.mark.parametrize("input_dim", [5, 64])
def test_paddle_bigru_equals_the_tensor_layer(input_dim):
    torch.manual_seed(0)
    layer = PaddleBiGRU(input_dim, hidden=16)
    for parameter in layer.parameters():
        nn.init.normal_(parameter, std=0.5)
    lengths = torch.tensor([7, 1, 12, 3])
    x = torch.randn(4, 12, input_dim)
    with torch.no_grad():
        expected = layer(x, lengths)
        got = rnn_kernels.paddle_bigru(layer, x, lengths)
    assert got is not None and got.shape == (4, 12, 32)
    inside = _inside(lengths, 12)
    torch.testing.assert_close(got * inside, expected * inside, atol=2e-6, rtol=1e-5)
    assert (got * ~inside == 0).all()  # zero at padding
    # Each sentence alone gives the same states: the reverse direction starts at its end.
    with torch.no_grad():
        alone = rnn_kernels.paddle_bigru(layer, x[3:4, :3], torch.tensor([3]))
    torch.testing.assert_close(alone[0], got[3, :3], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("depth", [1, 2])
def test_bilstm_layers_equal_nn_lstm_on_the_packed_batch(depth):
    torch.manual_seed(1)
    lstm = nn.LSTM(20, 16, num_layers=depth, batch_first=True, bidirectional=True)
    lengths = torch.tensor([9, 2, 1, 9, 5])
    x = torch.randn(5, 9, 20)
    with torch.no_grad():
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        expected, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=9)
        got = x
        for layer in range(depth):
            got = rnn_kernels.bilstm_layer(lstm, layer, got, lengths)
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)
    # The transposed weights are cached, and follow a change of the weights.
    assert any(name.startswith("_kernel_weights_l0") for name in lstm.__dict__)
    if depth == 1:
        with torch.no_grad():
            lstm.weight_hh_l0.mul_(-1.0)
            changed = rnn_kernels.bilstm_layer(lstm, 0, x, lengths)
            expected_changed, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=9)
        assert not torch.allclose(changed, got, atol=1e-3)
        torch.testing.assert_close(changed, expected_changed, atol=2e-6, rtol=1e-5)


def test_folded_lookups_equal_their_columns_multiplied():
    """Embeddings among the first layer's inputs, folded into its projection (a row of
    a projected table each), give the layer of the whole input; a change of the table
    is followed."""
    from spacy_bilstm_crf.network.recurrence import Lookup

    torch.manual_seed(2)
    lstm = nn.LSTM(20, 16, batch_first=True, bidirectional=True)
    chars, classes = nn.Embedding(30, 6), nn.Embedding(5, 3)
    lengths = torch.tensor([7, 3, 1])
    char_ids, class_ids = torch.randint(0, 30, (3, 7)), torch.randint(0, 5, (3, 7))
    dense = [torch.randn(3, 7, 4), torch.randn(3, 7, 7)]
    with torch.no_grad():
        # Columns: chars 0-5, dense 6-9, classes 10-12, dense 13-19.
        whole = torch.cat([chars(char_ids), dense[0], classes(class_ids), dense[1]], dim=-1)
        expected = rnn_kernels.bilstm_layer(lstm, 0, whole, lengths)
        lookups = [Lookup(char_ids, chars, (0, 6)), Lookup(class_ids, classes, (10, 13))]
        folded = rnn_kernels.bilstm_layer(lstm, 0, torch.cat(dense, dim=-1), lengths, lookups)
        torch.testing.assert_close(folded, expected, atol=2e-6, rtol=1e-5)
        chars.weight.mul_(2.0)
        changed = rnn_kernels.bilstm_layer(lstm, 0, torch.cat(dense, dim=-1), lengths, lookups)
        whole = torch.cat([chars(char_ids), dense[0], classes(class_ids), dense[1]], dim=-1)
        torch.testing.assert_close(changed, rnn_kernels.bilstm_layer(lstm, 0, whole, lengths), atol=2e-6, rtol=1e-5)
    assert not torch.allclose(changed, folded, atol=1e-3)


def test_compiled_lac_reproduces_paddle_tags():
    """LAC-small through the kernels: the tags Paddle's own kernels computed."""
    from spacy_bilstm_crf.network.lac import load_lac_encoder

    encoder = load_lac_encoder()
    reference = json.loads(FIXTURE.read_text(encoding="utf8"))["sentences"]
    for sentence in reference:
        codepoints = torch.tensor([[ord(c) for c in sentence["text"]]])
        lengths = torch.tensor([codepoints.shape[1]])
        with torch.no_grad():
            states = encoder.encode_layers_compiled(encoder.char_ids(codepoints, fold=False), lengths)
            assert states is not None
            tags = encoder.decode(encoder.output(states[1]), lengths)[0].tolist()
        assert tags == sentence["tags"], sentence["text"]


def _model():
    from spacy_bilstm_crf.network.model import BiLSTMCRF
    from spacy_bilstm_crf.network.tags import TagScheme

    torch.manual_seed(4)
    model = BiLSTMCRF(50, TagScheme(["PER", "LOC"], "BIOES"), depth=2)
    model.set_char_table(torch.arange(0x4E00, 0x4E00 + 50))
    return model


def test_model_predictions_on_a_few_sentences_take_the_kernels(monkeypatch):
    from spacy_bilstm_crf.network import model as model_module

    calls = []

    def counted(*args):
        calls.append(len(args[4]))  # the lookups folded into the layer
        return rnn_kernels.bilstm_layer(*args)

    monkeypatch.setattr(model_module, "bilstm_layer", counted)
    model = _model()
    lengths = torch.tensor([5, 0, 12])
    codepoints = torch.randint(0x4E00, 0x4E00 + 60, (3, 12))
    with torch.enable_grad():
        packed = model.emissions(codepoints, lengths)  # gradients on: nn.LSTM
    assert not calls
    with torch.no_grad():
        compiled = model.emissions(codepoints, lengths)
    assert calls == [2, 0]  # a call per layer; characters and classes folded into the first
    inside = (torch.arange(12)[None, :] < lengths[:, None])
    torch.testing.assert_close(compiled[inside], packed.detach()[inside], atol=1e-5, rtol=1e-5)
    # Eight sentences or more: the ragged tensor path.
    with torch.no_grad():
        model.emissions(codepoints.repeat(3, 1), lengths.repeat(3))
    assert len(calls) == 2


def test_without_numba_the_tensor_ops_answer(monkeypatch):
    model = _model()
    lengths = torch.tensor([4, 9])
    codepoints = torch.randint(0x4E00, 0x4E00 + 60, (2, 9))
    with torch.no_grad():
        compiled = model.emissions(codepoints, lengths)
    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_FAILED", {"BiLSTM": True, "Paddle BiGRU": True})
    assert rnn_kernels.bilstm_layer(model.lstm, 0, torch.zeros(1, 1, model.lstm.input_size), torch.tensor([1])) is None
    with torch.no_grad():
        fallback = model.emissions(codepoints, lengths)
    inside = (torch.arange(9)[None, :] < lengths[:, None])
    torch.testing.assert_close(fallback[inside], compiled[inside], atol=1e-5, rtol=1e-5)
