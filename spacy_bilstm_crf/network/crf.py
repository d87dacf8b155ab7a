"""A batched, constrained linear-chain CRF in torch.

All operations run over the whole batch at once: sentences are padded to
``(batch, max_len, n_tags)`` and ``lengths`` says how many positions of each
are real, any length from 0 up. The only Python loops run over time steps,
never over sentences. Viterbi decoding on the CPU is one compiled kernel over
the batch (``kernels.py``, numba), on a GPU and in scripted copies
batched tensor ops with one op group per step (``serving/tagger.py``). The
log-partition has a hand-written backward (:class:`LogPartition`: the
forward-backward marginals), which also gives the span probabilities of
``confidence.py`` and the partial-label loss.

Invalid transitions (e.g. ``O → I-x``) are removed from the model: the
partition function, the gold score and Viterbi all use the same masked
transition scores, so training never spends probability mass on invalid
paths and decoding can only return valid ones. Masked scores use a large
finite negative (not ``-inf``) where gradients flow, which avoids NaNs, and
``-inf`` in Viterbi, where no gradient is taken, so a banned transition can
never win however large the emissions are.
"""
from typing import Final, Optional, Tuple

import torch
from torch import Tensor, nn

from . import kernels
from ..serving.tagger import VITERBI_CHUNK, viterbi

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

    # Sentences whose Viterbi buffer is filled at once (see ``serving.viterbi_scores``).
    _chunk: Final[int] = VITERBI_CHUNK

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
        """The log-sum-exp of the scores of all valid paths (the forward algorithm), with a
        hand-written backward (:class:`LogPartition`): its gradient is the tag and
        transition marginals, computed by one backward pass instead of autograd's replay
        of every step.

        emissions (Tensor): Float (batch, max_len, n_tags).
        lengths (Tensor): Int (batch,), each in [0, max_len].
        RETURNS (Tensor): Float32 (batch,) (float64 for float64 emissions); 0 for empty
            sentences.
        """
        with _float32(emissions):
            batch, max_len, _ = emissions.shape
            out_dtype = _compute_dtype(emissions)
            if max_len == 0:
                return emissions.new_zeros(batch, dtype=out_dtype)
            trans, start, end = self._masked(BANNED, out_dtype)
            return LogPartition.apply(emissions.to(out_dtype), lengths, trans, start, end)

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
        after t given tag k at t (end transition included, emission at t not). Computed
        by the scaled passes of :class:`LogPartition` (float64), then taken to logs; a
        tag no valid path reaches scores ``-inf``. Positions past a sentence's end hold
        no meaning.

        emissions (Tensor): Float (batch, max_len, n_tags), e.g. constrained by :func:`constrain`.
        lengths (Tensor): Int (batch,).
        RETURNS (Tuple[Tensor, Tensor, Tensor]): alpha, beta (batch, max_len, n_tags) and
            log Z (batch,), float64.
        """
        with _float32(emissions), torch.no_grad():
            batch, max_len, n_tags = emissions.shape
            if max_len == 0:
                empty = emissions.new_zeros(batch, 0, n_tags, dtype=torch.float64)
                return empty, empty.clone(), emissions.new_zeros(batch, dtype=torch.float64)
            trans, start, end = self._masked(BANNED, torch.float64)
            scaled = _Scaled(emissions, lengths, trans, start, end)
            log_z = scaled.log_z()
            prefix = scaled.prefix()[..., None]
            beta_hat = scaled.backward()
            alpha = torch.log(scaled.alpha) + prefix
            beta = torch.log(beta_hat) + (log_z[None, :, None] - prefix)
            return alpha.transpose(0, 1), beta.transpose(0, 1), log_z

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
                emissions = emissions.to(_compute_dtype(emissions))
                if emissions.device.type == "cpu" and emissions.shape[1] > 0:
                    tags = self._decode_compiled(emissions, lengths, pad)
                    if tags is not None:
                        return tags
                return self._viterbi(emissions, lengths, pad)

    @torch.jit.unused
    def _decode_compiled(self, emissions: Tensor, lengths: Tensor, pad: int) -> Optional[Tensor]:
        """The CPU decoder (``kernels.viterbi_decode``), or None where numba is unavailable."""
        trans, start, end = self._masked(float("-inf"), emissions.dtype)
        return kernels.viterbi_decode(emissions, lengths.cpu(), trans, start, end, pad)

    def _viterbi(self, emissions: Tensor, lengths: Tensor, pad: int) -> Tensor:
        """Decoding with tensor ops (``serving/tagger.py``'s): on a GPU, in a scripted copy, and
        on the CPU where the compiled kernel is unavailable."""
        batch, max_len, n_tags = emissions.shape
        if max_len == 0:
            return torch.full((batch, 0), pad, dtype=torch.long, device=emissions.device)
        trans, start, end = self._masked(float("-inf"), emissions.dtype)
        return viterbi(emissions, lengths, trans, start, end, pad, self._chunk)

    def marginals(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """Per-token tag marginals P(y_t = k | x): the gradient of log Z w.r.t. the emissions
        (the forward-backward pass of :class:`LogPartition`).

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


class _Scaled:
    """The scaled forward pass of one batch (Rabiner's scaling), in float64.

    ``alpha[t]`` is the forward vector at t divided by its sum (``norm[t]`` is that sum,
    in units where the emissions at t, the transitions and the start are divided by
    their maxima), so every step is one matmul with ``exp(transitions)``, a product with
    ``exp(emissions)`` and a normalization: four ops per step, no log or exp inside the
    loop. float64 keeps every path within ``e^700`` of the best one (float32 would lose
    paths, even every path through a forced tag, past ``e^87``). Past a sentence's end
    the recursion runs on with finite, unused values: no step is masked, and the
    normalizers and the end are read at each sentence's own length.
    """

    def __init__(self, emissions: Tensor, lengths: Tensor, trans: Tensor, start: Tensor, end: Tensor) -> None:
        dtype = torch.float64
        batch, max_len, n_tags = emissions.shape
        self.lengths = lengths
        # One copy makes the time-major float64 exp-emissions; the rest is in place.
        exp_emit = emissions.new_empty(max_len, batch, n_tags, dtype=dtype)
        exp_emit.copy_(emissions.detach().transpose(0, 1))
        self.emit_max = exp_emit.amax(dim=2, keepdim=True)
        self.exp_emit = exp_emit.sub_(self.emit_max).exp_()
        trans, start, end = (x.detach().to(dtype) for x in (trans, start, end))
        self.trans_max, self.start_max, self.end_max = trans.max(), start.max(), end.max()
        self.exp_trans = torch.exp(trans - self.trans_max)  # banned transitions: exactly 0
        self.exp_end = torch.exp(end - self.end_max)
        alpha = exp_emit.new_empty(max_len, batch, n_tags)
        norm = exp_emit.new_empty(max_len, batch, 1)
        torch.mul(torch.exp(start - self.start_max), exp_emit[0], out=alpha[0])
        torch.sum(alpha[0], 1, keepdim=True, out=norm[0])
        alpha[0].div_(norm[0])
        step = exp_emit.new_empty(batch, n_tags)
        for t in range(1, max_len):
            torch.mm(alpha[t - 1], self.exp_trans, out=step)
            step.mul_(exp_emit[t])
            torch.sum(step, 1, keepdim=True, out=norm[t])
            torch.div(step, norm[t], out=alpha[t])
        self.alpha, self.norm = alpha, norm
        self.last = (lengths - 1).clamp_min(0)
        self.within = lengths_to_mask(lengths, max_len).t()  # (max_len, batch)
        alpha_last = alpha.gather(0, self.last[None, :, None].expand(1, batch, n_tags))[0]
        self.z_end = (alpha_last * self.exp_end).sum(1)

    def prefix(self) -> Tensor:
        """RETURNS (Tensor): (max_len, batch) the log of what ``alpha[t]`` was divided by."""
        steps = torch.arange(self.alpha.shape[0], device=self.alpha.device, dtype=self.alpha.dtype)
        logs = torch.log(self.norm[..., 0]) + self.emit_max[..., 0]
        return logs.cumsum(0) + self.start_max + steps[:, None] * self.trans_max

    def log_z(self) -> Tensor:
        """RETURNS (Tensor): Float64 (batch,) log Z; 0 for empty sentences."""
        logs = torch.log(self.norm[..., 0]) + self.emit_max[..., 0]
        log_z = torch.where(self.within, logs, torch.zeros_like(logs)).sum(0)
        log_z = log_z + torch.log(self.z_end) + self.end_max + self.start_max + self.last.to(logs.dtype) * self.trans_max
        return torch.where(self.lengths > 0, log_z, torch.zeros_like(log_z))

    def backward(self, weight: Optional[Tensor] = None) -> Tensor:
        """The scaled backward vectors: ``alpha[t] * beta[t]`` sums to 1 at each t of a
        sentence (times its ``weight``), and is 0 past its end.

        weight (Optional[Tensor]): Float64 (batch,) a factor per sentence (the gradient).
        RETURNS (Tensor): Float64 (max_len, batch, n_tags).
        """
        max_len, batch, n_tags = self.exp_emit.shape
        beta_last = self.exp_end / self.z_end[:, None]
        if weight is not None:
            beta_last = beta_last * weight[:, None]
        beta = self.alpha.new_zeros(max_len, batch, n_tags)
        beta.index_put_((self.last, torch.arange(batch, device=beta.device)), beta_last)
        beta.mul_((self.lengths > 0).to(beta.dtype)[None, :, None])
        exp_trans_t = self.exp_trans.t().contiguous()
        step = self.alpha.new_empty(batch, n_tags)
        carried = self.alpha.new_empty(batch, n_tags)
        within = self.within.to(beta.dtype).unsqueeze(2)
        for t in range(max_len - 1, 0, -1):
            torch.mul(self.exp_emit[t], beta[t], out=step)
            step.div_(self.norm[t])
            torch.mm(step, exp_trans_t, out=carried)
            # Only inside a sentence; its own end was set above.
            beta[t - 1].addcmul_(carried, within[t])
        return beta


class LogPartition(torch.autograd.Function):
    """log Z of a batch of linear-chain CRFs, with the forward-backward algorithm as backward.

    The gradient of log Z is the marginals: per tag ``alpha * beta``, per transition the
    sum over steps of ``alpha[t-1] exp(T) exp(emit[t]) beta[t]``, which is one matmul
    over all steps at the end. Both passes are :class:`_Scaled`'s.
    """

    @staticmethod
    def forward(ctx, emissions: Tensor, lengths: Tensor, trans: Tensor, start: Tensor, end: Tensor) -> Tensor:
        scaled = _Scaled(emissions, lengths, trans, start, end)
        ctx.scaled = scaled
        ctx.dtypes = (emissions.dtype, trans.dtype)
        return scaled.log_z().to(emissions.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        scaled: _Scaled = ctx.scaled
        emissions_dtype, params_dtype = ctx.dtypes
        max_len, batch, n_tags = scaled.exp_emit.shape
        beta = scaled.backward(grad.detach().to(torch.float64))
        alpha = scaled.alpha
        if max_len > 1:
            right = torch.mul(scaled.exp_emit[1:], beta[1:]).div_(scaled.norm[1:])
            d_trans = scaled.exp_trans * (alpha[:-1].reshape(-1, n_tags).t() @ right.reshape(-1, n_tags))
        else:
            d_trans = torch.zeros_like(scaled.exp_trans)
        # Written time-major and returned as a (batch, max_len, n_tags) view: no strided copy.
        d_emissions = alpha.new_empty(max_len, batch, n_tags, dtype=emissions_dtype)
        torch.mul(alpha, beta, out=d_emissions)
        d_start = d_emissions[0].sum(0)
        d_end = d_emissions.gather(0, scaled.last[None, :, None].expand(1, batch, n_tags))[0].sum(0)
        return (
            d_emissions.transpose(0, 1),
            None,
            d_trans.to(params_dtype),
            d_start.to(params_dtype),
            d_end.to(params_dtype),
        )


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
