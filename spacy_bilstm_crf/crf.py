"""A batched, constrained linear-chain CRF in pure torch.

All operations run over the whole batch at once: sentences are padded to
``(batch, max_len, n_tags)`` and ``lengths`` says how many positions of each
are real, any length from 0 up. The only Python loops run over time steps,
never over sentences, and backtracking is a batched ``gather`` per step.

Invalid transitions (e.g. ``O → I-x``) are removed from the model: the
partition function, the gold score and Viterbi all use the same masked
transition scores, so training never spends probability mass on invalid
paths and decoding can only return valid ones. Masked scores use a large
finite negative (not ``-inf``) where gradients flow, which avoids NaNs, and
``-inf`` in Viterbi, where no gradient is taken, so a banned transition can
never win however large the emissions are.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

BANNED = -10000.0


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """RETURNS (Tensor): Bool (batch, max_len), True where a position is inside its sentence."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def constrain(emissions: Tensor, forced: Tensor, fill: float) -> Tensor:
    """Emissions where every tag but the forced one scores ``fill``, at forced positions.

    The paths that remain are exactly those through the forced tags, so the CRF's
    partition function over them is a sum over the paths consistent with partial
    labels, and Viterbi over them is constrained decoding.

    emissions (Tensor): Float (batch, max_len, n_tags).
    forced (Tensor): Long (batch, max_len): a tag id, or -1 where any tag may stand.
    fill (float): ``BANNED`` where gradients flow, ``-inf`` for decoding.
    RETURNS (Tensor): Float, the shape of ``emissions``.
    """
    tag_ids = torch.arange(emissions.shape[-1], device=emissions.device)
    forced = forced.unsqueeze(-1)
    keep = (forced < 0) | (tag_ids == forced)
    return torch.where(keep, emissions, torch.full_like(emissions, fill))


