"""The LAC-small port: Paddle file reader, and the network against Paddle's own output."""
import json
import shutil
import struct
from pathlib import Path

import numpy
import pytest
import torch

from spacy_bilstm_crf.network.lac import PaddleFileError, find_lac_dir, load_lac_encoder, read_paddle_tensor
from spacy_bilstm_crf.network.recurrence import reverse_index

FIXTURE = Path(__file__).parent / "fixtures" / "lac_reference.json"


def write_paddle_tensor(path: Path, array: numpy.ndarray) -> None:
    """A tensor file as Paddle writes it: header, TensorDesc protobuf, float32 data."""
    desc = bytes([0x08, 0x05]) + b"".join(bytes([0x10]) + _varint(d) for d in array.shape)
    header = struct.pack("<IQI", 0, 0, 0) + struct.pack("<i", len(desc)) + desc
    path.write_bytes(header + array.astype("<f4").tobytes())


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@pytest.fixture(scope="module")
def encoder():
    return load_lac_encoder()


@pytest.fixture(scope="module")
def reference():
    return json.loads(FIXTURE.read_text(encoding="utf8"))["sentences"]


def test_reader_round_trip(tmp_path):
    array = numpy.random.default_rng(0).normal(size=(3, 200)).astype("float32")  # 200: a 2-byte varint
    write_paddle_tensor(tmp_path / "t", array)
    read = read_paddle_tensor(tmp_path / "t")
    assert read.shape == (3, 200) and read.dtype == numpy.float32
    numpy.testing.assert_array_equal(read, array)


def test_reader_reads_the_shipped_files():
    folder = find_lac_dir() / "model_baseline"
    assert read_paddle_tensor(folder / "crfw").shape == (59, 57)
    assert read_paddle_tensor(folder / "word_emb").shape == (20941, 128)
    assert read_paddle_tensor(folder / "gru_0.b_0").shape == (1, 384)


@pytest.mark.parametrize("cut", [3, 15, 30, 100])
def test_reader_truncated_file_names_the_file(tmp_path, cut):
    write_paddle_tensor(tmp_path / "t", numpy.ones((4, 8), dtype="float32"))
    data = (tmp_path / "t").read_bytes()
    (tmp_path / "t").write_bytes(data[: len(data) - cut] if cut < 100 else data[:cut])
    with pytest.raises(PaddleFileError, match=r"t: truncated"):
        read_paddle_tensor(tmp_path / "t")


def test_reader_corrupt_files(tmp_path):
    write_paddle_tensor(tmp_path / "t", numpy.ones((4, 8), dtype="float32"))
    good = (tmp_path / "t").read_bytes()
    cases = {
        "version": b"\x07" + good[1:],  # not version 0
        "size": good[:16] + struct.pack("<i", -5) + good[20:],  # description size
        "dtype": good[:20] + bytes([0x08, 0x63]) + good[22:],  # unknown data type 99
        "trailing": good + b"\x00\x00\x00\x00",
    }
    messages = {"version": "not a Paddle tensor file", "size": "description size",
                "dtype": "unsupported data type", "trailing": "unexpected bytes"}  # fmt: skip
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(PaddleFileError, match=messages[name]):
            read_paddle_tensor(tmp_path / name)


def test_load_rejects_a_wrong_shape(tmp_path):
    folder = tmp_path / "lac_small"
    shutil.copytree(find_lac_dir(), folder, ignore=shutil.ignore_patterns("__pycache__"))
    write_paddle_tensor(folder / "model_baseline" / "crfw", numpy.ones((57, 57), dtype="float32"))
    with pytest.raises(PaddleFileError, match=r"crfw: expected shape \(59, 57\)"):
        load_lac_encoder(folder)


