r"""A property suite for processes, remasking schedules and posteriors: check yours like ours.

ReMDM's theorem says that the posterior $q_\sigma(z_s \mid z_t, x)$ keeps the
forward marginals,

$$
\sum_{z_t} q_\sigma(z_s \mid z_t, x)\, q(z_t \mid x) = q(z_s \mid x),
$$

for every remasking probability $0 \le \sigma_t \le \sigma_t^{\max} =
\min\{1, (1 - \alpha_s)/\alpha_t\}$. The theorem is about the mathematics; this
module checks an *implementation* against it, exactly, by enumerating every
noisy sequence of a tiny vocabulary ($V \le 3$ data tokens, length $L \le 2$,
so at most $(V + 1)^L = 16$ states):

- `check_sigma_bounds`: $\alpha_s \ge \alpha_t$ and
  $0 \le \sigma_t \le \sigma_t^{\max}$ for the step;
- `check_normalisation`: every row of the transition table
  $P[z_t, z_s] = q_\sigma(z_s \mid z_t, x)$ is a distribution, and an unmasked
  token is only ever kept or remasked;
- `check_marginal_preservation`: $q(z_t \mid x)^\top P = q(z_s \mid x)$, with
  the $\alpha$ the posterior actually uses (re-timed for `LoopSchedule`).

The same checks take any `ForwardProcess` with its posterior (e.g.
`UniformProcess` with `UniformPosterior`, over $V^L$ states): marginal
composition is the property every process's posterior must have. The
swap check of `check_normalisation` applies to processes with a mask only.
`sample_distribution` gives the exact distribution of an `AncestralSampler`'s
samples for any of them (with `EnumerableOracle(probs, process=...)`, the
exact denoiser of a small joint for any process), and `processes` is a
hypothesis strategy over processes and noise schedules.

Each check takes a `RemaskingSchedule` (wrapped in `RemaskPosterior`) or a
posterior object, runs on one step or on a default grid of steps, and raises
`AssertionError` with the numbers when it fails. The library's own guards
(`RemaskingSchedule.sigma` rejects $\sigma$ outside its bound) are switched
off while a check computes, so a check reports the mathematical failure
instead of the guard's `ValueError`.

`assert_valid_remasking` runs all three under
[hypothesis](https://hypothesis.readthedocs.io) over random noise schedules,
steps $t \to s$, vocabularies, lengths, data (one-hot or soft $x$) and
confidences $\psi$ — one call to validate a new schedule. The strategies it
draws from (`times`, `noise_schedules`, `remasking_schedules`, `data`,
`confidences`) are public for your own property tests. They need the
`hypothesis` package (`pip install hypothesis`, or the `dev` extra); the
exact checks do not.

Example:
    >>> from discdiff import CapSchedule
    >>> check_marginal_preservation(CapSchedule(eta=0.3)) < 1e-9
    True
"""

import copy
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff._checks import validation
from discdiff.processes.base import ForwardProcess
from discdiff.processes.masking.posteriors import (
    DecodeConfidence,
    RemaskPosterior,
    decode_confidence,
)
from discdiff.processes.masking.process import MaskingProcess
from discdiff.processes.masking.remasking import (
    CapSchedule,
    ConfidenceSchedule,
    DFMCorrector,
    ForwardBackward,
    LoopSchedule,
    NoRemasking,
    RemaskingSchedule,
    RescaleSchedule,
    sigma_max,
)
from discdiff.processes.uniform import UniformPosterior, UniformProcess
from discdiff.sampling.ancestral import AncestralSampler
from discdiff.schedules import (
    Cosine,
    CosineSquared,
    Geometric,
    Linear,
    LogLinear,
    NoiseSchedule,
    Polynomial,
)

__all__ = [
    "DEFAULT_STEPS",
    "assert_valid_remasking",
    "check_marginal_preservation",
    "check_normalisation",
    "check_sigma_bounds",
    "confidences",
    "data",
    "enumerate_states",
    "noise_schedules",
    "posterior_table",
    "processes",
    "remasking_schedules",
    "sample_distribution",
    "times",
]

