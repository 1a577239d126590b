r"""Training objectives: the negative ELBO of discrete diffusion, in nats.

**Continuous time.** For any forward process and noise schedule,

$$
\mathcal{L}(x) = \int_0^1 \mathbb{E}_{z_t \sim q(\cdot \mid x)}
\Big[\sum_\ell \lambda_t\big(x_\theta(z_t)_\ell;\ x_\ell, z_t^\ell\big)\Big]\, dt ,
$$

with the process's integrand $\lambda_t$ (`ForwardProcess.nelbo_integrand`).
For masking (MDLM) it is $\frac{-\alpha'_t}{1 - \alpha_t} [z_t^\ell = m]\,
(-\log x_\theta(z_t)_\ell[x_\ell])$; for uniform noise, UDLM's closed form
(`discdiff.processes.uniform`).

estimated with one time per sequence, drawn antithetically across the batch
($u_i = (u + i)/n \bmod 1$), on $[\delta, 1]$ with $\delta = 10^{-3}$.
With the exact conditional denoiser its expectation is $-\log p(x)$.
Padded positions (a `padding_mask`, `True` at real tokens) count neither in
the sum nor, in the trainer and `held_out_bound`, in the number of tokens,
as in MDLM.

**Conditional bound.** For a prompt $c$ and a response $r$ (a `prompt_mask`,
`True` at prompt tokens), the prompt is kept clean at every $t$ and left out
of the sum:

$$
\mathcal{L}(r \mid c) = \int_0^1 \mathbb{E}_{z_t \sim q(\cdot \mid r)}
\Big[\sum_{\ell \in r} \lambda_t\big(x_\theta(c \oplus z_t)_\ell;\ x_\ell, z_t^\ell\big)\Big]\, dt
\;\ge\; -\log p_\theta(r \mid c),
$$

with equality in expectation for the exact conditional denoiser
$x_\theta(c \oplus z_t)_\ell = p(x_\ell \mid c, \text{unmasked tokens of } z_t)$.
This is the supervised fine-tuning loss of LLaDA (prompt tokens never masked,
response tokens masked with probability $t$, weight $1/t$ for its linear
schedule). Positions that are padding count in neither.

The estimate integrates over $[\delta, 1]$: each draw is weighted by the
interval's length $1 - \delta$. MDLM's code averages over $U[\delta, 1]$
instead (no such factor), which reads $\delta = 0.1\,\%$ higher; pass
`convention="mdlm"` for its number.

**Discrete time** with $T$ steps $t_i = i/T$: $\sum_i \mathbb{E}_q\,
\mathrm{KL}\big(q_\sigma(z_s \mid z_t, x) \,\|\, p_\theta(z_s \mid z_t)\big)$,
estimated with one step per sequence. `discrete_nelbo` computes the KL from
the posterior distribution objects (any posterior, any remasking schedule,
any process) or, for masking by default, in closed form: both distributions
share the mask probabilities, so the KL is $-\log x_\theta[x]$ weighted by the
unmasking probability $(\alpha_s - (1 - \sigma_t)\alpha_t)/(1 - \alpha_t)$ at
masked positions — MDLM's weight when $\sigma = 0$. (The prior term is
dropped, as in MDLM.)
"""

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from discdiff.models.dit import DiT
from discdiff.models.protocol import Denoiser, with_label
from discdiff.models.subs import SUBS
from discdiff.processes.base import ForwardProcess
from discdiff.registry import entries, extension_point, lookup, register

__all__ = [
    "BlockNELBO",
    "Bound",
    "ConditionalNELBO",
    "ContinuousNELBO",
    "DiscreteNELBO",
    "Method",
    "NoisyClassification",
    "Objective",
    "antithetic_times",
    "discrete_nelbo",
    "held_out_bound",
    "nelbo",
]

T_MIN = 1e-3
"""Smallest training time (MDLM's sampling_eps)."""

_LN2 = 0.6931471805599453


