"""Vectorized lexicon matching against a brute-force reference."""
import math
import random
import warnings

import pytest
import torch

from spacy_bilstm_crf.network.lexicon import LexiconEntries, LexiconFeatures, load_lexicon, load_word_list, word_keys
from spacy_bilstm_crf.features.lexicon_table import build_lexicon_table


def _encode(text: str) -> torch.Tensor:
    return torch.tensor([ord(c) for c in text], dtype=torch.long)


def _brute_force(text: str, words: set, max_len: int) -> torch.Tensor:
    flags = torch.zeros(len(text), 9)
    for start in range(len(text)):
        for end in range(start + 1, min(start + max_len, len(text)) + 1):
            if text[start:end] not in words:
                continue
            length = end - start
            if length == 1:
                flags[start, 8] = 1
                continue
            bucket = min(length, 4) - 2
            flags[start, bucket] = 1
            flags[end - 1, 5 + bucket] = 1
            for inner in range(start + 1, end - 1):
                flags[inner, 3 + bucket - 1] = 1
    return flags


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed):
    rng = random.Random(seed)
    # Two characters beyond the Basic Multilingual Plane: single-character words
    # there are searched, not looked up in the direct table.
    alphabet = "北京大学生活动中心人民银行𠀀𠮷"
    words = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) for _ in range(60)}
    words |= {"北京", "北京大学", "大学生", "学生", "人民银行", "中心", "𠮷", "北", "𠀀京"}
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 15))) for _ in range(6)]
    texts[0] = "北京大学生活动中心"
    lexicon = LexiconFeatures(len(word_keys([_encode(w) for w in words], 6)), max_len=6)
    lexicon.set_keys(word_keys([_encode(w) for w in words], 6))
    lengths = torch.tensor([len(t) for t in texts])
    padded = torch.zeros(len(texts), max(lengths.max().item(), 1), dtype=torch.long)
    for row, text in enumerate(texts):
        padded[row, : len(text)] = _encode(text)
    flags = lexicon(padded, lengths)
    # The compiled kernel (CPU) and the tensor ops (GPU, scripted copies) find the same rows.
    compiled = lexicon._matches_compiled(padded, lengths)
    filtered = lexicon._matches_filtered(padded, lengths)
    assert compiled is not None and len(compiled) == len(filtered) == min(6, padded.shape[1])
    assert all(torch.equal(a, b) for a, b in zip(compiled, filtered))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(lexicon)  # what `export` ships
    assert torch.equal(scripted(padded, lengths), flags)
    for row, text in enumerate(texts):
        expected = _brute_force(text, {w for w in words if len(w) <= 6}, 6)
        assert torch.equal(flags[row, : len(text)], expected), text
        assert (flags[row, len(text) :] == 0).all()
    # 北 begins 北京 (2) and 北京大学 (4+); 学 ends 大学 only if listed; 大 is inside 北京大学.
    assert flags[0, 0, 0] == 1 and flags[0, 0, 2] == 1 and flags[0, 2, 4] == 1


def test_index_follows_keys_through_a_state_dict_load():
    """The filter and the direct character table are not saved: a module that gets
    its keys from a state dict rebuilds them, and finds the same words."""
    words = ["北", "京", "北京", "大学", "𠮷", "北京大学"]
    keys = word_keys([_encode(w) for w in words], 6)
    trained = LexiconFeatures(len(keys))
    trained.set_keys(keys)
    assert set(trained.state_dict()) == {"keys"}
    loaded = LexiconFeatures(len(keys))
    loaded.load_state_dict(trained.state_dict())
    text = torch.stack([_encode("北京大学𠮷京"), _encode("学大京北𠮷𠮷")])
    lengths = torch.tensor([6, 6])
    flags = loaded(text, lengths)
    assert torch.equal(flags, trained(text, lengths))
    assert flags[:, :, 8].tolist() == [[1, 1, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1]]  # single characters
    assert flags[0, 0, 0] == 1 and flags[0, 0, 2] == 1 and flags[1].sum() == 4



