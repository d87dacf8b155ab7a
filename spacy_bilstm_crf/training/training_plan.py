"""Training length that scales with the training corpus: a callback for ``[initialize]``.

A fixed ``max_steps`` is right for one corpus only: 3,000 steps are 14 passes over
CLUENER's 10,748 sentences but 1.4 over a corpus ten times larger, and 140 over
one ten times smaller. ``spacy train`` reads ``[training]`` again after
``[initialize]`` has run, so this callback (``after_init``) counts the training
corpus and writes ``max_steps``, ``eval_frequency``, ``patience`` and the
learning-rate cycle length there, for a number of epochs. The values it wrote
are in the ``config.cfg`` saved with the trained pipeline.

A value given on spaCy's command line (``--training.max_steps 150``, or in
``SPACY_CONFIG_OVERRIDES``) is kept, and the others follow from it: the config
keeps no trace of an override, so the command line is read the way
``spacy train`` reads it. Every value that is replaced is printed with the value
it replaces.

Small corpora also get smaller batches (``full_batch_words``): five epochs over a
corpus of 1,000 sentences are fewer than 200 updates at CLUENER's batch sizes.
"""
import itertools
import math
import os
import shlex
import sys
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set

from spacy.language import Language
from spacy.schemas import ConfigSchemaTraining
from spacy.util import registry, resolve_dot_names
from wasabi import msg

from .settings import warn_about_training_settings

# Where spaCy's CLI reads config overrides besides its arguments (spacy.cli._util.ENV_VARS).
OVERRIDES_ENV = "SPACY_CONFIG_OVERRIDES"
# The [training] settings the callback writes, and the cosine schedule's cycle length.
SCALED = ("max_steps", "eval_frequency", "patience", "max_epochs")
PERIOD = "optimizer.learn_rate.period"
COSINE = "spacy-bilstm-crf.cosine_warm_restarts.v1"


@registry.callbacks("spacy-bilstm-crf.scale_training.v1")
def make_scale_training(
    epochs: float = 5.0,
    evaluations: int = 6,
    cycles: int = 1,
    full_batch_words: int = 300000,
    min_batch_scale: float = 0.5,
) -> Callable[[Language], Language]:
    """Set the training length from the size of the training corpus.

    Settings given on the command line are kept (see :func:`explicit_overrides`):
    with ``--training.max_steps N``, ``eval_frequency`` divides N (at most
    ``evaluations`` evaluations, the last at step N); with only
    ``--training.eval_frequency F``, ``max_steps`` is the corpus's length rounded
    up to a multiple of F. ``patience``, unless given, is ``max_steps`` (no early stop).

    epochs (float): Passes over the training corpus.
    evaluations (int): Evaluations on dev during training (``eval_frequency`` is
        ``max_steps / evaluations``); the last one is at ``max_steps``.
    cycles (int): Cosine cycles of ``spacy-bilstm-crf.cosine_warm_restarts.v1``
        within ``max_steps`` (its ``period`` is set to fit); other schedules are kept.
    full_batch_words (int): Corpora of fewer words train on smaller batches: the
        batcher's sizes (``[training.batcher.size]``: a number, or a schedule's ``start``
        and ``stop``) are scaled by ``words / full_batch_words``, to no less than
        ``min_batch_scale``, so that a small corpus gets more, smaller updates per epoch.
        0: the sizes as written.
    min_batch_scale (float): The smallest scale of the batch sizes.
    RETURNS (Callable[[Language], Language]): The ``after_init`` callback.
    """
    if epochs <= 0 or evaluations < 1 or cycles < 1:
        raise ValueError(f"Need epochs > 0, evaluations >= 1, cycles >= 1; got {epochs}, {evaluations}, {cycles}")
    if full_batch_words < 0 or not 0 < min_batch_scale <= 1:
        raise ValueError(
            f"Need full_batch_words >= 0 and 0 < min_batch_scale <= 1; got {full_batch_words}, {min_batch_scale}"
        )

    def scale_training(nlp: Language) -> Language:
        config = nlp.config.interpolate()
        T = registry.resolve(config["training"], schema=ConfigSchemaTraining)
        (corpus,) = resolve_dot_names(config, [T["train_corpus"]])
        n_words = sum(len(eg.reference) for eg in corpus(nlp))
        training: Dict[str, Any] = nlp.config["training"]
        given = explicit_overrides()
        resized = scale_batch_sizes(training, batch_scale(n_words, full_batch_words, min_batch_scale), given)
        batch_size = registry.resolve({"size": nlp.config.interpolate()["training"]["batcher"]["size"]})["size"]
        steps = steps_for_words(n_words * epochs, batch_size)
        kept = {key: training[key] for key in SCALED if f"training.{key}" in given}
        plan = plan_training(steps, evaluations, kept)
        rate = training["optimizer"].get("learn_rate")
        if isinstance(rate, dict) and rate.get("@schedules") == COSINE:
            if f"training.{PERIOD}" in given:
                kept[PERIOD] = rate.get("period")
            else:
                length = plan["max_steps"] if plan["max_steps"] > 0 else steps
                plan[PERIOD] = cycle_period(length, cycles, float(rate.get("period_mult", 2.0)))
        replaced = resized + apply_plan(training, plan)
        msg.info(
            f"Training scaled to the corpus: {n_words:,} words x {epochs:g} epochs -> "
            f"max_steps {plan['max_steps']}, eval_frequency {plan['eval_frequency']}"
        )
        if kept:
            msg.info("Kept as given on the command line: " + ", ".join(f"{k} {v}" for k, v in kept.items()))
        if replaced:
            # Said every time: a value set in the config file, or by code calling spaCy
            # (which cannot be told apart from it), is gone.
            msg.info(
                "Replaced in [training]: " + "; ".join(replaced) + ". To keep a value, give it on the "
                "command line (e.g. --training.max_steps 3000), or set [initialize] after_init = null"
            )
        # The plan always ends on an evaluation, except with both given on the command line.
        warn_about_training_settings(training, "scale_training")
        return nlp

    return scale_training


