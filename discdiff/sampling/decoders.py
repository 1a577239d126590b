r"""Decoders that choose where to unmask: MaskGIT / LLaDA / Dream orderings, dilated, threshold.

These are not posteriors of the forward process: at each step they draw a
candidate for every masked position from $x_\theta$, score the candidates,
and unmask only the most confident ones; the rest stay masked (LLaDA calls
this "low-confidence remasking"). By default the number unmasked per step
follows the noise schedule (the expected MDLM count
$n_{\mathrm{masked}} (\alpha_s - \alpha_t)/(1 - \alpha_t)$, rounded); give
`tokens_per_step` for a fixed $k$ instead. They plug into `AncestralSampler`
exactly where a posterior does.

Scores are compared on a grid of `resolution` and ties are broken at random
(from the sampler's generator). Without the grid the order among nearly equal
scores (at the first step every position of a time-unconditioned model sees
the same all-mask input) was decided by the last bits of the network's float32
output, which differ between CPU kernels (AVX-512, AVX2, baseline): the
same seed then gave another MaskGIT table on another machine, while the
posterior samplers, which compare a uniform number with a float64 CDF, did not.
"""

from abc import ABC, abstractmethod

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff.distributions import draw_categorical
from discdiff.posteriors import DecodeConfidence, MaskingPosterior, RemaskPosterior
from discdiff.processes import MaskingProcess
from discdiff.remasking import uniform_time_grid
from discdiff.rng import RandomSource, uniform
from discdiff.typing import MaskFlags, PerPosition, Probs, Times, Tokens

__all__ = [
    "ConfidenceDecoder",
    "DilatedDecoder",
    "EntropyDecoder",
    "MarginDecoder",
    "MaskGITDecoder",
    "ThresholdDecoder",
    "dilated_order",
]


def _highest(key: PerPosition, k: Int[Tensor, "batch"]) -> MaskFlags:
    """The `k[b]` positions of row `b` with the highest `key` (ties: the first), as flags."""
    rank = key.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)
    return rank < k.unsqueeze(-1)


