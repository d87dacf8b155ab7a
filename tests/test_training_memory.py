"""An update keeps no tensor of an earlier step alive (training memory stays flat).

thinc's stock ``PyTorchShim.finish_update`` made each parameter's new tensor wrap the
numpy view of the old one, a chain that grew every step; see ``torch_shim.py``.
"""
import gc
import warnings

import spacy
import torch

from spacy_bilstm_crf.torch_shim import InPlacePyTorchShim

from .conftest import SMALL_MODEL, make_examples


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on some torch module objects warns
        warnings.simplefilter("ignore")
        return sum(isinstance(obj, torch.Tensor) for obj in gc.get_objects())


def test_updates_keep_no_earlier_tensors_alive() -> None:
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("zh")
    ner = nlp.add_pipe("bilstm_crf_ner", config={"model": {**SMALL_MODEL, "lexicon": None}})
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    shim = ner.model.layers[0].shims[0]
    assert isinstance(shim, InPlacePyTorchShim)
    before = [p.detach().clone() for p in shim._model.parameters()]
    for _ in range(3):  # warm-up: optimizer state, gradients
        nlp.update(examples, sgd=optimizer)
    counts = []
    for _ in range(4):
        for _ in range(5):
            nlp.update(examples, sgd=optimizer)
        counts.append(live_tensors())
    # thinc's stock step leaves one tensor per parameter and step behind (here 18 x 5 per row).
    assert max(counts) - min(counts) < len(before), counts
    assert any(not torch.equal(a, b) for a, b in zip(shim._model.parameters(), before))