def explicit_overrides(argv: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None) -> Set[str]:
    """The config settings given as overrides on spaCy's command line or in its environment variable.

    ``spacy train config.cfg --training.max_steps 150`` merges the override into the
    config it initializes, which keeps no trace of it; so the arguments are read as
    spaCy's CLI reads them (``--section.key value`` or ``--section.key=value``).

    argv (Optional[Sequence[str]]): The arguments; ``sys.argv[1:]`` by default.
    environ (Optional[Mapping[str, str]]): The environment; ``os.environ`` by default.
    RETURNS (Set[str]): Dotted keys, e.g. ``{"training.max_steps"}``.
    """
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    try:
        args += shlex.split(env.get(OVERRIDES_ENV, ""))
    except ValueError:  # unbalanced quotes: spaCy fails on them itself
        pass
    keys = set()
    for arg in args:
        name = arg[2:].split("=", 1)[0]
        if arg.startswith("--") and "." in name:
            keys.add(name.replace("-", "_"))
    return keys


def batch_scale(n_words: int, full_batch_words: int, min_scale: float) -> float:
    """RETURNS (float): The batch sizes' factor for a corpus of ``n_words`` words (1: as written)."""
    if full_batch_words <= 0:
        return 1.0
    return max(min_scale, min(1.0, n_words / full_batch_words))


def scale_batch_sizes(training: Dict[str, Any], scale: float, given: Set[str]) -> List[str]:
    """Scale ``[training.batcher.size]`` (a number, or a schedule's ``start`` and ``stop``).

    Sizes given on the command line are kept, and so is a schedule of another shape.
    RETURNS (List[str]): ``"key old -> new"`` for every value that changed.
    """
    if scale == 1.0:
        return []
    batcher = training.get("batcher", {})
    size = batcher.get("size")
    replaced = []
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        if "training.batcher.size" not in given:
            batcher["size"] = max(1, round(size * scale))
            replaced.append(f"batcher.size {size} -> {batcher['size']}")
        return replaced
    if isinstance(size, dict):
        for key in ("start", "stop"):
            value = size.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and f"training.batcher.size.{key}" not in given:
                size[key] = max(1, round(value * scale))
                replaced.append(f"batcher.size.{key} {value} -> {size[key]}")
    return replaced


