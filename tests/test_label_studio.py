"""Label Studio round trip: records out as pre-annotated tasks, the JSON export back to docs."""
import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Corpus
from typer.testing import CliRunner

from spacy_bilstm_crf.cli import app
from spacy_bilstm_crf.labelling.label_studio import from_label_studio, label_config, labels_of, to_label_studio
from spacy_bilstm_crf.labelling.tasks import TaskError, load_records, utf16_to_code_points

from .conftest import ents_of

FIXTURES = Path(__file__).parent / "fixtures" / "labelling"
RECORDS = FIXTURES / "records.jsonl"
EXPORT = FIXTURES / "label_studio_export.json"
runner = CliRunner()

# What the annotator left in the fixture export, task by task: entities, and the
# iob string of the doc ("-" for a missing token).
EXPECTED = [
    ([(0, 2, "name"), (3, 7, "company")], "BIOBIII----OOOO"),
    ([], "-" * 9),  # the only annotation was cancelled
    ([], "-" * 9),  # no annotation
    ([(0, 3, "company"), (4, 6, "address")], "BIIOBIOO--"),  # UTF-16 offsets after 𠮷
    ([], "OOOOOO"),  # reviewed, nothing to label
    ([(0, 2, "name"), (5, 9, "company"), (9, 12, "position")], "BIOOBIIIBII"),  # "张伟 " trimmed
]


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("zh")


def iob(doc) -> str:
    return "".join(token.ent_iob_ or "-" for token in doc)


def read_export():
    return json.loads(EXPORT.read_text(encoding="utf-8"))


def accept_predictions(tasks):
    """What Label Studio exports when the annotator submits each pre-annotation as it is."""
    done = copy.deepcopy(tasks)
    for k, task in enumerate(done):
        task["id"] = 100 + k
        task["annotations"] = [{"id": k, "result": task["predictions"][0]["result"], "was_cancelled": False}]
    return done


def test_tasks_carry_regions_scores_and_fields():
    records, places = load_records(RECORDS, "text")
    tasks = to_label_studio(records, model_version="v7", places=places)
    assert len(tasks) == len(records)
    first = tasks[0]
    assert first["data"] == {"id": "doc-1", "text": "马云在阿里巴巴杭州总部发表演讲", "rank": 0}
    assert first["meta"] == {"uncertainty": {"best_path": 0.5, "tag_errors": 0.7, "entity_errors": 0.8}}
    (prediction,) = first["predictions"]
    assert prediction["model_version"] == "v7"
    # The task score: the probability that the whole tagging is right, 1 - best_path.
    assert prediction["score"] == pytest.approx(0.5)
    regions = prediction["result"]
    assert [(r["value"]["start"], r["value"]["end"], r["value"]["labels"], r["value"]["text"]) for r in regions] == [
        (0, 2, ["name"], "马云"),
        (3, 7, ["company"], "阿里巴巴"),
        (7, 9, ["address"], "杭州"),
    ]
    assert [r["score"] for r in regions] == [0.98, 0.9, 0.6]
    assert {(r["from_name"], r["to_name"], r["type"]) for r in regions} == {("label", "text", "labels")}
    assert len({r["id"] for t in tasks for r in t["predictions"][0]["result"]}) == sum(
        len(t["predictions"][0]["result"]) for t in tasks
    )
    # No uncertainty: the product of the entity scores; no scores at all: no task score.
    assert tasks[1]["predictions"][0]["score"] == pytest.approx(0.95 * 0.7)
    assert tasks[1]["data"]["source"] == "news"
    assert "score" not in tasks[5]["predictions"][0]
    assert "score" not in tasks[5]["predictions"][0]["result"][0]
    # An astral character counts as one offset (Label Studio 1.x reads code points).
    assert tasks[3]["predictions"][0]["result"][1]["value"]["start"] == 4


def test_label_config_lists_labels_and_the_missing_label():
    tasks = to_label_studio(load_records(RECORDS, "text")[0])
    root = ET.fromstring(label_config(labels_of(tasks), text_key="content"))
    labels = root.find("Labels")
    assert labels.get("name") == "label" and labels.get("toName") == "text"
    assert [label.get("value") for label in labels] == ["address", "company", "name", "organization", "position", "UNREVIEWED"]
    assert root.find("Text").get("value") == "$content"
    # Labels are attribute-escaped.
    root = ET.fromstring(label_config(['a"<b>&c']))
    assert root.find("Labels")[0].get("value") == 'a"<b>&c'


def test_accepted_predictions_round_trip_exactly(nlp):
    records, _ = load_records(RECORDS, "text")
    docs, counts = from_label_studio(accept_predictions(to_label_studio(records)), nlp)
    assert [doc.text for doc in docs] == [r["text"] for r in records]
    for doc, record in zip(docs, records):
        assert ents_of(doc) == [(e["start"], e["end"], e["label"]) for e in record["entities"]]
        assert all(token.ent_iob != 0 for token in doc)
    assert counts.docs == counts.tasks == len(records) and counts.unreviewed == 0 and counts.missing_chars == 0


