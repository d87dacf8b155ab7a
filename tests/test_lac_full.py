"""LAC-full read out of its sdist: the archive reader, the index fetch, word vectors, the network.

The real sdist (64.8 MB) is not needed: each test builds a small archive of the
same layout. ``LAC_SDIST=/path/to/LAC-2.1.2.tar.gz`` also runs the real-file test.
"""
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path
from typing import Dict, Optional

import numpy
import pytest
import torch

from spacy_bilstm_crf.network.lac import fetch
from spacy_bilstm_crf.network.lac.full_encoder import load_lac_full_encoder
from spacy_bilstm_crf.network.lac.paddle_files import PaddleFileError
from spacy_bilstm_crf.network.lac.sdist import MODEL_DIR, SDIST_NAME, SdistError, read_lac_full, tensor_shapes
from spacy_bilstm_crf.network.lac.segmenter import UnigramSegmenter, mixed_sequence
from spacy_bilstm_crf.network.lac.word_vectors import LACVocab, coverage, lexicon_word_vectors

WORDS = [" ", "北", "京", "大", "学", "万", "A", "a", "北京", "大学", "iPhone", "2019", "OOV"]
TAGS = "0\tn-B\n1\tn-I\n0\tLOC-B\n1\tLOC-I\n2\tO\n"  # aliases share an id, as in LAC's tag.dic
N_TAGS = 3


def paddle_bytes(array: numpy.ndarray) -> bytes:
    """A tensor file as Paddle writes it: header, TensorDesc protobuf (float32, dims), data."""
    desc = bytes([0x08, 0x05]) + b"".join(bytes([0x10]) + _varint(d) for d in array.shape)
    return struct.pack("<IQI", 0, 0, 0) + struct.pack("<i", len(desc)) + desc + array.astype("<f4").tobytes()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def sdist_members() -> Dict[str, bytes]:
    """Every member of a small archive laid out as LAC 2.1.2's, by path under MODEL_DIR."""
    rng = numpy.random.default_rng(0)
    members = {
        f"model/{name}": paddle_bytes(rng.normal(size=shape).astype("float32"))
        for name, shape in tensor_shapes(len(WORDS), N_TAGS).items()
    }
    members["conf/word.dic"] = "".join(f"{i}\t{w}\n" for i, w in enumerate(WORDS)).encode("utf8")
    members["conf/tag.dic"] = TAGS.encode("utf8")
    members["conf/q2b.dic"] = "萬\t万\nＡ\tA\n".encode("utf8")
    members["conf/small_seg.dic"] = "北京 30\n大学 20\n".encode("utf8")
    return members


def build_sdist(folder: Path, members: Optional[Dict[str, Optional[bytes]]] = None) -> Path:
    """The archive, with ``members`` replacing (None: removing) the default ones."""
    content = {**sdist_members(), **(members or {})}
    path = folder / SDIST_NAME
    with tarfile.open(path, "w:gz") as archive:
        extra = {
            "LAC-2.1.2/setup.py": b"raise SystemExit('setup.py must never run')\n",
            # Another model of the same file names: only lac_model's may be read.
            "LAC-2.1.2/LAC/seg_model/model/crfw": paddle_bytes(numpy.zeros((6, 4), dtype="float32")),
        }
        items = list(extra.items()) + [(MODEL_DIR + k, v) for k, v in content.items() if v is not None]
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sdist(tmp_path):
    return build_sdist(tmp_path)


