r"""Remasking schedules $\sigma_t$: how likely an unmasked token is to be remasked.

ReMDM's posterior (see `discdiff.processes.masking.posteriors`) accepts any remasking
probability in

$$
0 \le \sigma_t \le \sigma_t^{\max} := \min\Big\{1, \frac{1 - \alpha_s}{\alpha_t}\Big\},
$$

and for every such $\sigma_t$ the marginals $q(z_s \mid x)$ of the forward
process are unchanged. A schedule is a small immutable object that picks
$\sigma_t$ for a step $t \to s$; the built-in ones stay inside the bound by
construction, and `RemaskingSchedule.sigma` rejects any value outside it
(from a user's schedule, say) instead of clipping it.

A schedule may also re-time the noise schedule (`LoopSchedule` does) and may
be per position (`ConfidenceSchedule`).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from discdiff._checks import validation_enabled
from discdiff.presets import PAPER
from discdiff.registry import extension_point, register
from discdiff.schedules import NoiseSchedule, uniform_time_grid
from discdiff.typing import Confidence, Times

__all__ = [
    "CapSchedule",
    "ConfidenceSchedule",
    "DFMCorrector",
    "ForwardBackward",
    "LoopSchedule",
    "NoRemasking",
    "RemaskingSchedule",
    "RescaleSchedule",
    "sigma_max",
]

Sigma = Float[Tensor, "batch"] | Float[Tensor, "batch length"]

_BOUND_RTOL = 1e-6


def sigma_max(alpha_t: Times, alpha_s: Times) -> Times:
    r"""The largest valid remasking probability for a step $t \to s$.

    $$\sigma_t^{\max} = \min\Big\{1, \frac{1 - \alpha_s}{\alpha_t}\Big\}$$

    ($1$ when $\alpha_t = 0$).

    Args:
        alpha_t: $\alpha_t$ per sequence, `(B,)`.
        alpha_s: $\alpha_s \ge \alpha_t$ per sequence, `(B,)`.

    Returns:
        $\sigma_t^{\max}$, `(B,)`.
    """
    return (1.0 - alpha_s) / torch.maximum(alpha_t, 1.0 - alpha_s).clamp_min(1e-30)


def _check_eta(eta: float, high: float = 1.0) -> None:
    if not 0.0 <= eta <= high:
        raise ValueError(f"`eta` must lie in [0, {high:.6g}]; got {eta}")


@extension_point("remasking")
class RemaskingSchedule(ABC):
    r"""Base class of remasking schedules $\sigma_t$.

    Subclasses implement `_sigma`; `sigma` checks the result against
    $[0, \sigma_t^{\max}]$. Override `alphas` to re-time the noise schedule.
    """

    needs_confidence: ClassVar[bool] = False
    """Whether `sigma` needs the decode confidences `confidence=`."""

    @property
    def bounded(self) -> bool:
        r"""Whether $\sigma_t \le \sigma_t^{\max}$ is checked.

        True for every built-in schedule but `ForwardBackward(cap=False)`, which
        reproduces a reference that clips.
        """
        return True

    @abstractmethod
    def _sigma(
        self, t: Tensor, s: Tensor, alpha_t: Tensor, alpha_s: Tensor, confidence: Tensor | None
    ) -> Tensor: ...

    def time_grid(self, steps: int, t_min: float = 1e-5) -> Float[Tensor, "points"]:
        r"""The times $1 = t_0 > t_1 > \dots > t_n = t_{\min}$ a sampler steps through.

        Uniform with `steps` steps by default; a schedule may choose its own
        (`DFMCorrector`'s adaptive steps).

        Args:
            steps: The number of steps $T$.
            t_min: The last time, before the final noise-removal step.

        Returns:
            The decreasing grid of times, float64, `(points,)`.
        """
        return uniform_time_grid(steps, t_min)

    def alphas(self, noise: NoiseSchedule, t: Times, s: Times) -> tuple[Times, Times]:
        r"""$(\alpha_t, \alpha_s)$ for the step; the base noise schedule by default.

        Args:
            noise: The process's noise schedule.
            t: Current times, `(B,)`.
            s: Next times, `(B,)`, with `s < t`.

        Returns:
            $(\alpha_t, \alpha_s)$, each `(B,)`; $\alpha_s \ge \alpha_t$.
        """
        return noise.alpha(t), noise.alpha(s)

    def sigma(
        self,
        t: Times,
        s: Times,
        alpha_t: Times,
        alpha_s: Times,
        *,
        confidence: Confidence | None = None,
    ) -> Sigma:
        r"""$\sigma_t$ for the step $t \to s$, per sequence `(B,)` or per position `(B, L)`.

        Args:
            t: Current times, `(B,)`.
            s: Next times, `(B,)`.
            alpha_t: $\alpha_t$, `(B,)`, as returned by `alphas`.
            alpha_s: $\alpha_s$, `(B,)`.
            confidence: Decode confidences $\psi$, `(B, L)`; only for schedules
                with `needs_confidence`.

        Returns:
            $\sigma_t \in [0, \sigma_t^{\max}]$, `(B,)` or `(B, L)` for per-position
            schedules.

        Raises:
            ValueError: If the schedule needs `confidence` and it is missing, or
                if $\sigma_t$ falls outside $[0, \sigma_t^{\max}]$ (outside
                $[0, \infty)$ for a schedule that is not `bounded`).
        """
        if self.needs_confidence and confidence is None:
            raise ValueError(f"{type(self).__name__} needs `confidence=` (decode confidences ψ)")
        sigma = self._sigma(t, s, alpha_t, alpha_s, confidence)
        if validation_enabled():
            bound = sigma_max(alpha_t, alpha_s)
            if sigma.dim() == 2:
                bound = bound.unsqueeze(-1)
            bad = torch.isnan(sigma) | (sigma < 0)
            if self.bounded:
                bad |= sigma > bound * (1 + _BOUND_RTOL)
            if bool(bad.any()):
                raise ValueError(
                    f"{type(self).__name__} gave `sigma` = {sigma[bad][:3].tolist()} "
                    f"outside [0, sigma_max] with sigma_max = "
                    f"{bound.expand_as(sigma)[bad][:3].tolist()}"
                )
        return sigma


@register("remasking", "none")
@dataclass(frozen=True)
class NoRemasking(RemaskingSchedule):
    r"""MDLM: $\sigma_t = 0$; decoded tokens stay decoded."""

    def _sigma(self, t, s, alpha_t, alpha_s, confidence):
        return torch.zeros_like(alpha_t)


@register("remasking", "cap")
@dataclass(frozen=True)
class CapSchedule(RemaskingSchedule):
    r"""ReMDM-cap: $\sigma_t = \min\{\eta, \sigma_t^{\max}\}$.

    Args:
        eta: $\eta \in [0, 1]$ (default `PAPER.cap_eta`, the paper's 0.008 for
            $T = L$; it uses 0.04 for $T < L$, see `discdiff.presets`).
    """

    eta: float = PAPER.cap_eta

    def __post_init__(self) -> None:
        _check_eta(self.eta)

    def _sigma(self, t, s, alpha_t, alpha_s, confidence):
        return sigma_max(alpha_t, alpha_s).clamp_max(self.eta)


@register("remasking", "rescale")
@dataclass(frozen=True)
class RescaleSchedule(RemaskingSchedule):
    r"""ReMDM-rescale: $\sigma_t = \eta\, \sigma_t^{\max}$.

    Args:
        eta: $\eta \in [0, 1]$ (default `PAPER.rescale_eta`, the paper's 0.015).
    """

    eta: float = PAPER.rescale_eta

    def __post_init__(self) -> None:
        _check_eta(self.eta)

    def _sigma(self, t, s, alpha_t, alpha_s, confidence):
        return self.eta * sigma_max(alpha_t, alpha_s)


@register("remasking", "forward-backward")
@dataclass(frozen=True)
class ForwardBackward(RemaskingSchedule):
    r"""The forward-backward corrector (Campbell et al., 2022).

    $$\sigma_t = \min\Big\{\frac{\alpha_s - \alpha_t}{\alpha_t}, \sigma_t^{\max}\Big\}$$

    The raw ratio leaves the valid range when $2\alpha_s > 1 + \alpha_t$ (the
    last steps of a coarse grid; a step to $s = 0$ always): there it would give
    a negative mask probability, so it is capped at $\sigma_t^{\max}$. For
    fine grids the cap is inactive except near $t = 0$.

    ReMDM's code uses the raw ratio and lets its categorical draw ignore the
    negative entry: a masked token then unmasks for sure, and an unmasked one
    is remasked with probability $\min\{1, (\alpha_s - \alpha_t)/\alpha_t\}$
    (about $1/k$ on the last of $k$ uniform steps), to be filled by the final
    noise-removal step. `cap=False` reproduces that; the posterior clips the
    mask probabilities to $[0, 1]$, which is the same distribution.

    Args:
        cap: Cap $\sigma_t$ at $\sigma_t^{\max}$ (a valid posterior; default) or
            use the raw ratio as ReMDM's code does.
    """

    cap: bool = True

    @property
    def bounded(self) -> bool:
        r"""Whether $\sigma_t$ is capped (and so checked) at $\sigma_t^{\max}$."""
        return self.cap

    def _sigma(self, t, s, alpha_t, alpha_s, confidence):
        bound = sigma_max(alpha_t, alpha_s)
        ratio = (alpha_s - alpha_t) / alpha_t.clamp_min(1e-30)
        if self.cap:
            ratio = torch.minimum(ratio, bound)
        return torch.where(alpha_t > 0, ratio, bound)


@register("remasking", "conf")
@dataclass(frozen=True)
class ConfidenceSchedule(RemaskingSchedule):
    r"""ReMDM-conf: per-position weights from decode confidences.

    $$
    \sigma_t^\ell = \eta_{\mathrm{conf}}^\ell\, \sigma_t^{\mathrm{base}}, \qquad
    \eta_{\mathrm{conf}} = \operatorname{softmax}_\ell(-\psi^\ell),
    $$

    where $\psi^\ell$ is the probability $x_\theta$ gave the token at $\ell$
    when it was decoded, so confident tokens are the least likely to be
    remasked. $\psi^\ell = +\infty$ gives weight 0: the sampler uses it for
    masked positions, as ReMDM does. The weights sum to at most 1, so
    $\sigma^\ell \le \sigma_t^{\mathrm{base}} \le \sigma_t^{\max}$.

    Marginals are preserved for every fixed $\psi$; a sampler that ties $\psi$
    to which positions are masked (as ReMDM's does) makes this a heuristic.

    ReMDM's code keeps $\psi$ and the weights in bfloat16 (its confidence
    buffer is bfloat16), which moves $\sigma$ by up to $2^{-8}$ relative;
    `precision="bfloat16"` rounds both the same way to reproduce it.

    Args:
        base: The per-sequence schedule scaled by the weights; `None` uses
            $\sigma_t^{\max}$ (ReMDM's code). Its re-timing, if any, is kept.
        precision: `"float64"` (default) or `"bfloat16"`: the precision of
            $\psi$ and of the softmax weights.
    """

    base: RemaskingSchedule | None = None
    precision: Literal["float64", "bfloat16"] = "float64"
    needs_confidence: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if isinstance(self.base, ConfidenceSchedule):
            raise ValueError("`base` must be a per-sequence schedule, not a ConfidenceSchedule")
        if self.precision not in ("float64", "bfloat16"):
            raise ValueError(f"`precision` must be 'float64' or 'bfloat16'; got {self.precision!r}")

    def alphas(self, noise: NoiseSchedule, t: Times, s: Times) -> tuple[Times, Times]:
        r"""The base schedule's $(\alpha_t, \alpha_s)$ (re-timed if it re-times).

        Args:
            noise: The process's noise schedule.
            t: Current times, `(B,)`.
            s: Next times, `(B,)`.

        Returns:
            $(\alpha_t, \alpha_s)$, each `(B,)`.
        """
        if self.base is None:
            return super().alphas(noise, t, s)
        return self.base.alphas(noise, t, s)

    def _sigma(self, t, s, alpha_t, alpha_s, confidence):
        if self.base is None:
            scale = sigma_max(alpha_t, alpha_s)
        else:
            scale = self.base.sigma(t, s, alpha_t, alpha_s)
        dtype = torch.bfloat16 if self.precision == "bfloat16" else alpha_t.dtype
        logits = -confidence.to(dtype)
        empty = torch.isneginf(logits).all(-1, keepdim=True)
        weights = torch.softmax(logits.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
        return weights.to(alpha_t.dtype) * scale.unsqueeze(-1)


@register("remasking", "loop")
@dataclass(frozen=True)
class LoopSchedule(RemaskingSchedule):
    r"""ReMDM-loop: decode to $\alpha_{\mathrm{on}}$, loop there, then finish.

    Re-times $\alpha$ (ignoring the process's schedule, as ReMDM does):

    $$
    \alpha(\tau) = \begin{cases}
      (1 - \tau)\, \alpha_{\mathrm{on}} / (1 - t_{\mathrm{on}}) & \tau > t_{\mathrm{on}} \\
      \alpha_{\mathrm{on}} & t_{\mathrm{off}} \le \tau \le t_{\mathrm{on}} \\
      1 - \tau (1 - \alpha_{\mathrm{on}}) / t_{\mathrm{off}} & \tau < t_{\mathrm{off}}
    \end{cases}
    $$

    Steps with $t_{\mathrm{off}} < t \le t_{\mathrm{on}}$ remask with
    $\sigma = \min\{\eta, \sigma_t^{\max}\}$; all others are MDLM steps. Inside
    the loop $\alpha_s = \alpha_t = \alpha_{\mathrm{on}}$: unmasked tokens remask
    with probability $\eta$, masked ones unmask with probability
    $\eta\,\alpha_{\mathrm{on}} / (1 - \alpha_{\mathrm{on}})$, and the masked
    fraction stays $1 - \alpha_{\mathrm{on}}$.

    A step $t \to s$ belongs to the phase of $t$. With `phase_from="t"`
    (ReMDM's code, the default) both $\alpha_t$ and $\alpha_s$ come from that
    phase's formula, also when $s$ lies in the next phase: the step that
    crosses $t_{\mathrm{on}}$ decodes to
    $(1 - s)\,\alpha_{\mathrm{on}}/(1 - t_{\mathrm{on}}) > \alpha_{\mathrm{on}}$, and the first
    step after $t_{\mathrm{off}}$ starts from $\alpha(t) > \alpha_{\mathrm{on}}$.
    With `phase_from="s"`, $\alpha_s$ is
    the re-timed $\alpha(s)$ above, so consecutive steps agree on $\alpha$ and
    every step's $z_s$ has exactly the marginals the next step assumes.

    Args:
        t_on: Start of the loop, in $(t_{\mathrm{off}}, 1)$ (paper: 0.55).
        t_off: End of the loop, in $(0, t_{\mathrm{on}})$ (paper: 0.05).
        alpha_on: $\alpha$ during the loop, in $(0, 1)$ (paper: 0.9).
        eta: Remasking probability in the loop, in
            $[0, \min\{1, (1 - \alpha_{\mathrm{on}})/\alpha_{\mathrm{on}}\}]$ (paper: 0.02).
        phase_from: Which end of a step picks the formula for $\alpha_s$: `"t"`
            (ReMDM's code) or `"s"` (the re-timed $\alpha(s)$).
    """

    t_on: float = PAPER.loop_t_on
    t_off: float = PAPER.loop_t_off
    alpha_on: float = PAPER.loop_alpha_on
    eta: float = PAPER.loop_eta
    phase_from: Literal["t", "s"] = "t"

    def __post_init__(self) -> None:
        if not 0.0 < self.t_off < self.t_on < 1.0:
            raise ValueError(
                f"need 0 < `t_off` < `t_on` < 1; got t_off={self.t_off}, t_on={self.t_on}"
            )
        if not 0.0 < self.alpha_on < 1.0:
            raise ValueError(f"`alpha_on` must lie in (0, 1); got {self.alpha_on}")
        _check_eta(self.eta, min(1.0, (1.0 - self.alpha_on) / self.alpha_on))
        if self.phase_from not in ("t", "s"):
            raise ValueError(f"`phase_from` must be 't' or 's'; got {self.phase_from!r}")

    def alpha(self, tau: Tensor) -> Tensor:
        r"""The re-timed $\alpha(\tau)$ above.

        Args:
            tau: Times in $[0, 1]$, any shape.

        Returns:
            $\alpha(\tau)$ with the shape of `tau`: linear from 0 to
            $\alpha_{\mathrm{on}}$ on $[t_{\mathrm{on}}, 1]$, flat on the loop, linear
            to 1 on $[0, t_{\mathrm{off}}]$.
        """
        return self._phase_alpha(tau, tau)

    def _phase_alpha(self, tau: Tensor, phase: Tensor) -> Tensor:
        """The formula of the phase that `phase` lies in, evaluated at `tau`."""
        decode = (1.0 - tau) * self.alpha_on / (1.0 - self.t_on)
        finish = 1.0 - tau * (1.0 - self.alpha_on) / self.t_off
        flat = torch.full_like(tau, self.alpha_on)
        later = torch.where(phase <= self.t_off, finish, flat)
        # a long step that crosses t_on would decode past α = 1: every token unmasks
        return torch.where(phase > self.t_on, decode, later).clamp_max(1.0)

    def alphas(self, noise: NoiseSchedule, t: Times, s: Times) -> tuple[Times, Times]:
        r"""The re-timed $(\alpha_t, \alpha_s)$; `noise` is not used.

        Args:
            noise: The process's noise schedule (ignored, as in ReMDM).
            t: Current times, `(B,)`.
            s: Next times, `(B,)`.

        Returns:
            $(\alpha(t), \alpha_s)$, each `(B,)`, with $\alpha_s$ from the phase of
            `phase_from` (see the class).
        """
        return self.alpha(t), self._phase_alpha(s, t if self.phase_from == "t" else s)

    def _sigma(self, t, s, alpha_t, alpha_s, confidence):
        in_loop = (t <= self.t_on) & (t > self.t_off)
        capped = sigma_max(alpha_t, alpha_s).clamp_max(self.eta)
        return torch.where(in_loop, capped, torch.zeros_like(capped))


@register("remasking", "dfm")
@dataclass(frozen=True)
class DFMCorrector(RemaskingSchedule):
    r"""The discrete flow matching corrector (Gat et al., 2024) with adaptive steps.

    With $\beta_t = A\, t^{1/4} (1 - t)^{1/4}$, $a = 1 + \beta_t$, $b = \beta_t$,
    a masked token unmasks with probability $a (\alpha_s - \alpha_t)/(1 - \alpha_t)$
    and an unmasked one is remasked with probability $b (\alpha_s/\alpha_t - 1)$.
    That is ReMDM's posterior with

    $$\sigma_t = \min\Big\{\beta_t \frac{\alpha_s - \alpha_t}{\alpha_t}, \sigma_t^{\max}\Big\}$$

    (the unmasking probability follows from $\sigma_t$; the cap only acts on
    coarse steps). Its time grid takes steps
    $dt = \min\{1/T,\ 1/(a/t + b/(1 - t))\}$, so it makes more network calls
    than $T$, and stops, as ReMDM's code does, at the first time
    $t \le (1 - t_{\min})/T$: the final noise-removal step decodes the rest.

    Args:
        A: Corrector strength (paper: 10).
    """

    A: float = 10.0

    def __post_init__(self) -> None:
        if self.A < 0:
            raise ValueError(f"`A` must be non-negative; got {self.A}")

    def beta(self, t: Tensor) -> Tensor:
        r"""The corrector strength $\beta_t = A\, t^{1/4} (1 - t)^{1/4}$.

        Args:
            t: Times in $[0, 1]$, any shape.

        Returns:
            $\beta_t \ge 0$ with the shape of `t` (0 at both ends).
        """
        return self.A * (t * (1.0 - t)).clamp_min(0.0) ** 0.25

    def time_grid(self, steps: int, t_min: float = 1e-5) -> Float[Tensor, "points"]:
        r"""Adaptive grid: $dt = \min\{1/T,\ 1/(a/t + b/(1 - t))\}$ from $t = 1$.

        Args:
            steps: $T$; no step is longer than $1/T$.
            t_min: Sets the stopping time $(1 - t_{\min})/T$, ReMDM's rule.

        Returns:
            The decreasing grid of times, float64, from 1 to the first time at or
            below $(1 - t_{\min})/T$ (still positive: $dt < t$ on every step).
        """
        super().time_grid(steps, t_min)  # validates the arguments
        times, t = [1.0], 1.0
        while t > (1.0 - t_min) / steps:
            b = self.A * (t * (1.0 - t)) ** 0.25
            rate = (1.0 + b) / t + (b / (1.0 - t) if t < 1.0 else 0.0)
            t -= min(1.0 / steps, 1.0 / rate)
            times.append(t)
        return torch.tensor(times, dtype=torch.float64)

    def _sigma(self, t, s, alpha_t, alpha_s, confidence):
        bound = sigma_max(alpha_t, alpha_s)
        ratio = self.beta(t) * (alpha_s - alpha_t) / alpha_t.clamp_min(1e-30)
        return torch.where(alpha_t > 0, torch.minimum(ratio, bound), bound)
