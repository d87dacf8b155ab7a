"""The exported tagger cuts long texts into the pipeline's windows (``windows.py``, the
same code, the settings saved in tagger.json), gives whitespace the O tag in its
Viterbi, and the package imports neither spaCy nor thinc for it."""
import ast
import random
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import torch

from spacy_bilstm_crf.serving import tagger as serving
from spacy_bilstm_crf.serving.deploy import compare_with_pipeline, export_pipeline
from spacy_bilstm_crf.serving.tagger import Tagger
from spacy_bilstm_crf.prediction.windows import plan_windows

from .conftest import TRAIN_DATA

REPO = Path(__file__).resolve().parents[1]
SIZE, OVERLAP = 64, 12


def long_texts(n: int = 6, length: int = 1500, seed: int = 0) -> List[str]:
    """Texts of ``length`` characters: fragments of the training sentences, joined by
    nothing, a comma, a sentence end or 的 (so windows are cut at sentence ends, at
    commas or anywhere), where a window's context differs from the whole text's."""
    rng = random.Random(seed)
    sentences = [text for text, _ in TRAIN_DATA]
    texts = []
    for _ in range(n):
        text = ""
        while len(text) < length:
            sentence = rng.choice(sentences)
            text += sentence[rng.randint(0, len(sentence) // 2) :] + rng.choice(["", "，", "。", "的"])
        texts.append(text[:length])
    return texts


@pytest.fixture(scope="module")
def windowed(trained_nlp, tmp_path_factory):
    """The trained pipeline with small windows, and its export."""
    ner = trained_nlp.get_pipe("bilstm_crf_ner")
    old = (ner.window_size, ner.window_overlap, ner.batch_chars)
    ner.window_size, ner.window_overlap, ner.batch_chars = SIZE, OVERLAP, 4 * SIZE
    path = tmp_path_factory.mktemp("windows") / "exported"
    try:
        export_pipeline(trained_nlp, path)
        yield trained_nlp, Tagger.load(path)
    finally:
        ner.window_size, ner.window_overlap, ner.batch_chars = old


def test_export_saves_the_pipelines_windows(windowed):
    _, tagger = windowed
    meta = tagger.meta
    assert (meta["window_size"], meta["window_overlap"], meta["batch_chars"]) == (SIZE, OVERLAP, 4 * SIZE)
    assert (tagger.window_size, tagger.window_overlap, tagger.batch_chars) == (SIZE, OVERLAP, 4 * SIZE)


def test_long_texts_give_the_pipelines_entities(windowed):
    nlp, tagger = windowed
    texts = long_texts()
    check = compare_with_pipeline(nlp, tagger, texts)
    assert check["n_different"] == 0, check["differences"]
    check = compare_with_pipeline(nlp, tagger, texts, batch_size=2)  # other batches, same entities
    assert check["n_different"] == 0, check["differences"]
    # Not vacuous: the texts have many entities, and tagged whole (what the tagger did
    # before it had windows) several of them get others.
    ner = nlp.get_pipe("bilstm_crf_ner")
    ner.window_size = ner.batch_chars = 10**6
    try:
        whole = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    finally:
        ner.window_size, ner.batch_chars = SIZE, 4 * SIZE
    assert sum(w != t for w, t in zip(whole, tagger.batch(texts))) >= 2
    assert all(len(ents) > 50 for ents in whole)


def test_a_long_text_runs_window_by_window(windowed, monkeypatch):
    """The network sees the windows of the plan, never the whole text, and each forward
    pass stays within batch_chars padded characters."""
    _, tagger = windowed
    text = long_texts(1, 3000)[0]
    seen: List[List[int]] = []
    tag = tagger.tag

    def recording(sequences):
        seen.append([len(s) for s in sequences])
        return tag(sequences)

    monkeypatch.setattr(tagger, "tag", recording)
    tagger(text)
    plan = plan_windows([ord(c) for c in text], SIZE, OVERLAP)
    assert len(plan) > 40
    assert sorted(n for call in seen for n in call) == sorted(w.end - w.start for w in plan)
    assert all(max(call) * len(call) <= tagger.batch_chars for call in seen)


def test_whitespace_is_never_in_an_entity(windowed):
    """'张三\\n', '\\n\\n王小明', '   ': no entity starts or ends on whitespace, or holds a
    whitespace token (a single space after a character is that token's trailing
    whitespace, as in spaCy, and not read by the network: '马 云' can be one entity)."""
    _, tagger = windowed
    texts = ["张三\n", "\n\n王小明", "   ", "马云 在\n\n阿里巴巴\u3000杭州 总部", "\t李明去北京大学读书 \n"]
    texts += [" ".join(text) for text, _ in TRAIN_DATA] + ["\u00a0".join(text) for text, _ in TRAIN_DATA]
    texts += ["  ".join(text) for text, _ in TRAIN_DATA] + ["\n".join(text) for text, _ in TRAIN_DATA]
    found = tagger.batch(texts)
    for text, ents in zip(texts, found):
        spaces = [(s, e) for s, e in serving.char_tokens(text) if text[s:e].isspace()]
        for start, end, _ in ents:
            assert not text[start].isspace() and not text[end - 1].isspace(), (text, ents)
            assert not any(start < e and s < end for s, e in spaces), (text, ents)
    assert sum(len(ents) for ents in found) > 30  # not vacuous
    assert tagger.batch(["   ", "\n\n"]) == [[], []]


class _Emissions(torch.nn.Module):
    """Fixed emissions: whatever the input, these scores (batch 1)."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, codepoints: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.scores[None, : codepoints.shape[1]].expand(codepoints.shape[0], -1, -1)


def test_whitespace_is_a_decoding_constraint_not_a_filter():
    """The network scores ' 张三' best as one entity with the space inside; the constrained
    Viterbi finds the best path with the space outside: '张三' (a filter would drop it)."""
    meta = {"format": serving.FORMAT, "version": 2, "labels": ["name"], "scheme": "BIOES", "min_width": 1}
    meta["tags"] = serving.expected_tags(meta["labels"], "BIOES")  # O B-name I-name E-name S-name
    scores = torch.tensor([[0.0, 5, 0, 0, 0], [0, 0, 5, 0, 0], [0, 0, 0, 5, 0]])  # B I E best
    banned = float("-inf")
    trans = torch.full((5, 5), banned)
    trans[0][[0, 1, 4]] = trans[3][[0, 1, 4]] = trans[4][[0, 1, 4]] = 0  # O, E, S → O, B, S
    trans[1][[2, 3]] = trans[2][[2, 3]] = 0  # B, I → I, E
    start = torch.tensor([0.0, 0, banned, banned, 0])
    end = torch.tensor([0.0, banned, banned, 0, 0])
    tagger = Tagger(_Emissions(scores), meta, crf=(trans, start, end))
    assert tagger(" 张三") == [(1, 3, "name")]
    assert tagger("张三李") == [(0, 3, "name")]  # without whitespace: the network's best path


def test_serving_imports_neither_spacy_nor_thinc():
    code = (
        "import sys\n"
        "from spacy_bilstm_crf.serving.tagger import Tagger\n"
        "import spacy_bilstm_crf\n"
        "assert spacy_bilstm_crf.__version__\n"
        "print(sorted(m for m in ('spacy', 'thinc') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_package_names_and_the_factory_still_load_in_a_fresh_process():
    code = (
        "import spacy\n"
        "nlp = spacy.blank('zh')\n"
        "nlp.add_pipe('bilstm_crf_ner')\n"
        "import spacy_bilstm_crf as package\n"
        "from spacy_bilstm_crf import build_bilstm_crf, cosine_warm_restarts, make_bilstm_crf_ner\n"
        "assert isinstance(nlp.get_pipe('bilstm_crf_ner'), package.BiLSTMCRFNER)\n"
        "assert set(package.__all__) <= set(dir(package))\n"
        "try:\n"
        "    package.nothing\n"
        "except AttributeError:\n"
        "    print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_deploy_commands_import_torch_and_spacy_only_when_run():
    """cli/deploy.py's module level imports only the CLI's light modules (``--help``)."""
    tree = ast.parse((REPO / "spacy_bilstm_crf" / "cli" / "deploy.py").read_text(encoding="utf8"))
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    assert imported <= {"pathlib", "typing", "typer", "wasabi", "._util"}, imported
