r"""The two interfaces of sampling: the `ForwardProcess` and the `Strategy` that reverses it.

A forward process corrupts each position independently with a noise schedule
$\alpha_t$. Everything else in the library (the losses, the trainer, the
sampler, the property suite) asks the process, through `ForwardProcess`, for
the few things that differ between processes: the marginal, the prior at
$t = 1$, how a denoiser's output becomes $x_\theta$, the continuous-time NELBO
integrand and the final noise-removal step. A sampler asks a `Strategy`
(a posterior $q_\sigma(z_s \mid z_t, x_\theta)$ or a decoder) for each step
$z_t \to z_s$ and never looks further. `discdiff.processes.masking` and
`discdiff.processes.uniform` implement both for their processes.
"""

from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff._checks import validation_enabled
from discdiff.registry import extension_point
from discdiff.rng import RandomSource
from discdiff.schedules import NoiseSchedule
from discdiff.shaping import UNSHAPED, Shaping
from discdiff.typing import MaskFlags, Probs, Times, Tokens

__all__ = [
    "NEG",
    "ForwardProcess",
    "StepState",
    "Strategy",
    "check_token_range",
    "data_log_softmax",
]

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


@extension_point("process")
@runtime_checkable
class ForwardProcess(Protocol):
    r"""What the library asks of a forward process $q(z_t \mid x)$.

    Implemented by `MaskingProcess` and `UniformProcess`; a new process
    implements these members in its own module and registers itself
    (`@discdiff.register("process", name)`; see the tutorial "Write your own
    forward process"). Processes factorise over positions.

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


@runtime_checkable
class StepState(Protocol):
    r"""Per-run state a strategy keeps between steps (e.g. decode confidences $\psi$)."""

    def observe(self, x: Probs, z_t: Tokens, z_s: Tokens) -> None:
        r"""Update after the step $z_t \to z_s$ that drew from $x_\theta(z_t)$ = `x`."""
        ...


@extension_point("strategy")
@runtime_checkable
class Strategy(Protocol):
    r"""What the sampler asks of a posterior or decoder.

    `RemaskPosterior` (every ReMDM strategy, MDLM, forward-backward, DFM),
    `ConfidenceDecoder` and `UniformPosterior` implement it; the sampler never
    looks further. A strategy that reads $x_\theta$ only at the positions
    masked in $z_t$ may also set `masked_only = True`; the sampler then spends
    the nucleus's $O(V)$ work there only (every strategy of the masking
    process does). A strategy that never remasks a decoded token may set
    `never_remasks = True`: the sampler then stops a grid (or a block) as
    soon as nothing is left masked, with no further network call.

    Strategies derive from this class for the defaults of the optional
    members (`masked_only`, `never_remasks`, `shape_output`).

    Attributes:
        process_type: The class of forward processes the strategy works with.
        masked_only: Reads $x_\theta$ at the positions masked in $z_t$ only (default: no).
        never_remasks: Never remasks a decoded token (default: no).
    """

    process_type: type
    masked_only: bool = False
    never_remasks: bool = False

    def shape_output(
        self, logits: Tensor, shaping: Shaping = UNSHAPED, masked: MaskFlags | None = None
    ) -> Any:
        r"""The `x` that `draw` reads, from the denoiser's output.

        By default `shaping.probs(logits, rows=masked)`: temperature, top-k and
        nucleus applied (the nucleus only at `masked` positions when given). A
        strategy that needs more (a decoder's untempered confidences, SEDD's
        score total) overrides it.

        Args:
            logits: The denoiser's output `(B, L, V)`.
            shaping: The sampler's `Shaping`.
            masked: The positions masked in $z_t$ `(B, L)` when `masked_only`, else `None`.
        """
        return shaping.probs(logits, rows=masked)

    def time_grid(self, steps: int, t_min: float = 1e-5) -> Tensor:
        """Times from 1 down to `t_min`.

        Args:
            steps: The number of steps $T$.
            t_min: The last time.

        Returns:
            Decreasing float64 times `(points,)`.
        """
        ...

    def alphas(self, process: ForwardProcess, t: Times, s: Times) -> tuple[Times, Times]:
        r"""$(\alpha_t, \alpha_s)$ used for the step.

        Args:
            process: The forward process.
            t: Current times `(B,)`.
            s: Next times `(B,)`.

        Returns:
            $(\alpha_t, \alpha_s)$, each `(B,)`.
        """
        ...

    def start(self, process: ForwardProcess, z: Tokens) -> StepState | None:
        """Fresh per-run state for a run starting at `z`, or `None` if the strategy keeps none.

        Args:
            process: The forward process.
            z: The starting tokens `(B, L)`.

        Returns:
            A `StepState` the sampler passes to `draw` and updates after each
            step, or `None`.
        """
        ...

    def draw(
        self,
        process: ForwardProcess,
        z_t: Tokens,
        x: Probs,
        t: Times,
        s: Times,
        *,
        state: StepState | None = None,
        generator: RandomSource = None,
        dtype: torch.dtype = torch.float64,
    ) -> Tokens:
        r"""One reverse step $z_t \to z_s$.

        Args:
            process: The forward process.
            z_t: Current tokens `(B, L)`.
            x: $x_\theta(z_t)$ `(B, L, V)`, after temperature / top-k / nucleus.
            t: Current times `(B,)`.
            s: Next times `(B,)`.
            state: What `start` returned (updated by the sampler after each step).
            generator: Random generator: a `torch.Generator`, or a
                `SequenceGenerator` whose sequences are the batch's rows.
            dtype: Precision of categorical draws.

        Returns:
            $z_s$ `(B, L)`.
        """
        ...
