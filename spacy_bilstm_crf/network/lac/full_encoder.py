"""LAC-full's network in torch: ``LACEncoder``'s layers with LAC-full's table, output and CRF sizes.

LAC-full has LAC-small's architecture (2 × Paddle BiGRU(128) over 128-wide
embeddings, a linear output, a CRF) with a larger table (58,224 rows: characters
and words) and 49 tags. Its inputs are ids of a mixed sequence
(``segmenter.mixed_sequence``), so :meth:`LACEncoder.encode_layers` and
``decode`` apply; ``char_ids`` and ``forward`` (LAC-small's code point lookup) do not.
"""
from typing import Final, Tuple

import numpy
import torch
from torch import Tensor, nn

from ..crf import lengths_to_mask
from ..rnn_kernels import paddle_bigru
from .assets import fill_encoder
from .encoder import EMBED_DIM, HIDDEN, LACEncoder, PaddleBiGRU
from .sdist import LACFullFiles

FULL_VOCAB_SIZE = 58224  # LAC-full's word_emb rows: characters and words


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


class LACFullStates(nn.Module):
    """LAC-full's embedding table and two BiGRU layers, without its output layer and CRF:
    the contextual states of mixed word/character sequences, as features for another network.

    vocab_size (int): Rows of LAC-full's embedding table.
    """

    output_dim: Final[int] = 2 * HIDDEN  # per layer

    def __init__(self, vocab_size: int = FULL_VOCAB_SIZE) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, EMBED_DIM)
        self.layer1 = PaddleBiGRU(EMBED_DIM)
        self.layer2 = PaddleBiGRU(2 * HIDDEN)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_encoder(cls, encoder: LACEncoder) -> "LACFullStates":
        """RETURNS (LACFullStates): The table and BiGRU layers of a LAC-full encoder (``load_lac_full_encoder``)."""
        states = cls(encoder.embed.num_embeddings)
        with torch.no_grad():
            states.embed.load_state_dict(encoder.embed.state_dict())
            states.layer1.load_state_dict(encoder.layer1.state_dict())
            states.layer2.load_state_dict(encoder.layer2.state_dict())
        return states

    def forward(self, ids: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """ids (Tensor): Long (batch, seq_len) mixed-sequence ids; lengths (Tensor): Long (batch,), each ≥ 1.

        RETURNS (Tuple[Tensor, Tensor]): Both layers' states, Float (batch, seq_len, 256)
            each; zero at padding.
        """
        with torch.no_grad():
            embedded = self.embed(ids).float()
            first = paddle_bigru(self.layer1, embedded, lengths) if ids.device.type == "cpu" else None
            if first is not None:
                second = paddle_bigru(self.layer2, first, lengths)
                assert second is not None
                return first, second
            first = self.layer1(embedded, lengths)
            second = self.layer2(first, lengths)
            mask = lengths_to_mask(lengths, ids.shape[1]).unsqueeze(-1)
            return first * mask, second * mask
