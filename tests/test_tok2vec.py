"""An upstream encoder: spaCy's tok2vec component with a listener in our model."""
import numpy
import spacy

from .conftest import SMALL_MODEL, make_examples

TEXT = "马云在阿里巴巴杭州总部发表演讲"


def _pipeline():
    nlp = spacy.blank("zh")
    nlp.add_pipe("tok2vec")
    model = dict(SMALL_MODEL)
    model["@architectures"] = "spacy-bilstm-crf.BiLSTMCRF.v2"
    model["tok2vec"] = {"@architectures": "spacy.Tok2VecListener.v1", "width": 96, "upstream": "*"}
    nlp.add_pipe("bilstm_crf_ner", config={"model": model})
    return nlp


def test_training_with_a_listener_reaches_the_upstream_tok2vec(tmp_path):
    spacy.util.fix_random_seed(0)
    nlp = _pipeline()
    assert nlp.get_pipe("tok2vec").listening_components == ["bilstm_crf_ner"]
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    tok2vec_weights = [p.copy() for p in _params(nlp.get_pipe("tok2vec").model)]
    losses = {}
    for _ in range(40):
        losses = nlp.update(examples, sgd=optimizer)
    # The upstream component's loss is the gradient it received from our listener.
    assert losses["tok2vec"] > 0.0
    assert any(not numpy.array_equal(a, b) for a, b in zip(tok2vec_weights, _params(nlp.get_pipe("tok2vec").model)))
    assert nlp.evaluate(examples)["ents_f"] > 0.5
    nlp.to_disk(tmp_path)
    loaded = spacy.load(tmp_path)
    expected = [(e.start, e.end, e.label_) for e in nlp(TEXT).ents]
    assert [(e.start, e.end, e.label_) for e in loaded(TEXT).ents] == expected
    ner = loaded.get_pipe("bilstm_crf_ner")
    ner.confidence = True
    doc = loaded(TEXT)
    assert [(s.start, s.end) for s in doc.spans["bilstm_crf_ner"]] == [e[:2] for e in expected]


def _params(model):
    return [node.get_param(name).copy() for node in model.walk() for name in node.param_names if node.has_param(name)]
