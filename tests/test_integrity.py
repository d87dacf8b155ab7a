"""A saved pipe loads only as it was saved: checksummed weights and labels, a checked cfg,
and weights read with ``weights_only=True`` whatever the environment says."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import srsly

from spacy_bilstm_crf.component.integrity import parse_cfg, weights_checksum

from .conftest import SMALL_MODEL, ents_of

# A pipeline saved before the checksum covered the table sizes (a "sha256:" checksum of
# the weights, labels and scheme only), with the gazetteer: it must keep loading.
# ``expected.json`` holds the entities it gave when saved.
FIXTURE = Path(__file__).parent / "fixtures" / "pipeline_checksum_v1"


def saved_pipe(nlp, tmp_path: Path) -> Path:
    nlp.to_disk(tmp_path / "nlp")
    return tmp_path / "nlp" / "bilstm_crf_ner"


def fresh_pipe():
    return spacy.blank("zh").add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})


def test_checksum_covers_weights_labels_and_scheme() -> None:
    base = weights_checksum(b"weights", ["name", "company"], "BIOES")
    assert base.startswith("sha256:") and base == weights_checksum(b"weights", ["name", "company"], "BIOES")
    assert base != weights_checksum(b"weightz", ["name", "company"], "BIOES")
    assert base != weights_checksum(b"weights", ["name", "organization"], "BIOES")
    assert base != weights_checksum(b"weights", ["company", "name"], "BIOES")
    assert base != weights_checksum(b"weights", ["name", "company"], "BIO")


def test_new_checksums_cover_the_table_sizes() -> None:
    sizes = {"n_chars": 74, "n_lexicon_keys": None, "n_gazetteer_keys": 16}
    base = weights_checksum(b"weights", ["name"], "BIOES", sizes)
    assert base.startswith("sha256-v2:") and base == weights_checksum(b"weights", ["name"], "BIOES", dict(sizes))
    assert base != weights_checksum(b"weights", ["name"], "BIOES")
    for key, value in (("n_chars", 75), ("n_lexicon_keys", 0), ("n_gazetteer_keys", None)):
        assert base != weights_checksum(b"weights", ["name"], "BIOES", {**sizes, key: value})
    # n_lexicon_vectors, added later, is covered when set; null leaves older checksums as they were.
    assert base == weights_checksum(b"weights", ["name"], "BIOES", {**sizes, "n_lexicon_vectors": None})
    assert base != weights_checksum(b"weights", ["name"], "BIOES", {**sizes, "n_lexicon_vectors": 7})
    # A missing key counts as null, as cfgs without n_gazetteer_keys load.
    assert weights_checksum(b"w", ["name"], "BIOES", {"n_chars": 3}) == weights_checksum(
        b"w", ["name"], "BIOES", {"n_chars": 3, "n_lexicon_keys": None, "n_gazetteer_keys": None}
    )


def copy_fixture(tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(FIXTURE, tmp_path / "nlp")
    return tmp_path / "nlp"


def test_pipeline_saved_before_sizes_were_checksummed_loads_and_predicts_the_same(tmp_path) -> None:
    expected = srsly.read_json(FIXTURE / "expected.json")
    assert srsly.read_json(FIXTURE / "bilstm_crf_ner" / "cfg")["checksum"].startswith("sha256:")
    nlp = spacy.load(FIXTURE)
    found = [[[e.start_char, e.end_char, e.label_] for e in doc.ents] for doc in nlp.pipe(expected["texts"])]
    assert found == expected["ents"]
    # Saved again, it gets the checksum that covers the sizes, and loads the same.
    nlp.to_disk(tmp_path / "again")
    assert srsly.read_json(tmp_path / "again" / "bilstm_crf_ner" / "cfg")["checksum"].startswith("sha256-v2:")
    again = spacy.load(tmp_path / "again")
    assert [[[e.start_char, e.end_char, e.label_] for e in doc.ents] for doc in again.pipe(expected["texts"])] == found


@pytest.mark.parametrize("key", ["n_chars", "n_lexicon_keys", "n_gazetteer_keys"])
def test_huge_table_size_is_an_error_naming_file_and_key(tmp_path, key: str) -> None:
    """The old checksum does not cover the sizes: they are bounded by the weights' size
    before anything is allocated (2**40 entries was a raw allocator error)."""
    path = copy_fixture(tmp_path)
    cfg = srsly.read_json(path / "bilstm_crf_ner" / "cfg")
    cfg[key] = 2**40
    srsly.write_json(path / "bilstm_crf_ner" / "cfg", cfg)
    with pytest.raises(ValueError) as err:
        spacy.load(path)
    message = str(err.value)
    assert f"'{key}' = {2**40}" in message and str(path / "bilstm_crf_ner" / "cfg") in message
    assert str(path / "bilstm_crf_ner" / "model") in message


@pytest.mark.parametrize("key,value", [("n_chars", 2**40), ("n_chars", 75), ("n_lexicon_keys", 3)])
def test_edited_table_size_of_a_new_save_fails_its_checksum(trained_nlp, tmp_path, key: str, value: int) -> None:
    path = saved_pipe(trained_nlp, tmp_path)
    cfg = srsly.read_json(path / "cfg")
    cfg[key] = value
    srsly.write_json(path / "cfg", cfg)
    with pytest.raises(ValueError, match="table sizes") as err:
        fresh_pipe().from_disk(path)
    assert "checksum" in str(err.value) and str(path / "model") in str(err.value)


def test_removed_checksum_is_refused(trained_nlp, tmp_path) -> None:
    path = saved_pipe(trained_nlp, tmp_path)
    cfg = srsly.read_json(path / "cfg")
    del cfg["checksum"]
    srsly.write_json(path / "cfg", cfg)
    with pytest.raises(ValueError, match="has no 'checksum'") as err:
        spacy.load(tmp_path / "nlp")
    assert str(path / "cfg") in str(err.value)


def test_pipeline_saved_before_checksums_loads_with_a_warning(trained_nlp, tmp_path) -> None:
    """Such a cfg has neither a checksum nor n_gazetteer_keys (which came later)."""
    path = saved_pipe(trained_nlp, tmp_path)
    cfg = srsly.read_json(path / "cfg")
    del cfg["checksum"], cfg["n_gazetteer_keys"]
    srsly.write_json(path / "cfg", cfg)
    with pytest.warns(UserWarning, match="NOT verified") as record:
        loaded = spacy.load(tmp_path / "nlp")
    assert any(str(path / "cfg") in str(w.message) for w in record)
    text = "张伟担任华为公司总经理"
    assert ents_of(loaded(text)) == ents_of(trained_nlp(text))


def test_unknown_checksum_kind_is_an_error(trained_nlp, tmp_path) -> None:
    path = saved_pipe(trained_nlp, tmp_path)
    cfg = srsly.read_json(path / "cfg")
    cfg["checksum"] = "md5:" + "0" * 32
    srsly.write_json(path / "cfg", cfg)
    with pytest.raises(ValueError, match="unknown kind"):
        fresh_pipe().from_disk(path)


@pytest.mark.parametrize("content", [b"[" * 100_000, b'{"labels": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
def test_deeply_nested_cfg_is_an_error_naming_the_file(trained_nlp, tmp_path, content: bytes) -> None:
    path = saved_pipe(trained_nlp, tmp_path)
    (path / "cfg").write_bytes(content)
    with pytest.raises(ValueError, match="nested too deeply") as err:
        fresh_pipe().from_disk(path)
    assert str(path / "cfg") in str(err.value)


def test_flipped_block_in_the_weights_is_an_error_naming_the_file(trained_nlp, tmp_path) -> None:
    path = saved_pipe(trained_nlp, tmp_path)
    data = bytearray((path / "model").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(b ^ 0xFF for b in data[middle : middle + 4096])
    (path / "model").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum") as err:
        fresh_pipe().from_disk(path)
    assert str(path / "model") in str(err.value)
    with pytest.raises(ValueError, match="checksum"):
        spacy.load(tmp_path / "nlp")


def test_renamed_label_in_cfg_is_an_error(trained_nlp, tmp_path) -> None:
    path = saved_pipe(trained_nlp, tmp_path)
    cfg = srsly.read_json(path / "cfg")
    cfg["labels"] = ["person" if label == "name" else label for label in cfg["labels"]]
    srsly.write_json(path / "cfg", cfg)
    with pytest.raises(ValueError, match="cfg's labels or scheme were edited"):
        spacy.load(tmp_path / "nlp")


def test_untouched_pipe_loads_and_predicts_the_same(trained_nlp, tmp_path) -> None:
    saved_pipe(trained_nlp, tmp_path)
    loaded = spacy.load(tmp_path / "nlp")
    text = "张伟担任华为公司总经理"
    assert ents_of(loaded(text)) == ents_of(trained_nlp(text))
    fresh = fresh_pipe()
    fresh.from_bytes(trained_nlp.get_pipe("bilstm_crf_ner").to_bytes())
    assert fresh.labels == trained_nlp.get_pipe("bilstm_crf_ner").labels


def test_bytes_with_a_wrong_checksum_are_refused(trained_nlp) -> None:
    ner = trained_nlp.get_pipe("bilstm_crf_ner")
    msg = srsly.msgpack_loads(ner.to_bytes())
    cfg = json.loads(msg["cfg"])
    cfg["checksum"] = "sha256:" + "0" * 64
    msg["cfg"] = json.dumps(cfg).encode("utf8")
    with pytest.raises(ValueError, match="from bytes.*checksum"):
        fresh_pipe().from_bytes(srsly.msgpack_dumps(msg))


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"{not json", "is not valid JSON"),
        (b"[1, 2]", "must hold a JSON object"),
        (json.dumps({"labels": ["a"], "scheme": "BIOES", "n_chars": "12"}).encode(), "'n_chars' must be int, got \"12\""),
        (json.dumps({"labels": "name", "scheme": "BIOES"}).encode(), "'labels' must be list"),
        (json.dumps({"labels": ["a", ""], "scheme": "BIOES"}).encode(), "'labels' must be non-empty strings"),
        (json.dumps({"labels": ["a"], "scheme": "BIOES", "n_lexicon_keys": True}).encode(), "'n_lexicon_keys' must be int or null"),
    ],
)
def test_malformed_cfg_names_file_and_field(trained_nlp, tmp_path, content: bytes, expected: str) -> None:
    path = saved_pipe(trained_nlp, tmp_path)
    (path / "cfg").write_bytes(content)
    with pytest.raises(ValueError) as err:
        fresh_pipe().from_disk(path)
    assert expected in str(err.value) and str(path / "cfg") in str(err.value)


def test_parse_cfg_accepts_a_saved_cfg(trained_nlp) -> None:
    cfg = json.loads(srsly.msgpack_loads(trained_nlp.get_pipe("bilstm_crf_ner").to_bytes())["cfg"])
    assert parse_cfg(json.dumps(cfg).encode(), "cfg", "ner") == cfg


class _RunsCode:
    """A pickle that writes a file when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_crafted_weights_never_run_code_even_when_torch_is_told_to_allow_it(trained_nlp, tmp_path) -> None:
    path = saved_pipe(trained_nlp, tmp_path)
    marker = tmp_path / "code-ran"
    model = srsly.msgpack_loads((path / "model").read_bytes())
    node = next(i for i, shims in enumerate(model["shims"]) if shims)  # the PyTorchWrapper
    shim = srsly.msgpack_loads(model["shims"][node][0])
    shim["state"] = pickle.dumps(_RunsCode(marker))
    model["shims"][node][0] = srsly.msgpack_dumps(shim)
    (path / "model").write_bytes(srsly.msgpack_dumps(model))
    cfg = srsly.read_json(path / "cfg")
    # Whoever crafts the weights can edit cfg too: made to look saved before checksums
    # (no checksum, no n_gazetteer_keys), with table sizes small enough for the crafted
    # file, it loads with a warning and reaches the weights.
    del cfg["checksum"], cfg["n_gazetteer_keys"]
    cfg["n_chars"], cfg["n_lexicon_keys"] = 1, 1
    srsly.write_json(path / "cfg", cfg)
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    code = f"import spacy; spacy.load({str(tmp_path / 'nlp')!r})"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert not marker.exists(), "unpickling the weights ran code"
    assert result.returncode != 0 and "Cannot load the weights" in result.stderr
