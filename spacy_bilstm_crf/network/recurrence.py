"""A bidirectional LSTM for inference over ragged batches, without packing.

``nn.LSTM`` reads a ``PackedSequence`` through ATen's generic recurrence, one
input projection per step and per direction, and the packing and unpacking around
it copy the batch twice more. :func:`bilstm_rows` computes the same function with
the work arranged for a CPU:

- the sentences are sorted by length, longest first, so at every step the
  sentences still running are a prefix of the batch, for both directions (the
  reverse direction reads each sentence from its own last character);
- the input projections run a block of steps at a time, both directions
  together, over the real characters only (no padding); in the first layer,
  embedding lookups are folded into the projection (:class:`Lookup`), so a block
  is one ``embedding_bag`` over projected table rows;
- each step is one batched matmul for both directions and a few elementwise
  operations, written straight into the output buffer, whose previous rows are
  the next step's state.

The states come out for the real characters only, in that order, so what
follows the LSTM (normalization, output layer) skips the padding too. The result
equals ``nn.LSTM`` on the packed batch up to float rounding (tests compare them).
It takes no gradient: training keeps ``nn.LSTM``, whose backward is fused.

:func:`padded_bilstm` is the same function for ``torch.export``, which can keep
neither a packed batch nor a loop over data-dependent step sizes.
"""
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

# Rows of input projection computed at once (see ``_run_layer``).
_BLOCK_ROWS = 1024
# (start, stop) → the projected inputs of rows start:stop, both directions.
Projection = Callable[[int, int], Tensor]
# Dense first-layer inputs up to this width are summed by embedding_bag (see _FirstLayer).
_BAG_DENSE_MAX = 32


def reverse_index(lengths: Tensor, seq_len: int) -> Tensor:
    """Positions that reverse each sequence within its length; padding stays in place.

    RETURNS (Tensor): Long (batch, seq_len); applying it twice is the identity.
    """
    positions = torch.arange(seq_len, device=lengths.device)[None, :]
    flipped = lengths[:, None] - 1 - positions
    return torch.where(flipped >= 0, flipped, positions)


class RaggedLayout:
    """Where each character of a ragged batch goes in the time-major packed order.

    Packed row ``p`` holds character ``(batch_index[p], position[p])``; rows run
    step by step, and within a step over the sentences still running, longest first.

    lengths (Tensor): Long (batch,), each at least 1.
    max_len (int): The padded length.
    """

    def __init__(self, lengths: Tensor, max_len: int) -> None:
        lengths = lengths.cpu()
        order = torch.argsort(lengths, descending=True, stable=True)
        sorted_lengths = lengths[order]
        steps = torch.arange(max_len)
        running = sorted_lengths[None, :] > steps[:, None]  # (max_len, batch)
        step, rank = running.nonzero(as_tuple=True)  # time-major, longest first
        # Sentences running at each step: a prefix of the sorted batch.
        self.step_sizes: List[int] = running.sum(dim=1).tolist()
        while self.step_sizes and self.step_sizes[-1] == 0:
            self.step_sizes.pop()
        self.n_rows = len(step)
        row_of = torch.full((max_len, len(lengths)), -1, dtype=torch.long)
        row_of[step, rank] = torch.arange(self.n_rows)
        # The reverse direction's step s reads position length - 1 - s: its rows in
        # packed order. The map is its own inverse.
        self.reverse_rows = row_of[sorted_lengths[rank] - 1 - step, rank]
        # Each packed row's place in the (batch, max_len) padded layout.
        self.padded_rows = order[rank] * max_len + step

    def joined(self, states: Tensor) -> Tensor:
        """Both directions' states side by side, as ``nn.LSTM`` returns them and a next
        layer reads them (in the reverse direction's order: index with ``reverse_rows``,
        which is its own inverse).

        states (Tensor): (2, n_rows, H), each direction's states in its reading order.
        RETURNS (Tensor): (n_rows, 2H) in packed order, forward states then reverse ones.
        """
        reverse_rows = self.reverse_rows.to(states.device)
        return torch.cat([states[0], states[1].index_select(0, reverse_rows)], dim=1)

    def to_padded(self, rows: Tensor, batch: int, max_len: int) -> Tensor:
        """Rows in packed order → Float (batch, max_len, width), zero at padding."""
        out = rows.new_zeros(batch * max_len, rows.shape[1])
        out.index_copy_(0, self.padded_rows.to(rows.device), rows)
        return out.view(batch, max_len, rows.shape[1])


