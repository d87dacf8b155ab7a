"""Vectorized lexicon matching against a brute-force reference."""
import random
import warnings

import pytest
import torch

from spacy_bilstm_crf.lexicon import LexiconFeatures, load_word_list, word_keys


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
    alphabet = "北京大学生活动中心人民银行"
    words = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) for _ in range(60)}
    words |= {"北京", "北京大学", "大学生", "学生", "人民银行", "中心"}
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 15))) for _ in range(6)]
    texts[0] = "北京大学生活动中心"
    lexicon = LexiconFeatures(len(word_keys([_encode(w) for w in words], 6)), max_len=6)
    lexicon.set_keys(word_keys([_encode(w) for w in words], 6))
    lengths = torch.tensor([len(t) for t in texts])
    padded = torch.zeros(len(texts), max(lengths.max().item(), 1), dtype=torch.long)
    for row, text in enumerate(texts):
        padded[row, : len(text)] = _encode(text)
    flags = lexicon(padded, lengths)
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