def test_word_types_are_bytes_and_int64_ones_still_load():
    """Word types are stored one byte each; a state dict from a pipeline that saved them
    as int64 loads into that and gives the same flags."""
    words = ["北京", "大学", "北京大学"]
    keys = word_keys([_encode(w) for w in words], 6)
    trained = LexiconFeatures(len(keys), with_pos=True)
    trained.set_keys(keys, pos=torch.tensor([1, 2, 3]))
    assert trained.pos.dtype == torch.uint8
    state = trained.state_dict()
    state["pos"] = state["pos"].to(torch.int64)
    loaded = LexiconFeatures(len(keys), with_pos=True)
    loaded.load_state_dict(state)
    assert loaded.pos.dtype == torch.uint8
    text, lengths = torch.stack([_encode("北京大学北京")]), torch.tensor([6])
    flags = loaded.pos_flags(loaded.matches(text, lengths), list(text.shape))
    assert torch.equal(flags, trained.pos_flags(trained.matches(text, lengths), list(text.shape)))
    assert flags.sum() > 0

def test_empty_lexicon_and_empty_batch():
    lexicon = LexiconFeatures(0)
    assert lexicon(torch.tensor([[20013, 22269]]), torch.tensor([2])).sum() == 0
    assert lexicon(torch.zeros(2, 1, dtype=torch.long), torch.tensor([0, 0])).shape == (2, 1, 9)


def test_word_list_from_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("北京 100 ns\n大学\n\n", encoding="utf8")
    assert load_word_list(str(path)) == ["北京", "大学"]
    with pytest.raises(FileNotFoundError, match="Lexicon file not found"):
        load_word_list(str(tmp_path / "missing.txt"))


def _weighted_lexicon(words: dict, max_len: int = 6) -> LexiconFeatures:
    """A lexicon whose rows carry the words' weights and types (word → (weight, group))."""
    entries = LexiconEntries(list(words), None, None)
    keys = word_keys([_encode(w) for w in words], max_len)
    by_key = dict(zip(word_keys_each(list(words), max_len), words.values()))
    lexicon = LexiconFeatures(len(keys), max_len, weighted=True, with_pos=True)
    lexicon.set_keys(
        keys,
        torch.tensor([by_key[int(k)][0] for k in keys], dtype=torch.float32),
        torch.tensor([by_key[int(k)][1] for k in keys]),
    )
    assert entries.words == list(words)
    return lexicon


def random_batch(rng: random.Random, alphabet: str):
    """Five random texts over ``alphabet`` (the first a fixed one), padded code points and lengths."""
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(5)]
    texts[0] = "北京大学生活动中心"
    lengths = torch.tensor([len(t) for t in texts])
    padded = torch.zeros(len(texts), max(int(lengths.max()), 1), dtype=torch.long)
    for row, text in enumerate(texts):
        padded[row, : len(text)] = _encode(text)
    return texts, padded, lengths


def word_keys_each(words, max_len):
    return [int(word_keys([_encode(w)], max_len)[0]) for w in words]


def _pooled_brute_force(text, words, vectors, max_len, n_types=1):
    """Per character, the weighted mean word vector of each of its B/M/E/S sets (with
    ``n_types`` > 1: of each set's words of each type, set by set)."""
    dim = vectors.shape[1]
    out = torch.zeros(len(text), 4 * n_types * dim)
    for position in range(len(text)):
        sets = {slot: [] for slot in range(4 * n_types)}
        for start in range(len(text)):
            for end in range(start + 1, min(start + max_len, len(text)) + 1):
                word = text[start:end]
                if word not in words:
                    continue
                if not start <= position < end:
                    continue
                if end - start == 1:
                    which = 3
                elif position == start:
                    which = 0
                elif position == end - 1:
                    which = 2
                else:
                    which = 1
                slot = which * n_types + (words[word][1] if n_types > 1 else 0)
                sets[slot].append((words[word][0], vectors[start:end].mean(dim=0)))
        for which, members in sets.items():
            total = sum(weight for weight, _ in members)
            if members and total > 0:
                mean = sum(weight * vector for weight, vector in members) / total
                out[position, which * dim : (which + 1) * dim] = mean
    return out


def _pos_brute_force(text, words, max_len):
    flags = torch.zeros(len(text), 8)
    for start in range(len(text)):
        for end in range(start + 1, min(start + max_len, len(text)) + 1):
            group = words.get(text[start:end], (0, 0))[1]
            if group:
                flags[start, 2 * (group - 1)] = 1
                flags[start + 1 : end, 2 * (group - 1) + 1] = 1
    return flags


