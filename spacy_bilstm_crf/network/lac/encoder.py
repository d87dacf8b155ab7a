"""LAC-small in torch: character embeddings → 2 × BiGRU (Paddle's ``dynamic_gru``) → tags.

Paddle's GRU is not ``torch.nn.GRU``: its reset gate applies to the previous
state *before* the recurrent matmul, ``c = tanh(x_c + (r ⊙ h) W_c)``, while torch
applies it after (``r ⊙ (h W_c + b)``). So the cell is written out here, both
directions of a layer run as one batched matmul per time step.
"""
from typing import Final, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..codepoints import normalize_codepoints
from ..recurrence import Projection, RaggedLayout, dense_projection
from ..rnn_kernels import paddle_bigru

VOCAB_SIZE = 20941  # LAC's word.dic ids 0..20940
OOV_ID = 20940
N_VOCAB_CHARS = 20935  # the single characters among them (the rest are OOV_* names)
EMBED_DIM = 128
HIDDEN = 128  # per direction
N_TAGS = 57


class PaddleBiGRU(nn.Module):
    """One bidirectional layer of Paddle's ``fc`` + ``dynamic_gru`` (origin_mode False).

    Per direction: gates ``x W_in + b`` in the order update, reset, candidate;
    ``u, r = σ(x_u,r + h W_ur)``, ``c = tanh(x_c + (r ⊙ h) W_c)``,
    ``h = (1 − u) ⊙ h + u ⊙ c``. The reverse direction reads each sequence from its
    last character; its states are returned at their own positions.

    input_dim (int): Width of the input.
    hidden (int): State width per direction.
    """

    hidden: Final[int]

    def __init__(self, input_dim: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.hidden = hidden
        # Index 0: forward direction, 1: reverse.
        self.in_weight = nn.Parameter(torch.zeros(2, input_dim, 3 * hidden))
        self.in_bias = nn.Parameter(torch.zeros(2, 3 * hidden))  # fc bias + GRU bias
        self.gate_weight = nn.Parameter(torch.zeros(2, hidden, 2 * hidden))
        self.cand_weight = nn.Parameter(torch.zeros(2, hidden, hidden))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x (Tensor): Float (batch, seq_len, input_dim); lengths (Tensor): Long (batch,).

        RETURNS (Tensor): Float (batch, seq_len, 2 * hidden): forward states, then reverse.
            Forward states past a sequence's length mean nothing; reverse ones are zero.
        """
        return self.time_major(x.transpose(0, 1), lengths).transpose(0, 1)

    def time_major(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``forward`` with time first: x (Tensor) Float (seq_len, batch, input_dim).

        RETURNS (Tensor): Float (seq_len, batch, 2 * hidden).
        """
        seq_len, batch, _ = x.shape
        hidden = self.hidden
        gates_in, cand_in, keep = self._step_inputs(x, lengths)
        h = x.new_zeros(2, batch, hidden)
        states: List[Tensor] = []
        for t in range(seq_len):
            gates = torch.sigmoid(torch.baddbmm(gates_in[t], h, self.gate_weight))
            update, reset = gates[:, :, :hidden], gates[:, :, hidden:]
            candidate = torch.tanh(torch.baddbmm(cand_in[t], reset * h, self.cand_weight))
            # (1 - u) h + u c, as Paddle's origin_mode False.
            h = torch.lerp(h, candidate, update) * keep[t]
            states.append(h)
        # No writes into a preallocated output: on the fine-tuning path each would
        # copy the whole gradient in the backward pass.
        out = torch.stack(states, dim=0)  # (seq_len, 2, batch, H)
        return torch.cat([out[:, 0], out[:, 1].flip(0)], dim=-1)

    def _step_inputs(self, x: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Each step's projected inputs and state mask, both directions stacked.

        x (Tensor): Float (seq_len, batch, input_dim).
        RETURNS (Tuple[Tensor, Tensor, Tensor]): gate inputs (seq_len, 2, batch, 2H),
            candidate inputs (seq_len, 2, batch, H), keep (seq_len, 2, batch, 1).
        """
        seq_len, batch, input_dim = x.shape
        hidden = self.hidden
        # Both directions' input projections (and biases) in one matmul over all
        # positions, columns ordered [gates fwd, gates rev, candidate fwd, candidate rev].
        weight = torch.cat(
            [self.in_weight[0, :, : 2 * hidden], self.in_weight[1, :, : 2 * hidden],
             self.in_weight[0, :, 2 * hidden :], self.in_weight[1, :, 2 * hidden :]], dim=1
        )  # fmt: skip
        bias = torch.cat(
            [self.in_bias[0, : 2 * hidden], self.in_bias[1, : 2 * hidden],
             self.in_bias[0, 2 * hidden :], self.in_bias[1, 2 * hidden :]]
        )  # fmt: skip
        proj = torch.addmm(bias, x.reshape(-1, input_dim), weight).reshape(seq_len, batch, 6 * hidden)
        # The reverse direction runs over the flipped time axis: at step t it reads
        # position seq_len - 1 - t. Its state is held at zero over a sequence's
        # padding, so it starts from zero at the sequence's own last character.
        # (seq_len, 2, batch, ·): each step reads one contiguous slice.
        gates_in = torch.stack([proj[:, :, : 2 * hidden], proj[:, :, 2 * hidden : 4 * hidden].flip(0)], dim=1)
        cand_in = torch.stack([proj[:, :, 4 * hidden : 5 * hidden], proj[:, :, 5 * hidden :].flip(0)], dim=1)
        positions = torch.arange(seq_len, device=x.device)
        inside = (positions[:, None] < lengths[None, :]).to(x.dtype)[:, :, None]  # (seq_len, batch, 1)
        keep = torch.stack([torch.ones_like(inside), inside.flip(0)], dim=1)  # (seq_len, 2, batch, 1)
        return gates_in, cand_in, keep

    @torch.jit.unused
    def time_major_scan(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``time_major`` for ``torch.export``: the same step inside ``scan`` (the Python
        loop over time would be unrolled at the example's length). Inference only.
        """
        from torch._higher_order_ops.scan import scan

        from .gru_op import onnx_layers_on, paddle_bigru

        if onnx_layers_on():  # one ONNX GRU (see ``gru_op.py``)
            return paddle_bigru(
                x, lengths.clamp_min(1), self.in_weight, self.in_bias, self.gate_weight, self.cand_weight
            )
        batch, hidden = x.shape[1], self.hidden
        gates_in, cand_in, keep = self._step_inputs(x, lengths)
        gate_weight, cand_weight = self.gate_weight, self.cand_weight

        def step(h: Tensor, xs: Tuple[Tensor, Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
            gate_step, cand_step, keep_step = xs
            gates = torch.sigmoid(torch.baddbmm(gate_step, h, gate_weight))
            update, reset = gates[:, :, :hidden], gates[:, :, hidden:]
            candidate = torch.tanh(torch.baddbmm(cand_step, reset * h, cand_weight))
            h = torch.lerp(h, candidate, update) * keep_step
            return h, h.clone()

        _, out = scan(step, x.new_zeros(2, batch, hidden), (gates_in, cand_in, keep), dim=0)
        return torch.cat([out[:, 0], out[:, 1].flip(0)], dim=-1)


# Rows of input projection computed at once in ``bigru_rows``.
ROWS_PER_BLOCK = 1024


def table_projection(
    layer: "PaddleBiGRU", vectors: Tensor, ids: Tensor, reverse_ids: Tensor, dtype: torch.dtype
) -> Projection:
    """The input projection of rows that are rows of a small table (the first layer:
    the embeddings of a batch's distinct characters, a few times fewer than its
    characters): the table is projected once, and each block gathers its rows.

    vectors (Tensor): Float (n_distinct, input_dim).
    ids, reverse_ids (Tensor): Long (n_rows,), each row's table row in each direction's
        reading order.
    """
    in_weight, in_bias = layer.in_weight.to(dtype), layer.in_bias.to(dtype)
    vectors = vectors.to(dtype)
    table = torch.stack([torch.addmm(in_bias[d], vectors, in_weight[d]) for d in range(2)])
    buffer = vectors.new_empty(2, 0, 3 * layer.hidden)

    def project(start: int, stop: int) -> Tensor:
        nonlocal buffer
        if stop - start > buffer.shape[1]:
            buffer = vectors.new_empty(2, stop - start, 3 * layer.hidden)
        projected = buffer[:, : stop - start]
        for direction, index in enumerate((ids, reverse_ids)):
            torch.index_select(table[direction], 0, index[start:stop], out=projected[direction])
        return projected

    return project


@torch.no_grad()
def bigru_rows(layer: PaddleBiGRU, project: Projection, layout: RaggedLayout, dtype: torch.dtype) -> Tensor:
    """``PaddleBiGRU.time_major`` over the real characters only, for predictions on
    the CPU (see ``recurrence.py``: sentences sorted by length, so the ones still
    running are a prefix at every step, for both directions).

    project (Projection): The layer's projected inputs (``recurrence.dense_projection``,
        :func:`table_projection`): (2, n, 3H) in the order update, reset, candidate,
        in ``dtype``.
    dtype (torch.dtype): The layer runs in it: products, gates and states (float32
        gates around bfloat16 products gain little: the conversion of each step's
        product costs as much as the product saves).
    RETURNS (Tensor): (2, n_rows, H) in ``dtype``, each direction's states in its
        reading order.
    """
    hidden = layer.hidden
    gate_weight, cand_weight = layer.gate_weight.to(dtype), layer.cand_weight.to(dtype)
    states = layer.gate_weight.new_empty(2, layout.n_rows, hidden, dtype=dtype)
    width = layout.step_sizes[0] if layout.step_sizes else 0
    previous = states.new_zeros(2, width, hidden)
    # The input projection runs a few steps at a time, so its output stays in cache.
    block = max(1, ROWS_PER_BLOCK // max(width, 1))
    sizes_all = layout.step_sizes
    start = 0
    for first in range(0, len(sizes_all), block):
        sizes = sizes_all[first : first + block]
        n_block = sum(sizes)
        projected = project(start, start + n_block)  # (2, n_block, 3H): update, reset, candidate
        offset = 0
        for size in sizes:
            step = projected[:, offset : offset + size]
            h = previous[:, :size]
            gates = torch.sigmoid(torch.baddbmm(step[:, :, : 2 * hidden], h, gate_weight))
            update, reset = gates[:, :, :hidden], gates[:, :, hidden:]
            candidate = torch.tanh(torch.baddbmm(step[:, :, 2 * hidden :], reset * h, cand_weight))
            out = states[:, start + offset : start + offset + size]
            torch.lerp(h, candidate, update, out=out)
            previous = out
            offset += size
        start += n_block
    return states


class LACEncoder(nn.Module):
    """Baidu's LAC-small lexical analyser: POS tags and PER/LOC/ORG/TIME, as B/I tags.

    Built empty; ``load_lac_encoder`` fills it from jieba's files. Takes raw code
    points; by default they are folded (full-width → half-width, capitals → small)
    before the lookup, which LAC itself (jieba's reader) does not do: on CLUENER dev
    it raises LAC's own PER precision/recall against ``name`` from 0.55/0.68 to
    0.63/0.76. Characters LAC lacks get its OOV row.

    vocab_chars (int): Number of single characters in LAC's vocabulary.
    """

    _oov_id: Final[int] = OOV_ID
    output_dim: Final[int] = 2 * HIDDEN  # width of the states ``forward`` returns

    def __init__(self, vocab_chars: int = N_VOCAB_CHARS) -> None:
        super().__init__()
        # Sorted code points of LAC's characters and the vocabulary id of each.
        self.register_buffer("vocab_codepoints", torch.full((vocab_chars,), -2, dtype=torch.long))
        self.register_buffer("vocab_ids", torch.full((vocab_chars,), OOV_ID, dtype=torch.long))
        self.embed = nn.Embedding(VOCAB_SIZE, EMBED_DIM)
        self.layer1 = PaddleBiGRU(EMBED_DIM)
        self.layer2 = PaddleBiGRU(2 * HIDDEN)
        self.output = nn.Linear(2 * HIDDEN, N_TAGS)
        # Paddle's crfw: row 0 start scores, row 1 end scores, then [from, to].
        self.transitions = nn.Parameter(torch.zeros(N_TAGS + 2, N_TAGS))

    def _lookup(self, cp: Tensor) -> Tensor:
        index = torch.searchsorted(self.vocab_codepoints, cp).clamp_max(len(self.vocab_codepoints) - 1)
        found = self.vocab_codepoints[index] == cp
        return torch.where(found, self.vocab_ids[index], torch.full_like(cp, self._oov_id))

    def char_ids(self, codepoints: Tensor, fold: bool = True) -> Tensor:
        """LAC vocabulary ids of raw code points (any shape).

        fold (bool): Fold full-width forms and capitals before the lookup (False: as
            jieba's LAC reader does).
        """
        return self._lookup(normalize_codepoints(codepoints) if fold else codepoints)

    def encode_ids(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """ids (Tensor): Long (batch, seq_len) vocabulary ids.

        RETURNS (Tensor): Float (batch, seq_len, 256): the second BiGRU layer's states.
        """
        return self.encode_layers(ids, lengths)[1]

    def encode_layers(self, ids: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """RETURNS (Tuple[Tensor, Tensor]): Both BiGRU layers' states, each Float
            (batch, seq_len, 256).
        """
        first = self.layer1.time_major(self.embed(ids.t()), lengths)
        second = self.layer2.time_major(first, lengths)
        return first.transpose(0, 1), second.transpose(0, 1)

    @torch.jit.unused
    def encode_layers_compiled(self, ids: Tensor, lengths: Tensor) -> Optional[Tuple[Tensor, Tensor]]:
        """``encode_layers`` for predictions on a few sentences on the CPU, in float32: each
        layer one compiled kernel (``rnn_kernels.paddle_bigru``); zero at padding. None
        when the kernel is unavailable.
        """
        first = paddle_bigru(self.layer1, self.embed(ids), lengths)
        if first is None:
            return None
        second = paddle_bigru(self.layer2, first, lengths)
        assert second is not None
        return first, second

    @torch.jit.unused
    def encode_layers_scan(self, ids: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """``encode_layers`` for ``torch.export`` (``PaddleBiGRU.time_major_scan``)."""
        first = self.layer1.time_major_scan(self.embed(ids.t()), lengths)
        second = self.layer2.time_major_scan(first, lengths)
        return first.transpose(0, 1), second.transpose(0, 1)

    @torch.jit.unused
    def encode_layers_ragged(
        self, ids: Tensor, lengths: Tensor, matmul_dtype: Optional[torch.dtype] = None, first_layer: bool = True
    ) -> Tuple[Optional[Tensor], Tensor]:
        """``encode_layers`` for predictions on the CPU: the real characters only
        (:meth:`encode_rows`); zero at padding. The same states up to float rounding.

        lengths (Tensor): Long (batch,), each at least 1.
        first_layer (bool): Return the first layer's states too (None otherwise: they
            are not padded when only the top layer is read).
        """
        batch, seq_len = ids.shape
        layout = RaggedLayout(lengths, seq_len)
        first, second = self.encode_rows(ids, layout, matmul_dtype)
        padded_first = layout.to_padded(first, batch, seq_len) if first_layer else None
        return padded_first, layout.to_padded(second, batch, seq_len)

    @torch.jit.unused
    def encode_rows(
        self, ids: Tensor, layout: RaggedLayout, matmul_dtype: Optional[torch.dtype] = None
    ) -> Tuple[Tensor, Tensor]:
        """Both BiGRU layers' states of the real characters, in ``layout``'s packed order
        (what ``recurrence.bilstm_rows`` reads as its inputs), for predictions on the CPU.

        ids (Tensor): Long (batch, seq_len) vocabulary ids.
        matmul_dtype (Optional[torch.dtype]): Run the layers in this dtype (see
            :func:`bigru_rows`); None: the embeddings' dtype.
        RETURNS (Tuple[Tensor, Tensor]): Float (n_rows, 256) each, in the embeddings' dtype.
        """
        dtype = self.embed.weight.dtype
        low = matmul_dtype if matmul_dtype is not None else dtype
        reverse_rows = layout.reverse_rows.to(ids.device)
        row_ids = ids.reshape(-1).index_select(0, layout.padded_rows.to(ids.device))
        # The first layer's inputs are embeddings: project each distinct character once.
        distinct, inverse = torch.unique(row_ids, return_inverse=True)
        project = table_projection(
            self.layer1, self.embed(distinct), inverse, inverse.index_select(0, reverse_rows), low
        )
        first = layout.joined(bigru_rows(self.layer1, project, layout, low))
        layer2 = self.layer2
        project = dense_projection(
            first, first.index_select(0, reverse_rows), list(layer2.in_weight.to(low)), list(layer2.in_bias.to(low))
        )
        second = layout.joined(bigru_rows(self.layer2, project, layout, low))
        return first.to(dtype), second.to(dtype)

    def forward(self, codepoints: Tensor, lengths: Tensor, fold: bool = True) -> Tensor:
        """codepoints (Tensor): Long (batch, seq_len) raw code points.

        RETURNS (Tensor): Float (batch, seq_len, 256) contextual character states.
        """
        return self.encode_ids(self.char_ids(codepoints, fold), lengths)

    def decode(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """Viterbi over LAC's own CRF weights.

        emissions (Tensor): Float (batch, seq_len, 57), from ``self.output``.
        RETURNS (Tensor): Long (batch, seq_len) tag ids; -1 at padding.
        """
        batch, seq_len, n_tags = emissions.shape
        start, end, trans = self.transitions[0], self.transitions[1], self.transitions[2:]
        score = start[None, :] + emissions[:, 0]
        history: List[Tensor] = []
        for t in range(1, seq_len):
            candidates = score[:, :, None] + trans[None, :, :]
            best, arg = candidates.max(dim=1)
            active = (t < lengths)[:, None]
            # Past a sequence's end the score is carried unchanged, the back-pointer is itself.
            score = torch.where(active, best + emissions[:, t], score)
            history.append(torch.where(active, arg, torch.arange(n_tags, device=arg.device)[None, :].expand_as(arg)))
        score = score + end[None, :]
        tag = score.argmax(dim=1)
        tags = [tag]
        for arg in reversed(history):
            tag = arg.gather(1, tag[:, None])[:, 0]
            tags.append(tag)
        tags.reverse()
        out = torch.stack(tags, dim=1)
        mask = torch.arange(seq_len, device=lengths.device)[None, :] < lengths[:, None]
        return torch.where(mask, out, torch.full_like(out, -1))
