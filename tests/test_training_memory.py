"""An update keeps no tensor of an earlier step alive (training memory stays flat).

thinc's stock ``PyTorchShim.finish_update`` made each parameter's new tensor wrap the
numpy view of the old one, a chain that grew every step; see ``torch_shim.py``.
"""
import gc
import warnings

import spacy
import torch

from spacy_bilstm_crf.component.torch_shim import InPlacePyTorchShim

from .conftest import SMALL_MODEL, make_examples


def _is_tensor(obj: object) -> bool:
    try:
        return isinstance(obj, torch.Tensor)
    except ReferenceError:  # a dead weakref.proxy (e.g. left by torch.onnx's exporter)
        return False


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on some torch module objects warns
        warnings.simplefilter("ignore")
        return sum(_is_tensor(obj) for obj in gc.get_objects())


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


def test_predictions_after_an_update_use_the_updated_weights() -> None:
    """The optimizer updates the weights in place through numpy views; predictions
    (the ragged path, whose folded input tables are cached by weight version) must
    follow. Before the shim marked those updates, every evaluation during training
    used the tables of the first one."""
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("zh")
    ner = nlp.add_pipe("bilstm_crf_ner", config={"model": {**SMALL_MODEL, "lexicon": None}})
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    module = ner.model.layers[0].shims[0]._model
    torch.manual_seed(0)
    codepoints = torch.randint(0x4E00, 0x4E80, (9, 12))  # 9 sentences: the ragged path
    lengths = torch.tensor([5, 12, 1, 7, 12, 3, 9, 2, 4])
    inside = torch.arange(12)[None, :] < lengths[:, None]
    with torch.no_grad():
        before = module.emissions(codepoints, lengths)  # builds the cached tables
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    with torch.no_grad():
        ragged = module.emissions(codepoints, lengths)
    with torch.enable_grad():  # the packed nn.LSTM path, no cache
        packed = module.emissions(codepoints, lengths).detach()
    assert not torch.allclose(before[inside], packed[inside], atol=1e-3)
    torch.testing.assert_close(ragged[inside], packed[inside], atol=1e-5, rtol=1e-5)


def test_parameter_averages_reach_the_network_and_are_undone() -> None:
    """With ``use_averages``, ``use_params(optimizer.averages)`` (evaluation, saving
    model-best) runs the network with the averaged weights, then puts the last ones back.
    thinc's own shim looked for other keys than it registers, so nothing changed."""
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("zh")
    ner = nlp.add_pipe("bilstm_crf_ner", config={"model": {**SMALL_MODEL, "lexicon": None}})
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    optimizer.averages = {}  # as use_averages = true builds it
    for _ in range(4):
        nlp.update(examples, sgd=optimizer)
    shim = ner.model.layers[0].shims[0]
    module = shim._model
    last = {name: p.detach().clone() for name, p in module.named_parameters()}
    averaged = {name: optimizer.averages[(shim.id, name)] for name in last if (shim.id, name) in optimizer.averages}
    assert averaged and any(not torch.equal(torch.as_tensor(a), last[n]) for n, a in averaged.items())
    text = examples[0].reference.text
    plain = [(e.start_char, e.end_char, e.label_) for e in nlp(text).ents]
    with nlp.use_params(optimizer.averages):
        for name, param in module.named_parameters():
            expected = torch.as_tensor(averaged[name]) if name in averaged else last[name]
            assert torch.equal(param.detach(), expected), name
        nlp(text)  # predicts with them (the folded-table cache follows the weights)
    for name, param in module.named_parameters():
        assert torch.equal(param.detach(), last[name]), name
    assert [(e.start_char, e.end_char, e.label_) for e in nlp(text).ents] == plain
