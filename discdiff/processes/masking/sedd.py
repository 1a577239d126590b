r"""SEDD's samplers for absorbing scores: the analytic (Tweedie τ-leaping) step and Euler.

With a score model $s_\theta(z_t, t)$ (see `discdiff.models.score`) and its
total $S^\ell = \sum_v s^\ell_v$ at a masked position, a step $t \to s$ of
SEDD's absorbing samplers keeps unmasked tokens and, at a masked position,

$$
p(z_s^\ell = v) = u\, \frac{s^\ell_v}{S^\ell}, \qquad p(z_s^\ell = m) = 1 - u,
$$

with the unmasking probability (clipped to $[0, 1]$)

- analytic: $u = (e^{\sigma(t) - \sigma(s)} - 1)\, S^\ell
  = \big(\tfrac{\alpha_s}{\alpha_t} - 1\big) S^\ell$
  (SEDD's `staggered_score` × `transp_transition`);
- Euler: $u = (t - s)\, \sigma'(t)\, S^\ell = (t - s)\,\tfrac{-\alpha'_t}{\alpha_t}\, S^\ell$
  (SEDD's `reverse_rate` × step size).

For exact scores $S^\ell = r_t = \alpha_t/(1 - \alpha_t)$ and the analytic
step is exactly MDLM's posterior with $x_\theta = s/S$:
$u = (\alpha_s - \alpha_t)/(1 - \alpha_t)$. A learned score's total differs
from $r_t$, and then it is not: the analytic sampler reads the total, which
a denoiser (normalised) does not have. So both samplers are strategies here,
not a score-to-denoiser adapter; `tests/test_sedd.py` shows both facts by
exact enumeration of the final-sample distribution. The Euler step is a
first-order approximation even with exact scores — except under the
log-linear schedule (SEDD's and MDLM's default): $\alpha_t$ is linear in $t$,
so $(t - s)\,\sigma'(t) = (\alpha_s - \alpha_t)/\alpha_t$ and the two steps
coincide for any score.

Both are `RemaskPosterior`s (no remasking) with their own `shape_output`:
the sampler hands them the scores $S \cdot \hat x$, where $\hat x$ is the
normalised score after temperature / top-k / nucleus, so nucleus shapes the
token choice and the total keeps the unmasking rate. The final noise-removal
step takes the argmax (SEDD's code samples there).
"""

from abc import abstractmethod

import torch
from jaxtyping import Float
from torch import Tensor

from discdiff._checks import as_tensor
from discdiff.distributions import MaskedCategorical
from discdiff.processes.masking.posteriors import RemaskPosterior
from discdiff.processes.masking.process import MaskingProcess
from discdiff.processes.masking.remasking import NoRemasking
from discdiff.registry import register
from discdiff.shaping import UNSHAPED, Shaping
from discdiff.typing import Confidence, MaskFlags, Times, Tokens

__all__ = ["SEDDAnalytic", "SEDDEuler", "ScorePosterior"]