class ConfidenceDecoder(ABC):
    """Base class: unmask the highest-scoring candidates each step.

    Args:
        tokens_per_step: A fixed number $k$ of tokens to unmask per step;
            `None` follows the noise schedule.
        resolution: Scores closer than this are ties, broken at random; it
            sits well above float32 rounding of the network's output, so the
            order does not depend on which CPU or GPU kernel computed it.
    """

    process_type = MaskingProcess
    masked_only = True  # x_θ is read at masked positions only

    def __init__(self, tokens_per_step: int | None = None, resolution: float = 1e-5) -> None:
        if tokens_per_step is not None and tokens_per_step < 1:
            raise ValueError(f"`tokens_per_step` must be at least 1; got {tokens_per_step}")
        if not 0.0 < resolution <= 1.0:
            raise ValueError(f"`resolution` must lie in (0, 1]; got {resolution}")
        self.tokens_per_step = tokens_per_step
        self.resolution = resolution

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(tokens_per_step={self.tokens_per_step}, "
            f"resolution={self.resolution})"
        )

    @abstractmethod
    def score(self, x: Probs, candidates: Tokens) -> PerPosition:
        r"""Confidence of each candidate (higher is decoded first).

        Args:
            x: $x_\theta$, probabilities over the data tokens `(B, L, V)`.
            candidates: The tokens drawn from $x_\theta$ at each position `(B, L)`.

        Returns:
            Scores `(B, L)`; masked positions with the highest scores unmask first.
        """

    def time_grid(self, steps: int, t_min: float = 1e-5) -> Float[Tensor, "points"]:
        """A uniform grid of `steps` steps from 1 to `t_min`.

        Args:
            steps: The number of steps $T$.
            t_min: The last time.

        Returns:
            `(T + 1,)` float64 times.
        """
        return uniform_time_grid(steps, t_min)

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

    def count(
        self, process: MaskingProcess, masked: MaskFlags, score: PerPosition, t: Times, s: Times
    ) -> Int[Tensor, "batch"]:
        r"""How many masked positions each sequence unmasks in the step.

        `tokens_per_step` (at most the masked count), or MDLM's expected number
        $\mathrm{round}\big(n_{\mathrm{masked}} (\alpha_s - \alpha_t)/(1 - \alpha_t)\big)$.

        Args:
            process: The forward process.
            masked: Where $z_t$ is masked `(B, L)`.
            score: The candidates' scores `(B, L)` (float64).
            t: Current times `(B,)`.
            s: Next times `(B,)`.

        Returns:
            Counts `(B,)`, int64.
        """
        n_masked = masked.sum(-1)
        if self.tokens_per_step is not None:
            return n_masked.clamp_max(self.tokens_per_step)
        alpha_t, alpha_s = self.alphas(process, t, s)
        fraction = ((alpha_s - alpha_t) / (1 - alpha_t)).clamp(0, 1)
        return torch.round(n_masked * fraction).long()

    def draw(
        self,
        process: MaskingProcess,
        z_t: Tokens,
        x: Probs,
        t: Times,
        s: Times,
        *,
        state: None = None,
        generator: RandomSource = None,
        dtype: torch.dtype = torch.float64,
    ) -> Tokens:
        r"""One step: draw candidates, unmask the `k` most confident per sequence.

        $k$ comes from `count`: `tokens_per_step`, or MDLM's expected number
        $\mathrm{round}\big(n_{\mathrm{masked}} (\alpha_s - \alpha_t)/(1 - \alpha_t)\big)$.
        Positions are ranked by $\lfloor \text{score} / \text{resolution} \rfloor$,
        ties in random order. Unmasked tokens are never changed.

        Args:
            process: The forward process.
            z_t: Current tokens `(B, L)`.
            x: $x_\theta(z_t)$ `(B, L, V)`.
            t: Current times `(B,)`.
            s: Next times `(B,)`.
            state: Unused: `start` keeps no per-run state.
            generator: Random generator for the candidates and the tie order.
            dtype: Precision of the categorical draw.

        Returns:
            $z_s$ `(B, L)`.
        """
        masked = process.is_masked(z_t)
        candidates = draw_categorical(x, generator=generator, dtype=dtype, where=masked)
        candidates = candidates.squeeze(-1)
        score = self.score(x, candidates).double()
        ties = uniform(score.shape, generator=generator, dtype=torch.float64, device=score.device)
        key = (torch.floor(score / self.resolution) + ties).masked_fill(~masked, -torch.inf)
        unmask = masked & _highest(key, self.count(process, masked, score, t, s))
        return torch.where(unmask, candidates, z_t)


class MaskGITDecoder(ConfidenceDecoder):
    r"""MaskGIT / LLaDA: the probability $x_\theta$ gives the drawn candidate."""

    def score(self, x: Probs, candidates: Tokens) -> PerPosition:
        r"""$x_\theta[\text{candidate}]$, the probability of the drawn token.

        Args:
            x: $x_\theta$, probabilities over the data tokens `(B, L, V)`.
            candidates: The tokens drawn from $x_\theta$ at each position `(B, L)`.

        Returns:
            Scores `(B, L)`; masked positions with the highest scores unmask first.
        """
        return x.gather(-1, candidates.unsqueeze(-1)).squeeze(-1)