def _directions(lstm: nn.LSTM, layer: int) -> Tuple[List[Tensor], List[Tensor], Tensor]:
    """Layer ``layer``'s weights, [forward, reverse].

    RETURNS (Tuple[List[Tensor], List[Tensor], Tensor]): input weights (input_dim, 4H)
        each, their biases (4H,) (input and recurrent biases summed), recurrent weights
        of both directions stacked (2, H, 4H).
    """
    names = [f"l{layer}", f"l{layer}_reverse"]
    w_ih = [getattr(lstm, f"weight_ih_{name}").t() for name in names]
    bias = [getattr(lstm, f"bias_ih_{name}") + getattr(lstm, f"bias_hh_{name}") for name in names]
    w_hh = torch.stack([getattr(lstm, f"weight_hh_{name}").t() for name in names])
    return w_ih, bias, w_hh


class Lookup:
    """An embedding lookup among the first layer's inputs, to be folded into it.

    The first layer projects its input with a matrix, and an embedding is a row
    of a table: projecting the table once (``table @ W``, cached until a weight
    changes) turns the projection of that part of the input into a second lookup,
    of a projected row per character, instead of a matrix product per character.

    ids (Tensor): Long (batch, max_len), the rows looked up.
    embedding (nn.Embedding): The table.
    columns (Tuple[int, int]): Where its output lies among the first layer's inputs.
    """

    def __init__(self, ids: Tensor, embedding: nn.Embedding, columns: Tuple[int, int]) -> None:
        self.ids = ids
        self.embedding = embedding
        self.columns = columns


