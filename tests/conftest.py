"""Shared fixtures: a small pipeline overfit once per test session."""
import importlib.util
import os
import sys

# Before anything imports ray: on Linux, Ray turns every node address, even
# 127.0.0.1, into the machine's outward interface address, so a local test
# cluster would listen on and talk to that interface. With this set to 0, Ray
# keeps a single-node cluster on loopback (it then refuses multi-node
# clusters; tests/test_annotate_ray_cluster.py runs its own in a private
# network namespace, and clears RAY_* variables for its processes).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from pathlib import Path
from types import ModuleType
from typing import List, Optional, Tuple

import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example

REPO = Path(__file__).resolve().parents[1]


def benchmark_module(name: str) -> ModuleType:
    """A script of ``benchmarks/`` as a module (the folder is not a package; a script may
    import its siblings, as ``seed_ensemble`` imports ``confidence``)."""
    path = REPO / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module
CLUENER_DIR = REPO.parent / "shared" / "data" / "cluener"

# (text, [(start_char, end_char_exclusive, label)])
TRAIN_DATA: List[Tuple[str, List[Tuple[int, int, str]]]] = [
    ("马云在阿里巴巴杭州总部发表演讲", [(0, 2, "name"), (3, 7, "company"), (7, 9, "address")]),
    ("李明去北京大学读书", [(0, 2, "name"), (3, 7, "organization")]),
    ("王芳是腾讯的工程师", [(0, 2, "name"), (3, 5, "company"), (6, 9, "position")]),
    ("我在上海看了电影《流浪地球》", [(2, 4, "address"), (8, 14, "movie")]),
    ("今天天气很好", []),
    ("张伟担任华为公司总经理", [(0, 2, "name"), (4, 8, "company"), (8, 11, "position")]),
    ("国务院发布了新规定", [(0, 3, "government")]),
    ("他在深圳玩《王者荣耀》", [(2, 4, "address"), (5, 11, "game")]),
]

# The fast network (no LAC, no SoftLexicon vectors): tests/test_lac_features.py
# trains the pretrained features.
SMALL_MODEL = {
    "lexicon_dim": 0,
    "lexicon_pos": False,
    "gazetteer": False,
    "lac_embeddings": False,
    "lac_features": False,
    "char_dim": 32,
    "bigram_dim": 16,
    "bigram_buckets": 997,
    "class_dim": 8,
    "hidden_size": 64,
    "dropout": 0.0,
    "embed_dropout": 0.0,
    "unk_rate": 0.0,
}


def every_feature_network():
    """A small untrained ``BiLSTMCRF`` with every feature part on (bigrams, classes,
    lexicon flags, word types and SoftLexicon, gazetteer flags, two LSTM layers, both
    LAC layers), over the characters U+4E00..U+4E31, whose lexicon and gazetteer hold
    a few words of those characters; LAC's weights random."""
    import torch

    from spacy_bilstm_crf.network.lexicon import word_keys
    from spacy_bilstm_crf.network.model import BiLSTMCRF
    from spacy_bilstm_crf.network.tags import TagScheme

    torch.manual_seed(0)
    module = BiLSTMCRF(
        50, TagScheme(["name", "company"], "BIOES"), bigram_buckets=101, hidden_size=16, depth=2, lexicon_size=4,
        lexicon_dim=8, lexicon_pos=True, lac_features=True, lac_layers=2, gazetteer_size=3, gazetteer_max_len=5,
    )  # fmt: skip
    module.set_char_table(torch.arange(0x4E00, 0x4E00 + 50))
    words = [[0x4E00, 0x4E01], [0x4E02], [0x4E03, 0x4E04, 0x4E05, 0x4E06, 0x4E07], [0x4E08, 0x4E09, 0x4E0A]]
    keys = word_keys([torch.tensor(w) for w in words], 6)
    module.lexicon.set_keys(keys, torch.rand(len(keys)) + 0.5, torch.tensor([1, 2, 3, 4]))
    entities = word_keys([torch.tensor(w) for w in [[0x4E01, 0x4E02], [0x4E05], [0x4E06, 0x4E07, 0x4E08]]], 5)
    labels = torch.tensor([[True, False], [False, True], [True, True]])
    module.gazetteer.set_entries(entities, labels[:, None, :].expand(3, module.gazetteer.n_folds, 2))
    with torch.no_grad():
        for param in module.lac.parameters():
            param.normal_(0, 0.1)
        module.lac.vocab_codepoints.copy_(torch.arange(0x4E00, 0x4E00 + len(module.lac.vocab_codepoints)))
        module.lac.vocab_ids.copy_(torch.arange(len(module.lac.vocab_ids)))
    return module


