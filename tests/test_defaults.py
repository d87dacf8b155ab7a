"""What a user starting from spaCy's own commands gets: the recommended model, and warnings
where a training setting would silently not do what it says."""
import inspect
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import spacy
from spacy.cli.init_config import init_config
from spacy.util import load_config, registry

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


REPO = Path(__file__).parents[1]
ARCHITECTURES = ["spacy-bilstm-crf.BiLSTMCRF.v1", "spacy-bilstm-crf.BiLSTMCRF.v2"]


def _benchmarked_model() -> dict:
    config = load_config(REPO / "configs" / "bilstm_crf.cfg")
    model = dict(config["components"]["bilstm_crf_ner"]["model"])
    model.pop("@architectures")
    return model


def test_every_architecture_is_listed_here() -> None:
    import spacy_bilstm_crf.component.architectures  # noqa: F401  (registers them)

    ours = sorted(name for name in registry.architectures.get_all() if name.startswith("spacy-bilstm-crf."))
    assert ours == ARCHITECTURES


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_architecture_defaults_are_the_benchmarked_network(name: str) -> None:
    """spaCy fills a block that names an architecture from that function's signature (the
    factory's defaults are merged only into blocks naming the factory's own ``v1``): a
    ``v2`` block that leaves settings out must still get the benchmarked network."""
    parameters = inspect.signature(registry.architectures.get(name)).parameters
    benchmarked = _benchmarked_model()
    assert {key: parameters[key].default for key in benchmarked} == benchmarked


def test_a_v2_block_with_no_settings_builds_the_default_network() -> None:
    default = spacy.blank("zh").add_pipe("bilstm_crf_ner").model.attrs
    v2 = spacy.blank("zh").add_pipe(
        "bilstm_crf_ner", config={"model": {"@architectures": "spacy-bilstm-crf.BiLSTMCRF.v2"}}
    ).model.attrs
    for key in ("hyper", "lexicon", "lexicon_vectors", "lac_full_states", "gazetteer", "lac_embeddings", "quantize_int8", "bf16_inference"):
        assert v2[key] == default[key], key


def _registered_names() -> dict:
    """RETURNS (dict): registry name -> the names the package's source registers in it."""
    found: dict = {}
    for path in (REPO / "spacy_bilstm_crf").rglob("*.py"):
        source = path.read_text(encoding="utf8")
        for registry_name, name in re.findall(r'registry\.(\w+)\(\s*"([^"]+)"', source):
            found.setdefault(registry_name, set()).add(name)
        for name in re.findall(r'Language\.(?:factory|component)\(\s*"([^"]+)"', source):
            found.setdefault("factories", set()).add(name)
    return found


def test_every_registered_name_has_an_entry_point() -> None:
    """A config naming any of them resolves in a process that has not imported the package."""
    registered = _registered_names()
    assert "spacy-bilstm-crf.BiLSTMCRF.v2" in registered["architectures"]
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    groups = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf8"))["project"]["entry-points"]
    for registry_name, names in registered.items():
        namespace = "thinc" if registry_name in ("schedules", "optimizers", "layers") else "spacy"
        declared = set(groups.get(f"{namespace}_{registry_name}", {}))
        assert names <= declared, f"{registry_name}: {sorted(names - declared)} have no entry point"


def test_a_fresh_process_resolves_every_registered_name() -> None:
    """Installed entry points (``pip install -e .`` after editing pyproject.toml) find each
    registered function before anything imported the package."""
    pairs = sorted((r, n) for r, names in _registered_names().items() if r != "factories" for n in names)
    code = textwrap.dedent(
        f"""
        import sys
        from spacy.util import registry
        assert "spacy_bilstm_crf" not in sys.modules
        for registry_name, name in {pairs!r}:
            registry.get(registry_name, name)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


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


def test_initialize_leaves_the_check_to_scale_training() -> None:
    # scale_training replaces max_steps and eval_frequency after initialize (150 steps
    # give eval_frequency 25), so the values in [training] before it are not warned about.
    config = {
        "training": {"max_steps": 150, "eval_frequency": 500},
        "initialize": {"after_init": {"@callbacks": "spacy-bilstm-crf.scale_training.v1"}},
    }
    nlp = spacy.blank("zh", config=config)
    nlp.add_pipe("bilstm_crf_ner", config={"model": {**SMALL_MODEL, "lexicon": None}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nlp.get_pipe("bilstm_crf_ner").initialize(lambda: make_examples(nlp), nlp=nlp)
    assert not [w for w in caught if "eval_frequency" in str(w.message)]
