r"""Uniform-state diffusion: $q(z_t \mid x) = \mathrm{Cat}(\alpha_t x + (1 - \alpha_t)/V)$.

Each position keeps its token with probability $\alpha_t$ and is otherwise
redrawn uniformly from the $V$ data tokens (D3PM-uniform in continuous time,
UDLM, DUO). There is no mask: at $t = 1$ the sequence is uniform noise, any
token may be noise at any time, so a denoiser must see $t$.

**Posterior.** With $\alpha_{t|s} = \alpha_t / \alpha_s$ and $N = V$, Bayes'
rule $q(z_s \mid z_t, x) \propto q(z_t \mid z_s)\, q(z_s \mid x)$ gives at each
position

$$
q(z_s = v \mid z_t, x) \propto
\Big(\alpha_{t|s} [v = z_t] + \frac{1 - \alpha_{t|s}}{N}\Big)
\Big(\alpha_s x_v + \frac{1 - \alpha_s}{N}\Big).
$$

Both factors are linear in $x$, so the reverse model that sums the joint over
$x \sim x_\theta$ (D3PM, UDLM) is the same formula with $x_\theta$ in place of
$x$, normalised: $p_\theta(z_s \mid z_t) \propto \sum_x x_\theta(x)\,
q(z_t \mid z_s)\, q(z_s \mid x)$. (It is not the mixture
$\sum_x x_\theta(x)\, q(z_s \mid z_t, x)$: the normaliser
$q(z_t \mid x) = \alpha_t x_{z_t} + (1 - \alpha_t)/N$ depends on $x$.)

**NELBO.** In continuous time the reverse process jumps $z \to y$ at rate
$R^\theta(z \to y) = \frac{\beta_t}{N} f_y / f_z$ with $\beta_t = -\alpha'_t / \alpha_t$,
$f = \alpha_t x_\theta + (1 - \alpha_t)/N$; the true reverse rate given $x$ has
$g = \alpha_t x + (1 - \alpha_t)/N$ in place of $f$. The KL between the two path
measures (Campbell et al., 2022) gives the integrand at a position with
$z_t^\ell = z$,

$$
\frac{\beta_t}{N}\Big[\frac{1}{f_z} - \frac{1}{g_z}
+ \frac{1}{g_z} \sum_y g_y \log\frac{g_y\, f_z}{f_y\, g_z}\Big],
$$

UDLM's closed form. It vanishes when $f = g$.

**The exact denoiser.** The reverse rates are exact when
$x_\theta(z_t)_\ell = p(x^\ell \mid z_t^{-\ell})$, the posterior of a token given the
*other* noisy positions: the posterior formula multiplies by the own
position's likelihood $q(z_t^\ell \mid x^\ell)$ itself. (For masking the two
coincide at masked positions.) `HMMLanguage.conditionals_given` and
`discdiff.testing.exact_denoiser` compute it.
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff._checks import as_tensor, validation_enabled
from discdiff.distributions import FactorizedCategorical
from discdiff.processes.base import Strategy, check_token_range, data_log_softmax
from discdiff.registry import register
from discdiff.rng import RandomSource, uniform
from discdiff.schedules import LogLinear, NoiseSchedule, uniform_time_grid
from discdiff.typing import Probs, Times, Tokens

__all__ = ["UniformPosterior", "UniformProcess"]

Data = Int[Tensor, "batch length"] | Float[Tensor, "batch length vocab"]


@register("process", "uniform")
class UniformProcess:
    r"""Uniform-state noise, a `ForwardProcess`: keep a token or redraw it uniformly.

    Args:
        schedule: The noise schedule $\alpha_t$ (the probability that a token
            is kept, not redrawn).
        vocab_size: $V$, the number of data tokens `0..V-1` (also the states of $z_t$).

    Example:
        >>> process = UniformProcess(schedule=LogLinear(), vocab_size=5)
        >>> z = process.sample(torch.tensor([[0, 1, 2, 3]]), torch.tensor([0.5]))
        >>> z.shape, bool(((z >= 0) & (z < 5)).all())
        (torch.Size([1, 4]), True)
    """

    name = "uniform"
    needs_time = True
    mask_id = None

    def __init__(self, schedule: NoiseSchedule = LogLinear(), *, vocab_size: int) -> None:
        if vocab_size < 2:
            raise ValueError(f"`vocab_size` must be at least 2; got {vocab_size}")
        self.schedule = schedule
        self.vocab_size = vocab_size
        self.num_states = vocab_size

    def __repr__(self) -> str:
        return f"UniformProcess(schedule={self.schedule!r}, vocab_size={self.vocab_size})"

    def check_tokens(self, name: str, tokens: Tensor, *, allow_mask: bool = False) -> None:
        """Raise `ValueError` naming `name` if `tokens` holds ids outside `0..V-1`.

        Args:
            name: The argument's name, for the message.
            tokens: Integer token ids, any shape.
            allow_mask: Ignored: this process has no mask.
        """
        check_token_range(name, tokens, self.vocab_size)

    def _alpha(self, t: Times | float) -> Tensor:
        r"""$\alpha_t$ shaped `(B, 1, 1)` (float64) to broadcast over positions and tokens."""
        return self.schedule.alpha(as_tensor(t)).double().reshape(-1, 1, 1)

    def marginal(self, x: Data, t: Times | float) -> FactorizedCategorical:
        r"""$q(z_t \mid x) = \mathrm{Cat}(\alpha_t x + (1 - \alpha_t)/V)$, batch `(B,)`.

        Args:
            x: Clean tokens `(B, L)` in `0..V-1`, or a distribution over data
                tokens `(B, L, V)`.
            t: Times in $[0, 1]$, `(B,)` or one float for the whole batch.

        Returns:
            A `FactorizedCategorical`.

        Raises:
            ValueError: If `x` holds ids outside `0..V-1` or `t` lies outside $[0, 1]$.
        """
        if not x.is_floating_point():
            self.check_tokens("x", x)
            x = torch.nn.functional.one_hot(x, self.vocab_size)
        alpha = self._alpha(t)
        probs = alpha * x + (1.0 - alpha) / self.vocab_size
        return FactorizedCategorical(probs.float())

    def sample(self, x: Data, t: Times | float, *, generator: RandomSource = None) -> Tokens:
        r"""Draw $z_t \sim q(z_t \mid x)$.

        Args:
            x: Clean tokens `(B, L)` or a distribution over data tokens `(B, L, V)`.
            t: Times in $[0, 1]$, `(B,)` or one float.
            generator: Random generator for reproducible draws.

        Returns:
            Noisy tokens `(B, L)` in `0..V-1`.
        """
        return self.marginal(x, t).sample(generator=generator)

    def prior(
        self, batch: int, length: int, *, device: torch.device | None = None
    ) -> FactorizedCategorical:
        """Uniform tokens at every position, batch `(B,)`, event `(L,)`.

        Args:
            batch: $B$.
            length: $L$.
            device: Where to put its tensors.

        Returns:
            A `FactorizedCategorical` (its probabilities an expanded view).
        """
        flat = torch.full((1, 1, self.vocab_size), 1.0 / self.vocab_size, device=device)
        return FactorizedCategorical(flat.expand(batch, length, -1))

    def sample_prior(
        self,
        batch: int,
        length: int,
        *,
        generator: RandomSource = None,
        device: torch.device | None = None,
    ) -> Tokens:
        r"""$z_1$: uniform tokens (the marginal at $t = 1$ when $\alpha_1 = 0$).

        Args:
            batch: $B$.
            length: $L$.
            generator: Random generator (`torch.Generator` or `SequenceGenerator`).
            device: Where to put the tokens.

        Returns:
            `(B, L)` tokens in `0..V-1`.
        """
        u = uniform((batch, length), generator=generator, dtype=torch.float64, device=device)
        return (u * self.vocab_size).long().clamp_max(self.vocab_size - 1)

    def likelihood(self, z_t: Tokens, t: Times | float) -> Float[Tensor, "batch length vocab"]:
        r"""$q(z_t^\ell \mid x^\ell = v) = \alpha_t [v = z_t^\ell] + (1 - \alpha_t)/V$.

        Args:
            z_t: Noisy tokens `(B, L)`.
            t: Times `(B,)` or a float.

        Returns:
            Float64 likelihoods `(B, L, V)`.
        """
        self.check_tokens("z_t", z_t)
        alpha = self._alpha(t)
        one_hot = torch.nn.functional.one_hot(z_t, self.vocab_size)
        return alpha * one_hot + (1.0 - alpha) / self.vocab_size

    def log_probs(
        self, logits: Float[Tensor, "batch length width"], z_t: Tokens
    ) -> Float[Tensor, "batch length vocab"]:
        r"""$\log x_\theta$: a float32 log-softmax over the data tokens (nothing is carried over).

        Args:
            logits: `(B, L, W)` with `W >= V`; entries `V..W-1` are dropped.
            z_t: Noisy tokens `(B, L)` (unused: every token may be noise).

        Returns:
            `(B, L, V)` log-probabilities.
        """
        return data_log_softmax(logits, self.vocab_size)

    def nelbo_integrand(
        self,
        log_probs: Float[Tensor, "batch length vocab"],
        x: Tokens,
        z_t: Tokens,
        t: Times,
    ) -> Float[Tensor, "batch length"]:
        r"""UDLM's continuous-time integrand (module docstring) at each position.

        Args:
            log_probs: $\log x_\theta(z_t)$ `(B, L, V)` (normalised).
            x: Clean tokens `(B, L)`.
            z_t: Noisy tokens `(B, L)`.
            t: Times `(B,)` in $(0, 1]$.

        Returns:
            `(B, L)` integrands in nats, float32.
        """
        n = self.vocab_size
        t = as_tensor(t)
        alpha = self.schedule.alpha(t).double().reshape(-1, 1)
        beta = (-self.schedule.alpha_prime(t).double().reshape(-1, 1) / alpha).float()
        noise = (1.0 - alpha) / n  # (B, 1): the uniform part of f and g
        log_f = torch.logaddexp(
            log_probs.float() + alpha.log().float().unsqueeze(-1), noise.log().float().unsqueeze(-1)
        )
        f_z = log_f.gather(-1, z_t.unsqueeze(-1)).squeeze(-1).double().exp()
        f_x = log_f.gather(-1, x.unsqueeze(-1)).squeeze(-1).double().exp()
        g_x = alpha + noise
        g_z = torch.where(z_t == x, g_x, noise)
        # Σ_y g_y log(g_y / f_y) = g_x log g_x + (N-1) c log c - α log f_x - c Σ_y log f_y
        sum_log_f = log_f.sum(-1).double()
        kl = (
            torch.xlogy(g_x, g_x)
            + (n - 1) * torch.xlogy(noise, noise)
            - alpha * f_x.log()
            - noise * sum_log_f
        )
        bracket = 1.0 / f_z - 1.0 / g_z + (kl + f_z.log() - g_z.log()) / g_z
        return (beta / n) * bracket.float()

    def remove_noise(self, z_t: Tokens, x: Tensor, t: Times | float) -> Tokens:
        r"""The most likely $z_0$ under the posterior at $s = 0$, $q(z_t \mid v)\, x_\theta[v]$.

        Every position may be noise, so the argmax weighs $x_\theta$ (the
        posterior given the other positions) by the own token's likelihood.

        Args:
            z_t: Tokens `(B, L)` at the last time.
            x: $x_\theta(z_t)$ probabilities `(B, L, V)`.
            t: The last time, `(B,)` or a float.

        Returns:
            `(B, L)` data tokens.
        """
        return (self.likelihood(z_t, t) * x.double()).argmax(-1)

    def is_masked(self, z: Tensor) -> Tensor:
        """All `False`: this process has no mask.

        Args:
            z: Token ids, any shape.

        Returns:
            A boolean tensor with the shape of `z`.
        """
        return torch.zeros_like(z, dtype=torch.bool)


@register("strategy", "uniform")
class UniformPosterior(Strategy):
    r"""The posterior $q(z_s \mid z_t, x)$ of uniform-state noise, and the reverse model.

    Called with a one-hot $x$ it is the exact posterior; with $x_\theta(z_t)$
    it is $p_\theta(z_s \mid z_t)$ (module docstring). A `Strategy` for the
    `AncestralSampler` on a `UniformProcess`: a uniform time grid, one draw
    per step.

    Example:
        >>> process = UniformProcess(vocab_size=3)
        >>> q = UniformPosterior()(process, torch.tensor([[0, 2]]),
        ...                        torch.full((1, 2, 3), 1 / 3), 0.6, 0.5)
        >>> q.batch_shape, q.event_shape
        (torch.Size([1]), torch.Size([2]))
    """

    process_type = UniformProcess

    def __repr__(self) -> str:
        return "UniformPosterior()"

    def time_grid(self, steps: int, t_min: float = 1e-5) -> Float[Tensor, "points"]:
        """`steps + 1` equally spaced times from 1 to `t_min` (`uniform_time_grid`).

        Args:
            steps: The number of steps $T$.
            t_min: The last time, before noise removal.

        Returns:
            Decreasing float64 times `(T + 1,)`.
        """
        return uniform_time_grid(steps, t_min)

    def alphas(
        self, process: UniformProcess, t: Times | float, s: Times | float
    ) -> tuple[Times, Times]:
        r"""$(\alpha_t, \alpha_s)$ for the step, times broadcast to `(B,)`.

        Args:
            process: The forward process.
            t: Current times `(B,)` or a float.
            s: Next times, `s < t`.

        Returns:
            $(\alpha_t, \alpha_s)$, each `(B,)`.

        Raises:
            ValueError: If the times lie outside $[0, 1]$ or `s >= t`.
        """
        t, s = torch.broadcast_tensors(as_tensor(t).reshape(-1), as_tensor(s).reshape(-1))
        if validation_enabled() and bool((s >= t).any()):
            raise ValueError(
                f"`s` must be earlier than `t`; got s={s.tolist()[:3]}, t={t.tolist()[:3]}"
            )
        return process.schedule.alpha(t), process.schedule.alpha(s)

    def __call__(
        self,
        process: UniformProcess,
        z_t: Tokens,
        x: Probs,
        t: Times | float,
        s: Times | float,
    ) -> FactorizedCategorical:
        r"""$q(z_s \mid z_t, x)$ (or $p_\theta$ for a model's $x$): batch `(B,)`, event `(L,)`.

        Args:
            process: A `UniformProcess`.
            z_t: Current tokens `(B, L)` in `0..V-1`.
            x: A distribution over data tokens `(B, L, V)`: a one-hot of the
                data, or $x_\theta(z_t)$.
            t: Current times, `(B,)` or a float.
            s: Next times, `s < t`.

        Returns:
            A `FactorizedCategorical` over `0..V-1`.

        Raises:
            ValueError: On ids outside the vocabulary, shape mismatches, or times
                outside $[0, 1]$ or not ordered.
        """
        n = process.vocab_size
        if x.shape[:2] != z_t.shape or x.shape[-1] != n:
            raise ValueError(
                f"`x` must have shape (B, L, V) = {(*z_t.shape, n)} to match "
                f"`z_t` and the vocabulary; got {tuple(x.shape)}"
            )
        process.check_tokens("z_t", z_t)
        alpha_t, alpha_s = (a.double().reshape(-1, 1, 1) for a in self.alphas(process, t, s))
        alpha_ts = alpha_t / alpha_s.clamp_min(torch.finfo(torch.float64).tiny)
        keep = alpha_ts * torch.nn.functional.one_hot(z_t, n) + (1.0 - alpha_ts) / n
        numerator = keep * (alpha_s * x.double() + (1.0 - alpha_s) / n)
        return FactorizedCategorical((numerator / numerator.sum(-1, keepdim=True)).to(x.dtype))

    def start(self, process: UniformProcess, z: Tokens) -> None:
        r"""No per-run state: each step depends on $z_t$ and $x_\theta$ only."""
        return None

    def draw(
        self,
        process: UniformProcess,
        z_t: Tokens,
        x: Probs,
        t: Times,
        s: Times,
        *,
        state: None = None,
        generator: RandomSource = None,
        dtype: torch.dtype = torch.float64,
    ) -> Tokens:
        r"""One reverse step $z_s \sim p_\theta(z_s \mid z_t)$.

        Args:
            process: The forward process.
            z_t: Current tokens `(B, L)`.
            x: $x_\theta(z_t)$ `(B, L, V)`.
            t: Current times `(B,)`.
            s: Next times `(B,)`.
            state: Unused (`start` returns `None`).
            generator: Random generator.
            dtype: Precision of the categorical draw.

        Returns:
            $z_s$ `(B, L)`.
        """
        return self(process, z_t, x, t, s).sample(generator=generator, dtype=dtype)
