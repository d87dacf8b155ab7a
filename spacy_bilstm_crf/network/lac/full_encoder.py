"""LAC-full's network in torch: ``LACEncoder``'s layers with LAC-full's table, output and CRF sizes.

LAC-full has LAC-small's architecture (2 × Paddle BiGRU(128) over 128-wide
embeddings, a linear output, a CRF) with a larger table (58,224 rows: characters
and words) and 49 tags. Its inputs are ids of a mixed sequence
(``segmenter.mixed_sequence``), so :meth:`LACEncoder.encode_layers` and
``decode`` apply; ``char_ids`` and ``forward`` (LAC-small's code point lookup) do not.
"""
import numpy
import torch
from torch import nn

from ..subnormals import zero_subnormals
from .encoder import EMBED_DIM, HIDDEN, LACEncoder
from .sdist import LACFullFiles


def _tensor(array: numpy.ndarray) -> torch.Tensor:
    return torch.from_numpy(numpy.ascontiguousarray(array, dtype="float32"))


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
    with torch.no_grad():
        encoder.embed.weight.copy_(_tensor(tensors["word_emb"]))
        # The same layout as LAC-small (assets.load_lac_encoder): fc_n/gru_n in creation
        # order, layer 1 forward, reverse, layer 2 forward, reverse.
        for layer_index, layer in enumerate((encoder.layer1, encoder.layer2)):
            for direction in range(2):
                n = 2 * layer_index + direction
                gru_w = _tensor(tensors[f"gru_{n}.w_0"]).reshape(-1)
                layer.in_weight[direction].copy_(_tensor(tensors[f"fc_{n}.w_0"]))
                layer.in_bias[direction].copy_(_tensor(tensors[f"fc_{n}.b_0"]) + _tensor(tensors[f"gru_{n}.b_0"])[0])
                # The first 2·H·H floats are [H, 2H] (update, reset), the next H·H the candidate's [H, H].
                split = 2 * HIDDEN * HIDDEN
                layer.gate_weight[direction].copy_(gru_w[:split].reshape(HIDDEN, 2 * HIDDEN))
                layer.cand_weight[direction].copy_(gru_w[split:].reshape(HIDDEN, HIDDEN))
        encoder.output.weight.copy_(_tensor(tensors["fc_4.w_0"]).T)
        encoder.output.bias.copy_(_tensor(tensors["fc_4.b_0"]))
        encoder.transitions.copy_(_tensor(tensors["crfw"]))
    zero_subnormals(encoder)
    return encoder.eval()