class ScorePosterior(RemaskPosterior):
    r"""Base class of SEDD's absorbing samplers: a masked position unmasks with $u(S)$.

    Subclasses give `unmask_prob`; the step is then the `MaskedCategorical`
    with mask probability $1 - u$ at masked positions and the normalised
    scores as its token distribution.
    """

    def __init__(self) -> None:
        super().__init__(NoRemasking())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def shape_output(
        self,
        log_scores: Float[Tensor, "batch length vocab"],
        shaping: Shaping = UNSHAPED,
        masked: MaskFlags | None = None,
    ) -> Float[Tensor, "batch length vocab"]:
        r"""The scores a step uses: $S \cdot \hat x$ (see the module docstring).

        Args:
            log_scores: The score model's output `(B, L, V)`.
            shaping: Temperature, top-k and nucleus of $\hat x$.
            masked: Unused (the total is over every position).

        Returns:
            Non-negative scores `(B, L, V)` whose sum is the model's total $S$.
        """
        total = log_scores.float().logsumexp(-1, keepdim=True).exp()
        return shaping.probs(log_scores) * total

    @abstractmethod
    def unmask_prob(
        self, process: MaskingProcess, total: Tensor, t: Times, s: Times
    ) -> Float[Tensor, "batch length"]:
        r"""$u$ for totals $S$ `(B, L)` on the step $t \to s$ (before clipping)."""

    def __call__(
        self,
        process: MaskingProcess,
        z_t: Tokens,
        x: Float[Tensor, "batch length vocab"],
        t: Times | float,
        s: Times | float,
        *,
        confidence: Confidence | None = None,
    ) -> MaskedCategorical:
        r"""The step's distribution over $z_s$, batch `(B,)`, event `(L,)`.

        Args:
            process: The masking process.
            z_t: Current tokens `(B, L)`.
            x: Scores `(B, L, V)` (from `shape_output`; at unmasked positions unread).
            t: Current times, `(B,)` or a float.
            s: Next times, `(B,)` or a float, `s < t`.
            confidence: Unused (no remasking).

        Raises:
            ValueError: On shape mismatches, ids outside the vocabulary or unordered times.
        """
        if x.shape[:2] != z_t.shape or x.shape[-1] != process.vocab_size:
            raise ValueError(
                f"`x` must have shape (B, L, V) = {(*z_t.shape, process.vocab_size)}; "
                f"got {tuple(x.shape)}"
            )
        process.check_tokens("z_t", z_t, allow_mask=True)
        t, s = torch.broadcast_tensors(as_tensor(t).reshape(-1), as_tensor(s).reshape(-1))
        self.alphas(process, t, s)  # checks the times
        total = x.sum(-1)
        unmask = self.unmask_prob(process, total.double(), t.double(), s.double()).clamp(0.0, 1.0)
        masked = process.is_masked(z_t)
        mask_prob = torch.where(masked, 1.0 - unmask, 0.0).float()
        probs = x / total.clamp_min(1e-30).unsqueeze(-1)
        return MaskedCategorical(
            mask_prob.expand(z_t.shape),
            vocab_size=process.vocab_size,
            mask_id=process.mask_id,
            probs=probs,
            carry=z_t,
        )


@register("strategy", "sedd-analytic")
class SEDDAnalytic(ScorePosterior):
    r"""SEDD's analytic (Tweedie τ-leaping) step: $u = (\alpha_s/\alpha_t - 1)\, S$.

    Example:
        >>> from discdiff import AncestralSampler, MaskingProcess
        >>> from discdiff.models.score import DenoiserScores
        >>> process = MaskingProcess(vocab_size=3)
        >>> scores = DenoiserScores(lambda z, t: torch.zeros(*z.shape, 3), process)
        >>> sampler = AncestralSampler(process, SEDDAnalytic(), steps=8)
        >>> sampler.sample(scores, batch_size=2, length=5).tokens.shape
        torch.Size([2, 5])
    """

    def unmask_prob(
        self, process: MaskingProcess, total: Tensor, t: Times, s: Times
    ) -> Float[Tensor, "batch length"]:
        r"""$(\alpha_s/\alpha_t - 1) S$."""
        alpha_t, alpha_s = process.schedule.alpha(t), process.schedule.alpha(s)
        return (alpha_s / alpha_t - 1.0).unsqueeze(-1) * total


@register("strategy", "sedd-euler")
class SEDDEuler(ScorePosterior):
    r"""SEDD's Euler step of the reverse CTMC: $u = (t - s)\, \sigma'(t)\, S$."""

    def unmask_prob(
        self, process: MaskingProcess, total: Tensor, t: Times, s: Times
    ) -> Float[Tensor, "batch length"]:
        r"""$(t - s)(-\alpha'_t/\alpha_t) S$."""
        sigma_prime = -process.schedule.alpha_prime(t) / process.schedule.alpha(t)
        return ((t - s) * sigma_prime).unsqueeze(-1) * total