def test_reads_the_model_files(sdist):
    files = read_lac_full(sdist, sha256=sha(sdist))
    assert set(files.tensors) == set(tensor_shapes())
    for name, shape in tensor_shapes(len(WORDS), N_TAGS).items():
        assert files.tensors[name].shape == shape and files.tensors[name].dtype == numpy.float32
    expected = numpy.random.default_rng(0).normal(size=(len(WORDS), 128)).astype("float32")
    numpy.testing.assert_array_equal(files.tensors["word_emb"], expected)
    assert files.tensors["crfw"].shape == (N_TAGS + 2, N_TAGS)  # lac_model's, not seg_model's
    assert files.vocab[" "] == 0 and files.vocab["北京"] == 8 and files.oov_id == len(WORDS) - 1
    assert files.tag_names() == ["LOC-B", "LOC-I", "O"]  # LAC reads the last name of an id
    assert files.q2b == {"萬": "万", "Ａ": "A"}
    assert files.seg_counts == {"北京": 30, "大学": 20}


def test_wrong_checksum_names_the_file(sdist):
    with pytest.raises(SdistError, match=rf"{SDIST_NAME}: SHA-256 {sha(sdist)} .* is not the expected 22fcde0d"):
        read_lac_full(sdist)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(SdistError, match=rf"LAC sdist not found: .*{SDIST_NAME}"):
        read_lac_full(tmp_path / SDIST_NAME)


@pytest.mark.parametrize("keep", [0.5, 0.9, 20])
def test_truncated_archive_names_the_file(sdist, keep):
    data = sdist.read_bytes()
    sdist.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:keep])
    # Its own checksum passes: the archive itself must be found unreadable.
    with pytest.raises(SdistError, match=rf"{SDIST_NAME}: not a readable tar.gz archive"):
        read_lac_full(sdist, sha256=sha(sdist))


def test_not_an_archive(tmp_path):
    path = tmp_path / SDIST_NAME
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(SdistError, match="not a readable tar.gz archive"):
        read_lac_full(path, sha256=sha(path))


def test_corrupt_tensor_header_names_the_member(tmp_path):
    good = sdist_members()["model/fc_4.w_0"]
    path = build_sdist(tmp_path, {"model/fc_4.w_0": b"\x07" + good[1:]})
    with pytest.raises(PaddleFileError, match=rf"{SDIST_NAME}:{MODEL_DIR}model/fc_4.w_0: not a Paddle tensor file"):
        read_lac_full(path, sha256=sha(path))


def test_truncated_tensor_and_wrong_shape_name_the_member(tmp_path):
    good = sdist_members()["model/crfw"]
    path = build_sdist(tmp_path, {"model/crfw": good[:-4]})
    with pytest.raises(PaddleFileError, match=r"model/crfw: truncated"):
        read_lac_full(path, sha256=sha(path))
    path = build_sdist(tmp_path, {"model/gru_2.w_0": paddle_bytes(numpy.ones((128, 3), dtype="float32"))})
    with pytest.raises(PaddleFileError, match=r"model/gru_2.w_0: expected shape \(128, 384\), found \(128, 3\)"):
        read_lac_full(path, sha256=sha(path))


def test_missing_member_is_named(tmp_path):
    path = build_sdist(tmp_path, {"model/crfw": None, "conf/q2b.dic": None})
    with pytest.raises(SdistError, match=rf"lacks {MODEL_DIR}conf/q2b.dic, {MODEL_DIR}model/crfw"):
        read_lac_full(path, sha256=sha(path))


@pytest.mark.parametrize(
    "member,text,message",
    [
        ("conf/word.dic", "0\ta\n1 b\n", r"word.dic, line 2: expected 'id<TAB>entry'"),
        ("conf/word.dic", "0\ta\n", r"word.dic: no OOV entry"),
        ("conf/small_seg.dic", "北京 30\n大学\n", r"small_seg.dic, line 2: expected 'word<SPACE>count'"),
        ("conf/q2b.dic", "萬万\n", r"q2b.dic, line 1: expected 'from<TAB>to'"),
    ],
)
def test_bad_dictionary_lines_are_named(tmp_path, member, text, message):
    path = build_sdist(tmp_path, {member: text.encode("utf8")})
    with pytest.raises(PaddleFileError, match=message):
        read_lac_full(path, sha256=sha(path))


@pytest.fixture
def vocab():
    return LACVocab({w: i for i, w in enumerate(WORDS)}, {"萬": "万", "Ａ": "A"})