def test_import_keeps_unreviewed_text_missing(nlp):
    docs, counts = from_label_studio(read_export(), nlp)
    assert [(ents_of(doc), iob(doc)) for doc in docs] == EXPECTED
    assert (counts.tasks, counts.docs, counts.unreviewed, counts.cancelled) == (6, 6, 2, 1)
    assert counts.entities == 7
    # 杭州总部, the two unreviewed tasks, 新店.
    assert counts.missing_chars == 4 + 9 + 9 + 2


def test_skip_unreviewed_and_first_annotation(nlp):
    docs, counts = from_label_studio(read_export(), nlp, skip_unreviewed=True)
    assert [ents_of(doc) for doc in docs] == [e for e, _ in EXPECTED[:1] + EXPECTED[3:]]
    assert (counts.tasks, counts.docs, counts.skipped_unreviewed) == (6, 4, 2)
    # The first annotation by creation time, though it is listed second.
    docs, _ = from_label_studio(read_export(), nlp, annotation="first")
    assert ents_of(docs[0]) == [(0, 2, "name"), (3, 7, "company"), (7, 9, "address")]
    assert iob(docs[0]) == "BIOBIIIBIOOOOOO"


def test_a_custom_missing_label(nlp):
    tasks = read_export()
    for region in tasks[0]["annotations"][0]["result"]:
        if region["value"]["labels"] == ["UNREVIEWED"]:
            region["value"]["labels"] = ["?"]
    docs, _ = from_label_studio(tasks[:1], nlp, missing_label="?")
    assert iob(docs[0]) == EXPECTED[0][1]
    # With the default missing label, "?" is an entity label like any other.
    docs, _ = from_label_studio(tasks[:1], nlp)
    assert ents_of(docs[0])[-1] == (7, 11, "?")


def _broken(edit):
    tasks = read_export()
    edit(tasks[5]["annotations"][0]["result"])
    return tasks


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda r: r[2]["value"].update(start=8, text="司总经理"), "regions overlap: company at 5-9 and position at 8-12"),
        (lambda r: r[1]["value"].update(text="华为"), "are '华为公司', not the region's text '华为'"),
        (lambda r: r[1]["value"].update(labels=["company", "organization"]), "expected exactly one label"),
        (lambda r: r[1]["value"].update(start="/p[1]"), "not a character offset"),
        (lambda r: r[1]["value"].update(start=20, end=22, text=None), "not a non-empty range"),
    ],
)
def test_bad_regions_name_the_task(nlp, edit, message):
    with pytest.raises(TaskError, match="task 5 \\(id 106\\)") as err:
        from_label_studio(_broken(edit), nlp)
    assert message in str(err.value)
    # Skipped and counted instead.
    docs, counts = from_label_studio(_broken(edit), nlp, on_error="skip")
    assert (counts.tasks, counts.docs, counts.skipped_errors) == (6, 5, 1)
    assert "task 5 (id 106)" in counts.errors[0]


def test_json_min_is_refused_with_a_hint(nlp):
    json_min = [{"id": 1, "text": "马云", "label": [{"start": 0, "end": 2, "text": "马云", "labels": ["name"]}]}]
    with pytest.raises(TaskError, match=r"task 0 \(id 1\): no 'data' object .*not JSON-MIN"):
        from_label_studio(json_min, nlp)


