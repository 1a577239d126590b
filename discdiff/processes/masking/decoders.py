r"""Decoders that choose where to unmask: MaskGIT / LLaDA / Dream orderings, dilated, threshold.

These are not posteriors of the forward process: at each step they draw a
candidate for every masked position from $x_\theta$, score the candidates,
and unmask only the most confident ones; the rest stay masked (LLaDA calls
this "low-confidence remasking"). How many unmask per step is a separate
rule, a `StepCount`:

- `ScheduleCount` (default): the noise schedule's expected MDLM count
  $\mathrm{round}\big(n_{\mathrm{masked}} (\alpha_s - \alpha_t)/(1 - \alpha_t)\big)$
  on a uniform grid, or a fixed `tokens_per_step`;
- `EvenCount` (LLaDA's `get_num_transfer_tokens`): the masked count at the
  start split equally over the steps, the remainder going to the first
  steps ($12$ tokens in $8$ steps: $2,2,2,2,1,1,1,1$);
- `DreamCount` (Dream's `diffusion_generate`): times
  $\mathrm{linspace}(1, \epsilon, T + 1)$ and
  $\lfloor n_{\mathrm{masked}} (1 - s/t) \rfloor$ a step, all remaining at
  the last.

Inside `BlockSampler`, or with blocks in `AncestralSampler.sample`, a decoder
only ever sees the current block, so its counts and its ranking are the
block's (LLaDA's per-block quota, $-\infty$ confidence outside the block).

Scores are read from `DecoderInput.probs`, the untempered probabilities of
the data tokens in float64. A denoiser that reports the mask token's mass
(`HuggingFaceDenoiser(mask_mass=True)`, as LLaDA and Dream load) gives them
normalised over the model's whole vocabulary, mask included, as LLaDA's and
Dream's own code scores them; the candidate itself is never the mask.

At temperature 0 nothing is random: the candidate is the most likely token
(ties: the lowest id) and positions are ranked by their exact float64 score
(ties: the leftmost position). At a positive temperature scores are compared
on a grid of `resolution` and ties are broken at random (from the sampler's
generator). Without the grid the order among nearly equal scores (at the first
step every position of a time-unconditioned model sees the same all-mask input)
was decided by the last bits of the network's float32 output, which differ
between CPU kernels (AVX-512, AVX2, baseline): the same seed then gave another
MaskGIT table on another machine, while the posterior samplers, which compare a
uniform number with a float64 CDF, did not.
"""

import copy
from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff.distributions import draw_categorical
from discdiff.processes.base import Strategy
from discdiff.processes.masking.posteriors import (
    DecodeConfidence,
    MaskingPosterior,
    RemaskPosterior,
)
from discdiff.processes.masking.process import MaskingProcess
from discdiff.registry import extension_point, register
from discdiff.rng import RandomSource, uniform
from discdiff.schedules import uniform_time_grid
from discdiff.shaping import UNSHAPED, Shaping
from discdiff.typing import MaskFlags, PerPosition, Probs, Times, Tokens

__all__ = [
    "ConfidenceDecoder",
    "DecoderInput",
    "DilatedDecoder",
    "DreamCount",
    "EntropyDecoder",
    "EvenCount",
    "FactorCount",
    "MarginDecoder",
    "MaskGITDecoder",
    "ScheduleCount",
    "StepCount",
    "ThresholdCount",
    "ThresholdDecoder",
    "dilated_order",
]


class DecoderInput(NamedTuple):
    r"""What a confidence decoder reads at a step (made by its `shape_output`).

    Attributes:
        probs: `(B, L, V)` float64 untempered probabilities of the data tokens
            (normalised over the model's whole vocabulary when the denoiser
            reports the mask's mass: the mask then has $1 - \sum_v$ `probs`).
        sampling: `(B, L, V)` the distribution candidates are drawn from
            (temperature, top-k, nucleus applied), or `None` at temperature 0:
            the candidate is then the argmax of `probs`.
    """

    probs: Float[Tensor, "batch length vocab"]
    sampling: Float[Tensor, "batch length vocab"] | None

    def argmax(self, dim: int = -1) -> Int[Tensor, "batch length"]:
        """The most likely data token (ties: the lowest id); for noise removal."""
        return self.probs.argmax(dim)

    def candidates(
        self, masked: MaskFlags, generator: RandomSource, dtype: torch.dtype
    ) -> Int[Tensor, "batch length"]:
        """One candidate per position: a draw from `sampling`, or the argmax at temperature 0."""
        if self.sampling is None:
            return self.probs.argmax(-1)
        drawn = draw_categorical(self.sampling, generator=generator, dtype=dtype, where=masked)
        return drawn.squeeze(-1)

    def scored(self) -> Float[Tensor, "batch length vocab"]:
        """The distribution Dream scores: the sampled one, untempered at temperature 0."""
        return self.probs if self.sampling is None else self.sampling.double()

    def mask_mass(self) -> Float[Tensor, "batch length"]:
        r"""The mask token's untempered probability, $1 - \sum_v$ `probs` (0 after SUBS)."""
        return (1.0 - self.probs.sum(-1)).clamp_min(0.0)


