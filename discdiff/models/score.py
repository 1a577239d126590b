r"""Score models of the absorbing process (SEDD): concrete scores instead of $x_\theta$.

A score model outputs, at each masked position $\ell$ of $z_t$, the log of the
*concrete score*

$$
s_\theta(z_t, t)^\ell_v \approx \frac{p_t(z_t \text{ with } z_t^\ell \leftarrow v)}{p_t(z_t)}
= r_t\, p(x^\ell = v \mid z_t), \qquad r_t = \frac{\alpha_t}{1 - \alpha_t}
= \frac{1}{e^{\sigma(t)} - 1},
$$

with $\sigma(t) = -\log\alpha_t$ (Lou et al. 2024). The scores are positive
and unnormalised: their total $S^\ell = \sum_v s^\ell_v$ should be $r_t$, but
a network is free to get it wrong (score entropy penalises that). Normalised,
they are a denoiser: $x_\theta = s / S$, so every score model is also a
`Denoiser` (its log-scores are logits of $x_\theta$).

`ScoreModel` puts SEDD's output head on a backbone (a `DiT`): log-scores
$= \text{logits} - \log(e^{\sigma} - 1) - \log V$ ("scale by sigma", so a
network that outputs zeros starts near the right total). At unmasked
positions it carries the token over as `SUBS` does (score 1 for the token,
none for the rest), which no loss or sampler reads. `DenoiserScores` turns a
denoiser into scores, $\log s = \log x_\theta + \log r_t$ (the exact score
for an exact denoiser; `scale` mis-scales it on purpose).
"""

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn

from discdiff._checks import validation_enabled
from discdiff.models.protocol import Denoiser
from discdiff.processes.base import NEG
from discdiff.processes.masking.process import MaskingProcess
from discdiff.typing import Times, Tokens

__all__ = ["DenoiserScores", "ScoreModel", "log_score_ratio"]


def log_score_ratio(process: MaskingProcess, t: Times) -> Float[Tensor, "batch"]:
    r"""$\log r_t = \log\alpha_t - \log(1 - \alpha_t) = -\log(e^{\sigma(t)} - 1)$.

    Args:
        process: Supplies the noise schedule.
        t: Times `(B,)` in $(0, 1]$.

    Returns:
        `(B,)` in float32.
    """
    alpha = process.schedule.alpha(t.double())
    return (alpha.log() - torch.log1p(-alpha)).float()


def _carry_over(log_scores: Tensor, z_t: Tensor, process: MaskingProcess) -> Tensor:
    """Keep `log_scores` at masked positions; the carried token (0) elsewhere (as SUBS)."""
    unmasked = ~process.is_masked(z_t)
    carried = torch.nn.functional.one_hot(torch.where(unmasked, z_t, 0), process.vocab_size)
    one_hot_log = torch.where(carried.bool(), 0.0, NEG)
    return torch.where(unmasked.unsqueeze(-1), one_hot_log, log_scores)


class ScoreModel(nn.Module):
    r"""SEDD's score network on a backbone `(tokens, sigma, padding_mask) -> logits`.

    $$
    \log s_\theta(z_t, t)^\ell_v = f_\theta(z_t, \sigma(t))^\ell_v
        - \log(e^{\sigma(t)} - 1) - \log V
    $$

    at masked positions, for the data tokens $v < V$ (a backbone column for
    the mask id, if any, is dropped).

    Args:
        backbone: E.g. a `DiT` with `vocab_size` $V + 1$.
        process: Supplies $V$, the mask id and $\alpha_t$.
        time_conditioning: Feed $\sigma(t)$ to the backbone; defaults to the
            backbone's `config.time_conditioning` (SEDD: on). The output depends
            on $t$ through the scale either way.

    Example:
        >>> from discdiff import DiT, DiTConfig
        >>> process = MaskingProcess(vocab_size=4)
        >>> scores = ScoreModel(DiT(DiTConfig.micro(5, time_conditioning=True)), process)
        >>> scores(torch.full((2, 6), 4), torch.full((2,), 0.5)).shape
        torch.Size([2, 6, 4])
    """

    time_conditioned = True

    def __init__(
        self,
        backbone: nn.Module,
        process: MaskingProcess,
        *,
        time_conditioning: bool | None = None,
    ) -> None:
        super().__init__()
        self.backbone, self.process = backbone, process
        if time_conditioning is None:
            config = getattr(backbone, "config", None)
            time_conditioning = bool(getattr(config, "time_conditioning", False))
        self.feeds_sigma = time_conditioning

    def forward(
        self, z_t: Tokens, t: Times, padding_mask: Tensor | None = None
    ) -> Float[Tensor, "batch length vocab"]:
        r"""$\log s_\theta(z_t, t)$ over the data tokens, `(B, L, V)` float32.

        Args:
            z_t: Noisy tokens `(B, L)`.
            t: Times `(B,)` in $(0, 1]$.
            padding_mask: `(B, L)`, `True` at real tokens; `None` attends to all.

        Raises:
            ValueError: If the backbone returns fewer than $V$ columns or (with
                validation on) non-finite values.
        """
        vocab = self.process.vocab_size
        log_r = log_score_ratio(self.process, t)
        sigma = -torch.log(self.process.schedule.alpha(t)).float()
        if not self.feeds_sigma:
            sigma = torch.zeros_like(sigma)
        logits = self.backbone(z_t, sigma, padding_mask=padding_mask)
        if logits.shape[-1] < vocab:
            raise ValueError(
                f"the backbone returned {logits.shape[-1]} columns; "
                f"need at least vocab_size={vocab}"
            )
        if validation_enabled() and not bool(torch.isfinite(logits).all()):
            raise ValueError("the backbone returned NaN or infinite `logits`")
        log_scores = logits[..., :vocab].float() + (log_r - math.log(vocab))[:, None, None]
        return _carry_over(log_scores, z_t, self.process)


class DenoiserScores:
    r"""The scores of a denoiser: $\log s = \log x_\theta(z_t) + \log r_t + \log c$.

    With the exact conditional denoiser and `scale` $c = 1$ these are the exact
    concrete scores of the absorbing process. A `scale` $\ne 1$ gives scores
    whose normalised form is the same denoiser but whose total is wrong (what
    score entropy and SEDD's samplers see, and MDLM's do not).

    Args:
        denoiser: Any `(z_t, t) -> logits` callable.
        process: Supplies $\alpha_t$ and the mask id.
        scale: The factor $c > 0$.
    """

    time_conditioned = True

    def __init__(self, denoiser: Denoiser, process: MaskingProcess, *, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ValueError(f"`scale` must be positive; got {scale}")
        self.denoiser, self.process, self.scale = denoiser, process, scale

    def __repr__(self) -> str:
        return f"DenoiserScores({self.denoiser!r}, scale={self.scale})"

    def __call__(
        self, z_t: Tokens, t: Times, padding_mask: Tensor | None = None
    ) -> Float[Tensor, "batch length vocab"]:
        """Log-scores `(B, L, V)` float32 (carried tokens at unmasked positions).

        Args:
            z_t: Noisy tokens `(B, L)`.
            t: Times `(B,)`.
            padding_mask: Passed on to the denoiser when given.
        """
        kwargs = {} if padding_mask is None else {"padding_mask": padding_mask}
        log_x = self.denoiser(z_t, t, **kwargs).float().log_softmax(-1)
        shift = log_score_ratio(self.process, t.reshape(-1).expand(z_t.shape[0]))
        log_scores = log_x + (shift + math.log(self.scale))[:, None, None]
        return _carry_over(log_scores, z_t, self.process)