F64 = torch.float64

DEFAULT_STEPS: tuple[tuple[float, float], ...] = (
    (1.0, 0.999),
    (1.0, 0.5),
    (1.0, 0.0),
    (0.9, 0.6),
    (0.6, 0.59),
    (0.55, 0.3),
    (0.3, 0.05),
    (0.05, 0.0),
    (0.01, 0.005),
)
"""Steps $(t, s)$ a check uses when none are given: first, last, coarse and fine steps."""

Subject = object  # a RemaskingSchedule, or a posterior called like RemaskPosterior
Steps = Iterable[tuple[float, float]] | None


# -- exact enumeration ---------------------------------------------------------------


def _as_posterior(subject: Any) -> Any:
    """A posterior for `subject`: a schedule is wrapped in `RemaskPosterior`."""
    if isinstance(subject, RemaskingSchedule):
        return RemaskPosterior(subject)
    if not (callable(subject) and hasattr(subject, "alphas")):
        raise TypeError(
            "expected a RemaskingSchedule or a posterior with `alphas(process, t, s)` and "
            f"`__call__(process, z_t, x, t, s, *, confidence)`; got {type(subject).__name__}"
        )
    return subject


def _default_process() -> MaskingProcess:
    return MaskingProcess(LogLinear(), vocab_size=2)


def _default_x(process: ForwardProcess, length: int = 2) -> Float[Tensor, "1 length vocab"]:
    """A fixed soft $x$ `(1, L, V)`: the check then covers every data token at once."""
    weights = torch.arange(1, length * process.vocab_size + 1, dtype=F64)
    weights = weights.reshape(1, length, process.vocab_size)
    return weights / weights.sum(-1, keepdim=True)


def _default_confidence(length: int) -> Float[Tensor, "1 length"]:
    r"""Fixed decode confidences $\psi$ `(1, L)`, the last one `+inf` (no weight)."""
    psi = torch.linspace(0.2, 0.9, length, dtype=F64).unsqueeze(0)
    if length > 1:
        psi[0, -1] = float("inf")
    return psi


def _steps(steps: Steps) -> list:
    chosen = list(DEFAULT_STEPS if steps is None else steps)
    for t, s in chosen:
        if not 0.0 <= s < t <= 1.0:
            raise ValueError(f"each step needs 0 <= s < t <= 1; got (t, s) = ({t}, {s})")
    return chosen


def enumerate_states(process: ForwardProcess, length: int) -> Int[Tensor, "states length"]:
    r"""Every noisy sequence of `length` tokens: data ids, and the mask id if the process has one.

    Args:
        process: Supplies $V$ and the mask id (`None`: none).
        length: $L$; keep $(V + 1)^L$ small.

    Returns:
        All sequences `(K, L)` with $K = (V + 1)^L$ ($V^L$ without a mask), in
        lexicographic order of `[0, …, V-1, mask_id]`.

    Example:
        >>> enumerate_states(MaskingProcess(vocab_size=1), 2).tolist()
        [[0, 0], [0, 1], [1, 0], [1, 1]]
    """
    ids = [*range(process.vocab_size)] + ([] if process.mask_id is None else [process.mask_id])
    return torch.tensor(list(itertools.product(ids, repeat=length)), dtype=torch.long)


def _confidence_kwargs(process: ForwardProcess, confidence: Tensor) -> dict[str, Tensor]:
    r"""`confidence=` for posteriors of a masking process ($\psi$ is about decoded masks)."""
    return {} if process.mask_id is None else {"confidence": confidence}


