"""The streaming corpus readers: CLUE JSON (lines and array) and char-per-line files."""
import json
from pathlib import Path
from typing import Any, List

import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Doc

from spacy_bilstm_crf.corpus import (
    CorpusError,
    CorpusStats,
    InputEncodingError,
    doc_to_conll,
    read_clue,
    read_conll,
    resolve_overlaps,
    spans_to_tags,
    tags_to_spans,
    TagSequenceError,
)
from spacy_bilstm_crf.corpus import textio

REPO = Path(__file__).parents[1]
SAMPLE = REPO / "assets" / "cluener_sample.json"
# The shared data directory sits beside the repository checkout (../shared).
CLUENER = Path(__file__).parents[2] / "shared" / "data" / "cluener"

RECORDS = [
    {
        "text": "浙商银行企业信贷部叶老桂博士则从另一个角度进行了解读。叶老桂认为",
        "label": {"name": {"叶老桂": [[9, 11], [27, 29]]}, "company": {"浙商银行": [[0, 3]]}},
    },
    {"text": "生生不息CSOL生化狂潮让你填弹狂扫", "label": {"game": {"CSOL": [[4, 7]]}}},
    {"text": "没有标注的一句话。"},
]


@pytest.fixture(scope="module")
def nlp() -> Language:
    return spacy.blank("zh")


