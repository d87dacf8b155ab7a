"""The cosine-with-warm-restarts learning-rate schedule."""
import math
from itertools import islice

import pytest
import torch
from thinc.api import registry

from spacy_bilstm_crf.training.schedules import cosine_warm_restarts


def test_matches_torch_cosine_annealing_warm_restarts():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.01)
    reference = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=10, T_mult=2, eta_min=1e-5
    )
    expected = []
    for _ in range(70):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    ours = list(islice(cosine_warm_restarts(0.01, 1e-5, period=10, period_mult=2), 70))
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_warmup_then_restarts_and_registered_for_configs():
    rates = list(islice(cosine_warm_restarts(1.0, 0.0, period=4, period_mult=1, warmup_steps=2), 10))
    assert rates[:2] == [0.5, 1.0]
    assert rates[2] == 1.0 and rates[6] == 1.0  # restarts every 4 steps
    assert rates[4] == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 4)))
    made = registry.resolve({"s": {"@schedules": "spacy-bilstm-crf.cosine_warm_restarts.v1", "max_rate": 0.1}})
    assert next(made["s"]) == 0.1
    with pytest.raises(ValueError):
        next(cosine_warm_restarts(0.1, period=0))
