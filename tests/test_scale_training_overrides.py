"""A training length given on the command line wins over the one scaled to the corpus.

``spacy-bilstm-crf.scale_training.v1`` used to replace an explicit
``--training.max_steps 150`` with the corpus's own length (12 on a small corpus).
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from spacy.schemas import ConfigSchemaTraining
from spacy.training.initialize import init_nlp
from spacy.util import load_config, registry

from spacy_bilstm_crf.training.training_plan import explicit_overrides, frequency_for, plan_training

from .conftest import REPO, SMALL_MODEL
from .test_training_plan import write_corpus

CONFIG = REPO / "configs" / "bilstm_crf_fast.cfg"


def test_overrides_are_read_as_spacy_reads_them() -> None:
    argv = [
        "train", "configs/bilstm_crf.cfg", "--output", "training", "--gpu-id", "-1",
        "--training.max_steps", "150", "--training.eval-frequency=30", "--paths.train", "train.spacy",
    ]
    env = {"SPACY_CONFIG_OVERRIDES": "--training.patience 7 --nlp.batch_size=8"}
    assert explicit_overrides(argv, env) == {
        "training.max_steps", "training.eval_frequency", "paths.train", "training.patience", "nlp.batch_size",
    }
    assert explicit_overrides(["train", "c.cfg", "--output", "o"], {}) == set()


@pytest.mark.parametrize(
    "given,expected",
    [
        # Nothing given: 6 evaluations, the last at max_steps (the previous behaviour).
        ({}, {"max_steps": 18, "eval_frequency": 3, "patience": 18, "max_epochs": 0}),
        # max_steps given: kept; eval_frequency divides it.
        ({"max_steps": 150}, {"max_steps": 150, "eval_frequency": 25, "patience": 150, "max_epochs": 0}),
        ({"max_steps": 20}, {"max_steps": 20, "eval_frequency": 4, "patience": 20, "max_epochs": 0}),
        # eval_frequency given: kept; max_steps the corpus's length, rounded up to an evaluation.
        ({"eval_frequency": 5}, {"max_steps": 20, "eval_frequency": 5, "patience": 20, "max_epochs": 0}),
        # Everything given: nothing changes.
        (
            {"max_steps": 150, "eval_frequency": 50, "patience": 60, "max_epochs": 3},
            {"max_steps": 150, "eval_frequency": 50, "patience": 60, "max_epochs": 3},
        ),
    ],
)
def test_plan_keeps_what_was_given(given: Dict[str, int], expected: Dict[str, int]) -> None:
    assert plan_training(17, 6, given) == expected


def test_frequency_for_ends_on_an_evaluation() -> None:
    for max_steps in range(1, 200):
        frequency = frequency_for(max_steps, 6, 0)
        assert max_steps % frequency == 0 and max_steps // frequency <= 6
    assert frequency_for(150, 6, 0) == 25 and frequency_for(7, 6, 0) == 7
    assert frequency_for(0, 6, 50) == 9  # no step limit: 6 evaluations over the corpus's length


def initialized_training(tmp_path: Path, overrides: Dict[str, object]) -> dict:
    """[training] as spacy train's loop resolves it after initialization, with the overrides."""
    config_overrides = {
        "paths.train": str(write_corpus(tmp_path / "train.spacy", 4)),
        "paths.dev": str(write_corpus(tmp_path / "dev.spacy", 1)),
        "initialize.after_init.epochs": 10.0,
        "training.batcher.size": 100,
        **{f"components.bilstm_crf_ner.model.{k}": v for k, v in SMALL_MODEL.items()},
        **overrides,
    }
    nlp = init_nlp(load_config(CONFIG, overrides=config_overrides))
    resolved = nlp.config.interpolate()["training"]
    period = resolved["optimizer"]["learn_rate"]["period"]
    return {**registry.resolve(resolved, schema=ConfigSchemaTraining), "period": period}


def cli_args(overrides: Dict[str, object]) -> List[str]:
    return ["train", str(CONFIG)] + [arg for key, value in overrides.items() for arg in (f"--{key}", str(value))]


def test_max_steps_given_on_the_command_line_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    overrides = {"training.max_steps": 150}
    monkeypatch.delenv("SPACY_CONFIG_OVERRIDES", raising=False)
    monkeypatch.setattr(sys, "argv", ["spacy", *cli_args(overrides)])
    T = initialized_training(tmp_path, overrides)
    # 336 words x 10 epochs in batches of 100 would be 36 steps (34, rounded to 6 evaluations); 150 was asked for.
    assert (T["max_steps"], T["eval_frequency"], T["patience"], T["max_epochs"]) == (150, 25, 150, 0)
    assert T["period"] == 50  # two cycles (1/3 + 2/3) fill the 150 steps
    assert "Kept as given on the command line: max_steps 150" in capsys.readouterr().out


def test_eval_frequency_given_on_the_command_line_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {"training.eval_frequency": 5}
    monkeypatch.delenv("SPACY_CONFIG_OVERRIDES", raising=False)
    monkeypatch.setattr(sys, "argv", ["spacy", *cli_args(overrides)])
    T = initialized_training(tmp_path, overrides)
    assert (T["max_steps"], T["eval_frequency"]) == (35, 5)  # 34 steps, rounded up to an evaluation


def test_a_value_set_by_code_is_replaced_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # Not on the command line (e.g. init_nlp called with overrides): scaled, and said so.
    monkeypatch.delenv("SPACY_CONFIG_OVERRIDES", raising=False)
    monkeypatch.setattr(sys, "argv", ["script"])
    T = initialized_training(tmp_path, {"training.max_steps": 150})
    assert (T["max_steps"], T["eval_frequency"]) == (36, 6)
    assert "Replaced in [training]: max_steps 150 -> 36" in capsys.readouterr().out


def test_spacy_train_keeps_max_steps_from_the_command_line(tmp_path: Path) -> None:
    train = write_corpus(tmp_path / "train.spacy", 4)
    dev = write_corpus(tmp_path / "dev.spacy", 1)
    model = [arg for k, v in SMALL_MODEL.items() for arg in (f"--components.bilstm_crf_ner.model.{k}", json.dumps(v))]
    command = [
        sys.executable, "-m", "spacy", "train", str(CONFIG), "--output", str(tmp_path / "out"),
        "--paths.train", str(train), "--paths.dev", str(dev), "--training.batcher.size", "100",
        "--training.max_steps", "4", *model,
    ]
    env = {k: v for k, v in os.environ.items() if k != "SPACY_CONFIG_OVERRIDES"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = load_config(tmp_path / "out" / "model-last" / "config.cfg", interpolate=False)["training"]
    assert (saved["max_steps"], saved["eval_frequency"], saved["patience"]) == (4, 1, 4)
    assert "Kept as given on the command line: max_steps 4" in done.stdout


def test_both_given_and_inconsistent_are_kept_and_warned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {"training.max_steps": 10, "training.eval_frequency": 4}
    monkeypatch.delenv("SPACY_CONFIG_OVERRIDES", raising=False)
    monkeypatch.setattr(sys, "argv", ["spacy", *cli_args(overrides)])
    with pytest.warns(UserWarning, match=r"the last 2 steps are never evaluated.*scale_training"):
        T = initialized_training(tmp_path, overrides)
    assert (T["max_steps"], T["eval_frequency"]) == (10, 4)
