"""LAC-full's network in torch: ``LACEncoder``'s layers with LAC-full's table, output and CRF sizes.

LAC-full has LAC-small's architecture (2 × Paddle BiGRU(128) over 128-wide
embeddings, a linear output, a CRF) with a larger table (58,224 rows: characters
and words) and 49 tags. Its inputs are ids of a mixed sequence
(``segmenter.mixed_sequence``), so :meth:`LACEncoder.encode_layers` and
``decode`` apply; ``char_ids`` and ``forward`` (LAC-small's code point lookup) do not.
"""
from typing import Tuple

import numpy
import torch
from torch import nn

from .assets import fill_encoder
from .encoder import EMBED_DIM, HIDDEN, LACEncoder
from .sdist import LACFullFiles


def load_lac_full_encoder(files: LACFullFiles) -> LACEncoder:
    """Build LAC-full's network from its files (``sdist.read_lac_full``: shapes already checked).

    RETURNS (LACEncoder): The network, in eval mode, with ``embed``, ``output`` and
        ``transitions`` of LAC-full's sizes.
    """
    tensors = files.tensors
    vocab_size, n_tags = tensors["word_emb"].shape[0], tensors["fc_4.b_0"].shape[0]
    encoder = LACEncoder()
    encoder.embed = nn.Embedding(vocab_size, EMBED_DIM)
    encoder.output = nn.Linear(2 * HIDDEN, n_tags)
    encoder.transitions = nn.Parameter(torch.zeros(n_tags + 2, n_tags))

    def tensor(name: str, shape: Tuple[int, ...]) -> torch.Tensor:
        array = tensors[name]
        if tuple(array.shape) != shape:
            raise ValueError(f"LAC-full's {name}: expected shape {shape}, found {tuple(array.shape)}")
        return torch.from_numpy(numpy.ascontiguousarray(array, dtype="float32"))

    fill_encoder(encoder, tensor)
    return encoder.eval()
