r"""Noise schedules $\alpha_t$: the probability that a token is still clean at time $t$.

A schedule is a small immutable object. Every schedule is strictly decreasing
on $[0, 1]$ with $\alpha_0 \approx 1$ (clean data) and $\alpha_1 \approx 0$
(all mask), and gives

- $\alpha(t)$ and its derivative $\alpha'(t)$,
- the inverse $t(\alpha)$, used by time grids,
- the ELBO weight $w(t) = -\alpha'_t / (1 - \alpha_t)$ of the continuous-time
  NELBO.

All methods are vectorised over tensors of any shape and accept Python floats.
Times outside $[0, 1]$ raise `ValueError` naming the argument.
"""

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from discdiff._checks import as_tensor, check_in_range
from discdiff.registry import extension_point, register

__all__ = [
    "Cosine",
    "CosineSquared",
    "Geometric",
    "Linear",
    "LogLinear",
    "NoiseSchedule",
    "Polynomial",
    "uniform_time_grid",
]

TimeLike = Float[Tensor, "*shape"] | float


@extension_point("schedule")
class NoiseSchedule(ABC):
    r"""Base class of noise schedules $\alpha_t$.

    Subclasses implement `_alpha`, `_alpha_prime` and `_inverse` on
    validated tensors; the public methods check their arguments.
    """

    @abstractmethod
    def _alpha(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _alpha_prime(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _inverse(self, alpha: Tensor) -> Tensor: ...

    def alpha(self, t: TimeLike) -> Float[Tensor, "*shape"]:
        r"""$\alpha_t$, the probability that a token is unmasked at time `t`.

        Args:
            t: Times in $[0, 1]$, any shape.

        Returns:
            $\alpha_t$ with the shape of `t`.

        Raises:
            ValueError: If any `t` lies outside $[0, 1]$.
        """
        t = as_tensor(t)
        check_in_range("t", t, 0.0, 1.0)
        return self._alpha(t)

    def alpha_prime(self, t: TimeLike) -> Float[Tensor, "*shape"]:
        r"""$\alpha'_t = d\alpha_t / dt$ (negative: the schedule decreases).

        Args:
            t: Times in $[0, 1]$, any shape.

        Returns:
            $\alpha'_t$ with the shape of `t`.
        """
        t = as_tensor(t)
        check_in_range("t", t, 0.0, 1.0)
        return self._alpha_prime(t)

    def inverse(self, alpha: TimeLike) -> Float[Tensor, "*shape"]:
        r"""The time $t(\alpha)$ at which the schedule reaches `alpha`.

        Args:
            alpha: Values in $[\alpha_1, \alpha_0]$, any shape.

        Returns:
            $t \in [0, 1]$ at which $\alpha_t$ equals `alpha`.

        Raises:
            ValueError: If any `alpha` lies outside $[\alpha_1, \alpha_0]$.
        """
        alpha = as_tensor(alpha)
        ends = self._alpha(torch.tensor([1.0, 0.0], dtype=torch.float64))
        check_in_range("alpha", alpha, float(ends[0]) - 1e-12, float(ends[1]) + 1e-12)
        return self._inverse(alpha).clamp(0.0, 1.0)

    def weight(self, t: TimeLike) -> Float[Tensor, "*shape"]:
        r"""The continuous-time ELBO weight $w(t) = -\alpha'_t / (1 - \alpha_t)$.

        Args:
            t: Times in $(0, 1]$, any shape ($w$ is infinite at $t = 0$).

        Returns:
            $w(t) \ge 0$ with the shape of `t`.
        """
        t = as_tensor(t)
        check_in_range("t", t, 0.0, 1.0)
        return -self._alpha_prime(t) / (1.0 - self._alpha(t))


def _check_eps(eps: float) -> None:
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"`eps` must lie in [0, 1); got {eps}")


@register("schedule", "loglinear")
@dataclass(frozen=True)
class LogLinear(NoiseSchedule):
    r"""MDLM's default: $\alpha_t = 1 - (1 - \varepsilon) t$.

    Its ELBO weight is $w(t) = -\alpha'_t / (1 - \alpha_t) = 1/t$ exactly:
    $\varepsilon$ cancels.

    Args:
        eps: $\alpha_1 = \varepsilon$, in $[0, 1)$.

    Example:
        >>> LogLinear().alpha(0.5)
        tensor(0.5005)
    """

    eps: float = 1e-3

    def __post_init__(self) -> None:
        _check_eps(self.eps)

    def _alpha(self, t: Tensor) -> Tensor:
        return 1.0 - (1.0 - self.eps) * t

    def _alpha_prime(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -(1.0 - self.eps))

    def _inverse(self, alpha: Tensor) -> Tensor:
        return (1.0 - alpha) / (1.0 - self.eps)


@register("schedule", "cosine")
@dataclass(frozen=True)
class Cosine(NoiseSchedule):
    r"""$\alpha_t = \varepsilon + (1 - \varepsilon) \cos(\pi t / 2)$.

    Args:
        eps: $\alpha_1 = \varepsilon$, in $[0, 1)$.
    """

    eps: float = 1e-3

    def __post_init__(self) -> None:
        _check_eps(self.eps)

    def _alpha(self, t: Tensor) -> Tensor:
        return self.eps + (1.0 - self.eps) * torch.cos(0.5 * math.pi * t)

    def _alpha_prime(self, t: Tensor) -> Tensor:
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def _inverse(self, alpha: Tensor) -> Tensor:
        c = ((alpha - self.eps) / (1.0 - self.eps)).clamp(0.0, 1.0)
        return torch.arccos(c) * (2.0 / math.pi)


@register("schedule", "cosine-squared")
@dataclass(frozen=True)
class CosineSquared(NoiseSchedule):
    r"""$\alpha_t = \varepsilon + (1 - \varepsilon) \cos^2(\pi t / 2)$.

    Args:
        eps: $\alpha_1 = \varepsilon$, in $[0, 1)$.
    """

    eps: float = 1e-3

    def __post_init__(self) -> None:
        _check_eps(self.eps)

    def _alpha(self, t: Tensor) -> Tensor:
        return self.eps + (1.0 - self.eps) * torch.cos(0.5 * math.pi * t) ** 2

    def _alpha_prime(self, t: Tensor) -> Tensor:
        # d/dt cos²(πt/2) = -(π/2) sin(πt)
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(math.pi * t)

    def _inverse(self, alpha: Tensor) -> Tensor:
        c = ((alpha - self.eps) / (1.0 - self.eps)).clamp(0.0, 1.0)
        return torch.arccos(c.sqrt()) * (2.0 / math.pi)


def _check_sigma_range(sigma_min: float, sigma_max: float) -> None:
    if not 0.0 <= sigma_min < sigma_max:
        raise ValueError(
            f"need 0 <= `sigma_min` < `sigma_max`; got sigma_min={sigma_min}, sigma_max={sigma_max}"
        )


@register("schedule", "linear")
@dataclass(frozen=True)
class Linear(NoiseSchedule):
    r"""Linear in the total noise $\sigma(t)$, with $\alpha_t = e^{-\sigma(t)}$.

    $\sigma(t) = \sigma_{\min} + t (\sigma_{\max} - \sigma_{\min})$.

    Args:
        sigma_min: Total noise at $t = 0$ ($\alpha_0 = e^{-\sigma_{\min}}$).
        sigma_max: Total noise at $t = 1$ ($\alpha_1 = e^{-\sigma_{\max}}$).
    """

    sigma_min: float = 1e-3
    sigma_max: float = 7.0

    def __post_init__(self) -> None:
        _check_sigma_range(self.sigma_min, self.sigma_max)

    def _alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-(self.sigma_min + t * (self.sigma_max - self.sigma_min)))

    def _alpha_prime(self, t: Tensor) -> Tensor:
        return -(self.sigma_max - self.sigma_min) * self._alpha(t)

    def _inverse(self, alpha: Tensor) -> Tensor:
        return (-torch.log(alpha) - self.sigma_min) / (self.sigma_max - self.sigma_min)


