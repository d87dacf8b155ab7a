"""The compiled word and entity flags (``flag_kernels.py``) against the tensor ops and
a brute-force reference."""
import pytest
import torch

from spacy_bilstm_crf.network import flag_kernels
from spacy_bilstm_crf.network.gazetteer import GazetteerFeatures
from spacy_bilstm_crf.network.lexicon import LexiconFeatures


def _random_rows(gen: torch.Generator, n_rows: int, batch: int, seq_len: int, max_len: int):
    """Item L - 1: Long (batch, seq_len - L + 1), a row (0: none) per window, sparse."""
    rows = []
    for length in range(1, max_len + 1):
        values = torch.randint(1, n_rows, (batch, seq_len - length + 1), generator=gen)
        keep = torch.rand(values.shape, generator=gen) < 0.25
        rows.append(torch.where(keep, values, torch.zeros_like(values)))
    return rows


def _brute_force_word_flags(rows, pos, seq_len):
    batch = rows[0].shape[0]
    flags = torch.zeros(batch, seq_len, 9)
    types = torch.zeros(batch, seq_len, 8)
    for index, row in enumerate(rows):
        length = index + 1
        bucket = min(length, 4) - 2
        for b in range(batch):
            for s in range(row.shape[1]):
                r = int(row[b, s])
                if r == 0:
                    continue
                if length == 1:
                    flags[b, s, 8] = 1
                else:
                    flags[b, s, bucket] = 1  # B by length
                    flags[b, s + length - 1, 5 + bucket] = 1  # E by length
                    for k in range(1, length - 1):
                        flags[b, s + k, 3 + bucket - 1] = 1  # M by length
                group = int(pos[r])
                if group:
                    types[b, s, 2 * (group - 1)] = 1
                    for k in range(1, length):
                        types[b, s + k, 2 * (group - 1) + 1] = 1
    return torch.cat([flags, types], dim=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_word_flags_equal_the_tensor_ops_and_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    n_rows, batch, seq_len = 30, 3, 11
    lexicon = LexiconFeatures(n_rows - 1, max_len=6, with_pos=True)
    lexicon.pos.copy_(torch.randint(0, 5, (n_rows,), generator=gen).to(torch.uint8))
    lexicon.pos[0] = 0
    rows = _random_rows(gen, n_rows, batch, seq_len, 6)
    shape = [batch, seq_len]
    got = flag_kernels.word_flags(rows, lexicon.pos, 4, shape)
    tensor_ops = torch.cat([lexicon.flags(rows, shape), lexicon.pos_flags(rows, shape)], dim=-1)
    assert got is not None and torch.equal(got, tensor_ops)
    assert torch.equal(got, _brute_force_word_flags(rows, lexicon.pos, seq_len))
    # Through the lexicon, with and without word types.
    assert torch.equal(lexicon.word_flags(rows, shape, True), tensor_ops)
    assert torch.equal(lexicon.word_flags(rows, shape, False), tensor_ops[:, :, :9])


@pytest.mark.parametrize("seed", [0, 1])
def test_entity_flags_equal_the_tensor_ops(seed, monkeypatch):
    gen = torch.Generator().manual_seed(seed)
    n_keys, n_labels, batch, seq_len = 20, 3, 2, 14
    gazetteer = GazetteerFeatures(n_keys, n_labels, max_len=5, n_folds=2)
    labels = torch.rand(n_keys + 1, n_labels, generator=gen) < 0.4
    labels[0] = False
    gazetteer.labels.copy_(labels)
    rows = _random_rows(gen, n_keys + 1, batch, seq_len, 5)
    monkeypatch.setattr(gazetteer.matcher, "matches", lambda cp, lengths: rows)
    cp, lengths = torch.zeros(batch, seq_len, dtype=torch.long), torch.full((batch,), seq_len)
    got = flag_kernels.entity_flags(rows, gazetteer.labels, [batch, seq_len])
    assert got is not None and got.sum() > 0
    assert torch.equal(gazetteer(cp, lengths), got)  # the module takes the kernel
    monkeypatch.setattr(gazetteer, "_flags_compiled", lambda rows, shape: None)
    assert torch.equal(gazetteer(cp, lengths), got)  # the tensor ops


def test_char_class_table_equals_the_comparisons():
    from spacy_bilstm_crf.network.model import char_class_lookup, char_classes

    cp = torch.cat([torch.arange(0x30000 + 50), torch.tensor([0x10FFFF, 0x2FFFF, 0x30000, 0x3FFFF])]).view(3, -1)
    assert torch.equal(char_class_lookup(cp), char_classes(cp))