def test_parquet_records(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    records, _ = load_records(RECORDS, "text")
    path = tmp_path / "selected.parquet"
    keys = {key: None for record in records for key in record}  # every column in every row
    pq.write_table(pa.Table.from_pylist([{**keys, **record} for record in records]), path)
    from_parquet, places = load_records(path, "text")
    assert places[1] == f"{path}, row 1"
    tasks, expected = to_label_studio(from_parquet), to_label_studio(records)
    assert [t["predictions"] for t in tasks] == [t["predictions"] for t in expected]
    # Null columns (no uncertainty) change nothing: the task score falls back to the entities'.
    assert tasks[1]["data"]["source"] == "news" and tasks[0]["data"]["source"] is None
    assert tasks[1]["predictions"][0]["score"] == pytest.approx(0.95 * 0.7)


def test_a_region_that_does_not_align_with_the_tokens():
    words = spacy.blank("en")
    tasks = [{"id": 9, "data": {"text": "Jack Ma spoke"}, "annotations": [
        {"result": [{"type": "labels", "value": {"start": 0, "end": 6, "text": "Jack M", "labels": ["name"]}}]}
    ]}]
    with pytest.raises(TaskError, match=r"task 0 \(id 9\).*name at characters 0-6 \('Jack M'\) does not align"):
        from_label_studio(tasks, words)


def test_utf16_offsets():
    text = "𠮷野家在上海"
    assert utf16_to_code_points(text, 5, 7) == (4, 6)
    assert utf16_to_code_points(text, 1, 3) is None  # inside 𠮷


def test_docbin_read_by_corpus_keeps_missing_tokens(nlp, tmp_path):
    docs, _ = from_label_studio(read_export(), nlp)
    path = tmp_path / "train.spacy"
    DocBin(docs=docs, store_user_data=False).to_disk(path)
    examples = list(Corpus(path)(nlp))  # as `spacy train` reads its corpus
    assert [(ents_of(eg.reference), iob(eg.reference)) for eg in examples] == EXPECTED
    assert [t.ent_iob_ for t in examples[0].reference[7:11]] == [""] * 4


def test_update_runs_on_imported_partial_docs(nlp):
    from spacy.training import Example

    from .conftest import SMALL_MODEL, make_examples

    spacy.util.fix_random_seed(0)
    pipeline = spacy.blank("zh")
    pipeline.add_pipe("bilstm_crf_ner", config={"model": SMALL_MODEL})
    optimizer = pipeline.initialize(lambda: make_examples(pipeline))
    docs, _ = from_label_studio(read_export(), nlp)
    examples = [Example(pipeline.make_doc(doc.text), doc) for doc in docs]
    losses = pipeline.update(examples, sgd=optimizer)
    assert losses["bilstm_crf_ner"] > 0.0


def test_cli_round_trip(tmp_path):
    tasks_path = tmp_path / "out" / "tasks.json"
    result = runner.invoke(app, ["export-tasks", str(RECORDS), str(tasks_path), "--to", "label-studio", "--model-version", "m1"])
    assert result.exit_code == 0, result.output
    assert "6 tasks written" in result.output
    tasks = json.loads(tasks_path.read_text(encoding="utf-8"))
    assert tasks[0]["predictions"][0]["model_version"] == "m1"
    config = ET.fromstring((tmp_path / "out" / "tasks.label_config.xml").read_text(encoding="utf-8"))
    assert config.find("Labels")[-1].get("value") == "UNREVIEWED"

    export = tmp_path / "export.json"
    export.write_text(json.dumps(accept_predictions(tasks), ensure_ascii=False), encoding="utf-8")
    output = tmp_path / "train.spacy"
    result = runner.invoke(app, ["import-tasks", str(export), str(output), "--from", "label-studio"])
    assert result.exit_code == 0, result.output
    assert "6 tasks in = 6 docs written" in result.output
    docs = list(DocBin().from_disk(output).get_docs(spacy.blank("zh").vocab))
    records, _ = load_records(RECORDS, "text")
    assert [ents_of(doc) for doc in docs] == [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in records]


def test_cli_import_fixture_and_errors(tmp_path):
    output = tmp_path / "train.spacy"
    result = runner.invoke(app, ["import-tasks", str(EXPORT), str(output), "--from", "label-studio", "--skip-unreviewed"])
    assert result.exit_code == 0, result.output
    assert "6 tasks in = 4 docs written + 2 unreviewed skipped" in result.output
    assert len(DocBin().from_disk(output)) == 4

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(_broken(lambda r: r[2]["value"].update(start=8, text="司总经理")), ensure_ascii=False), encoding="utf-8")
    result = runner.invoke(app, ["import-tasks", str(broken), str(output), "--from", "label-studio"])
    assert result.exit_code == 1
    assert "task 5 (id 106)" in result.output and "overlap" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    result = runner.invoke(app, ["import-tasks", str(broken), str(output), "--from", "label-studio", "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    assert "5 docs written" in result.output and "1 skipped for errors" in result.output

    not_json = tmp_path / "bad.json"
    not_json.write_text("[{", encoding="utf-8")
    result = runner.invoke(app, ["import-tasks", str(not_json), str(output), "--from", "label-studio"])
    assert result.exit_code == 1 and "bad.json: not JSON" in result.output
    result = runner.invoke(app, ["import-tasks", str(EXPORT), str(output), "--from", "prodigy"])
    assert result.exit_code == 1 and "Unknown tool: prodigy" in result.output


def test_cli_export_errors(tmp_path):
    bad = tmp_path / "records.jsonl"
    bad.write_text('{"text": "马云在杭州", "entities": [{"start": 0, "end": 2, "label": "name", "text": "马"}]}\n', encoding="utf-8")
    result = runner.invoke(app, ["export-tasks", str(bad), str(tmp_path / "t.json"), "--to", "label-studio"])
    assert result.exit_code == 1
    assert "records.jsonl, line 1, entity 0" in result.output and "not the region's text '马'" in result.output
    result = runner.invoke(
        app, ["export-tasks", str(RECORDS), str(tmp_path / "t.json"), "--to", "label-studio", "--labels", "name,company"]
    )
    assert result.exit_code == 1 and "address, organization, position" in result.output
