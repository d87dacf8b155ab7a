"""The component's ``uncertainty`` setting: measures in doc.spans, checked against the
CRF's own partition function, marginals and every span's probability."""
import numpy
import pytest
import torch
from spacy.language import Language
from spacy.tokens import DocBin

from spacy_bilstm_crf.component.architectures import featurize, get_torch_module
from spacy_bilstm_crf.features.chars import doc_chars

from .conftest import TRAIN_DATA, train_small

TEXTS = [text for text, _ in TRAIN_DATA] + ["北京和上海", "", "他在华为公司工作了三年"]
KEY = "bilstm_crf_ner"


@pytest.fixture(scope="module")
def nlp() -> Language:
    trained = train_small(steps=60)
    trained.get_pipe("bilstm_crf_ner").uncertainty = True
    return trained


def _reference(nlp: Language, text: str):
    """The decoded tags' log-probability and tag marginals, from the torch CRF."""
    ner = nlp.get_pipe("bilstm_crf_ner")
    module = get_torch_module(ner.model)
    chars = doc_chars(nlp.make_doc(text))
    batch = featurize(ner.model, [chars.codepoints], None, None)
    codes, lengths = torch.as_tensor(batch.codepoints), torch.as_tensor(batch.lengths)
    with torch.no_grad():
        emissions = module.emissions(codes, lengths).double()
        tags = module.crf.decode(emissions, lengths)
        log_p = module.crf.path_score(emissions, tags, lengths) - module.crf.log_partition(emissions, lengths)
        marginals = module.crf.marginals(emissions, lengths)[0].numpy()
    return tags[0].numpy(), float(log_p[0]), marginals


def test_measures_equal_the_crfs_own_quantities(nlp):
    ner = nlp.get_pipe("bilstm_crf_ner")
    for text in [t for t in TEXTS if t]:
        doc = nlp(text)
        got = doc.spans[KEY].attrs["uncertainty"]
        tags, log_p, marginals = _reference(nlp, text)
        assert got["best_path"] == pytest.approx(1.0 - numpy.exp(log_p), abs=1e-5)
        expected_wrong = float((1.0 - marginals[numpy.arange(len(tags)), tags]).sum())
        assert got["tag_errors"] == pytest.approx(expected_wrong, abs=1e-4)
        # Every span's probability (all spans are candidates at a tiny threshold): the
        # expected entity errors are E[#entities] + #decoded - 2 * sum P(decoded).
        ner.threshold = 1e-12
        try:
            every_doc = nlp(text)
            every = every_doc.spans[KEY]
            probs = dict(zip([(s.start, s.end, s.label_) for s in every], every.attrs["scores"]))
        finally:
            ner.threshold = None
        decoded = [(e.start, e.end, e.label_) for e in doc.ents]
        expected_errors = sum(probs.values()) + len(decoded) - 2 * sum(probs[d] for d in decoded)
        assert got["entity_errors"] == pytest.approx(expected_errors, abs=1e-4)


def test_uncertainty_changes_no_entity_and_is_off_by_default(nlp):
    plain = train_small(steps=60)
    for text in TEXTS:
        doc = plain(text)
        assert KEY not in doc.spans
        scored = nlp(text)
        assert [(e.start, e.end, e.label_) for e in doc.ents] == [(e.start, e.end, e.label_) for e in scored.ents]
        assert set(scored.spans[KEY].attrs["uncertainty"]) == {"best_path", "tag_errors", "entity_errors"}
        assert len(scored.spans[KEY].attrs["scores"]) == len(scored.ents)


def test_an_empty_text_is_certain(nlp):
    assert nlp("").spans[KEY].attrs["uncertainty"] == {"best_path": 0.0, "tag_errors": 0.0, "entity_errors": 0.0}


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_measures_do_not_depend_on_the_batch(nlp, batch_size):
    alone = [nlp(text).spans[KEY].attrs["uncertainty"] for text in TEXTS]
    batched = [doc.spans[KEY].attrs["uncertainty"] for doc in nlp.pipe(TEXTS, batch_size=batch_size)]
    for one, many in zip(alone, batched):
        assert list(one) == list(many)
        assert list(one.values()) == pytest.approx(list(many.values()), abs=1e-6)


def test_a_long_text_sums_its_windows(nlp):
    ner = nlp.get_pipe("bilstm_crf_ner")
    sentence = "他在华为公司工作了三年。"
    text = sentence * 6
    whole = nlp(text).spans[KEY].attrs["uncertainty"]
    ner.window_size, ner.window_overlap = 24, 4
    try:
        windowed = nlp(text).spans[KEY].attrs["uncertainty"]
    finally:
        ner.window_size, ner.window_overlap = 512, 64
    # Each character is measured once, in the window that owns it, with a little less
    # context than in one window: close to the whole text's, not a multiple of it.
    assert windowed["tag_errors"] == pytest.approx(whole["tag_errors"], rel=0.5, abs=0.05)
    assert windowed["entity_errors"] == pytest.approx(whole["entity_errors"], rel=0.5, abs=0.05)


def test_measures_survive_a_docbin(nlp):
    doc = nlp("他在华为公司工作了三年")
    back = list(DocBin(docs=[doc]).get_docs(nlp.vocab))[0]
    assert back.spans[KEY].attrs["uncertainty"] == doc.spans[KEY].attrs["uncertainty"]