@pytest.mark.parametrize("seed", range(4))
def test_soft_lexicon_and_word_types_match_brute_force(seed, monkeypatch):
    rng = random.Random(seed)
    # Two characters beyond the Basic Multilingual Plane: single-character words
    # there are searched, not looked up in the direct table.
    alphabet = "北京大学生活动中心人民银行𠀀𠮷"
    words = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))): None for _ in range(50)}
    words.update({"北京": None, "北京大学": None, "大学生": None, "学": None})
    words = {w: (rng.choice([0.0, 0.5, 1.0, 7.0]), rng.randint(0, 4)) for w in words}
    lexicon = _weighted_lexicon(words)
    texts, padded, lengths = random_batch(rng, alphabet)
    vectors = torch.randn(len(texts), padded.shape[1], 3, generator=torch.Generator().manual_seed(seed))
    rows = lexicon.matches(padded, lengths)
    pooled = lexicon.pooled(rows, vectors)  # with gradients: tensor ops
    with torch.no_grad():  # the compiled kernel: the same means
        assert lexicon._pooled_compiled(rows, vectors) is not None
        torch.testing.assert_close(lexicon.pooled(rows, vectors), pooled, atol=1e-5, rtol=1e-5)
        # Without the kernel, no gradient: tensor ops summing into slices in place.
        monkeypatch.setattr(lexicon, "_pooled_compiled", lambda rows, vectors: None)
        torch.testing.assert_close(lexicon.pooled(rows, vectors), pooled, atol=1e-5, rtol=1e-5)
        monkeypatch.undo()
    pos = lexicon.pos_flags(rows, padded.shape)
    assert pooled.shape == (len(texts), padded.shape[1], 12) and pos.shape == (len(texts), padded.shape[1], 8)
    for row, text in enumerate(texts):
        expected = _pooled_brute_force(text, words, vectors[row, : len(text)], 6)
        assert torch.allclose(pooled[row, : len(text)], expected, atol=1e-5), text
        assert torch.equal(pos[row, : len(text)], _pos_brute_force(text, words, 6)), text
        # Nothing is matched across the end of a sequence into its padding.
        assert (pos[row, len(text) :] == 0).all() and (pooled[row, len(text) :] == 0).all()
    # Gradients reach the character vectors through the word vectors.
    vectors.requires_grad_(True)
    lexicon.pooled(lexicon.matches(padded, lengths), vectors).sum().backward()
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0


def test_lexicon_entries_and_table(tmp_path):
    path = tmp_path / "dict.txt"
    path.write_text("北京 100 ns\nAT&T 3 nz\nat&t 9 n\n张三 5 nrt\n\n", encoding="utf8")
    entries = load_lexicon(str(path))
    assert entries.words == ["北京", "AT&T", "at&t", "张三"] and entries.tags == ["ns", "nz", "n", "nrt"]
    table = build_lexicon_table(entries, 6)
    # AT&T and at&t are one word after normalization: the larger count (9) and its type (n: 0) win.
    assert len(table.keys) == 3 and list(table.keys) == sorted(table.keys)
    by_weight = sorted(zip(table.weights.tolist(), table.pos.tolist()))
    expected = sorted([(math.log1p(100), 2), (math.log1p(9), 0), (math.log1p(5), 1)])
    assert [w for w, _ in by_weight] == pytest.approx([w for w, _ in expected])
    assert [g for _, g in by_weight] == [g for _, g in expected]
    path.write_text("北京 100 ns\n大学 many n\n", encoding="utf8")
    with pytest.raises(ValueError, match=r"dict.txt, line 2: the count 'many' of '大学'"):
        load_lexicon(str(path))
    # Words without counts: weight log(2) each, no types.
    path.write_text("北京\n大学\n", encoding="utf8")
    table = build_lexicon_table(load_lexicon(str(path)), 6)
    assert table.weights.tolist() == pytest.approx([math.log(2)] * 2) and table.pos.tolist() == [0, 0]


