"""`evaluate`, `export` and `quantize` end with a message, not a traceback, on a damaged pipeline.

All three load through ``cli.evaluate.load_pipeline``; each case damages one part
of a saved pipeline and checks that the message names the path and what is wrong.
"""
import shutil
from pathlib import Path
from typing import Callable, List

import pytest
import spacy
from spacy.tokens import DocBin
from typer.testing import CliRunner, Result

from spacy_bilstm_crf.cli import app

from .conftest import SMALL_MODEL, TRAIN_DATA, docs_with_ents, make_examples

COMPONENT = "bilstm_crf_ner"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialized (untrained) pipeline on disk, and gold data next to it."""
    root = tmp_path_factory.mktemp("corrupt")
    nlp = spacy.blank("zh")
    nlp.add_pipe(COMPONENT, config={"model": SMALL_MODEL})
    nlp.initialize(lambda: make_examples(nlp))
    nlp.to_disk(root / "model")
    DocBin(docs=docs_with_ents(nlp, TRAIN_DATA)).to_disk(root / "dev.spacy")
    return root


def damaged(saved: Path, tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    """A copy of the saved pipeline with ``damage`` done to it."""
    model = tmp_path / "model"
    shutil.copytree(saved / "model", model)
    damage(model)
    return model


def flip_weights(model: Path) -> None:
    path = model / COMPONENT / "model"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def command_args(command: str, model: Path, saved: Path, tmp_path: Path) -> List[str]:
    if command == "evaluate":
        return ["evaluate", str(model), str(saved / "dev.spacy"), "--output", str(tmp_path / "metrics")]
    return [command, str(model), str(tmp_path / "out")]


def assert_clean_failure(result: Result, *expected: str) -> None:
    # No traceback: the command exits (SystemExit) instead of raising the loader's error.
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, result.output


@pytest.mark.parametrize("command", ["evaluate", "export", "quantize"])
def test_flipped_weights_fail_cleanly(command: str, saved: Path, tmp_path: Path) -> None:
    model = damaged(saved, tmp_path, flip_weights)
    result = CliRunner().invoke(app, command_args(command, model, saved, tmp_path))
    assert_clean_failure(result, "Cannot load the pipeline", f"{model}: ", "checksum", str(model / COMPONENT / "model"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "metrics").exists()


def write(relative: str, text: str) -> Callable[[Path], None]:
    return lambda model: (model / relative).write_text(text, encoding="utf8")


def remove(relative: str) -> Callable[[Path], None]:
    return lambda model: (model / relative).unlink()


@pytest.mark.parametrize(
    "damage,expected",
    [
        (remove(f"{COMPONENT}/model"), ["the file 'model' is missing"]),
        (lambda model: shutil.rmtree(model / COMPONENT), ["directory not found", COMPONENT]),
        (write(f"{COMPONENT}/cfg", '{"labels": ['), ["is not valid JSON", f"{COMPONENT}/cfg"]),
        # spaCy's own error says only "Expected object or value": the file is named for it.
        (write("meta.json", "{"), ["meta.json is not valid JSON"]),
        (write("vocab/strings.json", "["), ["strings.json is not valid JSON"]),
        (
            write("config.cfg", "[nlp\nlang = "),
            ["ConfigValidationError", "no section headers", "config.cfg does not parse"],
        ),
        (remove("meta.json"), ["Could not read meta.json"]),
        (remove("config.cfg"), ["Not a pipeline directory", "has no config.cfg"]),
    ],
    ids=["no-weights", "no-component", "bad-cfg", "bad-meta", "bad-strings", "bad-config", "no-meta", "no-config"],
)
def test_damaged_pipeline_fails_cleanly(saved: Path, tmp_path: Path, damage, expected: List[str]) -> None:
    model = damaged(saved, tmp_path, damage)
    result = CliRunner().invoke(app, command_args("evaluate", model, saved, tmp_path))
    assert_clean_failure(result, str(model), *expected)


@pytest.mark.parametrize("command", ["evaluate", "export", "quantize"])
def test_not_a_pipeline_directory(command: str, saved: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, command_args(command, empty, saved, tmp_path))
    assert_clean_failure(result, "Not a pipeline directory", f"{empty} has no config.cfg")
    result = CliRunner().invoke(app, command_args(command, saved / "dev.spacy", saved, tmp_path))
    assert_clean_failure(result, "Not a pipeline directory", f"{saved / 'dev.spacy'} is a file")