def write_lines(path: Path, records: List[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def ents(doc: Doc) -> List[tuple]:
    return [(e.start_char, e.end_char, e.label_, e.text) for e in doc.ents]


def convert(path: Path, nlp: Language, **kwargs: Any):
    stats = CorpusStats()
    docs = list(read_clue(path, nlp, stats, **kwargs))
    stats.check()
    return docs, stats


# -- CLUE JSON -------------------------------------------------------------------------


def test_json_lines_end_inclusive_offsets(tmp_path: Path, nlp: Language) -> None:
    docs, stats = convert(write_lines(tmp_path / "a.json", RECORDS), nlp)
    assert len(docs) == 3
    assert ents(docs[0]) == [(0, 4, "company", "浙商银行"), (9, 12, "name", "叶老桂"), (27, 30, "name", "叶老桂")]
    assert ents(docs[1]) == [(4, 8, "game", "CSOL")]
    # One token per character, and every token outside an entity is annotated O.
    assert len(docs[1]) == len(RECORDS[1]["text"])
    assert [t.ent_iob_ for t in docs[1]][:5] == ["O", "O", "O", "O", "B"]
    assert stats.records_read == 3 and stats.docs_written == 3
    assert stats.entities_in == 4 and stats.entities_kept == 4
    assert stats.labels == {"name": 2, "company": 1, "game": 1}


def test_unlabeled_record_is_a_doc_without_entities(tmp_path: Path, nlp: Language) -> None:
    docs, stats = convert(write_lines(tmp_path / "a.json", RECORDS), nlp)
    assert docs[2].ents == ()
    assert all(t.ent_iob_ == "O" for t in docs[2])
    assert stats.unlabeled == 1


def test_json_array_matches_json_lines(tmp_path: Path, nlp: Language) -> None:
    lines = write_lines(tmp_path / "lines.json", RECORDS)
    array = tmp_path / "array.json"
    # Leading whitespace: the format is detected by the first non-whitespace char.
    array.write_text("\n  " + json.dumps(RECORDS, ensure_ascii=False, indent=1), encoding="utf-8")
    docs_lines, _ = convert(lines, nlp)
    docs_array, stats = convert(array, nlp)
    assert [d.text for d in docs_array] == [d.text for d in docs_lines]
    assert [ents(d) for d in docs_array] == [ents(d) for d in docs_lines]
    assert stats.records_read == 3


def test_blank_lines_and_bom_are_ignored(tmp_path: Path, nlp: Language) -> None:
    path = tmp_path / "a.json"
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in RECORDS[:2])
    path.write_text("\ufeff" + body.replace("\n", "\n\n") + "\n\n", encoding="utf-8")
    docs, stats = convert(path, nlp)
    assert len(docs) == 2 and stats.records_read == 2


def test_entity_drop_reasons(tmp_path: Path, nlp: Language) -> None:
    record = {
        "text": "张三在北京大学读书，去 上海玩。",
        "label": {
            "name": {"张三": [[0, 1], [0, 1]]},  # duplicate
            "organization": {"北京大学": [[3, 6]]},
            "address": {"北京": [[3, 4]], "上海": [[12, 13]], "读书": [[8, 9]]},  # overlap; ok; mismatch
            "scene": {" 上海": [[11, 13]], "远方": [[30, 31]]},  # starts on a space; out of range
            "alien": {"张三": [[0, 1]]},  # unknown label
        },
    }
    labels = ["name", "organization", "address", "scene"]
    docs, stats = convert(write_lines(tmp_path / "a.json", [record]), nlp, labels=labels)
    assert ents(docs[0]) == [(0, 2, "name", "张三"), (3, 7, "organization", "北京大学"), (12, 14, "address", "上海")]
    assert stats.dropped == {
        "duplicate": 1,
        "overlap": 1,
        "text_mismatch": 1,
        "misaligned": 1,
        "out_of_range": 1,
        "unknown_label": 1,
    }
    assert stats.entities_in == 9 and stats.entities_kept == 3
    assert any("北京" in m and "overlaps" in m for m in stats.examples["overlap"])
    assert "line 1" in stats.examples["text_mismatch"][0]


def test_out_of_range_includes_start_after_end_and_negative(tmp_path: Path, nlp: Language) -> None:
    record = {"text": "张三在北京", "label": {"name": {"张三": [[1, 0], [-1, 1], [0, 5]]}}}
    docs, stats = convert(write_lines(tmp_path / "a.json", [record]), nlp)
    assert stats.dropped == {"out_of_range": 3}
    assert docs[0].ents == ()


def test_overlap_rule_longest_then_earliest_then_first_listed() -> None:
    spans = [(3, 6, "c"), (0, 2, "a"), (1, 4, "b"), (5, 7, "d"), (5, 7, "e")]
    kept, dropped = resolve_overlaps(spans)
    # b and c tie on length 3: b starts earlier and wins although listed later;
    # d and e are the same span: d, listed first, wins.
    assert kept == [(1, 4, "b"), (5, 7, "d")]
    assert dropped == [(3, 6, "c"), (0, 2, "a"), (5, 7, "e")]


def test_real_overlap_keeps_the_book_title(tmp_path: Path, nlp: Language) -> None:
    # The shape of CLUENER train.json line 1507: a book title containing two company names.
    text = "读了《招商银行与永隆银行的故事》之后"
    record = {
        "text": text,
        "label": {
            "book": {"招商银行与永隆银行的故事": [[3, 14]]},
            "company": {"招商银行": [[3, 6]], "永隆银行": [[8, 11]]},
        },
    }
    docs, stats = convert(write_lines(tmp_path / "a.json", [record]), nlp)
    assert [(e.label_, e.text) for e in docs[0].ents] == [("book", "招商银行与永隆银行的故事")]
    assert stats.dropped == {"overlap": 2}


BAD_LINES = [
    ('{"text": "好", "label": ', "invalid_json", "invalid JSON"),
    ('["not", "an", "object"]', "bad_record", "JSON object"),
    ('{"text": 12, "label": {}}', "bad_text", "'text' must be a string"),
    ('{"label": {}}', "bad_text", "'text' must be a string"),
    ('{"text": "  ", "label": {}}', "empty_text", "empty"),
    ('{"text": "张三", "label": ["name"]}', "bad_label", "'label' must be an object"),
    ('{"text": "张三", "label": {"name": [[0, 1]]}}', "bad_label", "label.name"),
    ('{"text": "张三", "label": {"name": {"张三": [0, 1]}}}', "bad_offsets", "pair of integers"),
    ('{"text": "张三", "label": {"name": {"张三": [[0.0, 1]]}}}', "bad_offsets", "pair of integers"),
    ('{"text": "张三", "label": {"name": {"张三": [["0", "1"]]}}}', "bad_offsets", "pair of integers"),
    ('{"text": "张三", "label": {"name": {"张三": [[true, 1]]}}}', "bad_offsets", "pair of integers"),
    ('{"text": "张三", "label": {"name": {"张三": [[0, 1, 2]]}}}', "bad_offsets", "pair of integers"),
    ('{"text": "张三", "label": {"name": {"张三": "0,1"}}}', "bad_offsets", "list of [start, end]"),
    # An empty label would be counted as kept but saved as no entity.
    ('{"text": "张三", "label": {"": {"张三": [[0, 1]]}}}', "bad_label", "label is empty"),
    # Lone surrogates: not valid Unicode, and spaCy's string store cannot hash them.
    ('{"text": "张\\ud800三", "label": {}}', "lone_surrogate", "lone surrogate '\\ud800' at character 1"),
    ('{"text": "张三", "label": {"\\udc00": {"张三": [[0, 1]]}}}', "lone_surrogate", "lone surrogate"),
]


@pytest.mark.parametrize("bad,reason,detail", BAD_LINES)
def test_malformed_line_error_names_file_and_line(
    tmp_path: Path, nlp: Language, bad: str, reason: str, detail: str
) -> None:
    path = tmp_path / "broken.json"
    good = json.dumps(RECORDS[1], ensure_ascii=False)
    path.write_text(f"{good}\n\n{bad}\n{good}\n", encoding="utf-8")
    with pytest.raises(CorpusError) as err:
        list(read_clue(path, nlp, CorpusStats()))
    assert err.value.reason == reason
    assert "broken.json, line 3:" in str(err.value)
    assert detail in str(err.value)


def test_skip_invalid_counts_by_reason(tmp_path: Path, nlp: Language) -> None:
    path = tmp_path / "broken.json"
    good = json.dumps(RECORDS[0], ensure_ascii=False)
    bad = [line for line, _, _ in BAD_LINES]
    path.write_text("\n".join([good] + bad + [good]) + "\n", encoding="utf-8")
    docs, stats = convert(path, nlp, skip_invalid=True)
    assert len(docs) == 2
    assert stats.records_read == len(BAD_LINES) + 2
    assert stats.docs_written + sum(stats.skipped.values()) == stats.records_read
    assert stats.skipped == {
        "invalid_json": 1, "bad_record": 1, "bad_text": 2, "empty_text": 1, "bad_label": 3, "bad_offsets": 6,
        "lone_surrogate": 2,
    }
    # Entities of skipped records are not counted as read.
    assert stats.entities_in == stats.entities_kept == 6
    assert stats.to_dict()["records_skipped"] == len(BAD_LINES)


def test_json_array_errors_name_the_record(tmp_path: Path, nlp: Language) -> None:
    path = tmp_path / "array.json"
    path.write_text(json.dumps([RECORDS[0], {"text": 5}, RECORDS[1]], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(CorpusError, match=r"array\.json, record 2: 'text' must be a string"):
        list(read_clue(path, nlp, CorpusStats()))
    docs, stats = convert(path, nlp, skip_invalid=True)
    assert len(docs) == 2 and stats.skipped == {"bad_text": 1}


def test_json_array_syntax_error_is_fatal_even_when_skipping(tmp_path: Path, nlp: Language) -> None:
    path = tmp_path / "array.json"
    path.write_text('[{"text": "好"}, {"text": ]', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"record 2: invalid JSON"):
        list(read_clue(path, nlp, CorpusStats(), skip_invalid=True))


def test_json_array_lone_surrogates_are_record_errors(tmp_path: Path, nlp: Language) -> None:
    # ijson's C backend turns these into '?', U+10041 and a UnicodeDecodeError;
    # a valid pair (the last record) must still decode to its one character.
    path = tmp_path / "array.json"
    path.write_text(
        '[{"text": "a\\ud800b"}, {"text": "a\\udc00b"}, {"text": "a\\ud800\\u0041"}, {"text": "x\\ud83d\\ude00"}]',
        encoding="utf-8",
    )
    with pytest.raises(CorpusError, match=r"array\.json, record 1: 'text' has a lone surrogate") as err:
        list(read_clue(path, nlp, CorpusStats()))
    assert err.value.reason == "lone_surrogate"
    docs, stats = convert(path, nlp, skip_invalid=True)
    assert [d.text for d in docs] == ["x\U0001F600"]
    assert stats.skipped == {"lone_surrogate": 3}


# -- encodings -------------------------------------------------------------------------


def test_gbk_file_is_an_error_naming_line_and_byte(tmp_path: Path, nlp: Language) -> None:
    path = write_lines(tmp_path / "a.json", [{"text": "ok"}])  # line 1 is ASCII
    record = json.dumps(RECORDS[0], ensure_ascii=False)
    path.write_bytes(path.read_bytes() + (record + "\n").encode("gbk"))
    first_bad = len(b'{"text": "ok"}\n{"text": "')
    for skip_invalid in (False, True):  # a wrong encoding is never a skippable record
        with pytest.raises(InputEncodingError) as err:
            list(read_clue(path, nlp, CorpusStats(), skip_invalid=skip_invalid))
        assert f"a.json, line 2, byte offset {first_bad}: cannot decode 0x" in str(err.value)
        assert "as utf-8" in str(err.value) and err.value.reason == "bad_encoding"
    docs, stats = convert(path, nlp, encoding="gbk")
    assert ents(docs[1]) == ents(convert(write_lines(tmp_path / "b.json", RECORDS[:1]), nlp)[0][0])
    assert stats.entities_kept == 3


def test_gbk_json_array_and_conll(tmp_path: Path, nlp: Language) -> None:
    array = tmp_path / "array.json"
    array.write_bytes(json.dumps(RECORDS, ensure_ascii=False, indent=1).encode("gbk"))
    with pytest.raises(InputEncodingError, match=r"array\.json, line 3, byte offset 16"):
        list(read_clue(array, nlp, CorpusStats()))
    docs, _ = convert(array, nlp, encoding="gbk")
    assert [d.text for d in docs] == [r["text"] for r in RECORDS]
    conll = tmp_path / "a.bio"
    conll.write_bytes("张 B-PER\n三 I-PER\n\n去 O\n".encode("gbk"))
    with pytest.raises(InputEncodingError, match=r"a\.bio, line 1, byte offset 0"):
        list(read_conll(conll, nlp, CorpusStats(), scheme="BIO", skip_invalid=True))
    docs = list(read_conll(conll, nlp, CorpusStats(), scheme="BIO", encoding="gbk"))
    assert [ents(d) for d in docs] == [[(0, 2, "PER", "张三")], []]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64])
def test_decoding_across_chunk_boundaries(
    tmp_path: Path, nlp: Language, monkeypatch: pytest.MonkeyPatch, chunk_size: int
) -> None:
    # Multi-byte characters, \r\n and the BOM split between reads must decode (and
    # count lines) as if the file were read at once, as lines and as an array.
    monkeypatch.setattr(textio, "CHUNK_SIZE", chunk_size)
    body = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in RECORDS) + "\r\n"
    array = json.dumps(RECORDS, ensure_ascii=False, indent=1).replace("\n", "\r\n")
    expected = [ents(d) for d in convert(write_lines(tmp_path / "u.json", RECORDS), nlp)[0]]
    for encoding, bom in (("utf-8", "\ufeff"), ("gbk", ""), ("utf-16", "")):
        for kind, text in (("lines", body), ("array", array)):
            path = tmp_path / f"{kind}.{encoding}.json"
            path.write_bytes((bom + text).encode(encoding))
            docs, _ = convert(path, nlp, encoding=encoding)
            assert [ents(d) for d in docs] == expected, (encoding, kind)
    bad = tmp_path / "bad.json"
    prefix = body.encode("utf-8")
    bad.write_bytes(prefix + '{"text": "张'.encode("utf-8")[:-1] + b'"}\r\n')  # a cut-off character
    with pytest.raises(InputEncodingError, match=rf"line 4, byte offset {len(prefix) + 10}:"):
        list(read_clue(bad, nlp, CorpusStats()))


