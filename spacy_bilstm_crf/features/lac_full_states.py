"""LAC-full's contextual states as character features: a frozen upstream encoder.

Baidu's LAC 2.1.2 (Apache-2.0; ``network/lac/``) reads a text as its own segmenter
cuts it: each word of its vocabulary one position, every other character a position
of its own (``segmenter.mixed_sequence``). Each character here gets the states of
its position (the top BiGRU layer's, or both layers') and its place in it
(begin, middle, end of a word, or a single character, one-hot), so the tagger
sees what LAC-full, trained on far more text than any NER corpus, makes of the
words around it.

The layer is frozen: LAC-full's weights are not trained, no gradient flows back.
At ``initialize`` it reads the sdist (``"lac"`` fetches it; or a path); from then on
everything it needs (the 58,224-row table in float16, the BiGRU weights, the
segmenter's dictionary and the vocabulary) is an attribute of the thinc model,
serialized with the pipeline: loading a trained pipeline never needs the sdist.
"""
import io
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy
import srsly
import torch
from spacy.attrs import IDX, LENGTH
from spacy.tokens import Doc
from thinc.api import Model
from thinc.model import deserialize_attr, serialize_attr
from thinc.types import Floats2d

from ..network.lac.fetch import resolve_lac_sdist
from ..network.lac.full_encoder import LACFullStates, load_lac_full_encoder
from ..network.lac.sdist import read_lac_full
from ..network.lac.segmenter import UnigramSegmenter, mixed_sequence
from ..network.lac.word_vectors import LACVocab

N_PLACES = 4  # BEGIN, MIDDLE, END, SINGLE (segmenter.py)
# Longest run of positions encoded as one sequence: a long text is cut into rows of
# this many (LAC reads sentences), so memory and the recurrence stay bounded.
MAX_POSITIONS = 256
LAC_FULL_LAYER = "lac_full_states"  # the thinc layer's name