class EntropyDecoder(ConfidenceDecoder):
    """Dream's entropy ordering: low-entropy positions first."""

    def score(self, x: Probs, candidates: Tokens) -> PerPosition:
        r"""Negative entropy $\sum_v x_\theta[v] \log x_\theta[v]$ at each position.

        Computed a chunk of rows at a time; the candidates are not used.

        Args:
            x: $x_\theta$, probabilities over the data tokens `(B, L, V)`.
            candidates: The tokens drawn from $x_\theta$ at each position `(B, L)`.

        Returns:
            Scores `(B, L)`; masked positions with the highest scores unmask first.
        """
        rows = x.reshape(-1, x.shape[-1])
        out = torch.empty(rows.shape[0], dtype=x.dtype, device=x.device)
        step = max(1, -(-rows.shape[0] // 8))
        for start in range(0, rows.shape[0], step):
            chunk = rows[start : start + step]
            out[start : start + step] = torch.xlogy(chunk, chunk).sum(-1)
        return out.reshape(x.shape[:-1])


class MarginDecoder(ConfidenceDecoder):
    """Dream's margin ordering: largest gap between the two most likely tokens first."""

    def score(self, x: Probs, candidates: Tokens) -> PerPosition:
        r"""Top-1 minus top-2 probability of $x_\theta$ (the candidates are not used).

        Args:
            x: $x_\theta$, probabilities over the data tokens `(B, L, V)`.
            candidates: The tokens drawn from $x_\theta$ at each position `(B, L)`.

        Returns:
            Scores `(B, L)`; masked positions with the highest scores unmask first.
        """
        if x.shape[-1] < 2:
            return x[..., 0]
        top = x.topk(2, dim=-1).values
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

    def __init__(self, tokens_per_step: int | None = None) -> None:
        super().__init__(tokens_per_step)

    def __repr__(self) -> str:
        return f"DilatedDecoder(tokens_per_step={self.tokens_per_step})"

    def score(self, x: Probs, candidates: Tokens | None = None) -> PerPosition:
        r"""Minus the dilated rank of each position (earlier in the order: higher).

        Args:
            x: $x_\theta$ `(B, L, V)`; only its shape is read.
            candidates: Unused: the order does not depend on the values.

        Returns:
            Scores `(B, L)`, float64.
        """
        rank = dilated_order(x.shape[1]).to(device=x.device, dtype=torch.float64)
        return (-rank).expand(x.shape[:2])

    def draw(
        self,
        process: MaskingProcess,
        z_t: Tokens,
        x: Probs,
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
            x: $x_\theta(z_t)$ `(B, L, V)`.
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
        unmask = masked & _highest(score, self.count(process, masked, score, t, s))
        drawn = draw_categorical(x, generator=generator, dtype=dtype, where=unmask)
        return torch.where(unmask, drawn.squeeze(-1), z_t)


class ThresholdDecoder:
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

    Args:
        threshold: The confidence $\tau \in (0, 1]$ above which a masked position
            is decoded at once ($\tau = 1$: the base posterior alone).
        posterior: The base posterior (default `MaskingPosterior()`, MDLM).

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

    def __init__(self, threshold: float = 0.9, posterior: RemaskPosterior | None = None) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"`threshold` must lie in (0, 1]; got {threshold}")
        if posterior is not None and not isinstance(posterior, RemaskPosterior):
            raise TypeError(f"`posterior` must be a RemaskPosterior or None; got {posterior!r}")
        self.threshold = threshold
        self.posterior = posterior if posterior is not None else MaskingPosterior()

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
        return self.posterior.start(process, z)

    def draw(
        self,
        process: MaskingProcess,
        z_t: Tokens,
        x: Probs,
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
            x: $x_\theta(z_t)$ `(B, L, V)`.
            t: Current times `(B,)`.
            s: Next times `(B,)`.
            state: The base posterior's state (what `start` returned).
            generator: Random generator.
            dtype: Precision of the categorical draws.

        Returns:
            $z_s$ `(B, L)`.
        """
        z_s = self.posterior.draw(
            process, z_t, x, t, s, state=state, generator=generator, dtype=dtype
        )
        confident = x.amax(-1) > self.threshold
        extra = confident & process.is_masked(z_t) & process.is_masked(z_s)
        candidates = draw_categorical(x, generator=generator, dtype=dtype, where=extra)
        return torch.where(extra, candidates.squeeze(-1), z_s)
