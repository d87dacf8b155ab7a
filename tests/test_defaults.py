"""What a user starting from spaCy's own commands gets: the recommended model, and warnings
where a training setting would silently not do what it says."""
import warnings
from pathlib import Path

import pytest
import spacy
from spacy.cli.init_config import init_config
from spacy.util import load_config

from spacy_bilstm_crf.pipe import DEFAULT_MODEL, warn_about_training_settings

from .conftest import SMALL_MODEL, make_examples


def test_spacy_init_config_gives_the_recommended_model() -> None:
    config = init_config(lang="zh", pipeline=["bilstm_crf_ner"], optimize="efficiency", gpu=False)
    model = config["components"]["bilstm_crf_ner"]["model"]
    assert model["lexicon"] == "jieba" and DEFAULT_MODEL["lexicon"] == "jieba"
    assert model["bigram_dim"] == 0  # the benchmarked default: bigrams off, lexicon on
    assert model["gazetteer"] is True and DEFAULT_MODEL["gazetteer"] is True


def test_factory_default_is_the_benchmarked_config() -> None:
    """``add_pipe`` without a config builds the network that configs/bilstm_crf.cfg trains
    and benchmarks/cluener_accuracy.py measures, setting for setting."""
    config = load_config(Path(__file__).parents[1] / "configs" / "bilstm_crf.cfg")
    assert dict(config["components"]["bilstm_crf_ner"]["model"]) == dict(DEFAULT_MODEL)


def test_add_pipe_without_config_uses_the_lexicon() -> None:
    ner = spacy.blank("zh").add_pipe("bilstm_crf_ner")
    assert ner.model.attrs["lexicon"] == "jieba"


def test_training_dropout_is_reported_once_not_silently_ignored() -> None:
    nlp = spacy.blank("zh")
    nlp.add_pipe("bilstm_crf_ner", config={"model": {**SMALL_MODEL, "lexicon": None}})
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nlp.update(examples, sgd=optimizer)  # drop=0.0: nothing to say
        assert not [w for w in caught if "ignores the dropout" in str(w.message)]
        nlp.update(examples, sgd=optimizer, drop=0.1)
        nlp.update(examples, sgd=optimizer, drop=0.1)
    messages = [str(w.message) for w in caught if "ignores the dropout" in str(w.message)]
    assert len(messages) == 1 and "embed_dropout" in messages[0]


@pytest.mark.parametrize(
    "max_steps,eval_frequency,expected",
    [
        (30, 200, "UNTRAINED model of step 0"),
        (1100, 500, "the last 100 steps are never evaluated"),
        (3000, 500, None),
        (0, 200, None),  # no step limit: training stops on patience or epochs
    ],
)
def test_max_steps_that_skip_evaluation_are_warned(max_steps: int, eval_frequency: int, expected) -> None:
    training = {"max_steps": max_steps, "eval_frequency": eval_frequency}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_about_training_settings(training, "bilstm_crf_ner")
    if expected is None:
        assert not caught
    else:
        assert len(caught) == 1 and expected in str(caught[0].message)


def test_initialize_checks_the_training_settings() -> None:
    nlp = spacy.blank("zh", config={"training": {"max_steps": 30, "eval_frequency": 200}})
    nlp.add_pipe("bilstm_crf_ner", config={"model": {**SMALL_MODEL, "lexicon": None}})
    with pytest.warns(UserWarning, match="UNTRAINED"):
        nlp.initialize(lambda: make_examples(nlp))