def test_word_lookup(vocab):
    assert vocab.word_id("北京") == 8
    assert vocab.word_id("ｉＰｈｏｎｅ") == 10  # full-width through q2b and folding
    assert vocab.word_id("iphone") == 10  # the project's lexicon is folded to small letters
    assert vocab.word_id("北") is None  # single characters are not words
    assert vocab.word_id("上海") is None and vocab.word_id("OOV") is None
    assert vocab.char_id("Ａ") == 6 and vocab.char_id("萬") == 5 and vocab.char_id("？") == vocab.oov_id
    assert vocab.token_ids("北京") == [8] and vocab.token_ids("京北") == [2, 1]
    assert vocab.words() == ["北京", "大学", "iPhone", "2019"]


def test_word_lookup_where_q2b_goes_to_traditional():
    # LAC's q2b sends 动 to 動 (its table keeps 動): a lexicon's 動漫 finds the word 动漫,
    # and the character 动 reads as 動.
    vocab = LACVocab({"動": 0, "漫": 1, "动漫": 2, "OOV": 3}, {"动": "動"})
    assert vocab.word_id("動漫") == 2 and vocab.word_id("动漫") == 2
    assert vocab.char_id("动") == 0 and vocab.token_ids("漫动") == [1, 0]


def test_lexicon_word_vectors(vocab):
    table = numpy.arange(len(WORDS) * 4, dtype="float32").reshape(len(WORDS), 4)
    rows, vectors, covered = lexicon_word_vectors(["大学", "上海", "北", "2019"], vocab, table)
    assert rows.tolist() == [9, -1, -1, 11] and covered.tolist() == [True, False, False, True]
    numpy.testing.assert_array_equal(vectors, numpy.stack([table[9], numpy.zeros(4), numpy.zeros(4), table[11]]))
    expected_coverage = {"words": 3, "exact": 2, "covered": 2, "share": 2 / 3}
    assert coverage(["大学", "上海", "北", "2019"], vocab) == expected_coverage
    rows, vectors, covered = lexicon_word_vectors([], vocab, table)
    assert rows.shape == (0,) and vectors.shape == (0, 4) and covered.shape == (0,)


def test_full_encoder_from_files(sdist):
    files = read_lac_full(sdist, sha256=sha(sdist))
    encoder = load_lac_full_encoder(files)
    assert encoder.embed.weight.shape == (len(WORDS), 128) and encoder.transitions.shape == (N_TAGS + 2, N_TAGS)
    numpy.testing.assert_array_equal(encoder.embed.weight.detach().numpy(), files.tensors["word_emb"])
    seq = mixed_sequence("北京大学萬", UnigramSegmenter(files.seg_counts), LACVocab.from_files(files))
    assert seq.ids == [8, 9, 5]
    ids, lengths = torch.tensor([seq.ids]), torch.tensor([3])
    with torch.no_grad():
        tags = encoder.decode(encoder.output(encoder.encode_ids(ids, lengths)), lengths)
    assert tags.shape == (1, 3) and 0 <= int(tags.min()) and int(tags.max()) < N_TAGS