@torch.no_grad()
def bilstm_rows(
    lstm: nn.LSTM,
    x: Tensor,
    lengths: Tensor,
    lookups: Sequence[Lookup] = (),
    matmul_dtype: Optional[torch.dtype] = None,
    packed: Sequence[Tuple[Tensor, Tuple[int, int]]] = (),
    layout: Optional[RaggedLayout] = None,
) -> Tuple[Tensor, RaggedLayout]:
    """The outputs of a bidirectional, batch-first ``lstm`` over a padded batch, for
    the real characters only, in packed order (no padding rows: what comes after the
    LSTM can run on these rows and scatter its own, narrower, output).

    lstm (nn.LSTM): Bidirectional, ``batch_first``, with biases, no projection.
    x (Tensor): Float (batch, max_len, n): the first layer's inputs, except the
        ``lookups``' columns, in order (n may be 0).
    lengths (Tensor): Long (batch,), each at least 1.
    lookups (Sequence[Lookup]): Embedding lookups among the first layer's inputs.
    matmul_dtype (Optional[torch.dtype]): Run the recurrences in this dtype (e.g.
        ``torch.bfloat16``, which CPUs with AMX multiply many times faster): products,
        gates, cell and hidden states; the output is converted back to ``x``'s dtype.
        None: the input's dtype.
    packed (Sequence[Tuple[Tensor, Tuple[int, int]]]): First-layer inputs given as
        rows in the layout's packed order (an encoder that ran ragged itself, e.g.
        LAC), each with its columns among the first layer's inputs; not in ``x``.
    layout (Optional[RaggedLayout]): The layout of ``lengths`` (that of the
        ``packed`` rows), if already built.
    RETURNS (Tuple[Tensor, RaggedLayout]): Float (n_rows, 2 * hidden), forward states
        then reverse ones as ``nn.LSTM`` returns them, and where each row belongs.
    """
    batch, max_len, _ = x.shape
    hidden = lstm.hidden_size
    layout = RaggedLayout(lengths, max_len) if layout is None else layout
    padded_rows = layout.padded_rows.to(x.device)
    reverse_rows = layout.reverse_rows.to(x.device)

    def in_order(values: Tensor) -> Tuple[Tensor, Tensor]:
        """Per-character values (batch, max_len, ...) in each direction's reading order."""
        rows = values.reshape((batch * max_len,) + values.shape[2:]).index_select(0, padded_rows)
        return rows, rows.index_select(0, reverse_rows)

    # The first layer: lookups, narrow dense inputs and the bias are summed from one
    # table by one embedding_bag per block of steps; wide dense inputs are a matmul.
    low = x.dtype if matmul_dtype is None else matmul_dtype
    packed_columns = [columns for _, columns in packed]
    first = _FirstLayer(lstm, lookups, x.shape[2], low, packed_columns)
    rows, reverse = in_order(x.to(low))
    index, weight = first.bag([in_order(lookup.ids)[0] for lookup in lookups], rows)
    reverse_bags = index.index_select(0, reverse_rows) + first.n_table_rows  # reverse half
    reverse_weight = weight.index_select(0, reverse_rows)
    # Each packed input: its rows in both reading orders, and its input weights.
    packed_inputs = []
    for values, (c0, c1) in packed:
        values = values.to(low)
        w_packed = [w[c0:c1].to(low) for w in first.w_ih]
        packed_inputs.append((values, values.index_select(0, reverse_rows), w_packed))

    def project_first(start: int, stop: int) -> Tensor:
        bags = torch.cat([index[start:stop], reverse_bags[start:stop]])
        weights = torch.cat([weight[start:stop], reverse_weight[start:stop]])
        gates = nn.functional.embedding_bag(bags, first.table, per_sample_weights=weights, mode="sum")
        gates = gates.view(2, stop - start, -1)
        if w_dense is not None:
            gates[0].addmm_(rows[start:stop], w_dense[0])
            gates[1].addmm_(reverse[start:stop], w_dense[1])
        for forward_rows, reverse_order, w_packed in packed_inputs:
            gates[0].addmm_(forward_rows[start:stop], w_packed[0])
            gates[1].addmm_(reverse_order[start:stop], w_packed[1])
        return gates

    # Everything from here on is in ``low``: inputs, table, weights, gates and states.
    w_dense = None if first.w_dense is None else [w.to(low) for w in first.w_dense]
    states = _run_layer(project_first, first.w_hh.to(low), layout.step_sizes, layout.n_rows, hidden, x)
    for layer in range(1, lstm.num_layers):
        rows = layout.joined(states)
        reverse = rows.index_select(0, reverse_rows)
        w_ih, bias, w_hh = _directions(lstm, layer)
        project = dense_projection(rows, reverse, [w.to(low) for w in w_ih], [b.to(low) for b in bias])
        states = _run_layer(project, w_hh.to(low), layout.step_sizes, layout.n_rows, hidden, x)
    return layout.joined(states).to(x.dtype), layout


def dense_projection(rows: Tensor, reverse: Tensor, w_ih: List[Tensor], bias: List[Tensor]) -> Projection:
    """The input projection of a layer whose inputs are all dense rows (all in one dtype),
    given in each direction's reading order: ``rows @ w_ih[d] + bias[d]``, a block of
    rows at a time.

    rows, reverse (Tensor): Float (n_rows, input_dim).
    w_ih, bias (List[Tensor]): Per direction, (input_dim, n_gates) and (n_gates,).
    """
    buffer = rows.new_empty(2, min(len(rows), _BLOCK_ROWS * 2), w_ih[0].shape[1])

    def project(start: int, stop: int) -> Tensor:
        nonlocal buffer
        if stop - start > buffer.shape[1]:
            buffer = rows.new_empty(2, stop - start, w_ih[0].shape[1])
        gates = buffer[:, : stop - start]
        for direction, inputs in enumerate((rows, reverse)):
            torch.addmm(bias[direction], inputs[start:stop], w_ih[direction], out=gates[direction])
        return gates

    return project