@extension_point("count")
class StepCount(ABC):
    """How many masked positions a decoder unmasks per step, and on which time grid."""

    def time_grid(self, steps: int, t_min: float = 1e-5) -> Float[Tensor, "points"]:
        """Times from 1 down, `(steps + 1,)` float64 (default: uniform to `t_min`)."""
        return uniform_time_grid(steps, t_min)

    @abstractmethod
    def __call__(
        self,
        process: MaskingProcess,
        n_masked: Int[Tensor, "batch"],
        t: Times,
        s: Times,
        score: PerPosition | None = None,
    ) -> Int[Tensor, "batch"]:
        r"""Counts `(B,)` for the step $t \to s$.

        Args:
            process: The forward process.
            n_masked: Each sequence's masked count `(B,)`.
            t: Current times `(B,)`.
            s: Next times `(B,)`.
            score: The candidates' float64 scores `(B, L)`, $-\infty$ where not
                masked (for rules that read them).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@register("count", "schedule")
class ScheduleCount(StepCount):
    r"""MDLM's expected count $\mathrm{round}\big(n (\alpha_s - \alpha_t)/(1 - \alpha_t)\big)$.

    Args:
        tokens_per_step: A fixed number $k$ instead (at most the masked count).
    """

    def __init__(self, tokens_per_step: int | None = None) -> None:
        if tokens_per_step is not None and tokens_per_step < 1:
            raise ValueError(f"`tokens_per_step` must be at least 1; got {tokens_per_step}")
        self.tokens_per_step = tokens_per_step

    def __repr__(self) -> str:
        return f"ScheduleCount(tokens_per_step={self.tokens_per_step})"

    def time_grid(self, steps: int, t_min: float = 1e-5) -> Float[Tensor, "points"]:
        """Uniform from 1 to `t_min` (MDLM's grid; noise removal decodes the rest)."""
        return uniform_time_grid(steps, t_min)

    def __call__(
        self,
        process: MaskingProcess,
        n_masked: Int[Tensor, "batch"],
        t: Times,
        s: Times,
        score: PerPosition | None = None,
    ) -> Int[Tensor, "batch"]:
        """The count of each sequence (see the class)."""
        if self.tokens_per_step is not None:
            return n_masked.clamp_max(self.tokens_per_step)
        alpha_t, alpha_s = process.schedule.alpha(t), process.schedule.alpha(s)
        fraction = ((alpha_s - alpha_t) / (1 - alpha_t)).clamp(0, 1)
        return torch.round(n_masked * fraction).long()


@register("count", "even")
class EvenCount(StepCount):
    r"""LLaDA's quota: the masked count split equally over the steps, remainder first.

    On the grid $t_i = 1 - i/T$, step $i$ unmasks
    $\lceil n_i / (T - i) \rceil$ of the $n_i$ positions still masked, which is
    exactly LLaDA's `get_num_transfer_tokens`: with $n_0 = qT + r$, $q + 1$ at
    the first $r$ steps and $q$ after, and nothing is left after the last step.
    """

    def __call__(
        self,
        process: MaskingProcess,
        n_masked: Int[Tensor, "batch"],
        t: Times,
        s: Times,
        score: PerPosition | None = None,
    ) -> Int[Tensor, "batch"]:
        r"""$\lceil n / (T - i) \rceil$ with $T - i = t/(t - s)$ steps left."""
        left = torch.round(t / (t - s)).long().clamp_min(1)
        return torch.div(n_masked + left - 1, left, rounding_mode="floor")


@register("count", "dream")
class DreamCount(StepCount):
    r"""Dream's count: $\lfloor n (1 - s/t) \rfloor$ on $\mathrm{linspace}(1, \epsilon, T + 1)$.

    Computed in float32 as Dream's `diffusion_generate` does, with each row's
    own masked count $n$ (Dream averages it over the batch; equal at batch 1).
    The last step unmasks every remaining position.

    Args:
        eps: The last time $\epsilon$ (Dream's default $10^{-3}$).
    """

    def __init__(self, eps: float = 1e-3) -> None:
        if not 0.0 < eps < 1.0:
            raise ValueError(f"`eps` must lie in (0, 1); got {eps}")
        self.eps = eps

    def __repr__(self) -> str:
        return f"DreamCount(eps={self.eps})"

    def time_grid(self, steps: int, t_min: float = 1e-5) -> Float[Tensor, "points"]:
        r"""Dream's float32 grid $\mathrm{linspace}(1, \epsilon, T + 1)$ (`t_min` unused)."""
        if steps < 1:
            raise ValueError(f"`steps` must be at least 1; got {steps}")
        return torch.linspace(1.0, self.eps, steps + 1, dtype=torch.float32).double()

    def __call__(
        self,
        process: MaskingProcess,
        n_masked: Int[Tensor, "batch"],
        t: Times,
        s: Times,
        score: PerPosition | None = None,
    ) -> Int[Tensor, "batch"]:
        r"""$\lfloor n (1 - s/t) \rfloor$ in float32; $n$ at the last step."""
        t32, s32 = t.float(), s.float()
        count = (n_masked.float() * (1 - s32 / t32)).long()
        last = s32 <= torch.tensor(self.eps, dtype=torch.float32)
        return torch.where(last, n_masked, count)


def _highest(key: PerPosition, k: Int[Tensor, "batch"]) -> MaskFlags:
    """The `k[b]` positions of row `b` with the highest `key` (ties: the first), as flags."""
    rank = key.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)
    return rank < k.unsqueeze(-1)


