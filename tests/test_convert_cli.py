"""The ``convert`` command end to end: DocBin output, counts file, errors and exit
codes; and the ``--help`` of every command."""
import inspect
import json
from pathlib import Path
from typing import List

import click
import pytest
import spacy
import srsly
import typer
from spacy.tokens import DocBin
from typer.testing import CliRunner, Result

from spacy_bilstm_crf.cli import app

REPO = Path(__file__).parents[1]
SAMPLE = REPO / "assets" / "cluener_sample.json"
SAMPLE_DEV = REPO / "assets" / "cluener_sample_dev.json"
LABELS = "address,book,company,game,government,movie,name,organization,position,scene"

runner = CliRunner()


def test_convert_sample_writes_docbin_and_counts(tmp_path: Path) -> None:
    output = tmp_path / "corpus" / "nested" / "train.spacy"
    result = runner.invoke(app, ["convert", str(SAMPLE), str(output), "--labels", LABELS])
    assert result.exit_code == 0, result.output
    docs = list(DocBin().from_disk(output).get_docs(spacy.blank("zh").vocab))
    assert len(docs) == 120
    first = json.loads(SAMPLE.read_text(encoding="utf-8").splitlines()[0])
    expected = sorted(
        (start, end + 1, label)
        for label, surfaces in first["label"].items()
        for offsets in surfaces.values()
        for start, end in offsets
    )
    assert docs[0].text == first["text"]
    assert sorted((e.start_char, e.end_char, e.label_) for e in docs[0].ents) == expected
    assert all(t.ent_iob_ in ("B", "I", "O") for d in docs for t in d)  # fully annotated
    stats = srsly.read_json(output.with_suffix(".stats.json"))
    assert stats["records_read"] == stats["docs_written"] == 120
    assert stats["entities_in"] == stats["entities_kept"] == sum(len(d.ents) for d in docs)
    assert len(stats["labels"]) == 10
    assert "docs written" in result.output


def test_sample_files_are_valid_and_distinct() -> None:
    train = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    dev = [json.loads(line) for line in SAMPLE_DEV.read_text(encoding="utf-8").splitlines()]
    assert len(train) >= 100 and len(dev) >= 30
    assert not {r["text"] for r in train} & {r["text"] for r in dev}
    for record in train + dev:
        for surfaces in record["label"].values():
            for surface, offsets in surfaces.items():
                for start, end in offsets:
                    assert record["text"][start : end + 1] == surface
    assert {label for r in train for label in r["label"]} == set(LABELS.split(","))


def test_missing_input_says_what_is_expected(tmp_path: Path) -> None:
    missing = tmp_path / "cluener" / "train.json"
    result = runner.invoke(app, ["convert", str(missing), str(tmp_path / "out.spacy")])
    assert result.exit_code != 0
    assert "CLUENER data not found" in result.output and "train.json" in result.output
    assert not (tmp_path / "out.spacy").exists()


def test_malformed_line_fails_unless_skip_invalid(tmp_path: Path) -> None:
    source = tmp_path / "in.json"
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[:3]
    source.write_text("\n".join([lines[0], '{"text": "好", "label": 3}', lines[1], "{oops", lines[2]]) + "\n", encoding="utf-8")
    output = tmp_path / "out.spacy"
    result = runner.invoke(app, ["convert", str(source), str(output)])
    assert result.exit_code == 1
    assert "in.json, line 2" in result.output and "'label' must be an object" in result.output
    assert not output.exists()
    stats_path = tmp_path / "counts" / "stats.json"
    result = runner.invoke(app, ["convert", str(source), str(output), "--skip-invalid", "--stats", str(stats_path)])
    assert result.exit_code == 0, result.output
    stats = srsly.read_json(stats_path)
    assert stats["records_read"] == 5 and stats["docs_written"] == 3
    assert stats["skipped"] == {"bad_label": 1, "invalid_json": 1}
    assert len(DocBin().from_disk(output)) == 3


def test_labels_file_drops_and_counts_unknown(tmp_path: Path) -> None:
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("name\ncompany\n", encoding="utf-8")
    output = tmp_path / "out.spacy"
    result = runner.invoke(app, ["convert", str(SAMPLE_DEV), str(output), "--labels", str(labels_file)])
    assert result.exit_code == 0, result.output
    stats = srsly.read_json(output.with_suffix(".stats.json"))
    assert set(stats["labels"]) == {"name", "company"}
    assert stats["dropped"]["unknown_label"] == stats["entities_in"] - stats["entities_kept"] > 0
    assert "unknown_label" in result.output