class LinearChainCRF(nn.Module):
    """A linear-chain CRF with start/end transitions and optional constraints.

    n_tags (int): Number of tags.
    allowed (Optional[Tensor]): Bool (n_tags, n_tags), ``[i, j]`` is whether tag j may follow
        tag i. None allows everything.
    allowed_start (Optional[Tensor]): Bool (n_tags,), which tags may start a sentence.
    allowed_end (Optional[Tensor]): Bool (n_tags,), which tags may end a sentence.
    """

    def __init__(
        self,
        n_tags: int,
        allowed: Optional[Tensor] = None,
        allowed_start: Optional[Tensor] = None,
        allowed_end: Optional[Tensor] = None,
    ) -> None:
        super().__init__()
        self.n_tags = n_tags
        self.transitions = nn.Parameter(torch.empty(n_tags, n_tags).uniform_(-0.1, 0.1))
        self.start_transitions = nn.Parameter(torch.empty(n_tags).uniform_(-0.1, 0.1))
        self.end_transitions = nn.Parameter(torch.empty(n_tags).uniform_(-0.1, 0.1))
        ones = torch.ones(n_tags, dtype=torch.bool)
        self.register_buffer("allowed", _bool(allowed, torch.ones(n_tags, n_tags, dtype=torch.bool)))
        self.register_buffer("allowed_start", _bool(allowed_start, ones))
        self.register_buffer("allowed_end", _bool(allowed_end, ones))

    # -- masked scores --------------------------------------------------------------

    def _masked(self, banned: float, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
        """RETURNS: (transitions, start, end) in ``dtype``, banned entries replaced by ``banned``."""
        fill = torch.tensor(banned, dtype=dtype, device=self.transitions.device)
        return (
            torch.where(self.allowed, self.transitions.to(dtype), fill),
            torch.where(self.allowed_start, self.start_transitions.to(dtype), fill),
            torch.where(self.allowed_end, self.end_transitions.to(dtype), fill),
        )

    def masked_scores(self, banned: float = BANNED) -> Tuple[Tensor, Tensor, Tensor]:
        """RETURNS (Tuple[Tensor, Tensor, Tensor]): Float32 (transitions, start, end) as
            the CRF uses them, banned entries ``banned``; no gradient.
        """
        with torch.no_grad():
            return self._masked(banned, torch.float32)

    # -- training -------------------------------------------------------------------

    def log_partition(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """The log-sum-exp of the scores of all valid paths (the forward algorithm).

        Each step is a small matmul in the scaled form
        ``alpha_t = log(exp(alpha_{t-1} - m) @ exp(T - c)) + m + c + emit_t``, which is
        much cheaper than a logsumexp over a (batch, n_tags, n_tags) tensor, and exact:
        ``m`` (per sentence) and ``c`` (per target tag) keep every exponent <= 0.

        emissions (Tensor): Float (batch, max_len, n_tags).
        lengths (Tensor): Int (batch,), each in [0, max_len].
        RETURNS (Tensor): Float32 (batch,); 0 for empty sentences.
        """
        with _float32(emissions):
            emissions = emissions.to(_compute_dtype(emissions))
            batch, max_len, _ = emissions.shape
            if max_len == 0:
                return emissions.new_zeros(batch)
            mask = lengths_to_mask(lengths, max_len)
            trans, start, end = self._masked(BANNED, emissions.dtype)
            col_max = trans.max(dim=0, keepdim=True).values
            exp_trans = torch.exp(trans - col_max)
            tiny = torch.finfo(emissions.dtype).tiny
            alpha = start + emissions[:, 0]
            for t in range(1, max_len):
                shift = alpha.max(dim=1, keepdim=True).values
                summed = torch.exp(alpha - shift) @ exp_trans
                nxt = torch.log(summed.clamp_min(tiny)) + shift + col_max + emissions[:, t]
                alpha = torch.where(mask[:, t : t + 1], nxt, alpha)
            log_z = torch.logsumexp(alpha + end, dim=1)
            return torch.where(lengths > 0, log_z, torch.zeros_like(log_z))

    def path_score(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """The unnormalized score of given tag paths.

        emissions (Tensor): Float (batch, max_len, n_tags).
        tags (Tensor): Long (batch, max_len); values at padded positions are ignored.
        lengths (Tensor): Int (batch,).
        RETURNS (Tensor): Float32 (batch,).
        """
        with _float32(emissions):
            emissions = emissions.to(_compute_dtype(emissions))
            batch, max_len, _ = emissions.shape
            if max_len == 0:
                return emissions.new_zeros(batch)
            mask = lengths_to_mask(lengths, max_len)
            tags = torch.where(mask, tags, torch.zeros_like(tags))
            trans, start, end = self._masked(BANNED, emissions.dtype)
            emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)
            step = trans[tags[:, :-1], tags[:, 1:]]
            score = (emit * mask).sum(1) + (step * mask[:, 1:]).sum(1)
            last = tags.gather(1, (lengths - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
            score = score + start[tags[:, 0]] + end[last]
            return torch.where(lengths > 0, score, torch.zeros_like(score))

    def nll(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """The negative log-likelihood of the gold paths, per sentence.

        Tags of -1 are missing annotation (partial labels): the likelihood is then that
        of every path consistent with the known tags, ``log Z - log Z(known)``, rather
        than of one path with the gaps read as ``O``. Without missing tags it is the
        ordinary ``log Z - score(gold)``.

        tags (Tensor): Long (batch, max_len) gold tag ids, -1 where missing.
        RETURNS (Tensor): Float32 (batch,), each >= 0 (up to rounding).
        """
        log_z = self.log_partition(emissions, lengths)
        mask = lengths_to_mask(lengths, tags.shape[1])
        if bool(((tags < 0) & mask).any()):
            known = constrain(emissions, torch.where(mask, tags, torch.full_like(tags, -1)), BANNED)
            return log_z - self.log_partition(known, lengths)
        return log_z - self.path_score(emissions, tags, lengths)

    def forward_backward(self, emissions: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The forward and backward log-scores of every position and tag.

        ``alpha[b, t, k]`` is the log-sum-exp of the scores of the path prefixes that end
        in tag k at t (its emission included); ``beta[b, t, k]`` that of the suffixes
        after t given tag k at t (end transition included, emission at t not). Both use
        the scaled matmul form of :meth:`log_partition`. Positions past a sentence's end
        hold no meaning.

        emissions (Tensor): Float (batch, max_len, n_tags), e.g. constrained by :func:`constrain`.
        lengths (Tensor): Int (batch,).
        RETURNS (Tuple[Tensor, Tensor, Tensor]): alpha, beta (batch, max_len, n_tags) and
            log Z (batch,), float32 (float64 for float64 emissions).
        """
        with _float32(emissions), torch.no_grad():
            emissions = emissions.to(_compute_dtype(emissions))
            batch, max_len, n_tags = emissions.shape
            trans, start, end = self._masked(BANNED, emissions.dtype)
            alpha = emissions.new_zeros(batch, max_len, n_tags)
            beta = emissions.new_zeros(batch, max_len, n_tags)
            if max_len == 0:
                return alpha, beta, emissions.new_zeros(batch)
            tiny = torch.finfo(emissions.dtype).tiny
            col_max = trans.max(dim=0, keepdim=True).values
            exp_cols = torch.exp(trans - col_max)
            row_max = trans.max(dim=1).values
            exp_rows_t = torch.exp(trans - row_max[:, None]).t()
            alpha[:, 0] = start + emissions[:, 0]
            for t in range(1, max_len):
                prev = alpha[:, t - 1]
                shift = prev.max(dim=1, keepdim=True).values
                summed = torch.exp(prev - shift) @ exp_cols
                alpha[:, t] = torch.log(summed.clamp_min(tiny)) + shift + col_max + emissions[:, t]
            last = (lengths - 1).clamp_min(0)
            beta[:, max_len - 1] = end
            for t in range(max_len - 2, -1, -1):
                after = emissions[:, t + 1] + beta[:, t + 1]
                shift = after.max(dim=1, keepdim=True).values
                summed = torch.exp(after - shift) @ exp_rows_t
                inner = torch.log(summed.clamp_min(tiny)) + shift + row_max
                # The last position of each sentence ends it: only the end transition follows.
                beta[:, t] = torch.where((t >= last)[:, None], end.expand(batch, n_tags), inner)
            final = alpha.gather(1, last[:, None, None].expand(batch, 1, n_tags)).squeeze(1)
            log_z = torch.logsumexp(final + end, dim=1)
            return alpha, beta, torch.where(lengths > 0, log_z, torch.zeros_like(log_z))

    # -- inference ------------------------------------------------------------------

    def decode(self, emissions: Tensor, lengths: Tensor, pad: int = -1) -> Tensor:
        """The best valid tag path of each sentence (batched Viterbi).

        For decoding under forced tags, pass ``constrain(emissions, forced, -inf)``:
        at least one valid path must then remain (forced tags that come from
        well-formed entities always leave one).

        emissions (Tensor): Float (batch, max_len, n_tags).
        lengths (Tensor): Int (batch,).
        pad (int): The value written at padded positions.
        RETURNS (Tensor): Long (batch, max_len).
        """
        # TorchScript cannot compile the float32 guard (it leaves autocast) and compiles
        # only this first branch; a scripted copy never runs under autocast.
        if torch.jit.is_scripting():
            with torch.no_grad():
                return self._viterbi(emissions.to(_compute_dtype(emissions)), lengths, pad)
        else:
            with _float32(emissions), torch.no_grad():
                return self._viterbi(emissions.to(_compute_dtype(emissions)), lengths, pad)

    def _viterbi(self, emissions: Tensor, lengths: Tensor, pad: int) -> Tensor:
        batch, max_len, n_tags = emissions.shape
        if max_len == 0:
            return torch.full((batch, 0), pad, dtype=torch.long, device=emissions.device)
        mask = lengths_to_mask(lengths, max_len)
        trans, start, end = self._masked(float("-inf"), emissions.dtype)
        # Batch-last layout, (n_tags, batch): the max over the previous tag then
        # runs over the outermost dimension of a reused (from, to, batch) buffer,
        # an elementwise max of contiguous slabs, several times faster than a max
        # over a short innermost dimension. Values only: no argmax in the forward.
        emit = emissions.permute(1, 2, 0)  # (max_len, n_tags, batch)
        keep = mask.t().unsqueeze(1)  # (max_len, 1, batch)
        trans_3d = trans.unsqueeze(2)  # (from, to, 1)
        buffer = emissions.new_empty(n_tags, n_tags, batch)
        scores = [start.unsqueeze(1) + emit[0]]
        for t in range(1, max_len):
            torch.add(scores[-1].unsqueeze(1), trans_3d, out=buffer)
            nxt = buffer.amax(dim=0) + emit[t]
            scores.append(torch.where(keep[t], nxt, scores[-1]))
        # Backtracking recomputes each step's argmax for the one chosen tag only,
        # a (n_tags, batch) op per step instead of storing backpointers for every
        # tag. The sums are the same floating-point ops as in the forward pass, so
        # ties break the same way. Past a sentence's end the tag is carried through.
        tag = (scores[-1] + end.unsqueeze(1)).argmax(dim=0, keepdim=True)  # (1, batch)
        path = [tag]
        for t in range(max_len - 1, 0, -1):
            into_tag = trans.index_select(1, tag.squeeze(0))  # (from, batch)
            prev = (scores[t - 1] + into_tag).argmax(dim=0, keepdim=True)
            tag = torch.where(keep[t], prev, tag)
            path.append(tag)
        path.reverse()
        tags = torch.cat(path, dim=0).t()
        return torch.where(mask, tags, torch.full_like(tags, pad))

    def marginals(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """Per-token tag marginals P(y_t = k | x): the gradient of log Z w.r.t. the emissions.

        RETURNS (Tensor): Float32 (batch, max_len, n_tags); rows sum to 1 inside
            sentences and are 0 at padded positions.
        """
        with torch.enable_grad():
            leaf = emissions.detach().to(_compute_dtype(emissions)).requires_grad_(True)
            log_z = self.log_partition(leaf, lengths)
            (grad,) = torch.autograd.grad(log_z.sum(), leaf)
        return grad

    def is_valid(self, tags: Tensor, lengths: Tensor) -> Tensor:
        """RETURNS (Tensor): Bool (batch,), whether each path uses only allowed tags/transitions."""
        batch, max_len = tags.shape
        if max_len == 0:
            return torch.ones(batch, dtype=torch.bool, device=tags.device)
        mask = lengths_to_mask(lengths, max_len)
        safe = torch.where(mask, tags, torch.zeros_like(tags))
        steps_ok = self.allowed[safe[:, :-1], safe[:, 1:]] | ~mask[:, 1:]
        last = safe.gather(1, (lengths - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
        ends_ok = self.allowed_start[safe[:, 0]] & self.allowed_end[last]
        return steps_ok.all(dim=1) & (ends_ok | (lengths == 0))


def _compute_dtype(emissions: Tensor) -> torch.dtype:
    """float64 stays float64 (for gradcheck); everything else runs in float32."""
    return torch.float64 if emissions.dtype == torch.float64 else torch.float32


def _bool(value: Optional[Tensor], default: Tensor) -> Tensor:
    return default if value is None else torch.as_tensor(value, dtype=torch.bool).clone()


class _float32:
    """Run the CRF in float32 even inside a mixed-precision autocast region."""

    def __init__(self, tensor: Tensor) -> None:
        self.ctx = torch.autocast(device_type=tensor.device.type, enabled=False)

    def __enter__(self) -> None:
        self.ctx.__enter__()

    def __exit__(self, *exc) -> None:
        self.ctx.__exit__(*exc)