@register("schedule", "geometric")
@dataclass(frozen=True)
class Geometric(NoiseSchedule):
    r"""Geometric in the total noise $\sigma(t)$, with $\alpha_t = e^{-\sigma(t)}$.

    $\sigma(t) = \sigma_{\min}^{1-t} \sigma_{\max}^{t}$.

    The default $\sigma_{\max} = 7$ makes $\alpha_1 \approx 10^{-3}$, so that
    $t = 1$ is (almost) all mask, as for the other schedules.

    Args:
        sigma_min: Total noise at $t = 0$, positive.
        sigma_max: Total noise at $t = 1$.
    """

    sigma_min: float = 1e-3
    sigma_max: float = 7.0

    def __post_init__(self) -> None:
        _check_sigma_range(self.sigma_min, self.sigma_max)
        if self.sigma_min <= 0.0:
            raise ValueError(f"`sigma_min` must be positive; got {self.sigma_min}")

    def _total_noise(self, t: Tensor) -> Tensor:
        return self.sigma_min ** (1.0 - t) * self.sigma_max**t

    def _alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-self._total_noise(t))

    def _alpha_prime(self, t: Tensor) -> Tensor:
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        return -self._total_noise(t) * log_ratio * self._alpha(t)

    def _inverse(self, alpha: Tensor) -> Tensor:
        log_min, log_max = math.log(self.sigma_min), math.log(self.sigma_max)
        return (torch.log(-torch.log(alpha)) - log_min) / (log_max - log_min)


