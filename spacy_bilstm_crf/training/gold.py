"""Gold tags for training: an example's entities as tag ids over its characters.

``missing_tokens`` finds the tokens whose gold annotation is missing; their
characters get tag -1, which the CRF marginalizes over (every tagging consistent with
the known tokens counts). Used by the component's ``update`` and ``initialize``.
"""
from typing import List, Optional, Sequence, Tuple

import numpy
from spacy.attrs import ENT_IOB, IDX
from spacy.training import Example

from ..features.chars import doc_chars
from ..network.tags import TagScheme


def gold_tags(example: Example, scheme: TagScheme, labels: Sequence[str], name: str) -> numpy.ndarray:
    """Gold entity spans of an example as tag ids over the characters of its predicted
    tokens; -1 on the characters of tokens whose annotation is missing.
    """
    codepoints, spans = gold_char_spans(example, labels, name)
    tags = scheme.spans_to_tags(len(codepoints), spans)
    missing = missing_tokens(example)
    if missing is not None:
        chars = doc_chars(example.predicted)
        tags[chars.token_mask_to_chars(missing) & (tags == 0)] = -1
    return tags

def gold_char_spans(
    example: Example, labels: Sequence[str], name: str
) -> Tuple[numpy.ndarray, List[Tuple[int, int, int]]]:
    """RETURNS (Tuple[numpy.ndarray, List[Tuple[int, int, int]]]): The code points of an
        example's predicted doc as the network reads them, and its gold entities as
        character spans ``(start, end, label index)``.
    """
    chars = doc_chars(example.predicted)
    index = {label: i for i, label in enumerate(labels)}
    spans = example.get_aligned_spans_y2x(example.reference.ents, allow_overlap=False)
    triples = []
    for span in spans:
        if span.label_ not in index:
            raise ValueError(
                f"Entity label '{span.label_}' in '{example.reference.text[:50]}' is not "
                f"one of the labels of '{name}': {list(labels)}."
            )
        triples.append((span.start, span.end, index[span.label_]))
    return chars.codepoints, chars.token_spans_to_chars(triples)


def missing_tokens(example: Example) -> Optional[numpy.ndarray]:
    """RETURNS (Optional[numpy.ndarray]): Bool per predicted token, True where the gold
        entity annotation is missing (every aligned reference token has ``ent_iob == 0``);
        None when nothing is missing.
    """
    iob = example.reference.to_array(ENT_IOB).reshape(-1)
    if not (iob == 0).any():
        return None
    predicted = example.predicted
    if len(predicted) == len(example.reference) and numpy.array_equal(
        predicted.to_array([IDX]), example.reference.to_array([IDX])
    ):
        return iob == 0
    x2y = example.alignment.x2y
    lengths = numpy.asarray(x2y.lengths)
    owners = numpy.repeat(numpy.arange(len(predicted)), lengths)
    missing_refs = (iob == 0)[numpy.asarray(x2y.data).ravel()]
    counts = numpy.bincount(owners, weights=missing_refs, minlength=len(predicted))
    return (lengths > 0) & (counts == lengths)
