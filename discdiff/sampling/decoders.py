r"""Confidence-ordered decoders: MaskGIT / LLaDA low-confidence remasking, Dream orderings.

These are not posteriors of the forward process: at each step they draw a
candidate for every masked position from $x_\theta$, score the candidates,
and unmask only the most confident ones; the rest stay masked (LLaDA calls
this "low-confidence remasking"). By default the number unmasked per step
follows the noise schedule (the expected MDLM count
$n_{\mathrm{masked}} (\alpha_s - \alpha_t)/(1 - \alpha_t)$, rounded); give
`tokens_per_step` for a fixed $k$ instead. They plug into `AncestralSampler`
exactly where a posterior does.
"""

from abc import ABC, abstractmethod

import torch
from jaxtyping import Float
from torch import Tensor

from discdiff.distributions import draw_categorical
from discdiff.processes import MaskingProcess
from discdiff.remasking import uniform_time_grid
from discdiff.typing import Confidence, PerPosition, Probs, Times, Tokens

__all__ = ["ConfidenceDecoder", "EntropyDecoder", "MarginDecoder", "MaskGITDecoder"]


class ConfidenceDecoder(ABC):
    """Base class: unmask the highest-scoring candidates each step.

    Args:
        tokens_per_step: A fixed number $k$ of tokens to unmask per step;
            `None` follows the noise schedule.
    """

    def __init__(self, tokens_per_step: int | None = None) -> None:
        if tokens_per_step is not None and tokens_per_step < 1:
            raise ValueError(f"`tokens_per_step` must be at least 1; got {tokens_per_step}")
        self.tokens_per_step = tokens_per_step

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tokens_per_step={self.tokens_per_step})"

    @abstractmethod
    def score(self, x: Probs, candidates: Tokens) -> PerPosition:
        """Confidence of each candidate (higher is decoded first)."""

    def time_grid(self, steps: int, t_min: float = 1e-5) -> Float[Tensor, "points"]:
        """A uniform grid of `steps` steps from 1 to `t_min`."""
        return uniform_time_grid(steps, t_min)

    def alphas(self, process: MaskingProcess, t: Times, s: Times) -> tuple[Times, Times]:
        r"""$(\alpha_t, \alpha_s)$ of the process's schedule."""
        return process.schedule.alpha(t), process.schedule.alpha(s)

    def draw(
        self,
        process: MaskingProcess,
        z_t: Tokens,
        x: Probs,
        t: Times,
        s: Times,
        *,
        confidence: Confidence,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> Tokens:
        """One step: draw candidates, unmask the `k` most confident per sequence."""
        masked = process.is_masked(z_t)
        candidates = draw_categorical(x, generator=generator, dtype=dtype).squeeze(-1)
        score = self.score(x, candidates).masked_fill(~masked, -torch.inf)
        n_masked = masked.sum(-1)
        if self.tokens_per_step is None:
            alpha_t, alpha_s = self.alphas(process, t, s)
            fraction = ((alpha_s - alpha_t) / (1 - alpha_t)).clamp(0, 1)
            k = torch.round(n_masked * fraction).long()
        else:
            k = n_masked.clamp_max(self.tokens_per_step)
        order = torch.argsort(score, dim=-1, descending=True, stable=True)
        rank = torch.argsort(order, dim=-1)
        unmask = masked & (rank < k.unsqueeze(-1))
        return torch.where(unmask, candidates, z_t)


class MaskGITDecoder(ConfidenceDecoder):
    r"""MaskGIT / LLaDA: the probability $x_\theta$ gives the drawn candidate."""

    def score(self, x: Probs, candidates: Tokens) -> PerPosition:
        """`x[candidate]`."""
        return x.gather(-1, candidates.unsqueeze(-1)).squeeze(-1)


class EntropyDecoder(ConfidenceDecoder):
    """Dream's entropy ordering: low-entropy positions first."""

    def score(self, x: Probs, candidates: Tokens) -> PerPosition:
        r"""Negative entropy of $x_\theta$ at each position (a chunk of rows at a time)."""
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
        """Top-1 minus top-2 probability."""
        if x.shape[-1] < 2:
            return x[..., 0]
        top = x.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]
