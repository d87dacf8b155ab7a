"""Learning-rate schedules registered with thinc, usable from any spaCy config."""
import math
from typing import Iterator

from thinc.api import registry


@registry.schedules("spacy-bilstm-crf.cosine_warm_restarts.v1")
def cosine_warm_restarts(
    max_rate: float,
    min_rate: float = 1e-5,
    period: int = 1000,
    period_mult: float = 2.0,
    warmup_steps: int = 0,
) -> Iterator[float]:
    """Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017), per update step.

    Like ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``: within a cycle of
    ``period`` steps the rate falls from ``max_rate`` to ``min_rate`` along a half
    cosine, then restarts at ``max_rate``; each cycle is ``period_mult`` times longer
    than the one before. An optional linear warm-up precedes the first cycle.

    max_rate (float): Rate at the start of each cycle.
    min_rate (float): Rate approached at the end of each cycle.
    period (int): Length of the first cycle, in update steps.
    period_mult (float): Growth factor of the cycle length (1 keeps it constant).
    warmup_steps (int): Steps of linear warm-up from ~0 to ``max_rate``.
    YIELDS (float): The learning rate of each step.
    """
    if period < 1 or period_mult < 1:
        raise ValueError(f"Need period >= 1 and period_mult >= 1, got {period}, {period_mult}")
    for step in range(warmup_steps):
        yield max_rate * (step + 1) / warmup_steps
    cycle_length = float(period)
    step_in_cycle = 0
    while True:
        progress = step_in_cycle / cycle_length
        yield min_rate + (max_rate - min_rate) * 0.5 * (1.0 + math.cos(math.pi * progress))
        step_in_cycle += 1
        if step_in_cycle >= round(cycle_length):
            step_in_cycle = 0
            cycle_length *= period_mult
