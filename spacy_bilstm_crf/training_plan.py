"""Training length that scales with the training corpus: a callback for ``[initialize]``.

A fixed ``max_steps`` is right for one corpus only: 3,000 steps are 14 passes over
CLUENER's 10,748 sentences but 1.4 over a corpus ten times larger, and 140 over
one ten times smaller. ``spacy train`` reads ``[training]`` again after
``[initialize]`` has run, so this callback (``after_init``) counts the training
corpus and writes ``max_steps``, ``eval_frequency``, ``patience`` and the
learning-rate cycle length there, for a number of epochs. The values it wrote
are in the ``config.cfg`` saved with the trained pipeline.
"""
import itertools
import math
from typing import Any, Callable, Dict, Iterator

from spacy.language import Language
from spacy.schemas import ConfigSchemaTraining
from spacy.util import registry, resolve_dot_names
from wasabi import msg


@registry.callbacks("spacy-bilstm-crf.scale_training.v1")
def make_scale_training(
    epochs: float = 14.0, evaluations: int = 6, cycles: int = 2
) -> Callable[[Language], Language]:
    """Set the training length from the size of the training corpus.

    epochs (float): Passes over the training corpus.
    evaluations (int): Evaluations on dev during training (``eval_frequency`` is
        ``max_steps / evaluations``); the last one is at ``max_steps``.
    cycles (int): Cosine cycles of ``spacy-bilstm-crf.cosine_warm_restarts.v1``
        within ``max_steps`` (its ``period`` is set to fit); other schedules are kept.
    RETURNS (Callable[[Language], Language]): The ``after_init`` callback.
    """
    if epochs <= 0 or evaluations < 1 or cycles < 1:
        raise ValueError(f"Need epochs > 0, evaluations >= 1, cycles >= 1; got {epochs}, {evaluations}, {cycles}")

    def scale_training(nlp: Language) -> Language:
        config = nlp.config.interpolate()
        T = registry.resolve(config["training"], schema=ConfigSchemaTraining)
        (corpus,) = resolve_dot_names(config, [T["train_corpus"]])
        n_words = sum(len(eg.reference) for eg in corpus(nlp))
        batch_size = registry.resolve({"size": config["training"]["batcher"]["size"]})["size"]
        steps = steps_for_words(n_words * epochs, batch_size)
        eval_frequency = max(1, math.ceil(steps / evaluations))
        max_steps = eval_frequency * evaluations
        training: Dict[str, Any] = nlp.config["training"]
        training["max_steps"] = max_steps
        training["max_epochs"] = 0
        training["eval_frequency"] = eval_frequency
        training["patience"] = max_steps
        rate = training["optimizer"].get("learn_rate")
        if isinstance(rate, dict) and rate.get("@schedules") == "spacy-bilstm-crf.cosine_warm_restarts.v1":
            mult = float(rate.get("period_mult", 2.0))
            # The cycles double (mult) in length and together fill max_steps.
            share = 1.0 / cycles if mult == 1 else (mult - 1) / (mult**cycles - 1)
            rate["period"] = max(1, round(max_steps * share))
        msg.info(
            f"Training scaled to the corpus: {n_words:,} words x {epochs:g} epochs -> "
            f"max_steps {max_steps}, eval_frequency {eval_frequency}"
        )
        return nlp

    return scale_training


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