class LACFullEncoder:
    """LAC-full's network, segmenter and vocabulary, or nothing before ``initialize``.

    The value of the layer's ``lac_full`` attribute; thinc serializes it with
    :meth:`to_bytes` (registered below), so it travels with the pipeline.
    """

    def __init__(self) -> None:
        self.states: Optional[LACFullStates] = None
        self.segmenter: Optional[UnigramSegmenter] = None
        self.vocab: Optional[LACVocab] = None
        self._seg_counts: Dict[str, int] = {}

    @property
    def ready(self) -> bool:
        """RETURNS (bool): Whether the network is loaded."""
        return self.states is not None

    def load_sdist(self, source: str) -> None:
        """Read the network, the segmenter's dictionary and the vocabulary from the sdist.

        source (str): ``"lac"`` (fetched into the cache folder) or the path of ``LAC-2.1.2.tar.gz``.
        """
        files = read_lac_full(resolve_lac_sdist(source))
        self._set(LACFullStates.from_encoder(load_lac_full_encoder(files)), files.seg_counts, LACVocab.from_files(files))

    def _set(self, states: LACFullStates, seg_counts: Dict[str, int], vocab: LACVocab) -> None:
        self.states = states
        self._seg_counts = dict(seg_counts)
        self.segmenter = UnigramSegmenter(self._seg_counts, "lac")
        self.vocab = vocab

    def to_bytes(self) -> bytes:
        """RETURNS (bytes): The weights (the table in float16), dictionary and vocabulary; empty before loading."""
        if self.states is None or self.vocab is None:
            return b""
        weights = {
            name: tensor.half() if name == "embed.weight" else tensor
            for name, tensor in self.states.state_dict().items()
        }
        buffer = io.BytesIO()
        torch.save(weights, buffer)
        return srsly.msgpack_dumps(
            {
                "weights": buffer.getvalue(),
                "seg_counts": self._seg_counts,
                "vocab": dict(self.vocab.ids),
                "q2b": dict(self.vocab.q2b),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "LACFullEncoder":
        """RETURNS (LACFullEncoder): The encoder written by :meth:`to_bytes`."""
        encoder = cls()
        if not data:
            return encoder
        msg = srsly.msgpack_loads(data)
        weights = torch.load(io.BytesIO(msg["weights"]), map_location="cpu", weights_only=True)
        states = LACFullStates(int(weights["embed.weight"].shape[0]))
        states.load_state_dict({name: tensor.float() for name, tensor in weights.items()})
        encoder._set(states, msg["seg_counts"], LACVocab(msg["vocab"], msg["q2b"]))
        return encoder

    def char_vectors(self, texts: Sequence[str], layers: int) -> List[numpy.ndarray]:
        """Each character's states and place, per text.

        texts (Sequence[str]): The texts.
        layers (int): 1: the top BiGRU layer's states (256); 2: both layers' (512).
        RETURNS (List[numpy.ndarray]): Float32 (len(text), layers * 256 + 4) per text.
        """
        if self.states is None or self.segmenter is None or self.vocab is None:
            raise ValueError("LAC-full's states are not initialized: call nlp.initialize() first.")
        width = layers * LACFullStates.output_dim
        sequences = [mixed_sequence(text, self.segmenter, self.vocab) for text in texts]
        # Rows of at most MAX_POSITIONS positions: (text index, first position, ids).
        rows: List[Tuple[int, int, List[int]]] = []
        for index, seq in enumerate(sequences):
            for start in range(0, len(seq.ids), MAX_POSITIONS):
                rows.append((index, start, seq.ids[start : start + MAX_POSITIONS]))
        position_states = [numpy.zeros((len(seq.ids), width), dtype="float32") for seq in sequences]
        if rows:
            lengths = torch.tensor([len(ids) for _, _, ids in rows], dtype=torch.long)
            padded = torch.zeros((len(rows), int(lengths.max())), dtype=torch.long)
            for row, (_, _, ids) in enumerate(rows):
                padded[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            first, second = self.states(padded, lengths)
            out = (second if layers == 1 else torch.cat([first, second], dim=-1)).numpy()
            for row, (index, start, ids) in enumerate(rows):
                position_states[index][start : start + len(ids)] = out[row, : len(ids)]
        vectors = []
        for seq, states in zip(sequences, position_states):
            places = numpy.eye(N_PLACES, dtype="float32")[numpy.asarray(seq.char_place, dtype="int64")]
            chars = states[numpy.asarray(seq.char_position, dtype="int64")]
            vectors.append(numpy.concatenate([chars, places.reshape(len(chars), N_PLACES)], axis=1))
        return vectors


@serialize_attr.register(LACFullEncoder)
def _serialize_encoder(_: LACFullEncoder, value: LACFullEncoder, name: str, model: Model) -> bytes:
    return value.to_bytes()


@deserialize_attr.register(LACFullEncoder)
def _deserialize_encoder(_: LACFullEncoder, value: bytes, name: str, model: Model) -> LACFullEncoder:
    return LACFullEncoder.from_bytes(value)


def token_means(char_vectors: numpy.ndarray, doc: Doc) -> numpy.ndarray:
    """Each token's mean character vector (a token of the character segmenter is one
    character). char_vectors (numpy.ndarray): (len(doc.text), width).
    RETURNS (numpy.ndarray): Float32 (len(doc), width).
    """
    # One array call: a Python loop over Token objects took a sixth of the prediction time.
    starts, lengths = doc.to_array([IDX, LENGTH]).astype("int64").reshape(len(doc), 2).T
    ends = starts + lengths
    if len(doc) == len(char_vectors) and bool((lengths == 1).all()):
        return char_vectors  # the character segmenter on text without spaces: one token a character
    if len(doc) and bool((lengths == 1).all()):
        return char_vectors[starts]
    totals = numpy.concatenate([numpy.zeros((1, char_vectors.shape[1]), dtype="float64"), char_vectors.cumsum(axis=0)])
    sizes = numpy.maximum(ends - starts, 1)[:, None]
    return ((totals[ends] - totals[starts]) / sizes).astype("float32")


def build_lac_full_states(source: str = "lac", layers: int = 1) -> Model[List[Doc], List[Floats2d]]:
    """LAC-full's frozen contextual states as token vectors (the upstream encoder of
    ``BiLSTMCRF`` with ``lac_full_states``).

    source (str): ``"lac"`` (the sdist fetched from the package index into a cache
        folder) or the path of ``LAC-2.1.2.tar.gz``; read at ``initialize`` only.
    layers (int): 1: the top BiGRU layer's states; 2: both layers'.
    RETURNS (Model[List[Doc], List[Floats2d]]): Float (n_tokens, layers * 256 + 4) per doc.
    """
    if layers not in (1, 2):
        raise ValueError(f"LAC-full's states: layers must be 1 or 2, got {layers}")
    return Model(
        LAC_FULL_LAYER,
        _forward,
        init=_init,
        dims={"nO": layers * LACFullStates.output_dim + N_PLACES},
        attrs={"source": source, "layers": layers, "lac_full": LACFullEncoder()},
    )


def _init(model: Model, X: Any = None, Y: Any = None) -> Model:
    model.attrs["lac_full"].load_sdist(model.attrs["source"])
    return model


def _forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    encoder: LACFullEncoder = model.attrs["lac_full"]
    chars = encoder.char_vectors([doc.text for doc in docs], int(model.attrs["layers"]))
    vectors = [model.ops.asarray2f(token_means(c, doc)) for c, doc in zip(chars, docs)]

    def backprop(d_vectors: List[Floats2d]) -> List[Doc]:
        return []  # frozen: nothing to train, nothing upstream

    return vectors, backprop
