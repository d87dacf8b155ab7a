"""The inference BiLSTM over ragged batches against ``nn.LSTM`` on packed sequences."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from spacy_bilstm_crf.network import recurrence
from spacy_bilstm_crf.network.recurrence import RaggedLayout, bilstm_rows


def bilstm_states(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """bilstm_rows in the padded layout, as nn.LSTM + pad_packed_sequence give it."""
    rows, layout = bilstm_rows(lstm, x, lengths)
    return layout.to_padded(rows, x.shape[0], x.shape[1])


def _packed_reference(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=x.shape[1])
    return out


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_nn_lstm_on_packed_batches(depth, dtype):
    torch.manual_seed(depth)
    lstm = nn.LSTM(7, 5, num_layers=depth, bidirectional=True, batch_first=True).to(dtype)
    lengths = torch.tensor([3, 1, 9, 9, 2, 5, 1])
    x = torch.randn(7, 9, 7, dtype=dtype)
    with torch.no_grad():
        expected = _packed_reference(lstm, x, lengths)
        got = bilstm_states(lstm, x, lengths)
    # Another summation order than nn.LSTM's: float32 rounding (~1e-6) depends on the BLAS.
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, expected, atol=tolerance, rtol=tolerance)
    # Zero at padding, as pad_packed_sequence leaves it.
    assert (got[1, 1:] == 0).all() and (got[0, 3:] == 0).all()


def test_blocks_of_steps(monkeypatch):
    """Input projections computed a few steps at a time give the same states."""
    monkeypatch.setattr(recurrence, "_BLOCK_ROWS", 7)  # blocks of 1-2 steps
    torch.manual_seed(3)
    lstm = nn.LSTM(4, 3, bidirectional=True, batch_first=True)
    lengths = torch.randint(1, 20, (6,))
    x = torch.randn(6, int(lengths.max()), 4)
    with torch.no_grad():
        torch.testing.assert_close(bilstm_states(lstm, x, lengths), _packed_reference(lstm, x, lengths))


def test_layout_steps_and_reverse_rows():
    layout = RaggedLayout(torch.tensor([2, 4, 1]), 4)
    # Step sizes: sentences still running at each step, longest first.
    assert layout.step_sizes == [3, 2, 1, 1]
    # Sorted order is (b1: 4, b0: 2, b2: 1); packed rows: step 0 → b1, b0, b2; step 1 → b1, b0; ...
    assert layout.padded_rows.tolist() == [4, 0, 8, 5, 1, 6, 7]
    # Reverse direction: b1 reads positions 3, 2, 1, 0; b0 reads 1, 0; b2 reads 0.
    assert layout.reverse_rows.tolist() == [6, 4, 2, 5, 1, 3, 0]
    assert layout.reverse_rows[layout.reverse_rows].tolist() == list(range(7))


@pytest.mark.parametrize("bigram_dim", [0, 8])
def test_model_predictions_use_it_and_agree_with_training_path(monkeypatch, bigram_dim):
    """Predictions (no gradient) take the ragged path, with the character and class
    tables folded into the LSTM's input projection, and agree with the packed one."""
    from spacy_bilstm_crf.network import model as model_module
    from spacy_bilstm_crf.network.model import BiLSTMCRF
    from spacy_bilstm_crf.network.tags import TagScheme

    calls = []

    def counted(*args):
        calls.append(1)
        return recurrence.bilstm_rows(*args)

    monkeypatch.setattr(model_module, "bilstm_rows", counted)

    torch.manual_seed(4)
    model = BiLSTMCRF(50, TagScheme(["PER", "LOC"], "BIOES"), depth=2, bigram_dim=bigram_dim, bigram_buckets=101)
    model.set_char_table(torch.arange(0x4E00, 0x4E00 + 50))
    lengths = torch.tensor([5, 0, 12, 1, 7, 12, 3, 9, 2])  # 9 sentences: the ragged path
    codepoints = torch.randint(0x4E00, 0x4E00 + 60, (9, 12))
    with torch.enable_grad():
        packed = model.emissions(codepoints, lengths)  # gradients on: nn.LSTM
    assert not calls
    with torch.no_grad():
        ragged = model.emissions(codepoints, lengths)
    assert len(calls) == 1
    with torch.no_grad():  # a single sentence: nn.LSTM
        model.emissions(codepoints[:1], lengths[:1])
    assert len(calls) == 1
    inside = torch.arange(12)[None, :] < lengths[:, None]
    torch.testing.assert_close(ragged[inside], packed.detach()[inside], atol=1e-5, rtol=1e-5)
    # The projected tables are cached, and follow a change of the weights.
    assert hasattr(model.lstm, "_first_layer_table")
    with torch.no_grad():
        model.char_embed.weight.mul_(2.0)
        ragged = model.emissions(codepoints, lengths)
    with torch.enable_grad():
        packed = model.emissions(codepoints, lengths)
    torch.testing.assert_close(ragged[inside], packed.detach()[inside], atol=1e-5, rtol=1e-5)


def test_bfloat16_products_stay_close_to_float32():
    """``matmul_dtype=torch.bfloat16``: the recurrences in bfloat16, the output back in float32."""
    torch.manual_seed(6)
    lstm = nn.LSTM(40, 32, num_layers=2, bidirectional=True, batch_first=True)
    lengths = torch.randint(1, 30, (16,))
    x = torch.randn(16, int(lengths.max()), 40)
    exact, _ = bilstm_rows(lstm, x, lengths)
    low, _ = bilstm_rows(lstm, x, lengths, matmul_dtype=torch.bfloat16)
    assert low.dtype == torch.float32
    error = (low - exact).abs().max().item()
    assert 0 < error < 0.05  # bfloat16 keeps 8 bits of mantissa


def test_bf16_inference_with_folded_tables_stays_close_and_keeps_the_float32_cache_apart():
    """A model with ``bf16_inference`` runs the folded first layer from a bfloat16 table
    (its own cache entry): emissions close to float32's, and float32 unchanged after."""
    from spacy_bilstm_crf.network.model import BiLSTMCRF
    from spacy_bilstm_crf.network.tags import TagScheme

    torch.manual_seed(7)
    model = BiLSTMCRF(50, TagScheme(["PER", "LOC"], "BIOES"), depth=2)
    model.set_char_table(torch.arange(0x4E00, 0x4E00 + 50))
    lengths = torch.tensor([5, 0, 12, 1, 7, 12, 3, 9, 2])
    codepoints = torch.randint(0x4E00, 0x4E00 + 60, (9, 12))
    inside = torch.arange(12)[None, :] < lengths[:, None]
    with torch.no_grad():
        exact = model.emissions(codepoints, lengths)
        model.bf16_inference = True
        low = model.emissions(codepoints, lengths)
        assert model.lstm._first_layer_table[1][0].dtype == torch.bfloat16
        model.bf16_inference = False
        again = model.emissions(codepoints, lengths)
    assert low.dtype == torch.float32
    error = (low - exact)[inside].abs().max().item()
    assert 0 < error < 0.1
    assert torch.equal(again, exact)


def test_bf16_inference_setting():
    from spacy_bilstm_crf.component.architectures import build_bilstm_crf

    with pytest.raises(ValueError, match="exclude each other"):
        build_bilstm_crf(quantize_int8=True, bf16_inference=True)
    assert build_bilstm_crf(bf16_inference=True).attrs["bf16_inference"] is True