class _FirstLayer:
    """The first layer's input projection as one table for ``embedding_bag``.

    Rows, for the forward direction then the reverse one: each lookup's table times
    the input weight of its columns (cached until a weight changes), the input
    weight row of each narrow dense input (a bag entry weighted by the input's
    value), and the bias (weight 1), in ``dtype`` (the layer's). Dense inputs wider
    than ``_BAG_DENSE_MAX`` stay a matrix product (``w_dense``), as do the packed
    inputs' columns (``packed_columns``, with ``w_ih``).
    """

    def __init__(
        self,
        lstm: nn.LSTM,
        lookups: Sequence[Lookup],
        n_dense: int,
        dtype: torch.dtype,
        packed_columns: Sequence[Tuple[int, int]] = (),
    ) -> None:
        w_ih, bias, self.w_hh = _directions(lstm, 0)
        self.w_ih = w_ih
        dense = torch.ones(w_ih[0].shape[0], dtype=torch.bool)
        for start, stop in [lookup.columns for lookup in lookups] + list(packed_columns):
            dense[start:stop] = False
        dense = dense.to(w_ih[0].device)
        self.bag_dense = n_dense <= _BAG_DENSE_MAX
        self.w_dense = None if self.bag_dense else [w[dense] for w in w_ih]
        parameters = [lookup.embedding.weight for lookup in lookups] + list(lstm.parameters())
        try:
            key = tuple((t.data_ptr(), t._version) for t in parameters)
            key += tuple(lookup.columns for lookup in lookups) + tuple(packed_columns) + (n_dense, dtype)
        except RuntimeError:  # inference tensors keep no version: no cache
            key = None
        cached = getattr(lstm, "_first_layer_table", None)
        if key is not None and cached is not None and cached[0] == key:
            self.table, self.offsets = cached[1]
        else:
            self.table, self.offsets = self._build(lookups, w_ih, bias, dense)
            self.table = self.table.to(dtype)
            if key is not None:
                # A plain attribute, replaced whole: not a buffer, not saved.
                object.__setattr__(lstm, "_first_layer_table", (key, (self.table, self.offsets)))
        self.n_table_rows = len(self.table) // 2

    def _build(
        self, lookups: Sequence[Lookup], w_ih: List[Tensor], bias: List[Tensor], dense: Tensor
    ) -> Tuple[Tensor, List[int]]:
        halves = []
        for direction in range(2):
            parts = [
                lookup.embedding.weight @ w_ih[direction][lookup.columns[0] : lookup.columns[1]]
                for lookup in lookups
            ]
            if self.bag_dense:
                parts.append(w_ih[direction][dense])
            parts.append(bias[direction][None, :])
            halves.append(torch.cat(parts))
        sizes = [len(lookup.embedding.weight) for lookup in lookups]
        offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        return torch.cat(halves), offsets

    def bag(self, ids: List[Tensor], rows: Tensor) -> Tuple[Tensor, Tensor]:
        """Each row's table rows and their weights, in the rows' order (forward half).

        ids (List[Tensor]): Long (n_rows,), each lookup's ids.
        rows (Tensor): Float (n_rows, n_dense), the dense inputs.
        RETURNS (Tuple[Tensor, Tensor]): Long and Float (n_rows, n_entries).
        """
        n_rows = rows.shape[0]
        index = [lookup_ids + offset for lookup_ids, offset in zip(ids, self.offsets)]
        weight = [rows.new_ones(n_rows, len(ids))]
        next_row = self.offsets[-1]
        if self.bag_dense:
            n_dense = rows.shape[1]
            dense_rows = torch.arange(next_row, next_row + n_dense, device=rows.device)
            index.append(dense_rows.expand(n_rows, n_dense))
            weight.append(rows)
            next_row += n_dense
        index.append(torch.full((n_rows, 1), next_row, dtype=torch.long, device=rows.device))
        weight.append(rows.new_ones(n_rows, 1))
        columns = [i[:, None] if i.dim() == 1 else i for i in index]
        return torch.cat(columns, dim=1), torch.cat(weight, dim=1)