def posterior_table(
    subject: Subject,
    process: ForwardProcess,
    x: Float[Tensor, "1 length vocab"],
    t: float,
    s: float,
    *,
    confidence: Float[Tensor, "1 length"] | None = None,
) -> tuple[Int[Tensor, "states length"], Float[Tensor, "states states"]]:
    r"""The posterior as a matrix $P[i, j] = q_\sigma(z_s = \zeta_j \mid z_t = \zeta_i, x)$.

    $\zeta_1, \dots, \zeta_K$ are the enumerated states (`enumerate_states`).

    Built with the posterior's own `__call__` and the `log_prob` of the
    distribution it returns, so it tests the public objects rather than a
    re-derivation. The library's argument checks are off while it computes.

    Args:
        subject: A `RemaskingSchedule` (wrapped in `RemaskPosterior`) or a
            posterior called as `posterior(process, z_t, x, t, s, confidence=...)`
            (without `confidence=` for a process without a mask).
        process: The forward process.
        x: One distribution over data tokens `(1, L, V)` (float64 for exactness).
        t: Current time.
        s: Next time, `s < t`.
        confidence: Fixed decode confidences $\psi$ `(1, L)`, passed on to the
            posterior for every $z_t$; a fixed default when `None`.

    Returns:
        `(states, P)`: the enumerated sequences `(K, L)` (`enumerate_states`) and
        the `(K, K)` table, rows indexed by $z_t$ and columns by $z_s$.
    """
    posterior = _as_posterior(subject)
    states = enumerate_states(process, x.shape[1])
    k = len(states)
    if confidence is None:
        confidence = _default_confidence(x.shape[1])
    with validation(False):
        q = posterior(
            process,
            states,
            x.expand(k, -1, -1),
            torch.full((k,), t, dtype=F64),
            torch.full((k,), s, dtype=F64),
            **_confidence_kwargs(process, confidence.to(F64).expand(k, -1)),
        )
        # value (K_s, 1, L) against batch (K_t,): log_prob[j, i] = log q(states_j | states_i)
        table = q.log_prob(states.unsqueeze(1)).exp().T.to(F64)
    return states, table


def sample_distribution(
    sampler: AncestralSampler, denoiser: Any, length: int
) -> tuple[Int[Tensor, "sequences length"], Float[Tensor, " sequences"]]:
    r"""The exact distribution of `sampler.sample(denoiser, 1, length).tokens`.

    Runs the sampler's own pieces (its time grid, `shape_probs` with its
    temperature / top-k / nucleus, the process's prior and noise-removal step,
    the posterior's distribution objects and its decode confidences $\psi$)
    over every state instead of one draw: each step maps a distribution over
    $(z_t, \psi)$ to one over $(z_s, \psi')$ through the posterior's
    `log_prob`. $\psi$ is tracked only for strategies that keep it. Any
    process works (`RemaskPosterior` on masking, `UniformPosterior` on uniform
    noise). Keep the number of states ($(V + 1)^L$, or $V^L$) small.

    Args:
        sampler: An `AncestralSampler` whose strategy is a posterior: called as
            `posterior(process, z_t, x, t, s)`, returning a distribution.
        denoiser: Any `(z_t, t) -> logits` callable.
        length: $L$.

    Returns:
        `(sequences, probs)`: every data sequence `(V^L, L)` in lexicographic
        order and its probability `(V^L,)`, float64. Without noise removal the
        mass of sequences that end with masks is missing from `probs`.

    Raises:
        TypeError: If the strategy is not a posterior (a decoder's top-k choice
            has no `log_prob`).

    Example:
        >>> from discdiff import MaskingPosterior
        >>> process = MaskingProcess(vocab_size=2)
        >>> sampler = AncestralSampler(process, MaskingPosterior(), steps=4)
        >>> flat = lambda z, t: torch.zeros(*z.shape, 2)
        >>> sequences, probs = sample_distribution(sampler, flat, 2)
        >>> [round(p, 4) for p in probs.tolist()]  # the argmax fills what is left at t_min
        [0.25, 0.25, 0.25, 0.25]
    """
    posterior, process = sampler.posterior, sampler.process
    if not callable(posterior):
        raise TypeError(
            f"`sampler` must use a posterior (called as posterior(process, z_t, x, t, s)); got "
            f"{type(posterior).__name__}, whose draw has no log_prob"
        )
    states = enumerate_states(process, length)
    prior = process.prior(1, length).log_prob(states.unsqueeze(1)).exp().squeeze(-1).to(F64)
    z, prob = states[prior > 0], prior[prior > 0]
    track = isinstance(posterior.start(process, z), DecodeConfidence)
    psi = torch.full(z.shape, torch.inf, dtype=F64)
    grid = sampler.grid
    for t, s in itertools.pairwise(grid):
        n = len(z)
        x = sampler._x_theta(denoiser, z, t.expand(n).float())
        confidence = _confidence_kwargs(process, psi)
        q = posterior(process, z, x, t.expand(n), s.expand(n), **confidence)
        table = q.log_prob(states.unsqueeze(1)).exp().T.to(F64)  # (n, K)
        i, j = (table > 0).nonzero(as_tuple=True)
        z_s = states[j]
        if track:
            masked = process.is_masked
            psi_s = decode_confidence(psi[i], x[i], z_s, masked(z[i]), masked(z_s))
        else:
            psi_s = torch.full(z_s.shape, torch.inf, dtype=F64)
        # merge the paths that reach the same (z_s, ψ')
        keys, inverse = torch.cat((z_s.to(F64), psi_s), -1).unique(dim=0, return_inverse=True)
        prob = torch.zeros(len(keys), dtype=F64).index_add_(0, inverse, prob[i] * table[i, j])
        z, psi = keys[:, :length].long(), keys[:, length:]
    if sampler.noise_removal:
        x = sampler._x_theta(denoiser, z, grid[-1].expand(len(z)).float())
        z = process.remove_noise(z, x, grid[-1].expand(len(z)))
    sequences = states[~process.is_masked(states).any(-1)]
    vocab = process.vocab_size
    done = ~process.is_masked(z).any(-1)
    powers = vocab ** torch.arange(length - 1, -1, -1)
    probs = torch.zeros(len(sequences), dtype=F64).index_add_(
        0, (z[done] * powers).sum(-1), prob[done]
    )
    return sequences, probs


