r"""Posteriors $q_\sigma(z_s \mid z_t, x)$ of the masking process, with remasking.

For a step $t \to s$ ($s < t$) and a remasking probability $\sigma_t$ from a
`RemaskingSchedule`, each position follows ReMDM's posterior:

$$
q_\sigma(z_s^\ell \mid z_t, x) = \begin{cases}
\mathrm{Cat}\big(z_s^\ell;\ (1 - \sigma_t)\, z_t^\ell + \sigma_t m\big) & z_t^\ell \ne m, \\
\mathrm{Cat}\Big(z_s^\ell;\ \dfrac{\alpha_s - (1 - \sigma_t)\alpha_t}{1 - \alpha_t}\, x^\ell
  + \dfrac{1 - \alpha_s - \sigma_t \alpha_t}{1 - \alpha_t}\, m\Big) & z_t^\ell = m.
\end{cases}
$$

An unmasked token is kept or remasked, never changed into another token (for
one-hot data $z_t^\ell = x^\ell$ there, so this is the paper's formula; for a
denoiser with SUBS carry-over it is what sampling does). $\sigma_t = 0$ is
MDLM's posterior. For every $\sigma_t \in [0, \sigma_t^{\max}]$ the marginals
are preserved: $\sum_{z_t} q_\sigma(z_s \mid z_t, x)\, q(z_t \mid x) = q(z_s \mid x)$.

Sampling uses the same objects with $x = x_\theta(z_t)$:
$p_\theta(z_s \mid z_t) = q_\sigma(z_s \mid z_t, x_\theta(z_t))$.
"""

import torch
from torch import Tensor

from discdiff._checks import as_tensor, validation_enabled
from discdiff.distributions import MaskedCategorical
from discdiff.processes.base import Strategy
from discdiff.processes.masking.process import MaskingProcess
from discdiff.processes.masking.remasking import NoRemasking, RemaskingSchedule
from discdiff.registry import register
from discdiff.rng import RandomSource
from discdiff.typing import Confidence, MaskFlags, Probs, Times, Tokens

__all__ = ["DecodeConfidence", "MaskingPosterior", "RemaskPosterior", "decode_confidence"]


