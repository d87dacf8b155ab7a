"""Checks of a config's ``[training]`` block that the component and the callback share.

Importing it imports neither torch nor spaCy: ``training_plan``'s callback uses it.
"""
import warnings
from typing import Dict


SCALE_TRAINING = "spacy-bilstm-crf.scale_training.v1"


def scales_training(config: Dict[str, object]) -> bool:
    """Whether ``[initialize.after_init]`` is the ``scale_training`` callback.

    config (Dict[str, object]): The nlp's config.
    RETURNS (bool): True when the training length is set after initialize.
    """
    initialize = config.get("initialize") or {}
    after_init = initialize.get("after_init") if isinstance(initialize, dict) else None
    return isinstance(after_init, dict) and after_init.get("@callbacks") == SCALE_TRAINING


def warn_about_training_settings(training: Dict[str, object], name: str) -> None:
    """Warn about ``[training]`` settings under which ``spacy train`` keeps a worse model.

    spaCy evaluates (and saves ``model-best``) every ``eval_frequency`` steps only: with
    ``max_steps`` below it, ``model-best`` is the untrained model of step 0, and steps
    after the last evaluation are never candidates for ``model-best``.

    training (Dict[str, object]): The ``[training]`` block of the nlp's config.
    name (str): The component's name, for the message.
    """
    max_steps, eval_frequency = training.get("max_steps"), training.get("eval_frequency")
    if not isinstance(max_steps, int) or not isinstance(eval_frequency, int):
        return  # not resolved yet (e.g. a reference to another block): nothing to check
    if max_steps <= 0 or eval_frequency <= 0 or max_steps % eval_frequency == 0:
        return
    last_eval = max_steps - max_steps % eval_frequency
    if last_eval == 0:
        what = "model-best will be the UNTRAINED model of step 0 (the only evaluation)"
    else:
        what = f"the last {max_steps - last_eval} steps are never evaluated for model-best"
    warnings.warn(
        f"[training] max_steps = {max_steps} is not a multiple of eval_frequency = "
        f"{eval_frequency}: {what}. Set eval_frequency to a divisor of max_steps "
        f"(e.g. --training.eval_frequency {max_steps if last_eval == 0 else eval_frequency}"
        f"{'' if last_eval == 0 else f' --training.max_steps {last_eval + eval_frequency}'}). ('{name}')"
    )