def test_matching_without_numba_falls_back_to_tensor_ops(monkeypatch):
    """Where numba cannot be imported, one warning, and the same flags from tensor ops."""
    import sys

    from spacy_bilstm_crf.network import kernels

    keys = word_keys([_encode(w) for w in ["北京", "大学", "北京大学", "𠮷"]], 6)
    lexicon = LexiconFeatures(len(keys))
    lexicon.set_keys(keys)
    text = torch.stack([_encode("北京大学𠮷京"), _encode("学大京北𠮷𠮷")])
    lengths = torch.tensor([6, 4])
    expected = lexicon(text, lengths)
    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_FAILED", {})
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    with pytest.warns(UserWarning, match="Compiled lexicon matching unavailable"):
        assert torch.equal(lexicon(text, lengths), expected)
    assert lexicon._matches_compiled(text, lengths) is None


@pytest.mark.parametrize("seed", range(3))
def test_typed_soft_lexicon_matches_brute_force(seed):
    """Each B/M/E/S set split by word type: per (set, type), the weighted mean of its
    words' vectors; the types' weighted means together give the untyped set's."""
    rng = random.Random(seed)
    alphabet = "北京大学生活动中心人民银行𠀀"
    words = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))): None for _ in range(50)}
    words.update({"北京": None, "北京大学": None, "大学生": None, "学": None})
    words = {w: (rng.choice([0.0, 0.5, 1.0, 7.0]), rng.randint(0, 4)) for w in words}
    # Two words of two types that begin at the first text's first character: one B set, split.
    words.update({"北京": (1.0, 2), "北京大学": (2.0, 3)})
    lexicon = _weighted_lexicon(words)
    texts, padded, lengths = random_batch(rng, alphabet)
    vectors = torch.randn(len(texts), padded.shape[1], 3, generator=torch.Generator().manual_seed(seed))
    rows = lexicon.matches(padded, lengths)
    typed = lexicon.pooled_typed(rows, vectors)
    assert typed.shape == (len(texts), padded.shape[1], 4 * 5 * 3)
    for row, text in enumerate(texts):
        expected = _pooled_brute_force(text, words, vectors[row, : len(text)], 6, n_types=5)
        assert torch.allclose(typed[row, : len(text)], expected, atol=1e-5), text
        assert (typed[row, len(text) :] == 0).all()
    # The first character's B set holds a place and an organization apart.
    b_set = typed.reshape(len(texts), padded.shape[1], 4, 5, 3)[0, 0, 0]
    assert b_set[2].abs().sum() > 0 and b_set[3].abs().sum() > 0
    # Gradients reach the character vectors.
    vectors.requires_grad_(True)
    lexicon.pooled_typed(lexicon.matches(padded, lengths), vectors).sum().backward()
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0


def test_typed_soft_lexicon_of_no_match_is_zero():
    lexicon = _weighted_lexicon({"北京": (1.0, 2)})
    padded = torch.tensor([[ord("上"), ord("海")]])
    rows = lexicon.matches(padded, torch.tensor([2]))
    assert torch.equal(lexicon.pooled_typed(rows, torch.ones(1, 2, 3)), torch.zeros(1, 2, 60))


def test_pipeline_with_typed_sets_trains_saves_and_exports(tmp_path):
    """A pipeline with the typed SoftLexicon sets: the projection reads 20 sets, it learns
    the training sentences, keeps its entities through a save and load and a torch
    export, and the ONNX export refuses it by name."""
    import spacy

    from spacy_bilstm_crf.component.architectures import get_torch_module
    from spacy_bilstm_crf.serving.deploy import export_pipeline
    from spacy_bilstm_crf.serving.onnx_graph import check_exportable
    from spacy_bilstm_crf.serving.tagger import Tagger

    from .conftest import SMALL_MODEL, TRAIN_DATA, train_small

    model = dict(SMALL_MODEL, lexicon_dim=8, lexicon_pos=True, lexicon_typed_sets=True)
    nlp = train_small(model=model)
    network = get_torch_module(nlp.get_pipe("bilstm_crf_ner").model)
    assert network.lexicon_project.in_features == 4 * 5 * model["char_dim"]
    texts = [text for text, _ in TRAIN_DATA]
    found = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    assert found == [sorted(ents) for _, ents in TRAIN_DATA]
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in loaded.pipe(texts)] == found
    export_pipeline(loaded, tmp_path / "export")
    assert Tagger.load(tmp_path / "export").batch(texts) == found
    with pytest.raises(NotImplementedError, match="lexicon_typed_sets"):
        check_exportable(network)
