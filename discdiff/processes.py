r"""Forward processes $q(z_t \mid x)$: the `ForwardProcess` interface and masking.

A forward process corrupts each position independently with a noise schedule
$\alpha_t$. Everything else in the library (the losses, the trainer, the
sampler, the property suite) asks the process, through `ForwardProcess`, for
the few things that differ between processes: the marginal, the prior at
$t = 1$, how a denoiser's output becomes $x_\theta$, the continuous-time NELBO
integrand and the final noise-removal step. The masking process of MDLM:

$$
q(z_t \mid x) = \prod_\ell \mathrm{Cat}\big(z_t^\ell;\ \alpha_t x^\ell + (1 - \alpha_t)\, m\big).
$$

`discdiff.uniform` holds the second process, uniform-state noise.
"""

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from discdiff._checks import as_tensor, validation_enabled
from discdiff.distributions import MaskedCategorical
from discdiff.rng import RandomSource
from discdiff.schedules import LogLinear, NoiseSchedule
from discdiff.typing import Times, Tokens

__all__ = ["NEG", "ForwardProcess", "MaskingProcess", "check_token_range", "data_log_softmax"]

Data = Int[Tensor, "batch length"] | Float[Tensor, "batch length vocab"]


def check_token_range(name: str, tokens: Tensor, vocab_size: int, extra: int | None = None) -> None:
    """Raise `ValueError` naming `name` if `tokens` holds ids outside `0..V-1` (and `extra`).

    Args:
        name: The argument's name, for the message.
        tokens: Integer token ids, any shape.
        vocab_size: $V$.
        extra: One more allowed id (the mask id), or `None`.
    """
    if not validation_enabled():
        return
    ok = (tokens >= 0) & (tokens < vocab_size)
    if extra is not None:
        ok |= tokens == extra
    if not bool(ok.all()):
        allowed = f"0..{vocab_size - 1}" + (f" or {extra}" if extra is not None else "")
        bad = tokens[~ok].unique()[:5].tolist()
        raise ValueError(f"`{name}` holds ids {bad} outside {allowed}")


@runtime_checkable
class ForwardProcess(Protocol):
    r"""What the library asks of a forward process $q(z_t \mid x)$.

    Implemented by `MaskingProcess` and `UniformProcess`; a new process
    implements these members in its own module and adds one line to
    `discdiff.config.PROCESSES` (see the tutorial "Write your own forward
    process"). Processes factorise over positions.

    Attributes:
        name: The process's name in configs (`process.name`).
        schedule: The noise schedule $\alpha_t$.
        vocab_size: $V$, the number of data tokens `0..V-1`.
        mask_id: The absorbing id, or `None` for a process without one.
        num_states: The number of ids `z_t` can hold (the denoiser's input
            vocabulary): $V + 1$ for masking, $V$ for uniform noise.
        needs_time: Whether denoisers of this process must see $t$ (a uniform
            $z_t$ does not reveal how noisy it is).
    """

    name: str
    schedule: NoiseSchedule
    vocab_size: int
    mask_id: int | None
    num_states: int
    needs_time: bool

    def check_tokens(self, name: str, tokens: Tensor, *, allow_mask: bool) -> None:
        """Raise `ValueError` naming `name` if `tokens` holds ids the process cannot hold."""
        ...

    def marginal(self, x: Data, t: Times | float) -> torch.distributions.Distribution:
        r"""$q(z_t \mid x)$ with batch shape `(B,)` and event shape `(L,)`."""
        ...

    def sample(self, x: Data, t: Times | float, *, generator: RandomSource = None) -> Tokens:
        r"""A draw of $z_t \sim q(z_t \mid x)$, `(B, L)`."""
        ...

    def prior(
        self, batch: int, length: int, *, device: torch.device | None = None
    ) -> torch.distributions.Distribution:
        """The prior sampling starts from, batch `(B,)`, event `(L,)` (for exact checks)."""
        ...

    def sample_prior(
        self,
        batch: int,
        length: int,
        *,
        generator: RandomSource = None,
        device: torch.device | None = None,
    ) -> Tokens:
        """A draw from `prior`, `(B, L)`, without materialising its tables."""
        ...

    def likelihood(self, z_t: Tokens, t: Times | float) -> Float[Tensor, "batch length vocab"]:
        r"""$q(z_t^\ell \mid x^\ell = v)$ for every position and data token $v$."""
        ...

    def log_probs(self, logits: Tensor, z_t: Tokens) -> Float[Tensor, "batch length vocab"]:
        r"""A backbone's logits `(B, L, W ≥ V)` as $\log x_\theta(z_t)$ over the data tokens."""
        ...

    def nelbo_integrand(
        self, log_probs: Tensor, x: Tokens, z_t: Tokens, t: Times
    ) -> Float[Tensor, "batch length"]:
        r"""The continuous-time NELBO integrand at each position (nats per unit time)."""
        ...

    def remove_noise(self, z_t: Tokens, x: Tensor, t: Times | float) -> Tokens:
        r"""The last step $z_{t_{\min}} \to z_0$: the most likely clean token where noise may be."""
        ...

    def is_masked(self, z: Tensor) -> Tensor:
        """`True` where `z` holds the mask id (never, for a process without one)."""
        ...


