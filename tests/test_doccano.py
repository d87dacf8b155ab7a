"""doccano round trip: records out as pre-annotated JSONL documents, the JSONL export back to docs."""
import json
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Corpus
from typer.testing import CliRunner

from spacy_bilstm_crf.cli import app
from spacy_bilstm_crf.labelling.doccano import from_doccano, label_types, to_doccano
from spacy_bilstm_crf.labelling.tasks import TaskError, load_records

from .conftest import ents_of

FIXTURES = Path(__file__).parent / "fixtures" / "labelling"
RECORDS = FIXTURES / "records.jsonl"
EXPORT = FIXTURES / "doccano_export.jsonl"
runner = CliRunner()

# The fixture export, line by line: entities, and the iob string ("-" for a missing token).
EXPECTED = [
    ([(0, 2, "name"), (3, 7, "company")], "BIOBIII----OOOO"),
    ([(0, 2, "name"), (3, 7, "organization")], "BIOBIIIOO"),
    ([(0, 2, "name")], "BIO------"),  # "entities" objects, as with relations enabled
    ([(0, 3, "company"), (4, 6, "address")], "BIIOBIOOOO"),
    ([], "OOOOOO"),
    ([(0, 2, "name"), (5, 9, "company"), (9, 12, "position")], "BIOOBIIIBII"),  # "张伟 " trimmed
    ([], "-" * 9),  # no label field: not reviewed
]


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("zh")


def iob(doc) -> str:
    return "".join(token.ent_iob_ or "-" for token in doc)