@register("count", "threshold")
class ThresholdCount(StepCount):
    r"""Fast-dLLM's threshold rule: every masked position scoring at least $\tau$, at least one.

    As Fast-dLLM's `get_transfer_index` with `threshold`: the positions whose
    confidence is $\ge \tau$ unmask, and always the most confident one; the
    last step of the grid unmasks everything left. Fast-dLLM loops until the
    block is decoded, so give at least as many steps as positions per block to
    follow it exactly; steps left once the block is decoded cost no network
    call (nothing changes, and nothing is left to remove).

    Args:
        threshold: $\tau \in (0, 1]$.
    """

    def __init__(self, threshold: float = 0.9) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"`threshold` must lie in (0, 1]; got {threshold}")
        self.threshold = threshold

    def __repr__(self) -> str:
        return f"ThresholdCount(threshold={self.threshold})"

    def __call__(
        self,
        process: MaskingProcess,
        n_masked: Int[Tensor, "batch"],
        t: Times,
        s: Times,
        score: PerPosition | None = None,
    ) -> Int[Tensor, "batch"]:
        """The positions scoring at least the threshold (at least 1); all at the last step."""
        if score is None:
            raise ValueError("ThresholdCount needs the candidates' scores")
        sure = (score >= self.threshold).sum(-1).clamp_min(1)
        return torch.where(s <= 0, n_masked, torch.minimum(sure, n_masked))


@register("count", "factor")
class FactorCount(StepCount):
    r"""Fast-dLLM's `factor` rule: as many of the most confident as clear a falling bar.

    With the masked positions' scores sorted, $c_{(1)} \ge c_{(2)} \ge \dots \ge
    c_{(n)}$, the step unmasks the $k$ most confident, $k$ the length of the
    leading run with $c_{(r)} \ge 1 - f/(r + 1)$ (rank 1 always passes):
    decoding $r$ tokens at once is allowed while each is surer than the bar
    for $r$. As Fast-dLLM's `get_transfer_index_dynamic`, a run that stops at
    rank $n$ (only the last fails) decodes all $n$; the last step of the grid
    unmasks everything left. Like `ThresholdCount`, give at least as many steps
    as positions per block to follow Fast-dLLM's loop, which runs until the
    block is decoded.

    Args:
        factor: $f > 0$ (larger: more tokens per step).
    """

    def __init__(self, factor: float = 1.0) -> None:
        if not factor > 0:
            raise ValueError(f"`factor` must be > 0; got {factor}")
        self.factor = factor

    def __repr__(self) -> str:
        return f"FactorCount(factor={self.factor})"

    def __call__(
        self,
        process: MaskingProcess,
        n_masked: Int[Tensor, "batch"],
        t: Times,
        s: Times,
        score: PerPosition | None = None,
    ) -> Int[Tensor, "batch"]:
        """The leading run of sorted scores above $1 - f/(r + 1)$ (see the class)."""
        if score is None:
            raise ValueError("FactorCount needs the candidates' scores")
        ranked = score.sort(dim=-1, descending=True).values  # -inf (not masked) last
        rank = torch.arange(1, score.shape[-1] + 1, device=score.device, dtype=torch.float64)
        bar = (1 - self.factor / (rank + 1)).masked_fill(rank == 1, -torch.inf)
        run = (ranked >= bar).long().cumprod(-1).sum(-1).clamp_max(n_masked)
        count = torch.where(run >= n_masked - 1, n_masked, run)
        return torch.where(s <= 0, n_masked, count)