@dataclass(frozen=True)
class _Fixed(NoiseSchedule):
    r"""$\alpha_t$ fixed at `alpha_value`: a process's marginal at a given $\alpha$."""

    alpha_value: float

    def _alpha(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.alpha_value, dtype=F64)

    def _alpha_prime(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t, dtype=F64)

    def _inverse(self, alpha: Tensor) -> Tensor:
        return torch.zeros_like(alpha)


def _marginal_probs(
    process: ForwardProcess, x: Tensor, alpha: Tensor, states: Tensor
) -> Float[Tensor, " states"]:
    r"""$q(z \mid x)$ at every enumerated state, for the process with noise level $\alpha$."""
    at_alpha = copy.copy(process)
    at_alpha.schedule = _Fixed(float(alpha.reshape(-1)[0]))
    marginal = at_alpha.marginal(x.to(F64), torch.zeros(1, dtype=F64))
    return marginal.log_prob(states.unsqueeze(1)).exp().squeeze(-1).to(F64)


def check_sigma_bounds(
    subject: Subject,
    process: ForwardProcess | None = None,
    *,
    steps: Steps = None,
    confidence: Float[Tensor, "1 length"] | None = None,
    rtol: float = 1e-9,
) -> float:
    r"""Check $\alpha_s \ge \alpha_t$ and $0 \le \sigma_t \le \sigma_t^{\max}$ on each step.

    $$\sigma_t^{\max} = \min\Big\{1, \frac{1 - \alpha_s}{\alpha_t}\Big\}$$

    with the $(\alpha_t, \alpha_s)$ the subject uses for the step (its
    `alphas`, re-timed or not).

    Args:
        subject: A `RemaskingSchedule`, or a posterior with `alphas` and `sigma`
            (as `RemaskPosterior` has).
        process: The forward process; `LogLinear` over 2 tokens by default.
        steps: Steps `(t, s)` with $0 \le s < t \le 1$; `DEFAULT_STEPS` by default.
        confidence: Decode confidences $\psi$ `(1, L)` for per-position schedules.
        rtol: Relative slack on the upper bound.

    Returns:
        The largest ratio $\sigma_t / \sigma_t^{\max}$ seen (0 when no step allows
        remasking), so callers can see how close to the bound a schedule runs.

    Raises:
        AssertionError: If $\alpha_s < \alpha_t$ or $\sigma_t$ is NaN, negative or
            above $\sigma_t^{\max}$ on some step; the message names the step.
    """
    posterior = _as_posterior(subject)
    if not hasattr(posterior, "sigma"):
        raise TypeError(f"{type(posterior).__name__} has no `sigma(process, t, s, *, confidence)`")
    process = process or _default_process()
    if confidence is None:
        confidence = _default_confidence(2)
    worst = 0.0
    for t, s in _steps(steps):
        t_, s_ = torch.tensor([t], dtype=F64), torch.tensor([s], dtype=F64)
        with validation(False):
            alpha_t, alpha_s = posterior.alphas(process, t_, s_)
            sigma = posterior.sigma(process, t_, s_, confidence=confidence.to(F64))
        if bool((alpha_s < alpha_t).any()):
            raise AssertionError(
                f"{posterior!r}: alpha_s = {alpha_s.tolist()} < alpha_t = {alpha_t.tolist()} "
                f"for the step t = {t} -> s = {s}; time runs backwards"
            )
        bound = sigma_max(alpha_t, alpha_s)
        if sigma.dim() == 2:
            bound = bound.unsqueeze(-1)
        bad = torch.isnan(sigma) | (sigma < 0) | (sigma > bound * (1 + rtol) + 1e-15)
        if bool(bad.any()):
            raise AssertionError(
                f"{posterior!r}: sigma = {sigma.flatten().tolist()} lies outside "
                f"[0, sigma_max = {bound.flatten().tolist()}] for the step t = {t} -> s = {s} "
                f"(alpha_t = {float(alpha_t[0]):.6g}, alpha_s = {float(alpha_s[0]):.6g})"
            )
        ratio = torch.where(bound > 0, sigma / bound.clamp_min(1e-300), torch.zeros_like(sigma))
        worst = max(worst, float(ratio.max()))
    return worst