@register("schedule", "polynomial")
@dataclass(frozen=True)
class Polynomial(NoiseSchedule):
    r"""$\alpha_t = \varepsilon + (1 - \varepsilon)(1 - t^k)$.

    $k = 1$ is `LogLinear`; $k > 1$ keeps tokens clean for longer. The floor
    $\varepsilon$ keeps $\alpha_1 = \varepsilon$ as for the other schedules,
    while leaving the schedule smooth.

    Args:
        k: Positive exponent.
        eps: $\alpha_1 = \varepsilon$, in $[0, 1)$.
    """

    k: float = 2.0
    eps: float = 1e-3

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        if not self.k > 0.0:
            raise ValueError(f"`k` must be positive; got {self.k}")

    def _alpha(self, t: Tensor) -> Tensor:
        return self.eps + (1.0 - self.eps) * (1.0 - t**self.k)

    def _alpha_prime(self, t: Tensor) -> Tensor:
        return -(1.0 - self.eps) * self.k * t ** (self.k - 1.0)

    def _inverse(self, alpha: Tensor) -> Tensor:
        u = (1.0 - (alpha - self.eps) / (1.0 - self.eps)).clamp_min(0.0)
        return u ** (1.0 / self.k)


def uniform_time_grid(steps: int, t_min: float = 1e-5) -> Float[Tensor, "points"]:
    r"""`steps + 1` equally spaced times from 1 down to `t_min` (float64).

    $t_i = 1 - i\,(1 - t_{\min})/T$ for $i = 0, \dots, T$.

    Args:
        steps: The number of steps $T \ge 1$.
        t_min: The last time, in $[0, 1)$.

    Returns:
        The grid `(T + 1,)`, decreasing from 1 to `t_min`.

    Raises:
        ValueError: If `steps < 1` or `t_min` lies outside $[0, 1)$.
    """
    if steps < 1:
        raise ValueError(f"`steps` must be at least 1; got {steps}")
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"`t_min` must lie in [0, 1); got {t_min}")
    return torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64)