class ConfidenceDecoder(Strategy, ABC):
    r"""Base class: unmask the highest-scoring candidates each step.

    Args:
        tokens_per_step: A fixed number $k$ of tokens to unmask per step
            (shorthand for `count=ScheduleCount(k)`); `None` follows `count`.
        resolution: At a positive temperature, scores closer than this are
            ties, broken at random; it sits well above float32 rounding of the
            network's output, so the order does not depend on which CPU or GPU
            kernel computed it. At temperature 0 scores are compared exactly.
        count: The `StepCount` rule (default `ScheduleCount()`: MDLM's expected
            count; `EvenCount()` is LLaDA's, `DreamCount()` Dream's).
    """

    process_type = MaskingProcess
    masked_only = True  # x_θ is read at masked positions only
    never_remasks = True  # decoded tokens stay: once nothing is masked, the run is over

    def __init__(
        self,
        tokens_per_step: int | None = None,
        resolution: float = 1e-5,
        count: StepCount | None = None,
    ) -> None:
        if tokens_per_step is not None and tokens_per_step < 1:
            raise ValueError(f"`tokens_per_step` must be at least 1; got {tokens_per_step}")
        if not 0.0 < resolution <= 1.0:
            raise ValueError(f"`resolution` must lie in (0, 1]; got {resolution}")
        if count is not None and not isinstance(count, StepCount):
            raise TypeError(f"`count` must be a StepCount or None; got {count!r}")
        same = isinstance(count, ScheduleCount) and count.tokens_per_step == tokens_per_step
        if count is not None and tokens_per_step is not None and not same:
            raise ValueError("give `tokens_per_step` or `count`, not both")
        self.tokens_per_step = tokens_per_step
        self.resolution = resolution
        self.count = count if count is not None else ScheduleCount(tokens_per_step)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(tokens_per_step={self.tokens_per_step}, "
            f"resolution={self.resolution}, count={self.count!r})"
        )

    @abstractmethod
    def score(self, x: DecoderInput, candidates: Tokens) -> PerPosition:
        r"""Confidence of each candidate (higher is decoded first).

        Args:
            x: $x_\theta$ as the decoder reads it (`DecoderInput`).
            candidates: The tokens drawn from $x_\theta$ at each position `(B, L)`.

        Returns:
            Scores `(B, L)`, float64; masked positions with the highest scores unmask first.
        """

    def shape_output(
        self,
        log_probs: Float[Tensor, "batch length vocab"],
        shaping: Shaping = UNSHAPED,
        masked: MaskFlags | None = None,
    ) -> DecoderInput:
        r"""The denoiser's $\log x_\theta$ as a `DecoderInput`.

        `probs` is $\exp \log x_\theta$ in float64, untempered and not
        renormalised (a denoiser that reports the mask's mass leaves it out);
        `sampling` is it shaped by `shaping` (temperature, top-k, nucleus), or
        `None` at temperature 0.

        Args:
            log_probs: $\log x_\theta$ `(B, L, V)`.
            shaping: The sampler's `Shaping`.
            masked: Unused (every position's candidate is drawn).

        Returns:
            The decoder's input.
        """
        probs = log_probs.double().exp()
        if shaping.greedy:
            return DecoderInput(probs, None)
        return DecoderInput(probs, shaping.probs(log_probs))

    def time_grid(self, steps: int, t_min: float = 1e-5) -> Float[Tensor, "points"]:
        """The count rule's grid of `steps` steps from 1.

        Args:
            steps: The number of steps $T$.
            t_min: The last time (for `ScheduleCount`).

        Returns:
            `(T + 1,)` float64 times.
        """
        return self.count.time_grid(steps, t_min)

    def alphas(self, process: MaskingProcess, t: Times, s: Times) -> tuple[Times, Times]:
        r"""$(\alpha_t, \alpha_s)$ of the process's schedule.

        Args:
            process: The forward process.
            t: Current times `(B,)`.
            s: Next times `(B,)`.

        Returns:
            $(\alpha_t, \alpha_s)$, each `(B,)`.
        """
        return process.schedule.alpha(t), process.schedule.alpha(s)

    def start(self, process: MaskingProcess, z: Tokens) -> None:
        r"""No per-run state: each step depends on $z_t$ and $x_\theta$ only."""
        return None

    def unmask_count(
        self, process: MaskingProcess, masked: MaskFlags, score: PerPosition, t: Times, s: Times
    ) -> Int[Tensor, "batch"]:
        r"""How many masked positions each sequence unmasks in the step (the `count` rule).

        Args:
            process: The forward process.
            masked: Where $z_t$ is masked `(B, L)`.
            score: The candidates' scores `(B, L)` (float64).
            t: Current times `(B,)`.
            s: Next times `(B,)`.

        Returns:
            Counts `(B,)`, int64.
        """
        return self.count(process, masked.sum(-1), t, s, score.masked_fill(~masked, -torch.inf))

    def rank_key(
        self, score: PerPosition, masked: MaskFlags, greedy: bool, generator: RandomSource
    ) -> PerPosition:
        r"""The key positions are ranked by (masked positions only; the rest get $-\infty$).

        Greedy: the exact score. Otherwise $\lfloor$score / resolution$\rfloor$
        plus a uniform number (random order among ties).
        """
        if not greedy:
            ties = uniform(
                score.shape, generator=generator, dtype=torch.float64, device=score.device
            )
            score = torch.floor(score / self.resolution) + ties
        return score.masked_fill(~masked, -torch.inf)

    def draw(
        self,
        process: MaskingProcess,
        z_t: Tokens,
        x: DecoderInput,
        t: Times,
        s: Times,
        *,
        state: None = None,
        generator: RandomSource = None,
        dtype: torch.dtype = torch.float64,
    ) -> Tokens:
        r"""One step: draw candidates, unmask the `k` most confident per sequence.

        $k$ comes from the `count` rule. At temperature 0 (`x.sampling` is
        `None`) candidates are argmaxes and positions are ranked by their
        exact score, ties to the leftmost; otherwise by
        $\lfloor \text{score} / \text{resolution} \rfloor$, ties in random
        order. Unmasked tokens are never changed.

        Args:
            process: The forward process.
            z_t: Current tokens `(B, L)`.
            x: $x_\theta(z_t)$ as a `DecoderInput` (from `shape_output`).
            t: Current times `(B,)`.
            s: Next times `(B,)`.
            state: Unused: `start` keeps no per-run state.
            generator: Random generator for the candidates and the tie order.
            dtype: Precision of the categorical draw.

        Returns:
            $z_s$ `(B, L)`.
        """
        masked = process.is_masked(z_t)
        greedy = x.sampling is None
        candidates = x.candidates(masked, generator, dtype)
        score = self.score(x, candidates).double()
        key = self.rank_key(score, masked, greedy, generator)
        unmask = masked & _highest(key, self.unmask_count(process, masked, score, t, s))
        return torch.where(unmask, candidates, z_t)


