"""``convert`` on hostile or odd input: texts over spaCy's max_length, deeply nested
JSON, encodings that cannot decode text, unwritable outputs, labels with spaces or
from a missing file, tab-separated char-per-line fields; and the overlap rule at
scale. Every record is converted or counted, every error names the record."""
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence, Set, Tuple

import pytest
import spacy
import srsly
from spacy.language import Language
from spacy.tokens import DocBin
from typer.testing import CliRunner, Result

from spacy_bilstm_crf.cli import app
from spacy_bilstm_crf.corpus import (
    CorpusError,
    CorpusStats,
    MAX_JSON_DEPTH,
    NestingGuard,
    read_clue,
    read_conll,
    resolve_overlaps,
    split_tag,
)
from spacy_bilstm_crf.corpus import docs as docs_module
from spacy_bilstm_crf.corpus.docs import tokenize

REPO = Path(__file__).parents[1]
SAMPLE_DEV = REPO / "assets" / "cluener_sample_dev.json"
runner = CliRunner()
Span = Tuple[int, int, str]


@pytest.fixture(scope="module")
def nlp() -> Language:
    return spacy.blank("zh")


def assert_clean_failure(result: Result, *expected: str) -> None:
    """Exit 1 through typer (no traceback), with every expected text in the output."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    for text in expected:
        assert text in result.output, result.output


def read_docbin(path: Path) -> list:
    return list(DocBin().from_disk(path).get_docs(spacy.blank("zh").vocab))


def write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path


# -- a text over 1,000,000 characters ------------------------------------------------------


def test_text_over_spacy_max_length_is_converted(tmp_path: Path) -> None:
    # The repro: spaCy's nlp.max_length (1,000,000) made make_doc raise E088.
    source = write(
        tmp_path / "long.jsonl",
        json.dumps({"id": 1, "text": "马云"}) + "\n" + json.dumps({"id": 2, "text": "张" * 1_000_001}) + "\n",
    )
    output = tmp_path / "out.spacy"
    for extra in ([], ["--skip-invalid"]):
        result = runner.invoke(app, ["convert", str(source), str(output), *extra])
        assert result.exit_code == 0, result.output
        stats = srsly.read_json(output.with_suffix(".stats.json"))
        assert stats["records_read"] == stats["docs_written"] == 2
        assert [len(doc) for doc in read_docbin(output)] == [2, 1_000_001]


def test_fast_tokenization_equals_spacy_char_segmentation(nlp: Language) -> None:
    rng = random.Random(0)
    alphabet = "张三a \n\t\u3000 xy.\r"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
        expected = [(t.text, t.whitespace_) for t in nlp.tokenizer(text)]
        assert [(t.text, t.whitespace_) for t in tokenize(nlp, text)] == expected, repr(text)


# -- deeply nested JSON --------------------------------------------------------------------


def test_deeply_nested_json_line_is_a_record_error(tmp_path: Path) -> None:
    source = write(tmp_path / "deep.jsonl", '{"text": "马云"}\n' + "[" * 100_000 + '\n{"text": "张三"}\n')
    output = tmp_path / "out.spacy"
    result = runner.invoke(app, ["convert", str(source), str(output)])
    assert_clean_failure(result, "deep.jsonl, line 2", "nested too deeply", "--skip-invalid")
    result = runner.invoke(app, ["convert", str(source), str(output), "--skip-invalid"])
    assert result.exit_code == 0, result.output
    stats = srsly.read_json(output.with_suffix(".stats.json"))
    assert stats["skipped"] == {"too_deep": 1} and stats["docs_written"] == 2
    assert [d.text for d in read_docbin(output)] == ["马云", "张三"]


def test_integer_too_long_to_convert_is_a_record_error(tmp_path: Path, nlp: Language) -> None:
    # Python refuses int("1" + 5000 digits) with a ValueError that is not a JSONDecodeError.
    big = "1" + "0" * 5000
    source = write(tmp_path / "in.jsonl", '{"text": "ab"}\n{"text": "ab", "label": {"n": {"a": [[0, %s]]}}}\n' % big)
    stats = CorpusStats()
    assert [d.text for d in read_clue(source, nlp, stats, skip_invalid=True)] == ["ab"]
    assert stats.skipped == {"invalid_json": 1} and "line 2" in stats.examples["invalid_json"][0]


def test_deeply_nested_array_record_is_skippable(tmp_path: Path, nlp: Language) -> None:
    # 3,000 levels: deep enough to be cut, shallow enough that the parser copes
    # without the guard (100,000 took it gigabytes of memory).
    deep = "[" * 3000 + "]" * 3000
    source = write(
        tmp_path / "deep.json",
        f'[{{"text": "马云"}}, {deep}, {{"text": "张三", "label": {{"name": {{"张三": [[0, 1]]}}}}}}]',
    )
    with pytest.raises(CorpusError) as err:
        list(read_clue(source, nlp, CorpusStats()))
    assert err.value.reason == "too_deep" and "deep.json, record 2:" in str(err.value)
    stats = CorpusStats()
    docs = list(read_clue(source, nlp, stats, skip_invalid=True))
    stats.check()
    assert [d.text for d in docs] == ["马云", "张三"] and stats.skipped == {"too_deep": 1}
    assert stats.entities_kept == 1


def test_unclosed_deep_array_is_a_clean_error_even_when_skipping(tmp_path: Path) -> None:
    source = write(tmp_path / "deep.json", '[{"text": "马云"}, ' + "[" * 100_000)
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "out.spacy"), "--skip-invalid"])
    expected = ("deep.json, record 2", f"more than {MAX_JSON_DEPTH} levels", "cannot be skipped")
    assert_clean_failure(result, *expected)


def test_nesting_guard_cuts_deep_containers_and_ignores_strings() -> None:
    text = '[{"a": "[[[\\"{{", "b": [[[1]]]}, [[[[2], 3]]], {"c": "\\\\"}]'
    guard = NestingGuard(max_depth=3)
    assert json.loads(guard.feed(text)) == [{"a": '[[["{{', "b": [0]}, [[0]], {"c": "\\"}]
    assert guard.too_deep == {1, 2}
    # The same in pieces of one character: state carries across pieces.
    guard = NestingGuard(max_depth=3)
    assert "".join(guard.feed(char) for char in text) == NestingGuard(max_depth=3).feed(text)
    assert guard.too_deep == {1, 2}


# -- encodings and output paths ------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["undefined", "idna", "base64"])
def test_encoding_that_cannot_decode_text_is_an_error(tmp_path: Path, encoding: str) -> None:
    result = runner.invoke(app, ["convert", str(SAMPLE_DEV), str(tmp_path / "o.spacy"), "--encoding", encoding])
    assert_clean_failure(result, "Not a text encoding", f"--encoding {encoding}")
    assert not (tmp_path / "o.spacy").exists()


@pytest.mark.parametrize("option", ["output", "--stats"])
def test_output_below_a_file_is_an_error(tmp_path: Path, option: str) -> None:
    blocker = write(tmp_path / "file.txt", "x")
    target = blocker / "sub" / "out.json"
    output = target if option == "output" else tmp_path / "out.spacy"
    extra = ["--stats", str(target)] if option == "--stats" else []
    result = runner.invoke(app, ["convert", str(SAMPLE_DEV), str(output), *extra])
    assert_clean_failure(result, "Cannot write", f"{blocker} is a file, not a directory")


@pytest.mark.parametrize(
    "args,error",
    [
        (["in.jsonl", "in.jsonl"], "The output is the input"),
        (["in.jsonl", "o.spacy", "--stats", "o.spacy"], "The --stats file is the output"),
    ],
)
def test_output_that_would_overwrite_an_input_is_an_error(tmp_path: Path, args: List[str], error: str) -> None:
    source = write(tmp_path / "in.jsonl", '{"text": "好"}\n')
    result = runner.invoke(app, ["convert", *(str(tmp_path / a) if not a.startswith("-") else a for a in args)])
    assert_clean_failure(result, error)
    assert source.read_text(encoding="utf-8") == '{"text": "好"}\n'


def test_unreadable_input_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write(tmp_path / "in.jsonl", '{"text": "好"}\n')
    real_open = Path.open

    def refuse(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self == source:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "o.spacy")])
    assert_clean_failure(result, "Cannot read the input", "Permission denied")


def test_unknown_lang_is_an_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", str(SAMPLE_DEV), str(tmp_path / "o.spacy"), "--lang", "xx-nope"])
    assert_clean_failure(result, "Unknown --lang", "xx-nope")


# -- labels ----------------------------------------------------------------------------------


def test_labels_are_stripped(tmp_path: Path, nlp: Language) -> None:
    source = write(
        tmp_path / "in.jsonl",
        '{"text": "张三和李四", "label": {" name ": {"张三": [[0, 1]]}, "name": {"李四": [[3, 4]]}}}\n',
    )
    stats = CorpusStats()
    docs = list(read_clue(source, nlp, stats, labels=[" name"]))
    stats.check()
    assert [(e.text, e.label_) for e in docs[0].ents] == [("张三", "name"), ("李四", "name")]
    assert stats.labels == {"name": 2} and not stats.dropped
    assert split_tag("B- name ") == ("B", "name")


def test_label_of_only_spaces_is_a_record_error(tmp_path: Path, nlp: Language) -> None:
    record = '{"text": "张三", "label": {"  ": {"张三": [[0, 1]]}}}'
    source = write(tmp_path / "in.jsonl", '{"text": "好"}\n' + record + "\n")
    with pytest.raises(CorpusError) as err:
        list(read_clue(source, nlp, CorpusStats()))
    assert "in.jsonl, line 2:" in str(err.value) and err.value.reason == "bad_label"


def test_missing_labels_file_without_suffix_is_not_a_silent_label(tmp_path: Path) -> None:
    # `--labels mylabels` (no such file) was one label that dropped every entity, exit 0.
    output = tmp_path / "out.spacy"
    result = runner.invoke(app, ["convert", str(SAMPLE_DEV), str(output), "--labels", "mylabels"])
    assert_clean_failure(result, "No entity has a label in the label set", "'mylabels'", "--labels-file")
    assert not output.exists()
    result = runner.invoke(app, ["convert", str(SAMPLE_DEV), str(output), "--labels-file", str(tmp_path / "mylabels")])
    assert_clean_failure(result, "Labels file not found", "mylabels")


def test_labels_file_option_and_conflict(tmp_path: Path) -> None:
    labels_file = write(tmp_path / "mylabels", " name \n\ncompany\n")
    output = tmp_path / "out.spacy"
    result = runner.invoke(app, ["convert", str(SAMPLE_DEV), str(output), "--labels-file", str(labels_file)])
    assert result.exit_code == 0, result.output
    stats = srsly.read_json(output.with_suffix(".stats.json"))
    assert set(stats["labels"]) == {"name", "company"}
    assert stats["entities_kept"] + stats["dropped"]["unknown_label"] == stats["entities_in"]
    assert stats["unknown_labels"] and not set(stats["unknown_labels"]) & {"name", "company"}
    assert sum(stats["unknown_labels"].values()) == stats["dropped"]["unknown_label"]
    result = runner.invoke(
        app, ["convert", str(SAMPLE_DEV), str(output), "--labels", "name", "--labels-file", str(labels_file)]
    )
    assert_clean_failure(result, "not both")


def test_unused_label_warns(tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", str(SAMPLE_DEV), str(tmp_path / "o.spacy"), "--labels", "name,nosuch"])
    assert result.exit_code == 0, result.output
    assert "No entity has the label(s) nosuch" in result.output


# -- char-per-line -------------------------------------------------------------------------


def test_tab_separated_conll_fields_are_stripped(tmp_path: Path, nlp: Language) -> None:
    source = write(tmp_path / "in.bioes", "马 \tB-name\n云\t E-name \n \tO\n好\tO\n")
    stats = CorpusStats()
    docs = list(read_conll(source, nlp, stats, scheme="BIOES"))
    stats.check()
    # The space before the tab is not text; a field of only a space is a space character.
    assert docs[0].text == "马云 好"
    assert [(e.text, e.label_) for e in docs[0].ents] == [("马云", "name")]


# -- overlap resolution ----------------------------------------------------------------------


def brute_force_overlaps(spans: Sequence[Span]) -> Tuple[List[Span], List[Span]]:
    """The rule as first written: longest first, then earliest start, then input
    order; a span is kept unless it overlaps one kept before (O(n²))."""
    order = sorted(range(len(spans)), key=lambda i: (spans[i][0] - spans[i][1], spans[i][0], i))
    taken: List[Span] = []
    dropped: Set[int] = set()
    for i in order:
        start, end, _ = spans[i]
        if any(start < t_end and t_start < end for t_start, t_end, _ in taken):
            dropped.add(i)
        else:
            taken.append(spans[i])
    return sorted(taken), [spans[i] for i in range(len(spans)) if i in dropped]


def test_resolve_overlaps_equals_the_brute_force_rule() -> None:
    rng = random.Random(0)
    for _ in range(5000):
        length = rng.randint(1, 16)
        spans: List[Span] = []
        for _ in range(rng.randint(0, 12)):
            start = rng.randint(0, length - 1)
            spans.append((start, rng.randint(start + 1, length), rng.choice("ab")))
        if spans and rng.random() < 0.3:
            spans.append(rng.choice(spans))  # exact repeats too
        assert resolve_overlaps(spans) == brute_force_overlaps(spans), spans


def test_resolve_overlaps_rejects_empty_spans() -> None:
    with pytest.raises(ValueError, match="empty"):
        resolve_overlaps([(3, 3, "name")])


class CountingList(list):
    """A list that counts reads and writes by index."""

    visits = 0

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        CountingList.visits += 1
        return super().__getitem__(index)

    def __setitem__(self, index, value):  # type: ignore[no-untyped-def]
        CountingList.visits += 1
        super().__setitem__(index, value)


def test_resolve_overlaps_is_n_log_n(monkeypatch: pytest.MonkeyPatch) -> None:
    """40,000 entities of one record (48 s before): the work, counted in tree-node
    visits (not timed), stays within a small multiple of n log2 n. Checking each
    span against every kept one would be n²/2 = 8e8 comparisons here."""

    class CountingCoverage(docs_module._Coverage):
        def __init__(self, bounds: Sequence[int]) -> None:
            super().__init__(bounds)
            self._tree = CountingList(self._tree)

    monkeypatch.setattr(docs_module, "_Coverage", CountingCoverage)
    n = 40_000
    disjoint = [(2 * i, 2 * i + 2, "name") for i in range(n)]
    chained = [(i, i + 2, "name") for i in range(n)]  # each overlaps its neighbours
    for spans in (disjoint, chained):
        CountingList.visits = 0
        kept, dropped = resolve_overlaps(spans)
        assert len(kept) + len(dropped) == n
        assert CountingList.visits <= 6 * n * (2 * n).bit_length(), CountingList.visits
    assert len(resolve_overlaps(chained)[0]) == n // 2


# -- imports ---------------------------------------------------------------------------------


def test_convert_and_data_modules_import_neither_spacy_nor_torch() -> None:
    # The cli package's __init__ imports every command module; load only ours.
    code = (
        "import sys, types, pathlib, spacy_bilstm_crf\n"
        "pkg = types.ModuleType('spacy_bilstm_crf.cli')\n"
        "pkg.__path__ = [str(pathlib.Path(spacy_bilstm_crf.__file__).parent / 'cli')]\n"
        "sys.modules['spacy_bilstm_crf.cli'] = pkg\n"
        "import spacy_bilstm_crf.cli.convert, spacy_bilstm_crf.cli.data\n"
        "heavy = sorted(m for m in ('spacy', 'torch', 'thinc', 'ijson') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", result.stdout


def test_every_lazily_exported_corpus_name_resolves() -> None:
    import spacy_bilstm_crf.corpus as corpus

    assert all(getattr(corpus, name) is not None for name in corpus.__all__)