def test_iter_lines_matches_text_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(textio, "CHUNK_SIZE", 3)
    path = tmp_path / "a.txt"
    path.write_bytes("一\r\n二\r三\n\n四".encode("utf-8"))
    with path.open(encoding="utf-8") as file_:
        expected = [(n, line.rstrip("\n")) for n, line in enumerate(file_, start=1)]
    assert list(textio.iter_lines(path)) == expected == [(1, "一"), (2, "二"), (3, "三"), (4, ""), (5, "四")]


def test_unknown_encoding_is_a_lookup_error(tmp_path: Path, nlp: Language) -> None:
    path = write_lines(tmp_path / "a.json", RECORDS)
    with pytest.raises(LookupError):
        list(read_clue(path, nlp, CorpusStats(), encoding="no-such-codec"))
    with pytest.raises(LookupError):  # a bytes-to-bytes codec is not a text encoding
        list(read_clue(path, nlp, CorpusStats(), encoding="base64"))


# -- char-per-line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme,tags",
    [
        ("BIO", ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]),
        ("BIOES", ["B-PER", "E-PER", "O", "S-LOC", "B-LOC", "E-LOC"]),
        ("BMES", ["B-PER", "E-PER", "O", "S-LOC", "B-LOC", "E-LOC"]),
    ],
)
def test_tags_to_spans_and_back(scheme: str, tags: List[str]) -> None:
    spans, repairs = tags_to_spans(tags, scheme)
    assert spans == [(0, 2, "PER"), (3, 4, "LOC"), (4, 6, "LOC")]
    assert repairs == []
    assert spans_to_tags(6, spans, scheme) == tags