def antithetic_times(
    batch: int, *, generator: torch.Generator | None = None, device: torch.device | None = None
) -> Float[Tensor, "batch"]:
    r"""Low-variance times: $u_i = (u + i)/n \bmod 1$, mapped to $[\delta, 1]$.

    Args:
        batch: Number of times $n$.
        generator: Random generator.
        device: Where to put them.
    """
    u = torch.rand((), generator=generator, device=device)
    u = (u + torch.arange(batch, device=device) / batch) % 1.0
    return (1.0 - T_MIN) * u + T_MIN


def _denoise(denoiser: Denoiser, z_t: Tensor, t: Tensor, padding_mask: Tensor | None) -> Tensor:
    """`denoiser(z_t, t)`, with the padding mask when there is one."""
    if padding_mask is None:
        return denoiser(z_t, t)
    return denoiser(z_t, t, padding_mask=padding_mask)


def _check_padding(x: Tensor, padding_mask: Tensor | None, *, name: str = "padding_mask") -> None:
    if padding_mask is not None and (
        padding_mask.shape != x.shape or padding_mask.dtype != torch.bool
    ):
        raise ValueError(
            f"`{name}` must be a bool tensor of the shape of `x` {tuple(x.shape)}; "
            f"got {padding_mask.dtype} {tuple(padding_mask.shape)}"
        )


def _keep_prompt(
    x: Int[Tensor, "batch length"],
    z_t: Int[Tensor, "batch length"],
    prompt_mask: Bool[Tensor, "batch length"] | None,
) -> Int[Tensor, "batch length"]:
    """`z_t` with the prompt's clean tokens put back (`z_t` itself without a prompt)."""
    return z_t if prompt_mask is None else torch.where(prompt_mask, x, z_t)