def read_export():
    return [json.loads(line) for line in EXPORT.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_documents_carry_labels_scores_and_fields():
    records, places = load_records(RECORDS, "text")
    lines = to_doccano(records, places=places)
    first = lines[0]
    assert first["text"] == records[0]["text"]
    assert first["label"] == [[0, 2, "name"], [3, 7, "company"], [7, 9, "address"]]
    assert first["scores"] == [0.98, 0.9, 0.6]
    assert first["score"] == pytest.approx(0.5)
    assert first["uncertainty"] == records[0]["uncertainty"] and first["id"] == "doc-1" and first["rank"] == 0
    assert "entities" not in first
    assert lines[1]["score"] == pytest.approx(0.95 * 0.7)
    assert lines[3]["label"] == [[0, 3, "company"], [4, 6, "address"]]  # code points: 𠮷 is one
    assert lines[5]["scores"] == [None, None] and "score" not in lines[5]
    json.dumps(lines)  # plain JSON


def test_label_types():
    types = label_types(["name", "company", "UNREVIEWED"])
    assert [t["text"] for t in types] == ["name", "company", "UNREVIEWED"]
    assert set(types[0]) == {"text", "suffix_key", "background_color", "text_color"}


def test_unedited_documents_round_trip_exactly(nlp):
    records, _ = load_records(RECORDS, "text")
    docs, counts = from_doccano(json.loads(json.dumps(to_doccano(records))), nlp)
    for doc, record in zip(docs, records):
        assert doc.text == record["text"]
        assert ents_of(doc) == [(e["start"], e["end"], e["label"]) for e in record["entities"]]
        assert all(token.ent_iob != 0 for token in doc)
    assert (counts.tasks, counts.docs, counts.unreviewed) == (len(records), len(records), 0)


def test_import_keeps_unreviewed_text_missing(nlp):
    docs, counts = from_doccano(read_export(), nlp)
    assert [(ents_of(doc), iob(doc)) for doc in docs] == EXPECTED
    assert (counts.tasks, counts.docs, counts.unreviewed, counts.entities) == (7, 7, 1, 10)
    assert counts.missing_chars == 4 + 6 + 9
    docs, counts = from_doccano(read_export(), nlp, skip_unreviewed=True)
    assert (counts.docs, counts.skipped_unreviewed) == (6, 1)


@pytest.mark.parametrize(
    "label,message",
    [
        ([[0, 2, "name"], [1, 3, "name"]], "regions overlap: name at 0-2 and name at 1-3"),
        ([[0, 20, "name"]], "not a non-empty range"),
        ([[0, 2]], "expected [start, end, label]"),
        ([["0", 2, "name"]], "start is '0', not a character offset"),
        ([[0, 2, 5]], "label is 5, not a string"),
        ("name", "'label' is a str, not a list"),
    ],
)
def test_bad_spans_name_the_line(nlp, label, message):
    documents = read_export()
    documents[1]["label"] = label
    with pytest.raises(TaskError, match="line 2") as err:
        from_doccano(documents, nlp)
    assert message in str(err.value)
    docs, counts = from_doccano(documents, nlp, on_error="skip")
    assert (counts.tasks, counts.docs, counts.skipped_errors) == (7, 6, 1)


def test_a_span_given_twice_counts_once(nlp):
    documents = read_export()
    documents[1]["label"].append([0, 2, "name"])
    docs, _ = from_doccano(documents, nlp)
    assert ents_of(docs[1]) == EXPECTED[1][0]


def test_cli_write_errors_are_messages(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    result = runner.invoke(app, ["export-tasks", str(RECORDS), str(blocker / "docs.jsonl"), "--to", "doccano"])
    assert result.exit_code == 1 and "Cannot write" in result.output
    result = runner.invoke(app, ["import-tasks", str(EXPORT), str(blocker / "t.spacy"), "--from", "doccano"])
    assert result.exit_code == 1 and "Cannot write" in result.output


def test_docbin_read_by_corpus_keeps_missing_tokens(nlp, tmp_path):
    docs, _ = from_doccano(read_export(), nlp)
    path = tmp_path / "train.spacy"
    DocBin(docs=docs, store_user_data=False).to_disk(path)
    examples = list(Corpus(path)(nlp))
    assert [(ents_of(eg.reference), iob(eg.reference)) for eg in examples] == EXPECTED


def test_cli_round_trip(tmp_path):
    out = tmp_path / "docs.jsonl"
    result = runner.invoke(app, ["export-tasks", str(RECORDS), str(out), "--to", "doccano"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 6
    labels = json.loads((tmp_path / "docs.labels.json").read_text(encoding="utf-8"))
    assert [t["text"] for t in labels] == ["address", "company", "name", "organization", "position", "UNREVIEWED"]

    output = tmp_path / "train.spacy"
    result = runner.invoke(app, ["import-tasks", str(out), str(output), "--from", "doccano"])
    assert result.exit_code == 0, result.output
    docs = list(DocBin().from_disk(output).get_docs(spacy.blank("zh").vocab))
    records, _ = load_records(RECORDS, "text")
    assert [ents_of(doc) for doc in docs] == [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in records]


def test_cli_import_fixture_and_errors(tmp_path):
    output = tmp_path / "train.spacy"
    result = runner.invoke(app, ["import-tasks", str(EXPORT), str(output), "--from", "doccano"])
    assert result.exit_code == 0, result.output
    assert "7 tasks in = 7 docs written" in result.output
    docs = list(DocBin().from_disk(output).get_docs(spacy.blank("zh").vocab))
    assert [iob(doc) for doc in docs] == [i for _, i in EXPECTED]

    broken = tmp_path / "broken.jsonl"
    text = EXPORT.read_text(encoding="utf-8").replace("[9, 12, \"position\"]", "[8, 12, \"position\"]")
    broken.write_text(text + "{not json\n", encoding="utf-8")
    result = runner.invoke(app, ["import-tasks", str(broken), str(output), "--from", "doccano"])
    assert result.exit_code == 1 and "broken.jsonl, line 8: not JSON" in result.output
    broken.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["import-tasks", str(broken), str(output), "--from", "doccano"])
    assert result.exit_code == 1
    assert "broken.jsonl, line 6: regions overlap" in result.output


def test_line_separators_inside_texts_are_not_line_breaks(nlp, tmp_path):
    """U+2028 is allowed raw inside a JSON string: it must not split the line."""
    path = tmp_path / "export.jsonl"
    path.write_text('{"text": "马云\u2028在杭州", "label": [[4, 6, "address"]]}\n', encoding="utf-8")
    output = tmp_path / "train.spacy"
    result = runner.invoke(app, ["import-tasks", str(path), str(output), "--from", "doccano"])
    assert result.exit_code == 0, result.output
    (doc,) = DocBin().from_disk(output).get_docs(nlp.vocab)
    assert ents_of(doc) == [(4, 6, "address")]
