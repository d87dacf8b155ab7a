import torch
from torch import nn

from spacy_bilstm_crf.network.subnormals import zero_subnormals


def test_zero_subnormals_keeps_normal_values():
    tiny = torch.finfo(torch.float32).tiny
    module = nn.Linear(3, 2)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[tiny / 4, -tiny / 2, 1.5], [tiny, -tiny, 0.0]]))
    module.register_buffer("ids", torch.tensor([1, 0, 3]))  # integers are left alone
    module.register_buffer("scale", torch.tensor([tiny / 8, 2.0], dtype=torch.float64))
    assert zero_subnormals(module) == 2  # tiny/8 is a normal float64
    assert module.weight.tolist() == [[0.0, 0.0, 1.5], [tiny, -tiny, 0.0]]
    assert module.ids.tolist() == [1, 0, 3]
    assert module.scale.tolist() == [tiny / 8, 2.0]
    assert zero_subnormals(module) == 0