def _noised(
    process: ForwardProcess,
    x: Int[Tensor, "batch length"],
    t: Tensor | None,
    z_t: Tensor | None,
    prompt_mask: Bool[Tensor, "batch length"] | None,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    r"""$(t, z_t)$ of a continuous-time bound, the prompt's clean tokens put back.

    Antithetic times and $z_t \sim q(\cdot \mid x)$ where they are not given.
    """
    if t is None:
        t = antithetic_times(x.shape[0], generator=generator, device=x.device)
    if z_t is None:
        z_t = process.sample(x, t, generator=generator)
    return t, _keep_prompt(x, z_t, prompt_mask)


def _scored_positions(
    x: Int[Tensor, "batch length"],
    *,
    padding_mask: Bool[Tensor, "batch length"] | None = None,
    prompt_mask: Bool[Tensor, "batch length"] | None = None,
) -> Bool[Tensor, "batch length"] | None:
    """The positions a bound sums over: real tokens outside the prompt (`None`: all).

    Args:
        x: Clean tokens `(B, L)`.
        padding_mask: `True` at real tokens.
        prompt_mask: `True` at prompt tokens.

    Returns:
        `(B, L)` bool, or `None` when both masks are `None`.

    Raises:
        ValueError: If a mask is not a bool tensor of the shape of `x`.
    """
    _check_padding(x, padding_mask)
    _check_padding(x, prompt_mask, name="prompt_mask")
    if prompt_mask is None:
        return padding_mask
    response = ~prompt_mask
    return response if padding_mask is None else response & padding_mask


def nelbo(
    process: ForwardProcess,
    denoiser: Denoiser,
    x: Int[Tensor, "batch length"],
    *,
    prompt_mask: Bool[Tensor, "batch length"] | None = None,
    padding_mask: Bool[Tensor, "batch length"] | None = None,
    generator: torch.Generator | None = None,
    t: Float[Tensor, "batch"] | None = None,
    z_t: Int[Tensor, "batch length"] | None = None,
    convention: Literal["integral", "mdlm"] = "integral",
) -> Float[Tensor, "batch"]:
    r"""Continuous-time NELBO of each sequence, in nats (one Monte-Carlo time each).

    With a `prompt_mask` it is the conditional bound on
    $-\log p_\theta(\text{response} \mid \text{prompt})$: prompt tokens stay
    clean at every $t$ and are not summed over.

    Args:
        process: The forward process.
        denoiser: Any `(z_t, t) -> logits` callable (normalised here with
            log-softmax, so raw logits and SUBS log-probabilities both work).
        x: Clean tokens `(B, L)`.
        prompt_mask: `(B, L)`, `True` at prompt tokens: they are never noised
            (also in a given `z_t`) and not summed over, so the result bounds the
            response given the prompt. `None`: no prompt.
        padding_mask: `(B, L)`, `True` at real tokens: padded positions do not
            count, and the denoiser is called with `padding_mask=` (a `DiT`
            then attends to real tokens only). `None`: every position is real.
        generator: Random generator for the times and the masks.
        t: Times to use instead of antithetic draws, `(B,)` in $(0, 1]$.
        z_t: A draw of $q(z_t \mid x)$ at `t` to use (with `t`), e.g. a slice of a
            global batch's draw in distributed training.
        convention: `"integral"` (default): the integral over $[\delta, 1]$;
            `"mdlm"`: MDLM's average over $U[\delta, 1]$, larger by $1/(1 - \delta)$.

    Returns:
        `(B,)` unbiased estimates of the NELBO on $[\delta, 1]$, summed over the
        real tokens outside the prompt.

    Raises:
        ValueError: If `padding_mask` or `prompt_mask` does not match `x`, or
            `convention` is unknown.

    Example:
        >>> from discdiff import MaskingProcess
        >>> process = MaskingProcess(vocab_size=3)
        >>> flat = lambda z, t: torch.zeros(*z.shape, 3)
        >>> x = torch.tensor([[0, 1, 2, 0]])
        >>> prompt = torch.tensor([[True, True, False, False]])
        >>> nelbo(process, flat, x, prompt_mask=prompt).shape
        torch.Size([1])
    """
    scored = _scored_positions(x, padding_mask=padding_mask, prompt_mask=prompt_mask)
    if convention not in ("integral", "mdlm"):
        raise ValueError(f"`convention` must be 'integral' or 'mdlm'; got {convention!r}")
    t, z_t = _noised(process, x, t, z_t, prompt_mask, generator)
    log_probs = _denoise(denoiser, z_t, t, padding_mask).float().log_softmax(-1)
    integrand = process.nelbo_integrand(log_probs, x, z_t, t)
    if scored is not None:
        integrand = integrand * scored
    total = integrand.sum(-1)
    if convention == "integral":
        total = total * (1.0 - T_MIN)  # the length of [δ, 1]
    return total


def discrete_nelbo(
    process: ForwardProcess,
    posterior: Callable[..., Any],
    denoiser: Denoiser,
    x: Int[Tensor, "batch length"],
    *,
    steps: int,
    generator: torch.Generator | None = None,
    step: Int[Tensor, "batch"] | None = None,
    z_t: Int[Tensor, "batch length"] | None = None,
    exact_kl: bool = False,
    padding_mask: Bool[Tensor, "batch length"] | None = None,
    prompt_mask: Bool[Tensor, "batch length"] | None = None,
) -> Float[Tensor, "batch"]:
    r"""$T$-step NELBO of each sequence, in nats (one Monte-Carlo step each).

    Args:
        process: The forward process.
        posterior: $q_\sigma$ (a `RemaskPosterior` for masking, `UniformPosterior`
            for uniform noise); the model's reverse step is the same posterior
            with $x_\theta$ in place of $x$.
        denoiser: Any `(z_t, t) -> logits` callable.
        x: Clean tokens `(B, L)`.
        steps: $T$.
        generator: Random generator.
        step: Step indices `(B,)` in `1..T` (from $t = i/T$ to $s = (i-1)/T$)
            instead of uniform draws.
        z_t: A draw of $q(z_t \mid x)$ at time `step / steps` to use (with `step`).
        exact_kl: Compute the KL from the posterior objects' `position_kl`
            (materialises `(B, L, V)` token tables) instead of the masking
            closed form; always so for a process without a mask.
        padding_mask: `(B, L)`, `True` at real tokens; padded positions do not
            count (see `nelbo`).
        prompt_mask: `(B, L)`, `True` at prompt tokens: kept clean and not
            counted, a bound on the response given the prompt (see `nelbo`).

    Returns:
        `(B,)` unbiased estimates $T \cdot \mathrm{KL}_i$.
    """
    scored = _scored_positions(x, padding_mask=padding_mask, prompt_mask=prompt_mask)
    batch = x.shape[0]
    if step is None:
        step = torch.randint(1, steps + 1, (batch,), generator=generator, device=x.device)
    t, s = step / steps, (step - 1) / steps
    if z_t is None:
        z_t = process.sample(x, t, generator=generator)
    z_t = _keep_prompt(x, z_t, prompt_mask)
    x_theta = _denoise(denoiser, z_t, t, padding_mask).float().softmax(-1)
    x_data = torch.nn.functional.one_hot(x, process.vocab_size).to(x_theta.dtype)
    q = posterior(process, z_t, x_data, t, s)
    real = torch.ones_like(x, dtype=torch.bool) if scored is None else scored
    if exact_kl or process.mask_id is None:
        # per-position KLs: the pyro distributions' event is the whole sequence
        p = posterior(process, z_t, x_theta, t, s)
        kl = (q.position_kl(p) * real).sum(-1)
    else:
        unmask = (1.0 - q.mask_prob) * (process.is_masked(z_t) & real)
        log_x = x_theta.gather(-1, x.unsqueeze(-1)).squeeze(-1).clamp_min(1e-30).log()
        kl = (-unmask * log_x).sum(-1)
    return steps * kl


@dataclass(frozen=True)
class Bound:
    """A NELBO expressed per token: nats, bits and the perplexity bound.

    Args:
        nats: Total nats.
        tokens: Number of tokens they cover.
    """

    nats: float
    tokens: int

    @property
    def nats_per_token(self) -> float:
        """Nats per token."""
        return self.nats / self.tokens

    @property
    def bits_per_token(self) -> float:
        """Bits per token."""
        return self.nats_per_token / _LN2

    @property
    def perplexity(self) -> float:
        r"""The perplexity bound $\exp(\text{nats/token})$ (`inf` when it overflows)."""
        return math.exp(self.nats_per_token) if self.nats_per_token < 700 else math.inf

    def summary(self) -> dict[str, float]:
        """`nats_per_token`, `bits_per_token` and `perplexity_bound`, for records."""
        return {
            "nats_per_token": self.nats_per_token,
            "bits_per_token": self.bits_per_token,
            "perplexity_bound": self.perplexity,
        }


def held_out_bound(
    process: ForwardProcess,
    denoiser: Denoiser,
    data: Int[Tensor, "n length"],
    *,
    padding_mask: Bool[Tensor, "n length"] | None = None,
    prompt_mask: Bool[Tensor, "n length"] | None = None,
    batch_size: int = 64,
    seed: int = 12345,
    device: torch.device | str | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    objective: "Objective | None" = None,
) -> Bound:
    r"""The NELBO (or another objective) of held-out sequences, with fixed noise.

    Comparable across runs: the noise comes from a fixed seed.

    $$
    \text{nats/token} = \frac{1}{N L} \sum_{n} \mathcal{L}_\infty(x_n),
    $$

    with times and masks drawn from a generator seeded by `seed` (on the CPU,
    so the noise does not depend on the device).

    Args:
        process: The forward process.
        denoiser: The model, $x_\theta$.
        data: The sequences, `(N, L)`.
        padding_mask: `(N, L)`, `True` at real tokens; padding counts neither
            in the nats nor in the tokens.
        prompt_mask: `(N, L)`, `True` at prompt tokens: the bound of the
            responses given the prompts, per response token (prompts are kept
            clean and count neither in the nats nor in the tokens).
        batch_size: Sequences per forward pass.
        seed: Seed of the noise.
        device: Where the model runs (the data and noise are moved there).
        autocast: A context manager factory wrapped around each forward (e.g. bf16).
        objective: The per-sequence loss to average; the continuous NELBO
            (`ContinuousNELBO`) by default.

    Returns:
        The `Bound` over all $N L$ tokens (the real ones with a `padding_mask`,
        the response ones with a `prompt_mask`).
    """
    scored = _scored_positions(data, padding_mask=padding_mask, prompt_mask=prompt_mask)
    objective = objective or ContinuousNELBO()
    generator = torch.Generator().manual_seed(seed)
    nats = 0.0
    with torch.no_grad():
        for first in range(0, data.shape[0], batch_size):
            rows = slice(first, first + batch_size)
            x = data[rows]
            noise = [n.to(device) for n in objective.noise(process, x, generator)]
            masks = {
                name: mask[rows].to(device)
                for name, mask in (("padding_mask", padding_mask), ("prompt_mask", prompt_mask))
                if mask is not None
            }
            with autocast():
                losses = objective.loss(process, denoiser, x.to(device), *noise, **masks)
            nats += float(losses.sum())
    tokens = data.numel() if scored is None else int(scored.sum())
    return Bound(nats=nats, tokens=tokens)


@extension_point("objective")
@runtime_checkable
class Objective(Protocol):
    """A per-sequence loss whose randomness is drawn apart from its evaluation.

    Splitting the two lets distributed training draw the noise of the global
    batch on every rank and evaluate only its own slice, so that gradients
    match a single process exactly.

    An objective that bounds a response given a prompt also takes
    `prompt_mask=` (`True` at prompt tokens) in `loss`; the trainer passes it
    only for batches that carry one (`Prompted`).
    """

    def noise(
        self, process: ForwardProcess, x: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, ...]:
        """Per-sequence random inputs (leading dimension B) for `loss`."""
        ...

    def loss(
        self,
        process: ForwardProcess,
        denoiser: Denoiser,
        x: Tensor,
        *noise: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """`(B,)` losses in nats; padded positions (`padding_mask` False) do not count."""
        ...


@dataclass(frozen=True)
class Method:
    """A training method: its loss, the network it trains and the strategy that samples it.

    The record of an objective registered with `discdiff.register("objective",
    name, network=..., wrap=..., sampler=...)`; what a registration leaves out
    takes the defaults of MDLM's `nelbo`.

    Attributes:
        loss: The `Objective` class (built with no arguments).
        network: The network class: `from_settings(settings, process=,
            model_length=)` builds it from a run's `model` section,
            `from_pretrained(directory)` loads it.
        wrap: `wrap(network, process)`: what the loss and the samplers call
            (`SUBS` for a denoiser, `ScoreModel` for scores, the network itself).
        sampler: The strategy name that samples it by default, or `None` for a
            network that samples itself token by token (autoregressive).
    """

    loss: type
    network: Any = DiT
    wrap: Callable[[Any, ForwardProcess], Any] = SUBS
    sampler: str | None = "mdlm"

    @classmethod
    def named(cls, name: str) -> "Method":
        """The method registered as `name` (`train.objective`).

        Raises:
            RegistryError: If no objective has that name.
        """
        entry = entries("objective").get(name)
        if entry is None:
            lookup("objective", name)  # raises, naming the registered objectives
        return cls(entry.cls, **entry.options)


@register("objective", "nelbo")
class ContinuousNELBO:
    """`nelbo` as an `Objective` (antithetic times and masks as its noise)."""

    def noise(
        self, process: ForwardProcess, x: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, ...]:
        """Antithetic times and $z_t$ for the batch."""
        t = antithetic_times(x.shape[0], generator=generator, device=x.device)
        return t, process.sample(x, t, generator=generator)

    def loss(
        self,
        process: ForwardProcess,
        denoiser: Denoiser,
        x: Tensor,
        *noise: Tensor,
        padding_mask: Tensor | None = None,
        prompt_mask: Tensor | None = None,
    ) -> Tensor:
        """The continuous-time NELBO per sequence (of the response, with a `prompt_mask`)."""
        t, z_t = noise
        return nelbo(
            process,
            denoiser,
            x,
            t=t,
            z_t=z_t,
            padding_mask=padding_mask,
            prompt_mask=prompt_mask,
        )


class DiscreteNELBO:
    r"""`discrete_nelbo` as an `Objective`.

    Args:
        posterior: The posterior $q_\sigma$.
        steps: $T$.
        exact_kl: Use the distribution objects' KL instead of the closed form.
    """

    def __init__(
        self, posterior: Callable[..., Any], steps: int, *, exact_kl: bool = False
    ) -> None:
        self.posterior, self.steps, self.exact_kl = posterior, steps, exact_kl

    def noise(
        self, process: ForwardProcess, x: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, ...]:
        """Step indices and $z_t$ for the batch."""
        step = torch.randint(1, self.steps + 1, (x.shape[0],), generator=generator)
        return step, process.sample(x, step / self.steps, generator=generator)

    def loss(
        self,
        process: ForwardProcess,
        denoiser: Denoiser,
        x: Tensor,
        *noise: Tensor,
        padding_mask: Tensor | None = None,
        prompt_mask: Tensor | None = None,
    ) -> Tensor:
        """The $T$-step NELBO per sequence (of the response, with a `prompt_mask`)."""
        step, z_t = noise
        return discrete_nelbo(
            process,
            self.posterior,
            denoiser,
            x,
            steps=self.steps,
            step=step,
            z_t=z_t,
            exact_kl=self.exact_kl,
            padding_mask=padding_mask,
            prompt_mask=prompt_mask,
        )


class ConditionalNELBO:
    r"""The NELBO of a class-conditional denoiser, a bound on $-\log p_\theta(x \mid y)$.

    For labelled data: a source whose batches are `(x, label)` makes the
    trainer call `loss(process, model, x, label, *noise)`; the label is bound
    to the model (`with_label`) and `inner` is evaluated on the plain
    denoiser. Label dropout (the null label, for classifier-free guidance)
    happens inside the model in training mode (`DiTConfig.label_dropout`).

    Args:
        inner: The objective on the bound denoiser; the continuous NELBO by default.
    """

    def __init__(self, inner: Objective | None = None) -> None:
        self.inner = inner or ContinuousNELBO()

    def noise(
        self, process: ForwardProcess, x: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, ...]:
        """The inner objective's noise."""
        return self.inner.noise(process, x, generator)

    def loss(
        self,
        process: ForwardProcess,
        denoiser: Denoiser,
        x: Tensor,
        *noise: Tensor,
        padding_mask: Tensor | None = None,
        prompt_mask: Tensor | None = None,
    ) -> Tensor:
        """The inner loss of `denoiser(·, ·, label)`; `noise` is `(label, *inner noise)`."""
        label, *rest = noise
        bound = with_label(denoiser, label)
        masks = {
            name: mask
            for name, mask in (("padding_mask", padding_mask), ("prompt_mask", prompt_mask))
            if mask is not None
        }
        return self.inner.loss(process, bound, x, *rest, **masks)


class NoisyClassification:
    r"""Cross-entropy of a classifier of noisy sequences, as an `Objective`.

    Trains $p_\phi(c \mid z_t)$ for classifier-based guidance:

    $$
    \mathcal{L}(\phi) = \mathbb{E}_{(x, c)}\, \mathbb{E}_{t \sim U[\delta, 1],\,
    z_t \sim q(z_t \mid x)} \big[-\log p_\phi(c \mid z_t)\big],
    $$

    with antithetic times. The model is any `(z_t, t) -> (B, C)` logits
    module (e.g. `DiTClassifier`); batches are `(x, label)`. The trainer
    divides losses by the number of tokens, so each sequence's cross-entropy
    is multiplied by $L$ here: the trainer's "nats/token" is then the mean
    cross-entropy per sequence.
    """

    def noise(
        self, process: ForwardProcess, x: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, ...]:
        """Antithetic times and $z_t$ for the batch (as `ContinuousNELBO`)."""
        return ContinuousNELBO().noise(process, x, generator)

    def loss(
        self,
        process: ForwardProcess,
        denoiser: Denoiser,
        x: Tensor,
        *noise: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """`(B,)` cross-entropies times $L$; `noise` is `(label, t, z_t)`."""
        if padding_mask is not None:
            raise ValueError("NoisyClassification takes no `padding_mask`: classify whole rows")
        label, t, z_t = noise
        logits = denoiser(z_t, t).float()
        return torch.nn.functional.cross_entropy(logits, label, reduction="none") * x.shape[1]


class BlockNELBO:
    r"""The block diffusion NELBO (BD3-LM) as an `Objective`.

    The sequence is cut into $K = L / n$ blocks $x^1, \dots, x^K$ of `block_size`
    $n$ positions, and $-\log p_\theta(x) = -\sum_b \log p_\theta(x^b \mid x^{<b})$
    is bounded block by block with MDLM's continuous-time NELBO of each block
    given the clean blocks before it:

    $$
    \mathcal{L}(x) = \sum_{b=1}^{K} \int_0^1 \mathbb{E}_{z^b_{t} \sim q(\cdot \mid x^b)}
    \Big[\frac{-\alpha'_{t}}{1 - \alpha_{t}} \sum_{\ell \in b:\, z^\ell_{t} = m}
    -\log x_\theta(z^b_{t}, x^{<b})_\ell[x^\ell]\Big]\, dt ,
    $$

    estimated with one time $t_b$ per block, antithetic over the $B K$ blocks
    of the batch, on $[\delta, 1]$ (the same `"integral"` convention as
    `nelbo`). The denoiser is called once for all blocks, as
    `denoiser(z_t, t, padding_mask=..., clean=x)` (a `SUBS` over a `DiT` with
    `block_size`: BD3-LM's $z_t \oplus x$ pass gives block $b$ the clean
    $x^{<b}$). With $n = L$ it is MDLM's NELBO; with the exact conditional
    denoiser its expectation is $-\log p(x)$.

    Args:
        block_size: $n$; the sequence length must be a multiple of it.

    Raises:
        ValueError: If `block_size` is below 1.
    """

    def __init__(self, block_size: int) -> None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"`block_size` must be a positive integer; got {block_size!r}")
        self.block_size = block_size

    def __repr__(self) -> str:
        return f"BlockNELBO(block_size={self.block_size})"

    def _blocks(self, x: Tensor) -> int:
        if x.shape[1] % self.block_size:
            raise ValueError(
                f"the sequence length {x.shape[1]} must be a multiple of block_size="
                f"{self.block_size}"
            )
        return x.shape[1] // self.block_size

    def noise(
        self, process: ForwardProcess, x: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, ...]:
        """Antithetic times per block `(B, K)` and $z_t$ `(B, L)`, each block noised at its time."""
        batch, blocks = x.shape[0], self._blocks(x)
        t = antithetic_times(batch * blocks, generator=generator, device=x.device)
        z_t = process.sample(x.reshape(batch * blocks, self.block_size), t, generator=generator)
        return t.view(batch, blocks), z_t.view_as(x)

    def loss(
        self,
        process: ForwardProcess,
        denoiser: Denoiser,
        x: Tensor,
        *noise: Tensor,
        padding_mask: Tensor | None = None,
        prompt_mask: Tensor | None = None,
    ) -> Tensor:
        """The block NELBO per sequence `(B,)`; `noise` is `(t (B, K), z_t (B, L))`.

        With a `prompt_mask` the prompt is kept clean and not counted (the
        bound of the response given the prompt).
        """
        scored = _scored_positions(x, padding_mask=padding_mask, prompt_mask=prompt_mask)
        t, z_t = noise
        z_t = _keep_prompt(x, z_t, prompt_mask)
        batch, blocks, n = x.shape[0], self._blocks(x), self.block_size
        kwargs: dict[str, Any] = {"clean": x}
        if padding_mask is not None:
            kwargs["padding_mask"] = padding_mask
        # t is unused by a block model (never time-conditioned); pass the first block's
        log_probs = denoiser(z_t, t[:, 0], **kwargs).float().log_softmax(-1)
        integrand = process.nelbo_integrand(
            log_probs.reshape(batch * blocks, n, -1),
            x.reshape(batch * blocks, n),
            z_t.reshape(batch * blocks, n),
            t.reshape(-1),
        ).view_as(x)
        if scored is not None:
            integrand = integrand * scored
        return integrand.sum(-1) * (1.0 - T_MIN)