def check_normalisation(
    subject: Subject,
    process: ForwardProcess | None = None,
    *,
    x: Float[Tensor, "1 length vocab"] | None = None,
    steps: Steps = None,
    confidence: Float[Tensor, "1 length"] | None = None,
    atol: float = 1e-9,
) -> None:
    r"""Check that each row of $P[z_t, z_s]$ is a distribution that never swaps a token.

    For every enumerated $z_t$: $P[z_t, \cdot] \ge 0$, $\sum_{z_s} P[z_t, z_s] = 1$,
    and, for a process with a mask, where $z_t^\ell \ne m$ the next token
    $z_s^\ell$ is $z_t^\ell$ or $m$.

    Args:
        subject: A `RemaskingSchedule` or a posterior.
        process: The forward process; `LogLinear` over 2 tokens by default.
        x: One distribution over data tokens `(1, L, V)`; a fixed soft one by default.
        steps: Steps `(t, s)`; `DEFAULT_STEPS` by default.
        confidence: Fixed decode confidences $\psi$ `(1, L)`.
        atol: Tolerance on the row sums.

    Raises:
        AssertionError: On a negative entry, a row that does not sum to one, or
            an unmasked token that turns into another token.
    """
    process = process or _default_process()
    x = _default_x(process) if x is None else x.to(F64)
    for t, s in _steps(steps):
        states, table = posterior_table(subject, process, x, t, s, confidence=confidence)
        where = f"for the step t = {t} -> s = {s}"
        if bool((table < 0).any()) or bool(table.isnan().any()):
            raise AssertionError(f"{subject!r}: negative or NaN transition probabilities {where}")
        sums = table.sum(-1)
        error = float((sums - 1).abs().max())
        if error > atol:
            raise AssertionError(
                f"{subject!r}: rows of q(z_s | z_t, x) sum to {sums.tolist()} {where} "
                f"(max error {error:.3g})"
            )
        if process.mask_id is None:  # without a mask any token may turn into any other
            continue
        unmasked = states != process.mask_id  # z_t positions that hold a token
        swapped = (
            unmasked.unsqueeze(1)
            & (states.unsqueeze(0) != states.unsqueeze(1))
            & (states.unsqueeze(0) != process.mask_id)
        ).any(-1)
        if bool((table[swapped] > atol).any()):
            raise AssertionError(
                f"{subject!r}: an unmasked token turns into another token {where}; the "
                "posterior may only keep or remask it"
            )


