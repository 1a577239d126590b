r"""Objectives of the paper's baselines: SEDD's score entropy and the autoregressive NLL.

**Score entropy** (SEDD, absorbing process; Lou et al. 2024). For a score
model $s_\theta(z_t, t)$ (see `discdiff.models.score`), with
$\sigma(t) = -\log\alpha_t$ and $r_t = \alpha_t / (1 - \alpha_t)
= 1/(e^{\sigma(t)} - 1)$, the diffusion-weighted denoising score entropy

$$
\mathcal{L}(x) = \int_0^1 \sigma'(t)\, \mathbb{E}_{z_t \sim q(\cdot \mid x)}
\sum_{\ell:\, z_t^\ell = m} \Big[\sum_v s^\ell_v - r_t \log s^\ell_{x^\ell}
+ r_t (\log r_t - 1)\Big]\, dt
$$

is an upper bound on $-\log p_\theta(x)$. Each bracket is a Bregman
divergence between $s^\ell$ and the exact score, so it is $\ge 0$ and zero
only at $s^\ell_v = r_t\, p(x^\ell = v \mid z_t)$. Plugging that in gives
MDLM's integrand $\frac{-\alpha'_t}{1 - \alpha_t} \sum_\ell -\log p(x^\ell \mid z_t)$
($\sigma'_t r_t = -\alpha'_t/(1 - \alpha_t)$), so with exact scores the
expectation is $-\log p(x)$ for every schedule. SEDD's log-linear noise
$\sigma(t) = -\log(1 - (1 - \varepsilon) t)$ is `LogLinear(eps)` here.
The estimate uses the same antithetic times on $[\delta, 1]$ and the same
"integral" convention as `discdiff.nelbo`.

**Autoregressive NLL**: $-\sum_\ell \log p_\theta(x_\ell \mid x_{<\ell})$ of a
causal model (`discdiff.models.CausalTransformer`), exact and noise-free.

Both are trainer `Objective`s (`train.objective: score-entropy | autoregressive`
in a run config) and bounds the trainer validates with.
"""

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from discdiff.models.causal import CausalTransformer, next_token_nll
from discdiff.models.score import ScoreModel, log_score_ratio
from discdiff.objectives import (
    T_MIN,
    ContinuousNELBO,
    _denoise,
    _noised,
    _scored_positions,
)
from discdiff.processes.masking.process import MaskingProcess
from discdiff.registry import register

__all__ = ["AutoregressiveNLL", "PrefixClassification", "ScoreEntropy", "score_entropy"]


def score_entropy(
    process: MaskingProcess,
    score_model: object,
    x: Int[Tensor, "batch length"],
    *,
    prompt_mask: Bool[Tensor, "batch length"] | None = None,
    padding_mask: Bool[Tensor, "batch length"] | None = None,
    generator: torch.Generator | None = None,
    t: Float[Tensor, "batch"] | None = None,
    z_t: Int[Tensor, "batch length"] | None = None,
) -> Float[Tensor, "batch"]:
    r"""SEDD's diffusion-weighted denoising score entropy of each sequence, in nats.

    One Monte-Carlo time per sequence (antithetic across the batch), on
    $[\delta, 1]$ with $\delta = 10^{-3}$, weighted by the interval's length
    as `nelbo` is.

    Args:
        process: The masking process (its schedule gives $\sigma(t)$).
        score_model: `(z_t, t) -> log-scores (B, L, V)`, e.g. a `ScoreModel`;
            called with `padding_mask=` when one is given.
        x: Clean tokens `(B, L)`.
        prompt_mask: `(B, L)`, `True` at prompt tokens: kept clean and not
            counted, a bound on the response given the prompt (as in `nelbo`).
        padding_mask: `(B, L)`, `True` at real tokens; padded positions do not count.
        generator: Random generator for the times and the masks.
        t: Times `(B,)` in $(0, 1]$ to use instead of antithetic draws.
        z_t: A draw of $q(z_t \mid x)$ at `t` (with `t`).

    Returns:
        `(B,)` unbiased estimates of the score entropy on $[\delta, 1]$.

    Raises:
        ValueError: If `padding_mask` or `prompt_mask` does not match `x`, or the
            process is not a masking process.

    Example:
        >>> from discdiff.models.score import DenoiserScores
        >>> process = MaskingProcess(vocab_size=3)
        >>> uniform = DenoiserScores(lambda z, t: torch.zeros(*z.shape, 3), process)
        >>> loss = score_entropy(process, uniform, torch.tensor([[0, 1, 2, 0]]))
        >>> loss.shape
        torch.Size([1])
    """
    scored = _scored_positions(x, padding_mask=padding_mask, prompt_mask=prompt_mask)
    if not isinstance(process, MaskingProcess):
        raise ValueError(
            f"`process` must be a MaskingProcess (score entropy here is SEDD's absorbing "
            f"form); got {type(process).__name__}"
        )
    t, z_t = _noised(process, x, t, z_t, prompt_mask, generator)
    log_s = _denoise(score_model, z_t, t, padding_mask).float()
    log_r = log_score_ratio(process, t)[:, None]  # (B, 1)
    r = log_r.exp()
    total = log_s.logsumexp(-1).exp()  # Σ_v s_v
    log_s_x = log_s.gather(-1, x.unsqueeze(-1)).squeeze(-1)
    entropy = total - r * log_s_x + r * (log_r - 1.0)
    counted = process.is_masked(z_t)
    if scored is not None:
        counted = counted & scored
    alpha = process.schedule.alpha(t)
    sigma_prime = -process.schedule.alpha_prime(t) / alpha  # σ'(t) = -α'_t / α_t
    weight = sigma_prime * (1.0 - T_MIN)  # the length of [δ, 1]
    return weight * (entropy * counted).sum(-1)