def make_examples(nlp: Language) -> List[Example]:
    return [
        Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in TRAIN_DATA
    ]


def train_small(scheme: str = "BIOES", steps: int = 150, seed: int = 0, model: Optional[dict] = None) -> Language:
    """A blank zh pipeline with bilstm_crf_ner overfit on TRAIN_DATA (model: SMALL_MODEL by default)."""
    spacy.util.fix_random_seed(seed)
    nlp = spacy.blank("zh")
    nlp.add_pipe("bilstm_crf_ner", config={"scheme": scheme, "model": model or SMALL_MODEL})
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    optimizer.learn_rate = 0.01
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer)
    return nlp


@pytest.fixture(scope="session")
def trained_nlp() -> Language:
    return train_small()


def docs_with_ents(nlp: Language, data: List[Tuple[str, List[Tuple[int, int, str]]]]) -> List[Doc]:
    """Docs of ``(text, [(start_char, end_char, label)])``, every other token annotated O
    (setting ents, even to [], marks the doc annotated)."""
    docs = []
    for text, spans in data:
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(start, end, label=label) for start, end, label in spans]
        docs.append(doc)
    return docs


def ents_of(doc) -> List[Tuple[int, int, str]]:
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


def pipeline_trained_with_sdist(folder: Path, sdist: Path, model: dict, steps: int = 120) -> Tuple[Language, Path]:
    """A blank zh pipeline with bilstm_crf_ner (``model``, which names ``sdist``), initialized
    with a small LAC archive (its checksum accepted), overfit on TRAIN_DATA and saved to
    ``folder / "pipeline"``. The archive is deleted afterwards: nothing later may need it.
    RETURNS (Tuple[Language, Path]): The pipeline and where it was saved.
    """
    import hashlib

    from spacy_bilstm_crf.network.lac.sdist import read_lac_full

    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("zh")
    nlp.add_pipe("bilstm_crf_ner", config={"model": model})
    examples = make_examples(nlp)
    with pytest.MonkeyPatch.context() as patch:  # the small archive's checksum
        patch.setattr(read_lac_full, "__defaults__", (hashlib.sha256(sdist.read_bytes()).hexdigest(),))
        optimizer = nlp.initialize(lambda: examples)
    optimizer.learn_rate = 0.01
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer)
    path = folder / "pipeline"
    nlp.to_disk(path)
    sdist.unlink()
    return nlp, path


def ents_in_a_fresh_process(path: Path, texts: List[str], home: Path) -> List[List[Tuple[int, int, str]]]:
    """The entities that ``spacy.load(path)`` finds in ``texts`` in a new Python process whose
    home and LAC cache folder are in ``home``; fails if that process fetched anything."""
    import json
    import subprocess

    script = (
        "import json, sys, spacy\n"
        f"nlp = spacy.load({str(path)!r})\n"
        f"print(json.dumps([[(e.start_char, e.end_char, e.label_) for e in nlp(t).ents] for t in {texts!r}]))\n"
    )
    env = {**os.environ, "HOME": str(home), "SPACY_BILSTM_CRF_CACHE": str(home / "empty")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert not (home / "empty").exists()  # no fetch
    return [[tuple(ent) for ent in ents] for ents in json.loads(result.stdout)]