def test_reverse_index():
    index = reverse_index(torch.tensor([3, 0, 5]), 5)
    assert index.tolist() == [[2, 1, 0, 3, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]


def test_port_reproduces_paddle_tags(encoder, reference):
    """Every tag of 40 sentences as Paddle's own GRU and CRF kernels computed them.

    A wrong gate order, reset-gate placement, update rule or weight layout changes
    the tags (each was tried: most tags change).
    """
    assert len(reference) == 40
    for sentence in reference:
        codepoints = torch.tensor([[ord(c) for c in sentence["text"]]])
        lengths = torch.tensor([codepoints.shape[1]])
        with torch.no_grad():
            ids = encoder.char_ids(codepoints, fold=False)
            assert ids[0].tolist() == sentence["ids"], sentence["text"]
            emissions = encoder.output(encoder.encode_ids(ids, lengths))
            tags = encoder.decode(emissions, lengths)[0].tolist()
        assert tags == sentence["tags"], sentence["text"]
        if "emissions" in sentence:
            expected = torch.tensor(sentence["emissions"])
            assert torch.allclose(emissions[0], expected, atol=2e-4)


def test_padded_batch_equals_one_by_one(encoder, reference):
    texts = [s["text"] for s in reference[:8]]
    lengths = torch.tensor([len(t) for t in texts])
    codepoints = torch.zeros(len(texts), int(lengths.max()), dtype=torch.long)
    for row, text in enumerate(texts):
        codepoints[row, : len(text)] = torch.tensor([ord(c) for c in text])
    with torch.no_grad():
        batch = encoder(codepoints, lengths, fold=False)
        tags = encoder.decode(encoder.output(batch), lengths)
        for row, text in enumerate(texts):
            alone = encoder(codepoints[row : row + 1, : len(text)], lengths[row : row + 1], fold=False)
            assert torch.allclose(batch[row, : len(text)], alone[0], atol=1e-5)
            assert tags[row, len(text) :].eq(-1).all()
            assert tags[row, : len(text)].tolist() == reference[row]["tags"]


def test_folding_maps_full_width_to_half_width(encoder):
    full = torch.tensor([ord(c) for c in "ＡＢＣ１２３"])
    half = torch.tensor([ord(c) for c in "abc123"])
    assert encoder.char_ids(full, fold=False).ne(encoder.char_ids(half, fold=False)).all()
    assert encoder.char_ids(full).eq(encoder.char_ids(half, fold=False)).all()


def test_ragged_layers_equal_the_padded_ones(encoder):
    """Predictions run LAC over the real characters only (``encode_layers_ragged``)."""
    gen = torch.Generator().manual_seed(5)
    lengths = torch.tensor([5, 1, 12, 0, 7, 12])
    ids = torch.randint(0, 20000, (6, 12), generator=gen)
    with torch.no_grad():
        padded = encoder.encode_layers(ids, lengths)
        ragged = encoder.encode_layers_ragged(ids, lengths.clamp_min(1))
    inside = (torch.arange(12)[None, :] < lengths[:, None])[:, :, None]
    for expected, got in zip(padded, ragged):
        # Two summation orders (padded batch, packed rows): float32 rounding differs by
        # ~1e-6 with the BLAS's blocking; a wrong state differs by far more than 1e-5.
        torch.testing.assert_close(got * inside, expected * inside, atol=1e-5, rtol=1e-5)
        assert (got[1, 1:] == 0).all()  # zero at padding
    # Only the top layer, when only it is read.
    with torch.no_grad():
        first, top = encoder.encode_layers_ragged(ids, lengths.clamp_min(1), first_layer=False)
    assert first is None and torch.equal(top, ragged[1])


def test_ragged_layers_in_bfloat16(encoder):
    gen = torch.Generator().manual_seed(6)
    lengths = torch.tensor([9, 3, 12])
    ids = torch.randint(0, 20000, (3, 12), generator=gen)
    exact = encoder.encode_layers_ragged(ids, lengths)
    low = encoder.encode_layers_ragged(ids, lengths, torch.bfloat16)
    for a, b in zip(exact, low):
        assert b.dtype == torch.float32 and 0 < (a - b).abs().max().item() < 0.1


def test_loaded_weights_hold_no_subnormal_floats(encoder):
    """LAC-small's files hold subnormal floats (slow x86 products); the import zeroes them."""
    raw = read_paddle_tensor(find_lac_dir() / "model_baseline" / "fc_0.w_0")
    tiny = numpy.finfo(numpy.float32).tiny
    assert ((raw != 0) & (numpy.abs(raw) < tiny)).any()  # the files do have them
    for name, tensor in encoder.state_dict().items():
        if tensor.is_floating_point():
            assert not ((tensor != 0) & (tensor.abs() < tiny)).any(), name