def _run_layer(
    project: Projection, w_hh: Tensor, step_sizes: List[int], n_rows: int, hidden: int, like: Tensor
) -> Tensor:
    """One layer, both directions at once.

    project (Projection): The projected inputs of rows ``start:stop`` of both
        directions (each in its reading order): Float (2, stop - start, 4H), used up.
    w_hh (Tensor): The recurrent weights (2, H, 4H); the layer runs in their dtype.
    like (Tensor): Gives the device.
    RETURNS (Tensor): (2, n_rows, H) in ``w_hh``'s dtype, each direction's states in
        its reading order.
    """
    dtype = w_hh.dtype
    states = like.new_empty(2, n_rows, hidden, dtype=dtype)
    width = step_sizes[0] if step_sizes else 0
    cell = like.new_zeros(2, width, hidden, dtype=dtype)
    previous = like.new_zeros(2, width, hidden, dtype=dtype)
    # The input projection runs a few steps at a time, so its output stays in cache;
    # projecting all rows at once writes tens of megabytes.
    block = max(1, _BLOCK_ROWS // max(width, 1))
    start = 0
    for first in range(0, len(step_sizes), block):
        sizes = step_sizes[first : first + block]
        n_block = sum(sizes)
        gates = project(start, start + n_block)
        offset = 0
        for size in sizes:
            # Gates in torch's order: input, forget, cell, output.
            step = gates[:, offset : offset + size]
            step.baddbmm_(previous[:, :size], w_hh)
            sig = torch.sigmoid(step)
            c = cell[:, :size]
            c.mul_(sig[:, :, hidden : 2 * hidden])
            c.addcmul_(sig[:, :, :hidden], torch.tanh(step[:, :, 2 * hidden : 3 * hidden]))
            h = states[:, start + offset : start + offset + size]
            torch.mul(sig[:, :, 3 * hidden :], torch.tanh(c), out=h)
            previous = h
            offset += size
        start += n_block
    return states


def padded_bilstm(lstm: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
    """A bidirectional, batch-first ``nn.LSTM`` over a padded batch, for ``torch.export``
    (CPU): the outputs of the packed LSTM at positions inside each sentence.

    Packing has a data-dependent shape and ``nn.LSTM`` on a padded batch fixes the
    length of the example input, so each direction of each layer is one
    ``aten.mkldnn_rnn_layer`` over the time-major batch. The reverse direction runs
    forward over each sentence reversed within its length (padding stays at the end,
    where it cannot reach the real positions), and its outputs are reversed back.

    x (Tensor): Float (batch, seq_len, input_dim); lengths (Tensor): Long (batch,), >= 1.
    RETURNS (Tensor): Float (batch, seq_len, 2 * hidden_size).
    """
    if not lstm.bidirectional or not lstm.batch_first or lstm.proj_size or not lstm.bias:
        raise NotImplementedError("padded_bilstm: a batch-first bidirectional LSTM with biases")
    if x.device.type != "cpu":
        raise NotImplementedError("padded_bilstm runs on the CPU (aten.mkldnn_rnn_layer)")
    hidden_size = lstm.hidden_size
    batch, seq_len = x.shape[0], x.shape[1]
    # Rows of the time-major (seq_len * batch, ·) layout that reverse each sentence: an
    # involution (whole rows are copied, faster than a gather over every element).
    batch_ids = torch.arange(batch, device=x.device)[None, :]
    reverse = (reverse_index(lengths, seq_len).t() * batch + batch_ids).reshape(-1)

    def reversed_rows(t: Tensor) -> Tensor:
        return t.reshape(seq_len * batch, -1).index_select(0, reverse).view(seq_len, batch, -1)

    h = x.transpose(0, 1).contiguous()
    for layer in range(lstm.num_layers):
        outputs: List[Tensor] = []
        for suffix, inputs in (("", h), ("_reverse", reversed_rows(h))):
            weights = [
                getattr(lstm, f"{name}_l{layer}{suffix}")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            zeros = inputs.new_zeros(1, inputs.shape[1], hidden_size)
            outputs.append(
                torch.ops.aten.mkldnn_rnn_layer.default(
                    inputs.contiguous(), *weights, zeros, zeros,
                    False, [], 2, hidden_size, 1, True, False, False, False,
                )[0]
            )  # fmt: skip
        h = torch.cat([outputs[0], reversed_rows(outputs[1])], dim=-1)
    return h.transpose(0, 1)
