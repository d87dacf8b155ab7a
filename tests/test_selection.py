"""Ranking and filtering a pool (``labelling/selection.py``), on hand-made measures."""
import pytest

from spacy_bilstm_crf.labelling.selection import NearDuplicates, PoolRecord, rank, record_kind, select


def _pool(values, kinds=None, texts=None):
    kinds = kinds or ["x"] * len(values)
    texts = texts or [f"第{i}句话说的是完全不同的事情{i * 7919}" for i in range(len(values))]
    return [PoolRecord(t, {"entity_errors": v, "tag_errors": v, "best_path": min(v, 1.0)}, k) for t, v, k in zip(texts, values, kinds)]


def test_most_uncertain_first():
    pool = _pool([0.1, 2.0, 0.5, 1.0])
    assert rank(pool, "entity_errors") == [1, 3, 2, 0]
    assert select(pool, 2, "entity_errors", max_share=1.0).chosen == [1, 3]


def test_per_char_ranks_by_the_measure_per_character():
    pool = [PoolRecord("短句", {"entity_errors": 1.0}), PoolRecord("一" * 40, {"entity_errors": 2.0})]
    assert rank(pool, "entity_errors") == [1, 0]
    assert rank(pool, "entity_errors", per_char=True) == [0, 1]


def test_random_is_reproducible_and_depends_on_the_seed():
    pool = _pool([0.0] * 50)
    assert rank(pool, "random", seed=3) == rank(pool, "random", seed=3)
    assert rank(pool, "random", seed=3) != rank(pool, "random", seed=4)
    assert sorted(rank(pool, "random", seed=3)) == list(range(50))


def test_a_kind_gets_at_most_its_share_while_others_are_left():
    pool = _pool([5, 4, 3, 2, 1, 0.5], kinds=["a", "a", "a", "a", "b", "b"])
    chosen = select(pool, 4, "entity_errors", max_share=0.5)
    assert chosen.chosen == [0, 1, 4, 5]
    assert chosen.kinds == {"a": 2, "b": 2} and chosen.capped == 2


def test_the_batch_is_filled_when_the_other_kinds_run_out():
    pool = _pool([5, 4, 3, 1], kinds=["a", "a", "a", "b"])
    chosen = select(pool, 4, "entity_errors", max_share=0.25)
    assert chosen.chosen == [0, 3, 1, 2] and chosen.capped == 0


def test_near_duplicates_are_skipped_and_counted_once():
    texts = ["上海交通大学在闵行区东川路上", "北京大学位于北京市海淀区颐和园路", "北京大学位于北京市海淀区颐和园路。"]
    pool = _pool([3.0, 2.0, 1.0], kinds=["a", "a", "b"], texts=texts)
    # Record 1 is passed over for its kind's share, then record 2, its near-duplicate,
    # is chosen: when the batch is filled, record 1 is a duplicate, counted as one only.
    chosen = select(pool, 3, "entity_errors", max_share=0.34)
    assert chosen.chosen == [0, 2]
    assert (chosen.duplicates, chosen.capped) == (1, 0)
    plain = select(_pool([3.0, 2.0], texts=texts[1:]), 2, "entity_errors", max_share=1.0)
    assert (plain.chosen, plain.duplicates) == ([0], 1)


def test_texts_already_labelled_are_not_chosen_again():
    texts = ["杭州西湖风景名胜区的游客很多", "深圳腾讯公司发布了新的游戏产品"]
    pool = _pool([2.0, 1.0], texts=texts)
    chosen = select(pool, 2, "entity_errors", max_share=1.0, labelled=["杭州西湖风景名胜区的游客很多！"])
    assert chosen.chosen == [1] and chosen.duplicates == 1


def test_near_duplicate_threshold():
    seen = NearDuplicates(0.8)
    seen.add("今天天气很好我们去公园散步吧")
    assert seen.seen("今天天气很好，我们去公园散步吧！")  # same after normalization
    assert seen.seen("今天天气很好我们去公园散步")  # most n-grams shared
    assert not seen.seen("明天会下雨我们在家里看书吧")
    with pytest.raises(ValueError, match="threshold"):
        NearDuplicates(0.0)


def test_record_kind_is_the_label_of_the_least_certain_entity():
    assert record_kind(["name", "company"], [0.9, 0.4]) == "company"
    assert record_kind([], []) == "(none)"


def test_a_measure_missing_from_the_pool_is_an_error():
    with pytest.raises(ValueError, match="uncertainty on"):
        rank([PoolRecord("文本")], "entity_errors")
    with pytest.raises(ValueError, match="Unknown strategy"):
        rank([PoolRecord("文本")], "entropy")