@register("strategy", "maskgit")
class MaskGITDecoder(ConfidenceDecoder):
    r"""MaskGIT / LLaDA's low confidence, Dream's `maskgit_plus`: the candidate's probability.

    The score is the untempered probability of the drawn candidate,
    `x.probs[candidate]` (LLaDA's rule at every temperature; Dream's at
    temperature 0, where Dream also scores untempered).
    """

    def score(self, x: DecoderInput, candidates: Tokens) -> PerPosition:
        r"""$x_\theta[\text{candidate}]$, untempered, float64.

        Args:
            x: $x_\theta$ as the decoder reads it.
            candidates: The tokens drawn from $x_\theta$ at each position `(B, L)`.

        Returns:
            Scores `(B, L)`; masked positions with the highest scores unmask first.
        """
        return x.probs.gather(-1, candidates.unsqueeze(-1)).squeeze(-1)


@register("strategy", "entropy")
class EntropyDecoder(ConfidenceDecoder):
    r"""Dream's `entropy` ordering: low-entropy positions first.

    The score is $\sum_v p_v \log(p_v + 10^{-10})$ (Dream's formula) over
    the distribution candidates are drawn from (untempered at temperature 0),
    with the mask token's own mass as one more term when the denoiser reports it.
    """

    def score(self, x: DecoderInput, candidates: Tokens) -> PerPosition:
        r"""Negative entropy $\sum_v p_v \log (p_v + 10^{-10})$, mask included, float64.

        Computed a chunk of rows at a time; the candidates are not used.

        Args:
            x: $x_\theta$ as the decoder reads it.
            candidates: The tokens drawn from $x_\theta$ at each position `(B, L)`.

        Returns:
            Scores `(B, L)`; masked positions with the highest scores unmask first.
        """
        probs = x.scored()
        rows = probs.reshape(-1, probs.shape[-1])
        out = torch.empty(rows.shape[0], dtype=torch.float64, device=probs.device)
        step = max(1, -(-rows.shape[0] // 8))
        for start in range(0, rows.shape[0], step):
            chunk = rows[start : start + step]
            out[start : start + step] = (chunk * torch.log(chunk + 1e-10)).sum(-1)
        out = out.reshape(probs.shape[:-1])
        if x.sampling is None:
            mask = x.mask_mass()
            out = out + mask * torch.log(mask + 1e-10)
        return out


@register("strategy", "margin")
class MarginDecoder(ConfidenceDecoder):
    """Dream's `topk_margin` ordering: largest gap between the two most likely tokens first.

    Over the distribution candidates are drawn from (untempered at temperature
    0), the mask token included when the denoiser reports its mass.
    """

    def score(self, x: DecoderInput, candidates: Tokens) -> PerPosition:
        r"""Top-1 minus top-2 probability (the candidates are not used), float64.

        Args:
            x: $x_\theta$ as the decoder reads it.
            candidates: The tokens drawn from $x_\theta$ at each position `(B, L)`.

        Returns:
            Scores `(B, L)`; masked positions with the highest scores unmask first.
        """
        probs = x.scored()
        if x.sampling is None:
            probs = torch.cat((probs, x.mask_mass().unsqueeze(-1)), dim=-1)
        if probs.shape[-1] < 2:
            return probs[..., 0]
        top = probs.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]


def dilated_order(length: int) -> Int[Tensor, "length"]:
    r"""The rank of each position in the dilated (bit-reversal) order.

    Position $\ell$ of a sequence of length $L$ gets the rank of
    $\mathrm{rev}_b(\ell)$, its index with the $b = \lceil \log_2 L \rceil$ bits
    reversed, among all positions. Any run of consecutive ranks is spread
    evenly over the sequence, and each run falls between the positions ranked
    before it: for $L = 8$ the order is 0, 4, 2, 6, 1, 5, 3, 7.

    Args:
        length: $L \ge 1$.

    Returns:
        Ranks `(L,)`, int64, a permutation of `0..L-1`.

    Example:
        >>> tuple(dilated_order(8).argsort().tolist())
        (0, 4, 2, 6, 1, 5, 3, 7)
    """
    if length < 1:
        raise ValueError(f"`length` must be at least 1; got {length}")
    bits = max(1, (length - 1).bit_length())
    positions = torch.arange(length)
    reversed_ = torch.zeros_like(positions)
    for bit in range(bits):
        reversed_ |= ((positions >> bit) & 1) << (bits - 1 - bit)
    return reversed_.argsort().argsort()


@register("strategy", "dilated")
class DilatedDecoder(ConfidenceDecoder):
    r"""Dilated unmasking: decode tokens far apart together, in a fixed order.

    The tokens unmasked in one step are drawn independently from their
    marginals under $x_\theta$, so a step errs by the dependence between them
    (their total correlation given the rest). In language nearby tokens depend
    on each other most: the random positions of MDLM sometimes decode
    neighbours together, and confidence orderings often do. This decoder
    unmasks the masked positions in the dilated (bit-reversal) order of
    `dilated_order` (Luxembourg et al., 2025, "Plan for Speed: Dilated
    Scheduling for Masked Diffusion Language Models"): with $k$ tokens a step
    in a sequence of $L = 2^b$, step $j$ decodes positions spaced $L/k$ apart,
    each half-way between tokens decoded before. The order never looks at
    $x_\theta$ or at the drawn values, so nothing is sharpened: each token is a
    draw from $x_\theta$ given everything decoded in earlier steps. Inside
    `BlockSampler` the order is that of each block.

    The number decoded per step follows the noise schedule (MDLM's expected
    count; with the log-linear schedule and a uniform grid, $L/T$ a step) or
    `tokens_per_step`. Prompt and fixed positions are skipped: each step
    decodes the first `k` still-masked positions of the order.

    Args:
        tokens_per_step: A fixed number $k$ of tokens to unmask per step;
            `None` follows the noise schedule.

    Example:
        >>> from discdiff import MaskingProcess
        >>> from discdiff.sampling import AncestralSampler
        >>> process = MaskingProcess(vocab_size=4)
        >>> uniform = lambda z, t: torch.zeros(*z.shape, 4)
        >>> sampler = AncestralSampler(process, DilatedDecoder(), steps=4)
        >>> path = sampler.sample(uniform, 1, 8, return_trajectory=True).trajectory[:, 0]
        >>> tuple(tuple(torch.nonzero(path[i] != 4).flatten().tolist()) for i in (1, 2, 3))
        ((0, 4), (0, 2, 4, 6), (0, 1, 2, 4, 5, 6))
    """

    def __init__(self, tokens_per_step: int | None = None, count: StepCount | None = None) -> None:
        super().__init__(tokens_per_step, count=count)

    def __repr__(self) -> str:
        return f"DilatedDecoder(tokens_per_step={self.tokens_per_step}, count={self.count!r})"

    def score(self, x: DecoderInput, candidates: Tokens | None = None) -> PerPosition:
        r"""Minus the dilated rank of each position (earlier in the order: higher).

        Args:
            x: $x_\theta$; only its shape is read.
            candidates: Unused: the order does not depend on the values.

        Returns:
            Scores `(B, L)`, float64.
        """
        x = x.probs
        rank = dilated_order(x.shape[1]).to(device=x.device, dtype=torch.float64)
        return (-rank).expand(x.shape[:2])

    def draw(
        self,
        process: MaskingProcess,
        z_t: Tokens,
        x: DecoderInput,
        t: Times,
        s: Times,
        *,
        state: None = None,
        generator: RandomSource = None,
        dtype: torch.dtype = torch.float64,
    ) -> Tokens:
        r"""One step: unmask the first `k` masked positions of the dilated order.

        Tokens are drawn from $x_\theta$ at those positions only.

        Args:
            process: The forward process.
            z_t: Current tokens `(B, L)`.
            x: $x_\theta(z_t)$ as a `DecoderInput` (argmax tokens at temperature 0).
            t: Current times `(B,)`.
            s: Next times `(B,)`.
            state: Unused: `start` keeps no per-run state.
            generator: Random generator for the tokens.
            dtype: Precision of the categorical draw.

        Returns:
            $z_s$ `(B, L)`.
        """
        masked = process.is_masked(z_t)
        score = self.score(x).masked_fill(~masked, -torch.inf)
        unmask = masked & _highest(score, self.unmask_count(process, masked, score, t, s))
        return torch.where(unmask, x.candidates(unmask, generator, dtype), z_t)


@register("strategy", "threshold")
class ThresholdDecoder(Strategy):
    r"""Confidence-threshold parallel decoding (Fast-dLLM) on top of any (ReMDM) posterior.

    Each step first draws $z_s \sim q_\sigma(z_s \mid z_t, x_\theta)$ from the
    base posterior (MDLM by default; any `RemaskPosterior`: ReMDM cap, rescale,
    conf, loop, ...), then also decodes every position that is still masked and
    whose confidence $c^\ell = \max_v x_\theta^\ell(v)$ exceeds $\tau$, with a
    token drawn from $x_\theta^\ell$:

    $$
    z_s^\ell \leftarrow \hat x^\ell \sim x_\theta^\ell
    \quad\text{if } z_t^\ell = z_s^\ell = m \text{ and } \max_v x_\theta^\ell(v) > \tau .
    $$

    The choice of positions depends on $x_\theta$ only, never on the drawn
    value, and the base posterior keeps decoding the unsure positions in random
    order, so the sample distribution is not sharpened the way greedy confidence
    orderings (MaskGIT) sharpen it. The price of parallel decoding is that the
    positions decoded in one step are drawn independently from their marginals;
    above $\tau$ each is nearly deterministic, so the joint error is small
    (measured, not assumed: `benchmarks/fast_decoding.py`, and with the exact
    denoiser in the tests). Steps are a budget: decoded positions leave fewer to
    unmask, steps where nothing changes reuse the cached $x_\theta$, and the
    number of network calls adapts to the model's confidence. With remasking
    ($\sigma_t > 0$) decoded tokens can still be corrected, as in ReMDM; the
    sequence then keeps changing and every step calls the network.

    With a confidence decoder as the base (`posterior=MaskGITDecoder()`, in a
    config `{name: threshold, threshold: 0.9, posterior: maskgit}`) it is
    Fast-dLLM's own rule instead: the decoder's candidates (the argmax at
    temperature 0) and float64 scores, and `ThresholdCount(threshold)` as the
    count: every masked position scoring at least $\tau$ unmasks, and always
    the most confident one.

    Args:
        threshold: The confidence $\tau \in (0, 1]$ above which a masked position
            is decoded at once ($\tau = 1$: the base posterior alone).
        posterior: The base posterior (default `MaskingPosterior()`, MDLM), or a
            `ConfidenceDecoder` (Fast-dLLM's rule).

    Example:
        >>> from discdiff import MaskingProcess
        >>> from discdiff.sampling import AncestralSampler
        >>> process = MaskingProcess(vocab_size=4)
        >>> class Sure:  # a time-unconditioned denoiser, 99.96 % sure of token 0
        ...     time_conditioned = False
        ...     def __call__(self, z, t):
        ...         return torch.tensor([9.0, 0, 0, 0]).expand(*z.shape, 4)
        >>> sampler = AncestralSampler(process, ThresholdDecoder(0.9), steps=16)
        >>> result = sampler.sample(Sure(), batch_size=2, length=8)
        >>> result.nfe, result.tokens.unique().tolist()  # decode, then see the finished sequence
        (2, [0])
    """

    process_type = MaskingProcess
    masked_only = True  # x_θ is read at masked positions only

    def __init__(
        self,
        threshold: float = 0.9,
        posterior: RemaskPosterior | ConfidenceDecoder | None = None,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"`threshold` must lie in (0, 1]; got {threshold}")
        if posterior is not None and not isinstance(
            posterior, (RemaskPosterior, ConfidenceDecoder)
        ):
            raise TypeError(
                f"`posterior` must be a RemaskPosterior, a ConfidenceDecoder or None; "
                f"got {posterior!r}"
            )
        self.threshold = threshold
        self.posterior = posterior if posterior is not None else MaskingPosterior()
        self.rule: ConfidenceDecoder | None = None  # Fast-dLLM's rule on a decoder base
        self.never_remasks = isinstance(posterior, ConfidenceDecoder)
        if isinstance(posterior, ConfidenceDecoder):
            self.rule = copy.copy(posterior)
            self.rule.count = ThresholdCount(threshold)
            self.shape_output = self.rule.shape_output

    def __repr__(self) -> str:
        return f"ThresholdDecoder(threshold={self.threshold}, posterior={self.posterior!r})"

    def time_grid(self, steps: int, t_min: float = 1e-5) -> Float[Tensor, "points"]:
        """The base posterior's grid.

        Args:
            steps: The number of steps $T$ (a budget: steps that change nothing cost no call).
            t_min: The last time.

        Returns:
            Decreasing float64 times `(points,)`.
        """
        if self.rule is not None:
            return self.rule.time_grid(steps, t_min)
        return self.posterior.time_grid(steps, t_min)

    def alphas(self, process: MaskingProcess, t: Times, s: Times) -> tuple[Times, Times]:
        r"""$(\alpha_t, \alpha_s)$ of the base posterior.

        Args:
            process: The forward process.
            t: Current times `(B,)`.
            s: Next times `(B,)`.

        Returns:
            $(\alpha_t, \alpha_s)$, each `(B,)`.
        """
        return self.posterior.alphas(process, t, s)

    def start(self, process: MaskingProcess, z: Tokens) -> DecodeConfidence | None:
        r"""The base posterior's per-run state (decode confidences $\psi$ for ReMDM-conf).

        Args:
            process: The forward process.
            z: The starting tokens `(B, L)`.

        Returns:
            A `DecodeConfidence`, or `None`.
        """
        if self.rule is not None:
            return None
        return self.posterior.start(process, z)

    def draw(
        self,
        process: MaskingProcess,
        z_t: Tokens,
        x: Probs | DecoderInput,
        t: Times,
        s: Times,
        *,
        state: DecodeConfidence | None = None,
        generator: RandomSource = None,
        dtype: torch.dtype = torch.float64,
    ) -> Tokens:
        r"""A step of the base posterior, then every confident masked position decoded.

        Args:
            process: The forward process.
            z_t: Current tokens `(B, L)`.
            x: $x_\theta(z_t)$ `(B, L, V)` (a `DecoderInput` for a decoder base).
            t: Current times `(B,)`.
            s: Next times `(B,)`.
            state: The base posterior's state (what `start` returned).
            generator: Random generator.
            dtype: Precision of the categorical draws.

        Returns:
            $z_s$ `(B, L)`.
        """
        if self.rule is not None:  # Fast-dLLM's rule
            return self.rule.draw(process, z_t, x, t, s, generator=generator, dtype=dtype)
        z_s = self.posterior.draw(
            process, z_t, x, t, s, state=state, generator=generator, dtype=dtype
        )
        confident = x.amax(-1) > self.threshold
        extra = confident & process.is_masked(z_t) & process.is_masked(z_s)
        candidates = draw_categorical(x, generator=generator, dtype=dtype, where=extra)
        return torch.where(extra, candidates.squeeze(-1), z_s)
