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

`discdiff.processes.uniform` holds the second process, uniform-state noise.
"""

from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff._checks import validation_enabled
from discdiff.rng import RandomSource
from discdiff.schedules import NoiseSchedule
from discdiff.typing import Times, Tokens

__all__ = ["NEG", "ForwardProcess", "check_token_range", "data_log_softmax"]

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