def check_marginal_preservation(
    subject: Subject,
    process: ForwardProcess | None = None,
    *,
    x: Float[Tensor, "1 length vocab"] | None = None,
    steps: Steps = None,
    confidence: Float[Tensor, "1 length"] | None = None,
    atol: float = 1e-6,
) -> float:
    r"""Check $\sum_{z_t} q_\sigma(z_s \mid z_t, x)\, q(z_t \mid x) = q(z_s \mid x)$ exactly.

    Both marginals use the $(\alpha_t, \alpha_s)$ that the posterior uses
    (its `alphas`): for a re-timing schedule such as `LoopSchedule` those are
    the marginals it preserves. The sums run over all $(V + 1)^L$ states.

    Args:
        subject: A `RemaskingSchedule` or a posterior.
        process: The forward process; `LogLinear` over 2 tokens by default.
        x: One distribution over data tokens `(1, L, V)` (one-hot or soft); a
            fixed soft one of length 2 by default.
        steps: Steps `(t, s)`; `DEFAULT_STEPS` by default.
        confidence: Fixed decode confidences $\psi$ `(1, L)` (the theorem holds
            for any $\psi$ that does not depend on $z_t$).
        atol: Largest allowed absolute error in a probability.

    Returns:
        The largest absolute error seen, over all steps and states.

    Raises:
        AssertionError: If some $|q(z_t \mid x)^\top P - q(z_s \mid x)|$ exceeds `atol`.
    """
    process = process or _default_process()
    x = _default_x(process) if x is None else x.to(F64)
    posterior = _as_posterior(subject)
    worst = 0.0
    for t, s in _steps(steps):
        states, table = posterior_table(posterior, process, x, t, s, confidence=confidence)
        with validation(False):
            alpha_t, alpha_s = posterior.alphas(
                process, torch.tensor([t], dtype=F64), torch.tensor([s], dtype=F64)
            )
        q_t = _marginal_probs(process, x, alpha_t.to(F64), states)
        q_s = _marginal_probs(process, x, alpha_s.to(F64), states)
        error = float((q_t @ table - q_s).abs().max())
        if not error <= atol:  # also catches NaN
            raise AssertionError(
                f"{posterior!r} does not preserve the marginals for the step t = {t} -> s = {s} "
                f"(alpha_t = {float(alpha_t[0]):.6g}, alpha_s = {float(alpha_s[0]):.6g}): "
                f"max |sum_z_t q(z_s | z_t, x) q(z_t | x) - q(z_s | x)| = {error:.3g} > {atol:g}"
            )
        worst = max(worst, error)
    return worst


# -- hypothesis strategies -----------------------------------------------------------


def _strategies() -> Any:
    try:
        import hypothesis.strategies as st
    except ImportError:  # pragma: no cover - exercised only without the dev extra
        raise ImportError(
            "the property-based part of discdiff.testing needs the `hypothesis` package: "
            "pip install hypothesis (or pip install 'discdiff[dev]'); the exact checks "
            "(check_marginal_preservation, ...) work without it"
        ) from None
    return st


def times(min_t: float = 1e-3):
    r"""A strategy of steps `(t, s)` with $0 \le s < t \le 1$ and $t \ge$ `min_t`.

    $s = t\,f$ with $f \in [0, 0.999]$, so steps from tiny to all the way to
    $s = 0$ appear, and $t = 1$ (all mask) is included.

    Args:
        min_t: The smallest $t$.

    Returns:
        strategy (SearchStrategy): `(t, s)` float pairs.
    """
    st = _strategies()
    return st.tuples(st.floats(min_t, 1.0), st.floats(0.0, 0.999)).map(
        lambda pair: (pair[0], pair[0] * pair[1])
    )