def decode_confidence(
    psi: Confidence, x: Probs, z_s: Tokens, was_masked: MaskFlags, is_masked: MaskFlags
) -> Confidence:
    r"""The decode confidences $\psi$ after a step $z_t \to z_s$ (ReMDM-conf).

    A token decoded in this step gets the probability $x_\theta$ gave it; a
    masked position gets $+\infty$ (weight 0 in confidence-based remasking);
    every other position keeps its $\psi$.

    Args:
        psi: Confidences before the step `(B, L)`.
        x: $x_\theta(z_t)$ the step drew from `(B, L, V)`.
        z_s: Tokens after the step `(B, L)`.
        was_masked: Where $z_t$ was masked `(B, L)`.
        is_masked: Where $z_s$ is masked `(B, L)`.

    Returns:
        The new confidences `(B, L)`, float64.
    """
    picked = x.gather(-1, z_s.clamp_max(x.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
    psi = torch.where(was_masked & ~is_masked, picked.double(), psi)
    return torch.where(is_masked, torch.inf, psi)


class DecodeConfidence:
    r"""The per-run state of confidence-based remasking: decode confidences $\psi$.

    Starts at $+\infty$ everywhere (weight 0: masked and fixed positions are
    never picked) and follows `decode_confidence` after each step.

    Args:
        process: The masking process (which ids are masks).
        z: The starting tokens `(B, L)`.

    Attributes:
        psi: The current confidences `(B, L)`, float64.
    """

    def __init__(self, process: MaskingProcess, z: Tokens) -> None:
        self.process = process
        self.psi = torch.full(z.shape, torch.inf, dtype=torch.float64, device=z.device)

    def observe(self, x: Probs, z_t: Tokens, z_s: Tokens) -> None:
        r"""Update $\psi$ after the step $z_t \to z_s$ drawn from `x`."""
        masked = self.process.is_masked
        self.psi = decode_confidence(self.psi, x, z_s, masked(z_t), masked(z_s))


class RemaskPosterior(Strategy):
    r"""ReMDM's posterior $q_\sigma(z_s \mid z_t, x)$ for a remasking schedule.

    Args:
        schedule: Chooses $\sigma_t$ for each step (and may re-time $\alpha$).

    Example:
        >>> from discdiff import CapSchedule, LogLinear, MaskingProcess
        >>> process = MaskingProcess(schedule=LogLinear(), vocab_size=3)
        >>> posterior = RemaskPosterior(CapSchedule(0.1))
        >>> z_t = torch.tensor([[3, 0, 3, 1]])
        >>> x = torch.full((1, 4, 3), 1 / 3)
        >>> q = posterior(process, z_t, x, torch.tensor([0.6]), torch.tensor([0.5]))
        >>> q.batch_shape, q.event_shape
        (torch.Size([1]), torch.Size([4]))
    """

    process_type = MaskingProcess
    masked_only = True  # x_θ is read at masked positions only

    def __init__(self, schedule: RemaskingSchedule) -> None:
        self.schedule = schedule

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schedule!r})"

    def alphas(
        self, process: MaskingProcess, t: Times | float, s: Times | float
    ) -> tuple[Times, Times]:
        r"""$(\alpha_t, \alpha_s)$ this posterior uses for the step (re-timed or not).

        The marginals that the posterior preserves are those of the masking
        process with these $\alpha$: $q(z_t \mid x)$ uses $\alpha_t$.

        Args:
            process: The forward process.
            t: Current times in $(0, 1]$, `(B,)` or a float.
            s: Next times, `s < t`, `(B,)` or a float.

        Returns:
            $(\alpha_t, \alpha_s)$, each `(B,)` (times broadcast to one batch).

        Raises:
            ValueError: If `t` or `s` lie outside $[0, 1]$ or `s >= t`.
        """
        t, s = torch.broadcast_tensors(as_tensor(t).reshape(-1), as_tensor(s).reshape(-1))
        alpha_t, alpha_s = self.schedule.alphas(process.schedule, t, s)
        if validation_enabled() and bool((s >= t).any()):
            raise ValueError(
                f"`s` must be earlier than `t`; got s={s.tolist()[:3]}, t={t.tolist()[:3]}"
            )
        return alpha_t, alpha_s

    def _step(
        self,
        process: MaskingProcess,
        t: Tensor | float,
        s: Tensor | float,
        confidence: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""$(\alpha_t, \alpha_s, \sigma_t)$ for the step, times broadcast to `(B,)`."""
        t, s = torch.broadcast_tensors(as_tensor(t).reshape(-1), as_tensor(s).reshape(-1))
        alpha_t, alpha_s = self.alphas(process, t, s)
        return alpha_t, alpha_s, self.schedule.sigma(t, s, alpha_t, alpha_s, confidence=confidence)

    def sigma(
        self,
        process: MaskingProcess,
        t: Times | float,
        s: Times | float,
        *,
        confidence: Confidence | None = None,
    ) -> Tensor:
        r"""$\sigma_t$ for the step, checked against $[0, \sigma_t^{\max}]$.

        Args:
            process: The forward process (supplies the noise schedule).
            t: Current times, `(B,)` or a float.
            s: Next times, `s < t`, `(B,)` or a float.
            confidence: Decode confidences $\psi$ `(B, L)`, for schedules that
                need them.

        Returns:
            $\sigma_t$, `(B,)`, or `(B, L)` for a per-position schedule.

        Raises:
            ValueError: If $\sigma_t$ leaves its bound (with validation on).
        """
        return self._step(process, t, s, confidence)[2]

    def __call__(
        self,
        process: MaskingProcess,
        z_t: Tokens,
        x: Probs,
        t: Times | float,
        s: Times | float,
        *,
        confidence: Confidence | None = None,
    ) -> MaskedCategorical:
        r"""$q_\sigma(z_s \mid z_t, x)$ with batch shape `(B,)` and event shape `(L,)`.

        Args:
            process: The forward process (vocabulary, mask id, schedule).
            z_t: Current tokens `(B, L)`, data ids or the mask id.
            x: A distribution over data tokens `(B, L, V)`: a one-hot of the data
                when training, $x_\theta(z_t)$ when sampling.
            t: Current times, `(B,)` or a float.
            s: Next times, `s < t`, `(B,)` or a float.
            confidence: Decode confidences $\psi$ `(B, L)`, for schedules that
                need them (`ConfidenceSchedule`).

        Returns:
            A `MaskedCategorical` over `{0..V-1} ∪ {mask_id}`.

        Raises:
            ValueError: On ids outside the vocabulary, shape mismatches, times
                outside $[0, 1]$ or not ordered, or $\sigma_t$ outside its bound.
        """
        if x.shape[:2] != z_t.shape or x.shape[-1] != process.vocab_size:
            raise ValueError(
                f"`x` must have shape (B, L, V) = {(*z_t.shape, process.vocab_size)} to match "
                f"`z_t` and the vocabulary; got {tuple(x.shape)}"
            )
        process.check_tokens("z_t", z_t, allow_mask=True)
        alpha_t, alpha_s, sigma = self._step(process, t, s, confidence)
        if sigma.dim() == 1:
            sigma = sigma.unsqueeze(-1)
        alpha_t, alpha_s = alpha_t.unsqueeze(-1), alpha_s.unsqueeze(-1)
        stay_masked = (1.0 - alpha_s - sigma * alpha_t) / (1.0 - alpha_t)
        mask_prob = torch.where(process.is_masked(z_t), stay_masked, sigma).clamp(0.0, 1.0)
        return MaskedCategorical(
            mask_prob.expand(z_t.shape),
            vocab_size=process.vocab_size,
            mask_id=process.mask_id,
            probs=x,
            carry=z_t,
        )

    def time_grid(self, steps: int, t_min: float = 1e-5) -> Tensor:
        """The sampler's time grid for `steps` steps (the schedule's choice).

        Args:
            steps: The number of steps $T$.
            t_min: The last time before noise removal.

        Returns:
            Decreasing float64 times from 1 to `t_min`.
        """
        return self.schedule.time_grid(steps, t_min)

    def start(self, process: MaskingProcess, z: Tokens) -> DecodeConfidence | None:
        r"""Decode confidences $\psi$ for a schedule that reads them, else `None`.

        Args:
            process: The forward process.
            z: The starting tokens `(B, L)`.

        Returns:
            A `DecodeConfidence` (ReMDM-conf), or `None`: no per-run state.
        """
        return DecodeConfidence(process, z) if self.schedule.needs_confidence else None

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
        r"""One reverse step: $z_s \sim q_\sigma(z_s \mid z_t, x)$ (a sampler's only question).

        Args:
            process: The forward process.
            z_t: Current tokens `(B, L)`.
            x: $x_\theta(z_t)$ `(B, L, V)`.
            t: Current times `(B,)`.
            s: Next times `(B,)`.
            state: What `start` returned: the decode confidences $\psi$ for
                schedules that read them.
            generator: Random generator (`torch.Generator` or `SequenceGenerator`).
            dtype: Precision of the categorical draw.

        Returns:
            $z_s$ `(B, L)`.
        """
        confidence = None if state is None else state.psi
        posterior = self(process, z_t, x, t, s, confidence=confidence)
        return posterior.sample(generator=generator, dtype=dtype)


@register("strategy", "mdlm")
class MaskingPosterior(RemaskPosterior):
    r"""MDLM's posterior: `RemaskPosterior(NoRemasking())`.

    Unmasked tokens are kept; a masked token unmasks with probability
    $(\alpha_s - \alpha_t)/(1 - \alpha_t)$ to a draw from $x$.
    """

    def __init__(self) -> None:
        super().__init__(NoRemasking())

    def __repr__(self) -> str:
        return "MaskingPosterior()"
