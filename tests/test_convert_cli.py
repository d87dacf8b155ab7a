"""The ``convert`` command end to end: DocBin output, counts file, errors and exit codes."""
import json
from pathlib import Path

import spacy
import srsly
from spacy.tokens import DocBin
from typer.testing import CliRunner

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