def plan_training(steps: int, evaluations: int, given: Mapping[str, Any]) -> Dict[str, Any]:
    """``max_steps``, ``eval_frequency``, ``patience`` and ``max_epochs`` for a corpus.

    steps (int): Steps for the wanted number of epochs over the corpus.
    evaluations (int): Evaluations on dev wanted within ``max_steps``.
    given (Mapping[str, Any]): Settings given explicitly (keys of :data:`SCALED`): kept.
    RETURNS (Dict[str, Any]): Every setting of :data:`SCALED`.
    """
    max_steps, eval_frequency = given.get("max_steps"), given.get("eval_frequency")
    if max_steps is None and eval_frequency is None:
        eval_frequency = max(1, math.ceil(steps / evaluations))
        max_steps = eval_frequency * evaluations
    elif max_steps is None:
        frequency = max(int(eval_frequency), 1)
        max_steps = math.ceil(steps / frequency) * frequency
    elif eval_frequency is None:
        eval_frequency = frequency_for(int(max_steps), evaluations, steps)
    return {
        "max_steps": max_steps,
        "eval_frequency": eval_frequency,
        "patience": given.get("patience", max_steps),
        "max_epochs": given.get("max_epochs", 0),  # max_steps alone ends the training
    }


def frequency_for(max_steps: int, evaluations: int, steps: int) -> int:
    """An ``eval_frequency`` that evaluates at most ``evaluations`` times, the last at ``max_steps``.

    spaCy saves ``model-best`` only at evaluations, so the last step must be one.

    max_steps (int): The given ``max_steps``; 0 or less: no step limit.
    evaluations (int): Evaluations wanted.
    steps (int): The corpus's steps, for the frequency when there is no step limit.
    RETURNS (int): The frequency.
    """
    if max_steps <= 0:
        return max(1, math.ceil(steps / evaluations))
    count = max(d for d in range(1, min(evaluations, max_steps) + 1) if max_steps % d == 0)
    return max_steps // count


def cycle_period(max_steps: int, cycles: int, mult: float) -> int:
    """The first cosine cycle's length: ``cycles`` cycles, each ``mult`` times the last, fill ``max_steps``.

    max_steps (int): Steps to fill.
    cycles (int): Cycles.
    mult (float): The schedule's ``period_mult``.
    RETURNS (int): The ``period``.
    """
    share = 1.0 / cycles if mult == 1 else (mult - 1) / (mult**cycles - 1)
    return max(1, round(max_steps * share))


def apply_plan(training: Dict[str, Any], plan: Mapping[str, Any]) -> List[str]:
    """Write the planned settings into ``[training]``.

    training (Dict[str, Any]): ``nlp.config["training"]``, changed in place.
    plan (Mapping[str, Any]): Settings, keyed as in :data:`SCALED` and :data:`PERIOD`.
    RETURNS (List[str]): ``"key old -> new"`` for every value that changed.
    """
    replaced = []
    for key, value in plan.items():
        *path, name = key.split(".")
        section = training
        for part in path:
            section = section[part]
        old = section.get(name)
        section[name] = value
        if old != value:
            replaced.append(f"{key} {old} -> {value}")
    return replaced


def steps_for_words(total_words: float, batch_size: Any) -> int:
    """Number of batches that hold ``total_words`` words under a batch size (schedule).

    batch_size: A number, or a schedule of the batch size per step (an iterator, as
        spaCy's batchers take it, or a thinc ``Schedule``).
    """
    if isinstance(batch_size, (int, float)):
        sizes: Iterator[float] = itertools.repeat(float(batch_size))
    elif callable(batch_size):
        sizes = (batch_size(step=step) for step in itertools.count())
    else:
        sizes = iter(batch_size)
    steps, seen = 0, 0.0
    while seen < total_words:
        seen += max(float(next(sizes)), 1.0)
        steps += 1
    return max(steps, 1)