class MaskingProcess:
    r"""The absorbing-state ("masking") forward process of MDLM: a `ForwardProcess`.

    Args:
        schedule: The noise schedule $\alpha_t$.
        vocab_size: $V$, the number of data tokens `0..V-1`.
        mask_id: Id of the mask token $m$; defaults to `V`. Must not be a data
            token id.

    The denoiser's output becomes $x_\theta$ by MDLM's SUBS parameterisation
    (`log_probs`), and its NELBO integrand is
    $w(t)\, \mathbb{1}[z_t^\ell = m]\, (-\log x_\theta(z_t)_\ell[x^\ell])$
    with $w(t) = -\alpha'_t / (1 - \alpha_t)$.

    Example:
        >>> process = MaskingProcess(schedule=LogLinear(), vocab_size=5)
        >>> process.mask_id
        5
        >>> z = process.sample(torch.tensor([[0, 1, 2, 3]]), torch.tensor([1.0]))
        >>> z.shape
        torch.Size([1, 4])
    """

    name = "masking"
    needs_time = False

    def __init__(
        self,
        schedule: NoiseSchedule = LogLinear(),
        *,
        vocab_size: int,
        mask_id: int | None = None,
    ) -> None:
        if vocab_size < 1:
            raise ValueError(f"`vocab_size` must be at least 1; got {vocab_size}")
        if mask_id is None:
            mask_id = vocab_size
        if mask_id < vocab_size:
            raise ValueError(
                f"`mask_id` {mask_id} collides with the data tokens 0..{vocab_size - 1}; "
                f"use an id >= {vocab_size}"
            )
        self.schedule = schedule
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.num_states = mask_id + 1

    def __repr__(self) -> str:
        return (
            f"MaskingProcess(schedule={self.schedule!r}, vocab_size={self.vocab_size}, "
            f"mask_id={self.mask_id})"
        )

    def check_tokens(self, name: str, tokens: Tensor, *, allow_mask: bool) -> None:
        """Raise `ValueError` naming `name` if `tokens` holds ids outside the vocabulary.

        Args:
            name: The argument's name, for the message.
            tokens: Integer token ids, any shape.
            allow_mask: Whether the mask id is allowed.
        """
        check_token_range(name, tokens, self.vocab_size, self.mask_id if allow_mask else None)

    def marginal(self, x: Data, t: Times | float) -> MaskedCategorical:
        r"""$q(z_t \mid x)$ as a distribution with batch shape `(B,)`, event shape `(L,)`.

        Args:
            x: Clean tokens `(B, L)` in `0..V-1`, or a distribution over data
                tokens `(B, L, V)` (e.g. a soft one-hot).
            t: Times in $[0, 1]$, `(B,)` or one float for the whole batch.

        Returns:
            A `MaskedCategorical` with mask probability $1 - \alpha_t$.

        Raises:
            ValueError: If `x` holds ids outside `0..V-1` or `t` lies outside $[0, 1]$.
        """
        t = as_tensor(t)
        alpha = self.schedule.alpha(t)
        batch, length = x.shape[:2]
        mask_prob = (1.0 - alpha).reshape(-1, 1).expand(batch, length)
        if x.is_floating_point():
            return MaskedCategorical(
                mask_prob, vocab_size=self.vocab_size, mask_id=self.mask_id, probs=x
            )
        self.check_tokens("x", x, allow_mask=False)
        return MaskedCategorical(
            mask_prob, vocab_size=self.vocab_size, mask_id=self.mask_id, carry=x
        )

    def sample(
        self, x: Data, t: Times | float, *, generator: torch.Generator | None = None
    ) -> Tokens:
        r"""Draw $z_t \sim q(z_t \mid x)$.

        Args:
            x: Clean tokens `(B, L)` or a distribution over data tokens `(B, L, V)`.
            t: Times in $[0, 1]$, `(B,)` or one float.
            generator: Random generator for reproducible draws.

        Returns:
            Noisy tokens `(B, L)`.
        """
        return self.marginal(x, t).sample(generator=generator)

    def is_masked(self, z: Int[Tensor, "*shape"]) -> Bool[Tensor, "*shape"]:
        """`True` where `z` holds the mask id.

        Args:
            z: Token ids, any shape.

        Returns:
            A boolean tensor with the shape of `z`.
        """
        return z == self.mask_id

    def prior(
        self, batch: int, length: int, *, device: torch.device | None = None
    ) -> MaskedCategorical:
        """Every position masked: a point mass, batch `(B,)`, event `(L,)`.

        Args:
            batch: $B$.
            length: $L$.
            device: Where to put its tensors.

        Returns:
            A `MaskedCategorical` with mask probability 1.
        """
        flat = torch.full((1, 1, self.vocab_size), 1.0 / self.vocab_size, device=device)
        return MaskedCategorical(
            torch.ones(batch, length, device=device),
            vocab_size=self.vocab_size,
            mask_id=self.mask_id,
            probs=flat.expand(batch, length, -1),
        )

    def sample_prior(
        self,
        batch: int,
        length: int,
        *,
        generator: RandomSource = None,
        device: torch.device | None = None,
    ) -> Tokens:
        r"""$z_1$: every position masked (the generator is not used).

        Args:
            batch: $B$.
            length: $L$.
            generator: Unused (the prior is a point mass).
            device: Where to put the tokens.

        Returns:
            `(B, L)` mask ids.
        """
        return torch.full((batch, length), self.mask_id, dtype=torch.long, device=device)

    def likelihood(self, z_t: Tokens, t: Times | float) -> Float[Tensor, "batch length vocab"]:
        r"""$q(z_t^\ell \mid x^\ell = v)$: $1 - \alpha_t$ at a mask, else $\alpha_t [v = z_t^\ell]$.

        Args:
            z_t: Noisy tokens `(B, L)`.
            t: Times `(B,)` or a float.

        Returns:
            Float64 likelihoods `(B, L, V)`.
        """
        self.check_tokens("z_t", z_t, allow_mask=True)
        alpha = self.schedule.alpha(as_tensor(t)).double().reshape(-1, 1, 1)
        masked = self.is_masked(z_t).unsqueeze(-1)
        token = F.one_hot(torch.where(masked.squeeze(-1), 0, z_t), self.vocab_size).double()
        return torch.where(masked, 1.0 - alpha, alpha * token)

    def log_probs(
        self, logits: Float[Tensor, "batch length width"], z_t: Tokens
    ) -> Float[Tensor, "batch length vocab"]:
        r"""SUBS (MDLM): normalised over the data tokens, unmasked tokens carried over.

        Args:
            logits: `(B, L, W)` with `W >= V`; entries `V..W-1` (the mask and any
                other non-data ids) are dropped.
            z_t: Noisy tokens `(B, L)`.

        Returns:
            $\log x_\theta$ `(B, L, V)` in float32: a log-softmax at masked
            positions, `0` at the carried token and `NEG` elsewhere at unmasked ones.

        Raises:
            ValueError: If `logits` has fewer than `V` entries, or (with validation
                on) holds NaN or infinite values.
        """
        log_probs = data_log_softmax(logits, self.vocab_size)
        unmasked = ~self.is_masked(z_t)
        carried = F.one_hot(torch.where(unmasked, z_t, 0), self.vocab_size).bool()
        one_hot_log = torch.where(carried, 0.0, NEG)
        return torch.where(unmasked.unsqueeze(-1), one_hot_log, log_probs)

    def nelbo_integrand(
        self,
        log_probs: Float[Tensor, "batch length vocab"],
        x: Tokens,
        z_t: Tokens,
        t: Times,
    ) -> Float[Tensor, "batch length"]:
        r"""$w(t)\, \mathbb{1}[z_t^\ell = m]\, (-\log x_\theta(z_t)_\ell[x^\ell])$ per position.

        Args:
            log_probs: $\log x_\theta(z_t)$ `(B, L, V)` (normalised).
            x: Clean tokens `(B, L)`.
            z_t: Noisy tokens `(B, L)`.
            t: Times `(B,)`.

        Returns:
            `(B, L)` integrands in nats.
        """
        nll = -log_probs.gather(-1, x.unsqueeze(-1)).squeeze(-1).float()
        return self.schedule.weight(t).reshape(-1, 1) * nll * self.is_masked(z_t)

    def remove_noise(self, z_t: Tokens, x: Tensor, t: Times | float) -> Tokens:
        r"""Fill every mask with the argmax of $x_\theta$; data tokens stay.

        Args:
            z_t: Tokens `(B, L)` at the last time.
            x: $x_\theta(z_t)$ `(B, L, V)` (probabilities or log-probabilities).
            t: The last time (unused: a mask's posterior at $s = 0$ is $x_\theta$).

        Returns:
            `(B, L)` data tokens.
        """
        return torch.where(self.is_masked(z_t), x.argmax(-1), z_t)


NEG = -1e6
"""Log-probability of the tokens a carried-over position cannot take (finite in float32)."""


def data_log_softmax(
    logits: Float[Tensor, "batch length width"], vocab_size: int
) -> Float[Tensor, "batch length vocab"]:
    """Float32 log-softmax over the first `vocab_size` entries of `logits`.

    Args:
        logits: `(B, L, W)` with `W >= V`.
        vocab_size: $V$.

    Returns:
        `(B, L, V)` log-probabilities.

    Raises:
        ValueError: If `logits` has fewer than `V` entries, or (with validation
            on) holds NaN or infinite values.
    """
    if logits.shape[-1] < vocab_size:
        raise ValueError(
            f"`logits` has {logits.shape[-1]} entries per position; need at least "
            f"vocab_size={vocab_size}"
        )
    if validation_enabled() and not bool(torch.isfinite(logits).all()):
        raise ValueError("the backbone returned NaN or infinite `logits`")
    return logits[..., :vocab_size].float().log_softmax(-1)