def test_bmes_uses_m_for_inside() -> None:
    assert spans_to_tags(4, [(0, 4, "ORG")], "BMES") == ["B-ORG", "M-ORG", "M-ORG", "E-ORG"]
    assert tags_to_spans(["B-ORG", "M-ORG", "M-ORG", "E-ORG"], "BMES")[0] == [(0, 4, "ORG")]


@pytest.mark.parametrize(
    "scheme,tags,position",
    [
        ("BIO", ["O", "I-PER", "I-PER"], 1),  # I- after O
        ("BIO", ["B-LOC", "I-PER"], 1),  # I- of another label
        ("BIOES", ["B-PER", "I-PER", "O"], 2),  # not closed by E-
        ("BIOES", ["B-PER", "I-PER"], 2),  # not closed at the end
        ("BIOES", ["S-PER", "E-PER"], 1),  # E- with nothing open
        ("BMES", ["B-PER", "B-PER", "E-PER"], 1),  # B- while one is open
    ],
)
def test_invalid_tag_sequences(scheme: str, tags: List[str], position: int) -> None:
    with pytest.raises(TagSequenceError) as err:
        tags_to_spans(tags, scheme)
    assert err.value.position == position
    assert err.value.reason == "invalid_tag_sequence"


def test_repair_rule_stray_tag_starts_an_entity() -> None:
    assert tags_to_spans(["O", "I-PER", "I-PER", "O"], "BIO", repair=True) == (
        [(1, 3, "PER")],
        [(1, "stray_continuation")],
    )
    # BIOES: the unclosed LOC ends at its last tag, the stray E-PER is a 1-char entity.
    spans, repairs = tags_to_spans(["B-LOC", "I-LOC", "E-PER"], "BIOES", repair=True)
    assert spans == [(0, 2, "LOC"), (2, 3, "PER")]
    assert repairs == [(2, "stray_continuation"), (2, "unclosed_entity")]