def test_modules_need_no_spacy():
    code = (
        "import sys; import spacy_bilstm_crf.network.lac.sdist, spacy_bilstm_crf.network.lac.fetch, "
        "spacy_bilstm_crf.network.lac.word_vectors, spacy_bilstm_crf.network.lac.segmenter, spacy_bilstm_crf.network.lac.full_encoder; "
        "assert 'spacy' not in sys.modules and 'thinc' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class FakeIndex:
    """``urlopen`` for a package index page and its files, counting requests."""

    def __init__(self, pages: Dict[str, bytes]) -> None:
        self.pages, self.requests = pages, []

    def __call__(self, request, timeout=None):
        self.requests.append(request.full_url)
        if request.full_url not in self.pages:
            raise urllib.error.URLError("unreachable")
        return io.BytesIO(self.pages[request.full_url])


def _index(sdist: Path, listed_sha: str, html: bool = False) -> FakeIndex:
    url = "https://files.example/packages/ab/LAC-2.1.2.tar.gz"
    if html:
        page = f'<a href="{url}#sha256={listed_sha}">LAC-2.1.2.tar.gz</a>'.encode()
    else:
        page = json.dumps({"files": [{"filename": SDIST_NAME, "url": url, "hashes": {"sha256": listed_sha}}]}).encode()
    return FakeIndex({"https://pypi.org/simple/lac/": page, url: sdist.read_bytes()})


@pytest.mark.parametrize("html", [False, True])
def test_fetch_downloads_and_checks(tmp_path, sdist, monkeypatch, html):
    monkeypatch.setattr(fetch, "SDIST_SHA256", sha(sdist))
    index = _index(sdist, sha(sdist), html)
    path = fetch.fetch_lac_sdist(tmp_path / "cache", opener=index)
    assert path == tmp_path / "cache" / SDIST_NAME and path.read_bytes() == sdist.read_bytes()
    assert len(index.requests) == 2
    # A good copy in the cache: no request at all.
    assert fetch.fetch_lac_sdist(tmp_path / "cache", opener=FakeIndex({})) == path


def test_fetch_rejects_a_wrong_download(tmp_path, sdist, monkeypatch):
    monkeypatch.setattr(fetch, "SDIST_SHA256", "0" * 64)
    with pytest.raises(SdistError, match=r"lists LAC-2.1.2.tar.gz with SHA-256 .* not the expected 0000"):
        fetch.fetch_lac_sdist(tmp_path / "cache", opener=_index(sdist, sha(sdist)))
    with pytest.raises(SdistError, match=r"LAC-2.1.2.tar.gz: SHA-256 .* is not the expected 0000"):
        fetch.fetch_lac_sdist(tmp_path / "cache", opener=_index(sdist, "0" * 64))
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file left


def test_fetch_errors_are_clear(tmp_path):
    with pytest.raises(SdistError, match=r"Could not read the package index page https://pypi.org/simple/lac/"):
        fetch.fetch_lac_sdist(tmp_path, opener=FakeIndex({}))
    index = FakeIndex({"https://pypi.org/simple/lac/": b'{"files": []}'})
    with pytest.raises(SdistError, match=r"does not list LAC-2.1.2.tar.gz"):
        fetch.fetch_lac_sdist(tmp_path, opener=index)


@pytest.mark.skipif(not os.environ.get("LAC_SDIST"), reason="set LAC_SDIST to the real LAC-2.1.2.tar.gz")
def test_real_sdist():
    files = read_lac_full(os.environ["LAC_SDIST"])
    assert files.tensors["word_emb"].shape == (58224, 128) and files.tensors["crfw"].shape == (51, 49)
    assert len(files.vocab) == 58224 and files.oov_id == 58223 and len(files.seg_counts) == 95390
    assert len(files.q2b) == 5906 and files.tag_names()[16] == "PER-B"
    vocab = LACVocab.from_files(files)
    encoder, segmenter, names = load_lac_full_encoder(files), UnigramSegmenter(files.seg_counts), files.tag_names()
    # LAC's README example: 百度/ORG 是/v 一家/m 高科技/n 公司/n.
    seq = mixed_sequence("百度是一家高科技公司", segmenter, vocab)
    assert [s for s in seq.spans if s[1] - s[0] > 1] == [(0, 2), (3, 5), (5, 8), (8, 10)]
    ids, lengths = torch.tensor([seq.ids]), torch.tensor([len(seq.ids)])
    with torch.no_grad():
        tags = encoder.decode(encoder.output(encoder.encode_ids(ids, lengths)), lengths)[0].tolist()
    assert [names[t] for t in tags] == ["ORG-B", "v-B", "m-B", "n-B", "n-B"]
