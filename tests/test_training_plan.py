"""The training length follows the size of the training corpus."""
from pathlib import Path

import spacy
from spacy.schemas import ConfigSchemaTraining
from spacy.tokens import DocBin
from spacy.training.initialize import init_nlp
from spacy.util import load_config, registry
from thinc.api import registry as thinc_registry

from spacy_bilstm_crf.training.training_plan import steps_for_words

from .conftest import REPO, SMALL_MODEL, make_examples


def test_steps_for_words_with_fixed_and_growing_batches():
    assert steps_for_words(10_000, 1000) == 10
    assert steps_for_words(10_001, 1000) == 11
    growing = thinc_registry.resolve(
        {"s": {"@schedules": "compounding.v1", "start": 100, "stop": 400, "compound": 2.0}}
    )["s"]
    # 100 + 200 + 400 + 400 = 1100 >= 1000
    assert steps_for_words(1000, growing) == 4
    assert steps_for_words(1000, lambda step: 250) == 4


def write_corpus(path: Path, copies: int) -> Path:
    nlp = spacy.blank("zh")
    docs = [eg.reference for eg in make_examples(nlp)] * copies
    DocBin(docs=docs).to_disk(path)
    return path


def scaled_training(tmp_path: Path, copies: int, epochs: float) -> dict:
    train = write_corpus(tmp_path / f"train{copies}.spacy", copies)
    dev = write_corpus(tmp_path / "dev.spacy", 1)
    overrides = {
        "paths.train": str(train),
        "paths.dev": str(dev),
        "initialize.after_init.epochs": epochs,
        "training.batcher.size": 100,
    }
    overrides.update({f"components.bilstm_crf_ner.model.{k}": v for k, v in SMALL_MODEL.items()})
    config = load_config(REPO / "configs" / "bilstm_crf_fast.cfg", overrides=overrides)
    nlp = init_nlp(config)
    # What spacy train's loop resolves after initialization.
    resolved = nlp.config.interpolate()
    return {"T": registry.resolve(resolved["training"], schema=ConfigSchemaTraining), "raw": resolved["training"]}


def test_initialize_scales_the_training_to_the_corpus(tmp_path):
    n_words = sum(len(eg.reference) for eg in make_examples(spacy.blank("zh")))  # 85 characters
    small = scaled_training(tmp_path, 4, 10.0)
    large = scaled_training(tmp_path, 40, 10.0)
    for plan, copies in ((small, 4), (large, 40)):
        steps = -(-(n_words * copies * 10) // 100)  # batches of 100 words
        frequency = -(-steps // 6)
        T = plan["T"]
        assert T["max_steps"] == frequency * 6 and T["eval_frequency"] == frequency
        assert T["patience"] == T["max_steps"] and T["max_epochs"] == 0
        # Two cosine cycles, the second twice as long, fill max_steps.
        assert plan["raw"]["optimizer"]["learn_rate"]["period"] == round(T["max_steps"] / 3)
    assert large["T"]["max_steps"] >= 9 * small["T"]["max_steps"]


def test_scale_training_defaults_are_the_default_recipe() -> None:
    # A bare [initialize.after_init] block naming only @callbacks gets the schedule of
    # configs/bilstm_crf.cfg (5 epochs in one cycle), not the fast config's.
    import inspect

    from spacy_bilstm_crf.training.training_plan import make_scale_training

    block = load_config(REPO / "configs" / "bilstm_crf.cfg")["initialize"]["after_init"]
    defaults = {
        name: p.default for name, p in inspect.signature(make_scale_training).parameters.items()
    }
    assert {k: v for k, v in block.items() if not k.startswith("@")} == defaults


def test_small_corpora_train_on_smaller_batches(tmp_path):
    from spacy_bilstm_crf.training.training_plan import batch_scale, scale_batch_sizes

    assert batch_scale(100_000, 400_000, 0.5) == 0.5  # floor
    assert batch_scale(300_000, 400_000, 0.5) == 0.75
    assert batch_scale(900_000, 400_000, 0.5) == 1.0 and batch_scale(10, 0, 0.5) == 1.0
    training = {"batcher": {"size": {"@schedules": "compounding.v1", "start": 1000, "stop": 2000}}}
    assert scale_batch_sizes(training, 0.5, set()) == ["batcher.size.start 1000 -> 500", "batcher.size.stop 2000 -> 1000"]
    assert training["batcher"]["size"]["start"] == 500 and training["batcher"]["size"]["stop"] == 1000
    training = {"batcher": {"size": {"start": 1000, "stop": 2000}}}
    assert scale_batch_sizes(training, 0.5, {"training.batcher.size.start"}) == ["batcher.size.stop 2000 -> 1000"]
    training = {"batcher": {"size": 100}}
    assert scale_batch_sizes(training, 0.25, set()) == ["batcher.size 100 -> 25"]
    assert scale_batch_sizes(training, 1.0, set()) == [] and training["batcher"]["size"] == 25

    # Through initialize: 10 copies of the examples (850 words) against full_batch_words
    # 3,400: batches of 100 words become 25 (a quarter: the floor), so four times the steps.
    def plan(full_batch_words: int) -> dict:
        train = write_corpus(tmp_path / "train10.spacy", 10)
        overrides = {
            "paths.train": str(train),
            "paths.dev": str(write_corpus(tmp_path / "dev.spacy", 1)),
            "initialize.after_init.epochs": 10.0,
            "initialize.after_init.full_batch_words": full_batch_words,
            "initialize.after_init.min_batch_scale": 0.25,
            "training.batcher.size": 100,
        }
        overrides.update({f"components.bilstm_crf_ner.model.{k}": v for k, v in SMALL_MODEL.items()})
        nlp = init_nlp(load_config(REPO / "configs" / "bilstm_crf_fast.cfg", overrides=overrides))
        return nlp.config.interpolate()["training"]

    same, smaller = plan(0), plan(3400)
    assert same["batcher"]["size"] == 100 and smaller["batcher"]["size"] == 25
    assert 4 * same["max_steps"] - 6 <= smaller["max_steps"] <= 4 * same["max_steps"] + 6
