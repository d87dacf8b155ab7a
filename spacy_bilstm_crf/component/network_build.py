"""The network of a component being initialized: its tables from the data, then the torch module.

``initialize`` collects the labels, then ``build_network`` builds the character table
(characters seen at least ``min_char_count`` times), the lexicon's table (word list
and vectors; LAC-full's pretrained word vectors where the model asks for them), the
gazetteer's (from the training entities, in folds), the LAC encoder and LAC-full's
states layer (``lac_full_states``: its sdist read) when the model uses them, records the table sizes in the component's cfg (they are saved, and checked
on loading) and builds the torch module for them.
"""
from typing import TYPE_CHECKING, Callable, Iterable

import numpy
import torch
from spacy.training import Example

from ..features.gazetteer_table import build_gazetteer_table
from ..features.lac_full_states import LAC_FULL_LAYER
from ..features.lexicon_table import build_lexicon_table
from ..features.lexicon_vectors import LexiconVectors, build_lexicon_vectors
from ..network.codepoints import normalize_codepoints
from ..network.lac import load_lac_encoder
from ..network.lac.fetch import resolve_lac_sdist
from ..network.lac.sdist import read_lac_full
from ..network.lac.word_vectors import LACVocab
from ..network.lexicon import load_lexicon
from .architectures import build_torch_layer, doc_codepoints, tok2vec_layer

if TYPE_CHECKING:
    from ..pipe import BiLSTMCRFNER


def build_network(pipe: "BiLSTMCRFNER", get_examples: Callable[[], Iterable[Example]]) -> None:
    """Build the tables from the examples and the network for them, on ``pipe.model``.

    pipe (BiLSTMCRFNER): The component, its labels set.
    get_examples (Callable[[], Iterable[Example]]): The training examples.
    """
    codepoints = [doc_codepoints(eg.predicted) for eg in get_examples()]
    char_table = build_char_table(codepoints, int(pipe.cfg["min_char_count"]))
    lexicon = pipe.model.attrs.get("lexicon")
    table = None
    if lexicon is not None:
        table = build_lexicon_table(load_lexicon(lexicon), pipe.model.attrs["hyper"]["lexicon_max_len"])
    hyper = pipe.model.attrs["hyper"]
    uses_lac = hyper.get("lac_features") or pipe.model.attrs.get("lac_embeddings")
    pipe.cfg["n_chars"] = len(char_table)
    pipe.cfg["n_lexicon_keys"] = None if table is None else len(table.keys)
    vectors = None
    vectors_source = pipe.model.attrs.get("lexicon_vectors")
    if table is not None and vectors_source is not None:
        vectors = load_lexicon_vectors(vectors_source, table.keys, int(hyper["lexicon_max_len"]))
    pipe.cfg["n_lexicon_vectors"] = None if vectors is None else len(vectors.vectors)
    gazetteer = None
    if pipe.model.attrs.get("gazetteer"):
        gazetteer = build_gazetteer_table(
            (pipe._gold_char_spans(eg) for eg in get_examples()),
            len(pipe.labels),
            int(hyper["gazetteer_max_len"]),
            int(hyper["gazetteer_folds"]),
        )
    pipe.cfg["n_gazetteer_keys"] = None if gazetteer is None else len(gazetteer.keys)
    lac_full = tok2vec_layer(pipe.model)
    if lac_full is not None and lac_full.name == LAC_FULL_LAYER:
        lac_full.initialize()  # reads LAC-full's sdist: the upstream encoder of lac_full_states
    build_torch_layer(
        pipe.model,
        pipe.scheme,
        *pipe.table_sizes,
        char_table=char_table,
        lexicon_keys=None if table is None else table.keys,
        lexicon_weights=None if table is None else table.weights,
        lexicon_pos=None if table is None else table.pos,
        lexicon_vectors=vectors,
        gazetteer=gazetteer,
        lac=load_lac_encoder() if uses_lac else None,
    )


def load_lexicon_vectors(source: str, keys: numpy.ndarray, max_len: int) -> LexiconVectors:
    """LAC-full's word vectors for the lexicon keys it covers.

    source (str): ``"lac"`` (fetched from the package index into a cache folder) or
        the path of ``LAC-2.1.2.tar.gz``.
    keys (numpy.ndarray): The lexicon's sorted unique keys.
    max_len (int): The lexicon's longest word.
    RETURNS (LexiconVectors): The rows per key and the covered vectors.
    """
    files = read_lac_full(resolve_lac_sdist(source))
    return build_lexicon_vectors(keys, LACVocab.from_files(files), files.tensors["word_emb"], max_len)


def build_char_table(codepoints: Iterable[numpy.ndarray], min_count: int) -> numpy.ndarray:
    """Sorted unique normalized code points seen at least ``min_count`` times.

    codepoints (Iterable[numpy.ndarray]): Code points per doc.
    min_count (int): Minimum count to get an own embedding row.
    RETURNS (numpy.ndarray): Int64, sorted.
    """
    arrays = [c for c in codepoints if len(c)]
    if not arrays:
        return numpy.zeros(0, dtype="int64")
    normalized = normalize_codepoints(torch.as_tensor(numpy.concatenate(arrays))).numpy()
    values, counts = numpy.unique(normalized, return_counts=True)
    return values[counts >= max(min_count, 1)].astype("int64")
