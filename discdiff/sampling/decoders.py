r"""Confidence-ordered decoders: MaskGIT / LLaDA low-confidence remasking, Dream orderings.

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
from jaxtyping import Float
from torch import Tensor

from discdiff.distributions import draw_categorical
from discdiff.processes import MaskingProcess
from discdiff.remasking import uniform_time_grid
from discdiff.rng import RandomSource, uniform
from discdiff.typing import PerPosition, Probs, Times, Tokens

__all__ = ["ConfidenceDecoder", "EntropyDecoder", "MarginDecoder", "MaskGITDecoder"]


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

        $k$ is `tokens_per_step`, or MDLM's expected number
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
        candidates = draw_categorical(x, generator=generator, dtype=dtype).squeeze(-1)
        score = self.score(x, candidates).double()
        ties = uniform(score.shape, generator=generator, dtype=torch.float64, device=score.device)
        key = (torch.floor(score / self.resolution) + ties).masked_fill(~masked, -torch.inf)
        n_masked = masked.sum(-1)
        if self.tokens_per_step is None:
            alpha_t, alpha_s = self.alphas(process, t, s)
            fraction = ((alpha_s - alpha_t) / (1 - alpha_t)).clamp(0, 1)
            k = torch.round(n_masked * fraction).long()
        else:
            k = n_masked.clamp_max(self.tokens_per_step)
        order = torch.argsort(key, dim=-1, descending=True, stable=True)
        rank = torch.argsort(order, dim=-1)
        unmask = masked & (rank < k.unsqueeze(-1))
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