def noise_schedules():
    r"""A strategy of the shipped noise schedules $\alpha_t$ with random parameters.

    Returns:
        strategy (SearchStrategy): `NoiseSchedule` instances: `LogLinear`,
            `Cosine`, `CosineSquared`, `Linear`, `Geometric`, `Polynomial`.
    """
    st = _strategies()
    eps = st.floats(0.0, 0.05)
    return st.one_of(
        st.builds(LogLinear, eps=eps),
        st.builds(Cosine, eps=eps),
        st.builds(CosineSquared, eps=eps),
        st.builds(Linear, sigma_min=st.floats(0.0, 0.01), sigma_max=st.floats(3.0, 10.0)),
        st.builds(Geometric, sigma_min=st.floats(1e-4, 0.01), sigma_max=st.floats(3.0, 10.0)),
        st.builds(Polynomial, k=st.floats(0.5, 4.0), eps=eps),
    )


def processes(vocab_size: int, *, noise: Any = None):
    r"""A strategy of forward processes over $V$ data tokens with random noise schedules.

    Draws `MaskingProcess` (with the default or a shifted mask id) and
    `UniformProcess`, each over a schedule from `noise`.

    Args:
        vocab_size: $V$ (at least 2 for uniform noise; 1 gives masking only).
        noise: A strategy of noise schedules; `noise_schedules()` by default.

    Returns:
        strategy (SearchStrategy): `(process, posterior)` pairs, the posterior
            the process's own (`MaskingPosterior`, `UniformPosterior`).
    """
    st = _strategies()
    noise = noise_schedules() if noise is None else noise
    masking = st.builds(
        lambda schedule, shift: (
            MaskingProcess(schedule, vocab_size=vocab_size, mask_id=vocab_size + shift),
            RemaskPosterior(NoRemasking()),
        ),
        noise,
        st.sampled_from([0, 2]),
    )
    if vocab_size < 2:
        return masking
    uniform = st.builds(
        lambda schedule: (UniformProcess(schedule, vocab_size=vocab_size), UniformPosterior()),
        noise,
    )
    return masking | uniform


def remasking_schedules(*, per_position: bool = True):
    r"""A strategy of the shipped remasking schedules $\sigma_t$ with random parameters.

    Args:
        per_position: Include `ConfidenceSchedule` (over any per-sequence base).

    Returns:
        strategy (SearchStrategy): `RemaskingSchedule` instances: `NoRemasking`,
            `CapSchedule`, `RescaleSchedule`, `ForwardBackward`, `DFMCorrector`,
            `LoopSchedule` (and `ConfidenceSchedule`).
    """
    st = _strategies()

    @st.composite
    def loops(draw: Any) -> LoopSchedule:
        alpha_on = draw(st.floats(0.05, 0.95))
        return LoopSchedule(
            t_on=draw(st.floats(0.3, 0.9)),
            t_off=draw(st.floats(0.01, 0.25)),
            alpha_on=alpha_on,
            eta=draw(st.floats(0.0, min(1.0, (1 - alpha_on) / alpha_on))),
        )

    per_sequence = st.one_of(
        st.just(NoRemasking()),
        st.builds(CapSchedule, eta=st.floats(0.0, 1.0)),
        st.builds(RescaleSchedule, eta=st.floats(0.0, 1.0)),
        st.just(ForwardBackward()),
        st.builds(DFMCorrector, A=st.floats(0.0, 20.0)),
        loops(),
    )
    if not per_position:
        return per_sequence
    return st.one_of(per_sequence, st.builds(ConfidenceSchedule, base=st.none() | per_sequence))


def data(vocab_size: int, length: int, *, soft: bool | None = None):
    r"""A strategy of one distribution $x$ over data tokens, `(1, L, V)` in float64.

    Args:
        vocab_size: $V$.
        length: $L$.
        soft: One-hot data (`False`), soft distributions such as a denoiser's
            $x_\theta$ (`True`, every entry positive), or either (`None`).

    Returns:
        strategy (SearchStrategy): `(1, L, V)` float64 tensors whose rows sum to one.
    """
    st = _strategies()
    n = length * vocab_size

    def one_hot(tokens: list) -> Tensor:
        return torch.nn.functional.one_hot(torch.tensor([tokens]), vocab_size).to(F64)

    def normalise(weights: list) -> Tensor:
        w = torch.tensor(weights, dtype=F64).reshape(1, length, vocab_size) + 1e-3
        return w / w.sum(-1, keepdim=True)

    hard = st.lists(st.integers(0, vocab_size - 1), min_size=length, max_size=length).map(one_hot)
    smooth = st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).map(normalise)
    if soft is None:
        return hard | smooth
    return smooth if soft else hard


