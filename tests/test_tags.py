"""Tag schemes: inventory, transition rules, spans ⇄ tags."""
import itertools
import random

import numpy
import pytest

from spacy_bilstm_crf.network.tags import TagScheme


def test_bioes_inventory_for_cluener_has_41_tags():
    labels = ["address", "book", "company", "game", "government",
              "movie", "name", "organization", "position", "scene"]  # fmt: skip
    scheme = TagScheme(labels)
    assert len(scheme) == 41
    assert scheme.tags[:5] == ["O", "B-address", "I-address", "E-address", "S-address"]
    assert len(TagScheme(labels, "BIO")) == 21


@pytest.mark.parametrize("name", ["BIOES", "BIO"])
def test_transition_rules_accept_exactly_the_well_formed_sequences(name):
    scheme = TagScheme(["A", "B"], name)

    def well_formed(tags):
        """Reference: decode by the scheme's textbook definition."""
        strings = [scheme.tags[t] for t in tags]
        open_label = None
        for i, tag in enumerate(strings):
            prefix, _, label = tag.partition("-")
            if name == "BIOES":
                if prefix in ("O", "B", "S") and open_label is not None:
                    return False
                if prefix in ("I", "E") and open_label != label:
                    return False
                open_label = label if prefix in ("B", "I") else None
            else:
                if prefix == "I" and open_label != label:
                    return False
                open_label = label if prefix in ("B", "I") else None
        return open_label is None or name == "BIO"

    for length in range(0, 4):
        for tags in itertools.product(range(len(scheme)), repeat=length):
            assert scheme.is_valid(list(tags)) == well_formed(tags), [scheme.tags[t] for t in tags]


@pytest.mark.parametrize("name", ["BIOES", "BIO"])
def test_spans_round_trip(name):
    scheme = TagScheme(["A", "B", "C"], name)
    rng = random.Random(0)
    for _ in range(200):
        length = rng.randint(0, 20)
        spans, position = [], 0
        while position < length:
            position += rng.randint(0, 3)
            end = position + rng.randint(1, 4)
            if end > length:
                break
            spans.append((position, end, rng.randrange(3)))
            position = end
        tags = scheme.spans_to_tags(length, spans)
        assert scheme.is_valid(tags.tolist())
        assert scheme.tags_to_spans(tags) == spans


def test_spans_to_tags_rejects_overlap_and_out_of_range():
    scheme = TagScheme(["A"])
    with pytest.raises(ValueError, match="overlaps"):
        scheme.spans_to_tags(5, [(0, 3, 0), (2, 4, 0)])
    with pytest.raises(ValueError, match="out of range"):
        scheme.spans_to_tags(3, [(1, 4, 0)])
    assert scheme.tags_to_spans(numpy.zeros(0, dtype="int64")) == []


def test_unknown_scheme_and_duplicate_labels():
    with pytest.raises(ValueError, match="Unknown tag scheme"):
        TagScheme(["A"], "BILOU")
    with pytest.raises(ValueError, match="Duplicate"):
        TagScheme(["A", "A"])