def test_conll_format_with_scheme(tmp_path: Path) -> None:
    source = tmp_path / "in.bmes"
    source.write_text("张 B-PER\n小 M-PER\n三 E-PER\n在 O\n京 S-LOC\n\n好 O\n", encoding="utf-8")
    output = tmp_path / "out.spacy"
    result = runner.invoke(app, ["convert", str(source), str(output), "--format", "conll", "--scheme", "BMES"])
    assert result.exit_code == 0, result.output
    docs = list(DocBin().from_disk(output).get_docs(spacy.blank("zh").vocab))
    assert [(e.text, e.label_) for e in docs[0].ents] == [("张小三", "PER"), ("京", "LOC")]
    assert len(docs) == 2
    # The same file read as BIO has tags outside the scheme: an error naming the line.
    result = runner.invoke(app, ["convert", str(source), str(output), "--format", "conll", "--scheme", "BIO"])
    assert result.exit_code == 1 and "in.bmes, line 2" in result.output


def read_docbin(path: Path) -> list:
    return list(DocBin().from_disk(path).get_docs(spacy.blank("zh").vocab))


def assert_clean_failure(result: Result, *expected: str) -> None:
    """Exit 1 through typer (no traceback), with every expected text in the output."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    for text in expected:
        assert text in result.output, result.output


# -- encodings, bad strings, empty input, --labels ---------------------------------------


@pytest.mark.parametrize(
    "name,content,fmt",
    [
        ("in.json", '{"text": "张三在北京", "label": {"name": {"张三": [[0, 1]]}}}\n', "clue"),
        ("in.json", '[{"text": "张三在北京", "label": {"name": {"张三": [[0, 1]]}}}]', "clue"),
        ("in.bio", "张 B-name\n三 I-name\n在 O\n北 O\n京 O\n", "conll"),
    ],
)
def test_gbk_input_names_file_and_line_and_converts_with_encoding(
    tmp_path: Path, name: str, content: str, fmt: str
) -> None:
    source = tmp_path / name
    source.write_bytes(content.encode("gbk"))
    output = tmp_path / "out.spacy"
    args = ["convert", str(source), str(output), "--format", fmt, "--scheme", "BIO"]
    for extra in ([], ["--skip-invalid"]):
        result = runner.invoke(app, args + extra)
        assert_clean_failure(result, f"{name}, line 1, byte offset", "--encoding gbk")
        assert not output.exists()
    result = runner.invoke(app, args + ["--encoding", "gbk"])
    assert result.exit_code == 0, result.output
    docs = read_docbin(output)
    assert [(d.text, [(e.text, e.label_) for e in d.ents]) for d in docs] == [("张三在北京", [("张三", "name")])]


def test_unknown_encoding_is_an_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", str(SAMPLE_DEV), str(tmp_path / "out.spacy"), "--encoding", "nope"])
    assert_clean_failure(result, "Unknown encoding", "nope")


def test_lone_surrogate_is_a_record_error(tmp_path: Path) -> None:
    source = tmp_path / "in.json"
    source.write_text('{"text": "好"}\n{"text": "a\\ud800b", "label": {}}\n', encoding="utf-8")
    output = tmp_path / "out.spacy"
    result = runner.invoke(app, ["convert", str(source), str(output)])
    assert_clean_failure(result, "in.json, line 2", "lone surrogate")
    result = runner.invoke(app, ["convert", str(source), str(output), "--skip-invalid"])
    assert result.exit_code == 0, result.output
    stats = srsly.read_json(output.with_suffix(".stats.json"))
    assert stats["skipped"] == {"lone_surrogate": 1} and stats["docs_written"] == 1
    assert [d.text for d in read_docbin(output)] == ["好"]


def test_empty_label_is_rejected_not_counted_as_kept(tmp_path: Path) -> None:
    source = tmp_path / "in.json"
    source.write_text(
        '{"text": "张三在北京", "label": {"": {"张三": [[0, 1]]}, "address": {"北京": [[3, 4]]}}}\n'
        '{"text": "李四", "label": {"name": {"李四": [[0, 1]]}}}\n',
        encoding="utf-8",
    )
    output = tmp_path / "out.spacy"
    result = runner.invoke(app, ["convert", str(source), str(output)])
    assert_clean_failure(result, "in.json, line 1", "label is empty")
    result = runner.invoke(app, ["convert", str(source), str(output), "--skip-invalid"])
    assert result.exit_code == 0, result.output
    stats = srsly.read_json(output.with_suffix(".stats.json"))
    assert stats["skipped"] == {"bad_label": 1}
    # What the counts call kept is what the DocBin holds.
    assert stats["entities_kept"] == sum(len(d.ents) for d in read_docbin(output)) == 1


@pytest.mark.parametrize("fmt,content", [("clue", ""), ("clue", "\n  \n"), ("clue", "[]"), ("conll", "")])
def test_empty_input_warns_and_writes_empty_outputs(tmp_path: Path, fmt: str, content: str) -> None:
    source = tmp_path / "empty.txt"
    source.write_text(content, encoding="utf-8")
    output = tmp_path / "out.spacy"
    result = runner.invoke(app, ["convert", str(source), str(output), "--format", fmt])
    assert result.exit_code == 0, result.output
    assert "No records in" in result.output and "empty.txt" in result.output
    assert read_docbin(output) == []
    assert srsly.read_json(output.with_suffix(".stats.json"))["records_read"] == 0


def test_all_records_skipped_warns(tmp_path: Path) -> None:
    source = tmp_path / "in.json"
    source.write_text('{"text": ""}\n', encoding="utf-8")
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "out.spacy"), "--skip-invalid"])
    assert result.exit_code == 0 and "All 1 records" in result.output


@pytest.mark.parametrize("value", ["labels.txt", "conf/labels"])
def test_missing_labels_file_is_an_error(tmp_path: Path, value: str) -> None:
    output = tmp_path / "out.spacy"
    missing = str(tmp_path / value)
    result = runner.invoke(app, ["convert", str(SAMPLE_DEV), str(output), "--labels", missing])
    assert_clean_failure(result, "Labels file not found", missing)
    assert not output.exists()


@pytest.mark.parametrize(
    "name,content,error",
    [("labels.txt", "\n\n", "No labels"), ("labels.json", '{"name": 1}', "JSON list of strings")],
)
def test_labels_file_without_labels_is_an_error(tmp_path: Path, name: str, content: str, error: str) -> None:
    labels_file = tmp_path / name
    labels_file.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["convert", str(SAMPLE_DEV), str(tmp_path / "out.spacy"), "--labels", str(labels_file)])
    assert_clean_failure(result, error)


def test_labels_json_file_and_single_label(tmp_path: Path) -> None:
    labels_file = tmp_path / "labels.json"
    labels_file.write_text('["name"]', encoding="utf-8")
    for value in (str(labels_file), "name"):
        output = tmp_path / "out.spacy"
        result = runner.invoke(app, ["convert", str(SAMPLE_DEV), str(output), "--labels", value])
        assert result.exit_code == 0, result.output
        assert set(srsly.read_json(output.with_suffix(".stats.json"))["labels"]) == {"name"}


# -- --help of every command ------------------------------------------------------------

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]


def paragraphs(help_text: str) -> List[str]:
    """A docstring's paragraphs as the help should show them: one line each, code
    without its backticks."""
    return [" ".join(p.split()).replace("`", "") for p in inspect.cleandoc(help_text).split("\n\n")]


def wide_help(args: List[str]) -> List[str]:
    """The --help output on a very wide terminal, where only a hard line break in
    the help text can split a sentence, as lines without the panel borders."""
    result = runner.invoke(app, args + ["--help"], env={"COLUMNS": "2000"})
    assert result.exit_code == 0, result.output
    assert "``" not in result.output
    return [line.strip(" │") for line in result.output.splitlines()]


def test_every_command_is_checked() -> None:
    assert set(COMMANDS) >= {"convert", "evaluate", "fetch-cluener", "quantize", "export"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help_has_no_rst_and_no_broken_lines(name: str) -> None:
    command: click.Command = COMMANDS[name]
    lines = wide_help([name])
    for paragraph in paragraphs(command.help or ""):
        assert any(paragraph in line for line in lines), f"{paragraph!r} is not on one line in\n" + "\n".join(lines)
    # The command list shows the first paragraph, on one line too.
    summary = paragraphs(command.help or "")[0]
    assert any(line.startswith(name) and line.endswith(summary) for line in wide_help([])), summary