def confidences(length: int):
    r"""A strategy of decode confidences $\psi$ `(1, L)`: values in $[0, 1]$ or `+inf`.

    Args:
        length: $L$.

    Returns:
        strategy (SearchStrategy): `(1, L)` float64 tensors.
    """
    st = _strategies()
    value = st.floats(0.0, 1.0) | st.just(float("inf"))
    return st.lists(value, min_size=length, max_size=length).map(
        lambda v: torch.tensor([v], dtype=F64)
    )


def assert_valid_remasking(
    subject: Any,
    *,
    noise: Any = None,
    max_vocab: int = 3,
    max_length: int = 2,
    max_examples: int = 100,
    derandomize: bool = True,
    shrink: bool = True,
) -> None:
    r"""Property-test a remasking schedule or posterior: bounds, normalisation, marginals.

    For random draws of a noise schedule $\alpha_t$, a step $t \to s$, a
    vocabulary $V \le$ `max_vocab` with the default or a shifted mask id, a
    length $L \le$ `max_length`, data $x$ (one-hot or soft) and confidences
    $\psi$, it runs `check_sigma_bounds`, `check_normalisation` and
    `check_marginal_preservation` on that one step. Hypothesis shrinks a
    failure to a small counterexample before raising it.

    Args:
        subject: A `RemaskingSchedule`, a posterior, or a hypothesis strategy
            of either (to cover a schedule's parameters, e.g.
            `st.builds(MySchedule, eta=st.floats(0, 1))`).
        noise: A strategy of noise schedules; `noise_schedules()` by default.
        max_vocab: Largest $V$ (the enumeration has $(V+1)^L$ states).
        max_length: Largest $L$.
        max_examples: Hypothesis examples to run.
        derandomize: Use a fixed seed (reproducible, as in CI).
        shrink: Shrink a failing example to a minimal one before raising
            (slower on failure; turn off when a failure is expected).

    Raises:
        AssertionError: From the first check that fails, for the shrunk example.
        ImportError: If `hypothesis` is not installed.
    """
    st = _strategies()
    import hypothesis

    if isinstance(subject, st.SearchStrategy):
        subjects = subject
    else:
        _as_posterior(subject)  # a clear TypeError now rather than inside hypothesis
        subjects = st.just(subject)
    noise = noise_schedules() if noise is None else noise

    @st.composite
    def setups(draw: Any) -> tuple[Any, MaskingProcess, Tensor, Tensor, float, float]:
        vocab_size = draw(st.integers(1, max_vocab))
        length = draw(st.integers(1, max_length))
        mask_id = vocab_size + draw(st.sampled_from([0, 0, 2]))
        process = MaskingProcess(draw(noise), vocab_size=vocab_size, mask_id=mask_id)
        x = draw(data(vocab_size, length))
        psi = draw(confidences(length))
        t, s = draw(times())
        return draw(subjects), process, x, psi, t, s

    phases = list(hypothesis.Phase)
    if not shrink:
        phases.remove(hypothesis.Phase.shrink)

    @hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        report_multiple_bugs=False,
        phases=phases,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(setups())
    def run(setup: tuple[Any, MaskingProcess, Tensor, Tensor, float, float]) -> None:
        chosen, process, x, psi, t, s = setup
        step = [(t, s)]
        if isinstance(chosen, RemaskingSchedule) or hasattr(chosen, "sigma"):
            check_sigma_bounds(chosen, process, steps=step, confidence=psi)
        check_normalisation(chosen, process, x=x, steps=step, confidence=psi)
        check_marginal_preservation(chosen, process, x=x, steps=step, confidence=psi)

    run()