def test_tag_outside_scheme_is_bad_tag() -> None:
    with pytest.raises(TagSequenceError) as err:
        tags_to_spans(["B-PER", "E-PER"], "BIO")
    assert err.value.reason == "bad_tag" and "not in the BIO scheme" in str(err.value)
    with pytest.raises(TagSequenceError, match="neither 'O' nor PREFIX-LABEL"):
        tags_to_spans(["PER"], "BIO")


@pytest.mark.parametrize("scheme", ["BIO", "BIOES", "BMES"])
def test_conll_round_trip_of_the_sample(tmp_path: Path, nlp: Language, scheme: str) -> None:
    docs, _ = convert(SAMPLE, nlp)
    path = tmp_path / f"sample.{scheme}.txt"
    path.write_text("-DOCSTART- O\n\n" + "".join(doc_to_conll(d, scheme) for d in docs), encoding="utf-8")
    stats = CorpusStats()
    back = list(read_conll(path, nlp, stats, scheme=scheme))
    stats.check()
    assert [d.text for d in back] == [d.text for d in docs]
    assert [ents(d) for d in back] == [ents(d) for d in docs]
    assert stats.entities_kept == sum(len(d.ents) for d in docs) > 100


def test_conll_separators_docstart_and_labels(tmp_path: Path, nlp: Language) -> None:
    path = tmp_path / "a.bio"
    path.write_text(
        "-DOCSTART- -X- O\n\n张\tB-PER\n三\tI-PER\n去 O\n北   B-LOC\n京 I-LOC\n\n\n"
        "C B-GAME\nS I-GAME\n好 O\n",
        encoding="utf-8",
    )
    stats = CorpusStats()
    docs = list(read_conll(path, nlp, stats, scheme="BIO", labels=["PER", "LOC"]))
    stats.check()
    assert [d.text for d in docs] == ["张三去北京", "CS好"]
    assert ents(docs[0]) == [(0, 2, "PER", "张三"), (3, 5, "LOC", "北京")]
    assert docs[1].ents == () and stats.dropped == {"unknown_label": 1}
    assert stats.records_read == 2 and stats.entities_in == 3