@register("objective", "score-entropy", wrap=ScoreModel, sampler="sedd-analytic")
class ScoreEntropy:
    """`score_entropy` as a trainer `Objective` (antithetic times and masks as its noise)."""

    def noise(
        self, process: MaskingProcess, x: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, ...]:
        """Antithetic times and $z_t$ for the batch (as `ContinuousNELBO`)."""
        return ContinuousNELBO().noise(process, x, generator)

    def loss(
        self,
        process: MaskingProcess,
        denoiser: object,
        x: Tensor,
        *noise: Tensor,
        padding_mask: Tensor | None = None,
        prompt_mask: Tensor | None = None,
    ) -> Tensor:
        """The score entropy per sequence; `denoiser` is the score model."""
        t, z_t = noise
        return score_entropy(
            process,
            denoiser,
            x,
            t=t,
            z_t=z_t,
            padding_mask=padding_mask,
            prompt_mask=prompt_mask,
        )


@register(
    "objective",
    "autoregressive",
    network=CausalTransformer,
    wrap=lambda network, process: network,
    sampler=None,
)
class AutoregressiveNLL:
    """The exact next-token NLL of a causal model as a trainer `Objective` (no noise)."""

    def noise(
        self, process: MaskingProcess, x: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, ...]:
        """No randomness.

        Args:
            process: The forward process (unused).
            x: Clean tokens (unused).
            generator: Random generator (unused).

        Returns:
            An empty tuple.
        """
        return ()

    def loss(
        self,
        process: MaskingProcess,
        denoiser: object,
        x: Tensor,
        *noise: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """The model's next-token NLL of `x` (through its `forward`, so DDP syncs gradients).

        Args:
            process: The forward process (unused).
            denoiser: A `CausalTransformer` (e.g. an `ARJudge`), possibly DDP-wrapped.
            x: Clean tokens `(B, L)`.
            *noise: Nothing.
            padding_mask: `(B, L)`, `True` at real tokens; padded ones are not scored.

        Returns:
            Nats per sequence `(B,)`.
        """
        return next_token_nll(denoiser(x), x, padding_mask)


class PrefixClassification:
    r"""Cross-entropy of a prefix classifier at every prefix, as an `Objective` (FUDGE).

    $$
    \mathcal{L}(\phi) = \mathbb{E}_{(x, c)} \sum_{\ell=1}^{L} -\log p_\phi(c \mid x_{\le \ell}),
    $$

    for a `PrefixClassifier` on labelled batches `(x, label)`. The sum over
    positions makes the trainer's "nats/token" the mean cross-entropy per prefix.
    """

    def noise(
        self, process: MaskingProcess, x: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, ...]:
        """No randomness."""
        return ()

    def loss(
        self,
        process: MaskingProcess,
        denoiser: object,
        x: Tensor,
        *noise: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """`(B,)` summed cross-entropies; `noise` is `(label,)`."""
        if padding_mask is not None:
            raise ValueError("PrefixClassification takes no `padding_mask`: classify whole rows")
        (label,) = noise
        logits = denoiser(x)  # (B, L, C)
        target = label[:, None].expand(x.shape)
        return torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), target, reduction="none"
        ).sum(-1)
