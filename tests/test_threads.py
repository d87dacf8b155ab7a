"""One pipeline shared by threads (a threaded web server) gives the serial results.

thinc's shim switches the one shared torch module between train and eval mode
around every call; a prediction must not depend on that mode.
"""
import threading
from typing import List

import numpy
import pytest
import spacy
import torch
from spacy.language import Language

from spacy_bilstm_crf.component.architectures import featurize, get_torch_module

from .conftest import SMALL_MODEL, TRAIN_DATA, ents_of, make_examples

# Heavy training noise, so that a prediction run with it on is visibly different.
NOISY_MODEL = {**SMALL_MODEL, "dropout": 0.5, "embed_dropout": 0.5, "unk_rate": 0.5, "depth": 2, "lexicon": None}


@pytest.fixture(scope="module")
def noisy_nlp() -> Language:
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("zh")
    nlp.add_pipe("bilstm_crf_ner", config={"model": NOISY_MODEL})
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(10):
        nlp.update(examples, sgd=optimizer)
    return nlp


def texts() -> List[str]:
    base = [text for text, _ in TRAIN_DATA]
    return [base[i % len(base)] + base[(i * 3 + 1) % len(base)][: i % 7] for i in range(120)]


def test_prediction_does_not_depend_on_the_module_mode(noisy_nlp: Language) -> None:
    ner = noisy_nlp.get_pipe("bilstm_crf_ner")
    module = get_torch_module(ner.model)
    docs = [noisy_nlp.make_doc(t) for t in texts()]
    batch = featurize(ner.model, docs, None)
    inputs = (torch.as_tensor(batch.codepoints), torch.as_tensor(batch.lengths))
    results = []
    for mode in (False, True, False, True):
        module.train(mode)  # what another thread's call through thinc's shim does
        with torch.no_grad():
            results.append(module.emissions(*inputs))
        results.append(torch.as_tensor(numpy.stack([p.tags for p in ner.predict(docs)[:1]])))
    for i in range(0, len(results), 2):
        assert torch.equal(results[0], results[i])
        assert torch.equal(results[1], results[i + 1])
    marginals = [ner.predict_marginals(docs[:5]) for _ in (module.train(), module.eval())]
    assert all(numpy.array_equal(a, b) for a, b in zip(*marginals))


def test_training_path_still_applies_noise(noisy_nlp: Language) -> None:
    module = get_torch_module(noisy_nlp.get_pipe("bilstm_crf_ner").model)
    docs = [noisy_nlp.make_doc(t) for t in texts()[:20]]
    batch = featurize(noisy_nlp.get_pipe("bilstm_crf_ner").model, docs, None)
    inputs = (torch.as_tensor(batch.codepoints), torch.as_tensor(batch.lengths))
    with torch.no_grad():
        noisy = [module.emissions(*inputs, noise=True) for _ in range(2)]
    assert not torch.equal(noisy[0], noisy[1])
    assert not module.lstm.training  # switched on for the noisy call only


@pytest.mark.parametrize("use_pipe", [False, True])
def test_threads_sharing_one_pipeline_get_the_serial_entities(noisy_nlp: Language, use_pipe: bool) -> None:
    all_texts = texts()
    serial = [ents_of(doc) for doc in noisy_nlp.pipe(all_texts, batch_size=16)]
    assert any(serial)  # the check means something only if entities are found
    n_threads, rounds = 4, 3
    results: List[List[list]] = [[] for _ in range(n_threads)]
    errors: List[BaseException] = []

    def work(slot: int) -> None:
        try:
            for _ in range(rounds):
                if use_pipe:
                    out = [ents_of(doc) for doc in noisy_nlp.pipe(all_texts, batch_size=16)]
                else:
                    out = [ents_of(noisy_nlp(text)) for text in all_texts]
                results[slot].append(out)
        except BaseException as err:  # surfaced below: a thread's exception is otherwise lost
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    wrong = sum(
        got != want for slot in results for out in slot for got, want in zip(out, serial)
    )
    assert wrong == 0, f"{wrong} of {n_threads * rounds * len(all_texts)} docs differ from serial"