def test_conll_errors_name_file_and_line(tmp_path: Path, nlp: Language) -> None:
    path = tmp_path / "bad.bio"
    path.write_text("张 B-PER\n三 I-PER\n\n去 O\n北 I-LOC\n\n好\n\n张 E-PER\n", encoding="utf-8")
    with pytest.raises(CorpusError) as err:
        list(read_conll(path, nlp, CorpusStats(), scheme="BIO"))
    assert "bad.bio, line 5:" in str(err.value) and err.value.reason == "invalid_tag_sequence"
    stats = CorpusStats()
    docs = list(read_conll(path, nlp, stats, scheme="BIO", skip_invalid=True))
    stats.check()
    assert len(docs) == 1
    assert stats.skipped == {"invalid_tag_sequence": 1, "bad_line": 1, "bad_tag": 1}
    assert "bad.bio, line 7:" in stats.examples["bad_line"][0]


def test_conll_repair_counts(tmp_path: Path, nlp: Language) -> None:
    path = tmp_path / "bad.bio"
    path.write_text("去 O\n北 I-LOC\n京 I-LOC\n", encoding="utf-8")
    stats = CorpusStats()
    docs = list(read_conll(path, nlp, stats, scheme="BIO", repair_tags=True))
    assert ents(docs[0]) == [(1, 3, "LOC", "北京")]
    assert stats.repaired == {"stray_continuation": 1}
    assert "line 2" in stats.examples["stray_continuation"][0]


# -- the real CLUENER files (read-only, beside the repository) --------------------------


@pytest.mark.skipif(not (CLUENER / "dev.json").exists(), reason="CLUENER dev.json not available")
def test_real_cluener_dev(nlp: Language) -> None:
    docs, stats = convert(CLUENER / "dev.json", nlp)
    assert len(docs) == stats.docs_written == 1343
    assert stats.entities_in == 3072
    assert stats.entities_kept + sum(stats.dropped.values()) == 3072
    assert sum(len(d.ents) for d in docs) == stats.entities_kept
    assert len(stats.labels) == 10


@pytest.mark.skipif(not (CLUENER / "train.json").exists(), reason="CLUENER train.json not available")
def test_real_cluener_train_overlap(nlp: Language) -> None:
    stats = CorpusStats()
    n_docs = sum(1 for _ in read_clue(CLUENER / "train.json", nlp, stats))
    stats.check()
    assert n_docs == 10748 and stats.entities_in == 23972
    # Line 1507: the book title wins over the two company names inside it.
    assert stats.dropped["overlap"] == 2
    assert all("line 1507" in m for m in stats.examples["overlap"])
