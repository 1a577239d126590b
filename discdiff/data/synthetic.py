r"""Hidden Markov languages with exact likelihood, entropy and denoiser.

A language here is a hidden Markov chain that emits one token per step:

$$
p(x_{1:L}) = \sum_{s_{1:L+1}} \pi(s_1) \prod_{\ell=1}^{L} J[s_\ell, x_\ell, s_{\ell+1}],
\qquad J[s, x, s'] = P(x_\ell = x, s_{\ell+1} = s' \mid s_\ell = s).
$$

The joint table $J$ covers both kinds of HMM: a standard one has
$J[s, x, s'] = E[s, x]\, A[s, s']$ (`HMMLanguage`), a *unifilar* one moves to
a state determined by the token, $J[s, x, s'] = E[s, x]\,[s' = f(s, x)]$
(`SyntheticLanguage`, the built-in language). Given tokens, the hidden path is
a linear-chain CRF with edge potentials $J[\cdot, x_\ell, \cdot]$ (their sum
over tokens at a masked position): `chain` returns it as a torch-struct
`LinearChainCRF`, and one scaled forward–backward pass gives

- $\log p(x)$, the chain's log-partition;
- the exact conditional denoiser $p(x_\ell = v \mid \text{unmasked tokens})$
  with the masked positions summed out.

The entropy is exact for a unifilar language with a fixed start state (the
tokens determine the state path:
$H = \sum_\ell \sum_s P(s_\ell = s)\, H(E[s])$) and estimated by Monte Carlo
with exact log-probabilities otherwise, with its standard error.
"""

import inspect
import math
import warnings

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff.registry import extension_point, register
from discdiff.typing import Times, Tokens

__all__ = [
    "EntropyEstimate",
    "ExactLanguage",
    "HMMLanguage",
    "LanguageDenoiser",
    "SyntheticLanguage",
    "monte_carlo_entropy",
]

_LOG_ZERO = 1e-300  # log(0) stays finite for torch-struct's gradients: exp(-690) is nothing here


def _structured(cls: type, *args: object) -> object:
    """A torch-struct distribution, without its warning about `arg_constraints`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*arg_constraints.*")
        return cls(*args)


def _dirichlet(concentration: float, size: int) -> Tensor:
    """One Dirichlet draw from the global RNG (the caller forks and seeds it)."""
    gamma = torch._standard_gamma(torch.full((size,), concentration, dtype=torch.float64))
    return gamma / gamma.sum()


def _sparse_row(width: int, support: int, concentration: float) -> Tensor:
    """A distribution over `width` outcomes on `support` random ones, Dirichlet weights.

    Draws the support, then the weights, from the global RNG (the caller forks
    and seeds it).
    """
    row = torch.zeros(width, dtype=torch.float64)
    chosen = torch.randperm(width)[:support]
    row[chosen] = _dirichlet(concentration, support)
    return row


class EntropyEstimate(float):
    """An entropy in nats per token; `stderr` is 0 when it is exact.

    A `float` (so it prints and compares as one) with the standard error of a
    Monte Carlo estimate attached.
    """

    stderr: float

    def __new__(cls, value: float, stderr: float = 0.0) -> "EntropyEstimate":  # noqa: D102
        out = super().__new__(cls, value)
        out.stderr = stderr
        return out

    @property
    def exact(self) -> bool:
        """Whether the value is exact (no Monte Carlo error)."""
        return self.stderr == 0.0


@extension_point("language")
class ExactLanguage:
    """Base of the seeded languages with exact likelihoods (`HMMLanguage`, `PCFGLanguage`, ...).

    A language is a value: two built with the same constructor arguments are
    equal (and hash alike), and its arguments are its attributes, so run
    configs can name one as `{name: hmm, states: 16, ...}`.
    """

    def unigram_cross_entropy(self, length: int) -> float:
        r"""$H(\bar u)$: the per-token loss of the best position-free unigram model.

        $\bar u$ is the language's `unigram(length)`, the token distribution
        pooled over positions $1..L$.

        Args:
            length: $L$.

        Returns:
            Nats per token.
        """
        u = self.unigram(length)
        return float(-(u * u.clamp_min(_LOG_ZERO).log()).sum())

    def summary(self, length: int) -> dict[str, float]:
        """Entropy (with its standard error), unigram cross-entropy and their gap, per token.

        Args:
            length: $L$.

        Returns:
            `{"entropy", "entropy_stderr", "unigram", "gap", "entropy_bits"}`.
        """
        entropy, unigram = self.entropy(length), self.unigram_cross_entropy(length)
        return {
            "entropy": float(entropy),
            "entropy_stderr": entropy.stderr,
            "unigram": unigram,
            "gap": unigram - entropy,
            "entropy_bits": entropy / math.log(2),
        }

    def denoiser(
        self, mask_id: int | None = None, *, process: object | None = None
    ) -> "LanguageDenoiser":
        """The exact denoiser of this language for a forward process (a `Denoiser`).

        Args:
            mask_id: The mask id it reads (masking); defaults to $V$.
            process: The forward process instead (its mask id, or, without one,
                the leave-one-out denoiser of uniform noise).

        Returns:
            A `LanguageDenoiser`.
        """
        if process is not None:
            return LanguageDenoiser(self, process=process)
        return LanguageDenoiser(self, self.vocab_size if mask_id is None else mask_id)

    def _arguments(self) -> tuple:
        names = inspect.signature(type(self)).parameters
        return tuple((name, getattr(self, name, None)) for name in names)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._arguments() == other._arguments()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._arguments()))

    def __repr__(self) -> str:
        arguments = ", ".join(f"{name}={value!r}" for name, value in self._arguments())
        return f"{type(self).__name__}({arguments})"


@register("language", "hmm")
class HMMLanguage(ExactLanguage):
    r"""A hidden Markov language given by its joint table $J[s, x, s']$ (see the module).

    The default constructor draws a standard, non-unifilar HMM: each of the
    `states` hidden states emits mostly from its own random subset of `support`
    tokens and moves to one of `successors` random states (Dirichlet weights);
    a `floor` of emission mass keeps every string possible. Use `from_tables`
    for any other chain.

    Args:
        vocab_size: Number of tokens $V$.
        states: Number of hidden states $K$.
        support: Tokens each state emits (before the floor).
        successors: States each state can move to.
        concentration: Dirichlet concentration of the emission weights.
        transition_concentration: Dirichlet concentration of the transitions.
        floor: Emission mass spread uniformly over all tokens, in $[0, 1)$.
        seed: Seed of the language (not of its samples).

    Example:
        >>> language = HMMLanguage(vocab_size=8, states=4, support=3, successors=2)
        >>> x = language.sample(2, 10, generator=torch.Generator().manual_seed(0))
        >>> language.log_prob(x).shape
        torch.Size([2])
    """

    def __init__(
        self,
        vocab_size: int = 32,
        states: int = 16,
        support: int = 6,
        successors: int = 3,
        concentration: float = 1.0,
        transition_concentration: float = 1.0,
        floor: float = 1e-3,
        seed: int = 0,
    ) -> None:
        _check_sizes(vocab_size, states, support, floor)
        if not 1 <= successors <= states:
            raise ValueError(f"`successors` must lie in [1, states={states}]; got {successors}")
        self.support, self.successors, self.seed = support, successors, seed
        self.concentration, self.transition_concentration = concentration, transition_concentration
        self.floor = floor
        rows = []
        with torch.random.fork_rng(devices=[]):  # seeded without touching the global RNG
            torch.manual_seed(seed)
            for _ in range(states):
                rows.append(_sparse_row(vocab_size, support, concentration))
                rows.append(_sparse_row(states, successors, transition_concentration))
            initial = _dirichlet(1.0, states)
        emission, transition = torch.stack(rows[::2]), torch.stack(rows[1::2])
        emission = (1.0 - floor) * emission + floor / vocab_size
        self._set_tables(emission[:, :, None] * transition[:, None, :], initial)

    @classmethod
    def from_tables(
        cls,
        joint: Float[Tensor, "states vocab states"],
        initial: Float[Tensor, "states"],
    ) -> "HMMLanguage":
        r"""A language from its tables.

        Args:
            joint: $J[s, x, s'] \ge 0$, each $J[s]$ summing to 1.
            initial: $\pi(s_1)$, summing to 1.

        Returns:
            The language.

        Raises:
            ValueError: If the shapes disagree or a table is not a distribution.
        """
        language = cls.__new__(cls)
        language._set_tables(joint.double(), initial.double())
        return language

    def _set_tables(self, joint: Tensor, initial: Tensor) -> None:
        states, vocab, states2 = joint.shape
        if states2 != states or initial.shape != (states,):
            raise ValueError(
                f"`joint` must be (K, V, K) and `initial` (K,); got {tuple(joint.shape)} "
                f"and {tuple(initial.shape)}"
            )
        sums = joint.sum((1, 2))
        if bool((joint < 0).any()) or not torch.allclose(sums, torch.ones_like(sums)):
            raise ValueError("every `joint[s]` must be a distribution over (token, next state)")
        if bool((initial < 0).any()) or abs(float(initial.sum()) - 1.0) > 1e-9:
            raise ValueError("`initial` must be a distribution over the states")
        self.joint, self.initial = joint, initial
        self.vocab_size, self.states = vocab, states
        self.emission = joint.sum(-1)  # E[s, x]
        self.transition = joint.sum(1)  # T[s, s'] with the token summed out

    @property
    def unifilar(self) -> bool:
        """Whether the tokens determine the state path (one next state per (state, token))."""
        deterministic = bool(((self.joint > 0).sum(-1) <= 1).all())
        return deterministic and int((self.initial > 0).sum()) == 1

    # -- exact quantities ---------------------------------------------------------------

    def state_marginals(self, length: int) -> Float[Tensor, "length states"]:
        r"""Hidden-state marginals $P(s_\ell = k)$ for $\ell = 1..L$.

        Args:
            length: $L$.

        Returns:
            `(L, K)` float64 probabilities.
        """
        marginal, out = self.initial, []
        for _ in range(length):
            out.append(marginal)
            marginal = marginal @ self.transition
        return torch.stack(out)

    def unigram(self, length: int) -> Float[Tensor, "vocab"]:
        r"""The pooled token distribution $\bar u$ over positions $1..L$.

        Args:
            length: $L$.

        Returns:
            $\bar u$ `(V,)`, float64.
        """
        return (self.state_marginals(length) @ self.emission).mean(0)

    def entropy(self, length: int, *, samples: int = 4096, seed: int = 0) -> EntropyEstimate:
        r"""$H(X_{1:L}) / L$ in nats per token: exact when unifilar, else Monte Carlo.

        Unifilar with a fixed start: $\sum_\ell \sum_k P(s_\ell = k)\, H(E_k) / L$.
        Otherwise $-\frac{1}{nL}\sum_i \log p(x^{(i)})$ over `samples` exact
        draws, with its standard error.

        Args:
            length: $L$.
            samples: Draws for the Monte Carlo estimate.
            seed: Seed of those draws.

        Returns:
            An `EntropyEstimate` (a float with `.stderr`).
        """
        if self.unifilar:
            per_state = -torch.xlogy(self.emission, self.emission).sum(-1)
            return EntropyEstimate(float((self.state_marginals(length) @ per_state).mean()))
        return monte_carlo_entropy(self, length, samples=samples, seed=seed)

    # -- sampling ---------------------------------------------------------------------------

    def sample(
        self, n: int, length: int, *, generator: torch.Generator | None = None
    ) -> Int[Tensor, "n length"]:
        r"""Draw `n` sequences of `length` tokens.

        Each step draws the token and the next state together from
        $J[s_\ell]$; the first draws from $\sum_s \pi(s) J[s]$ (the start state
        summed out). One uniform per sequence and step.

        Args:
            n: Number of sequences.
            length: Tokens per sequence.
            generator: Random generator for reproducible draws.

        Returns:
            Token ids `(n, length)` in `0..V-1`.
        """
        flat = self.joint.reshape(self.states, -1)
        cdf = flat.cumsum(-1).contiguous()
        first = (self.initial @ flat).cumsum(-1).expand(n, -1).contiguous()
        tokens = torch.empty(n, length, dtype=torch.long)
        table = first
        for position in range(length):
            u = torch.rand(n, 1, generator=generator, dtype=torch.float64)
            pick = torch.searchsorted(table, u * table[:, -1:], right=True).squeeze(-1)
            pick = pick.clamp_max(flat.shape[-1] - 1)
            tokens[:, position] = pick // self.states
            table = cdf[pick % self.states]  # the next state's row
        return tokens

    # -- inference --------------------------------------------------------------------------

    def _steps(self, z: Tensor, observed: Tensor) -> Tensor:
        """Per-position matrices `(B, L, K, K)`: `joint[:, x, :]`, or `transition` at a mask."""
        step = self.joint.permute(1, 0, 2)[torch.where(observed, z, 0)]  # [x][s, s']
        return torch.where(observed[..., None, None], step, self.transition)

    def chain(self, z: Int[Tensor, "batch length"], mask_id: int | None = None) -> object:
        r"""The hidden path $s_{1:L+1}$ given the tokens, as a torch-struct `LinearChainCRF`.

        Edge potentials $\log J[s_\ell, x_\ell, s_{\ell+1}]$ ($\log T$ at masked
        positions, $\log \pi$ folded into the first edge), in torch-struct's
        layout `(B, L, K, K)` indexed `[ℓ, s', s]`: its `partition` is
        $\log p(\text{unmasked tokens})$, its `marginals` the edge posteriors, its
        `argmax` the Viterbi path. `log_prob` and `conditionals` compute the same
        numbers with a scaled forward–backward pass that is 10–20× faster on a CPU
        (a chain of $K \times K$ products instead of a parallel scan of
        $K \times K \times K$ ones); the tests check the two against each other.

        Args:
            z: Tokens `(B, L)`: data ids or `mask_id`.
            mask_id: The id of masked positions (summed out); `None`: all observed.

        Returns:
            A `torch_struct.LinearChainCRF` with batch shape `(B,)`.
        """
        from torch_struct import LinearChainCRF

        observed = torch.ones_like(z, dtype=torch.bool) if mask_id is None else z != mask_id
        potentials = self._steps(z, observed).transpose(-1, -2).clamp_min(_LOG_ZERO).log()
        potentials[:, 0] = potentials[:, 0] + self.initial.clamp_min(_LOG_ZERO).log()
        return _structured(LinearChainCRF, potentials)

    def _forward_backward(
        self, steps: Tensor, backward: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Scaled messages: forward `(B, L+1, K)`, the log-normaliser `(B,)`, backward."""
        batch, length = steps.shape[:2]
        forward = torch.empty(batch, length + 1, self.states, dtype=torch.float64)
        forward[:, 0] = self.initial
        log_norm = torch.zeros(batch, dtype=torch.float64)
        for position in range(length):
            a = torch.einsum("bk,bkj->bj", forward[:, position], steps[:, position])
            total = a.sum(-1, keepdim=True)
            log_norm += total.squeeze(-1).log()
            forward[:, position + 1] = a / total.clamp_min(_LOG_ZERO)
        if not backward:
            return forward, log_norm, None
        after = torch.ones(batch, length + 1, self.states, dtype=torch.float64)
        for position in range(length - 1, -1, -1):
            b = torch.einsum("bkj,bj->bk", steps[:, position], after[:, position + 1])
            after[:, position] = b / b.sum(-1, keepdim=True).clamp_min(_LOG_ZERO)
        return forward, log_norm, after

    def log_prob(self, x: Int[Tensor, "batch length"]) -> Float[Tensor, "batch"]:
        r"""Exact $\log p(x)$ by the forward algorithm (the chain's log-partition).

        Args:
            x: Token ids `(B, L)` in `0..V-1`.

        Returns:
            $\log p(x)$ in nats, `(B,)`, float64 (`-inf` for an impossible string).

        Raises:
            ValueError: If `x` holds ids outside the vocabulary.
        """
        _check_ids(x, self.vocab_size)
        x = x.cpu()
        steps = self._steps(x, torch.ones_like(x, dtype=torch.bool))
        return self._forward_backward(steps, backward=False)[1]

    def conditionals(
        self, z: Int[Tensor, "batch length"], mask_id: int
    ) -> Float[Tensor, "batch length vocab"]:
        r"""$p(x_\ell = v \mid \text{tokens of } z \text{ other than } \ell)$, masks summed out.

        Forward–backward over the hidden states with masked positions
        marginalised: $p(x_\ell = v \mid \cdot) \propto \sum_{s, s'} \alpha_\ell(s)\,
        J[s, v, s']\, \beta_{\ell+1}(s')$.

        Args:
            z: Noisy tokens `(B, L)`: data ids or `mask_id`.
            mask_id: The id that marks a masked position.

        Returns:
            Float64 probabilities `(B, L, V)`.
        """
        return self._leave_one_out(self._steps(z, z != mask_id))

    def conditionals_given(
        self, evidence: Float[Tensor, "batch length vocab"]
    ) -> Float[Tensor, "batch length vocab"]:
        r"""$p(x_\ell = v \mid e_{-\ell})$: soft evidence $e_j(v) = q(z^j \mid x^j = v)$ elsewhere.

        The exact denoiser of uniform-state noise (see `discdiff.processes.uniform`):
        forward–backward with each position's transition weighted by its
        evidence, $\sum_v J[s, v, s']\, e_j(v)$, leaving position $\ell$ out.

        Args:
            evidence: Likelihoods `(B, L, V)`, e.g. `process.likelihood(z_t, t)`.

        Returns:
            Float64 probabilities `(B, L, V)`.
        """
        return self._leave_one_out(torch.einsum("svt,blv->blst", self.joint, evidence.double()))

    def _leave_one_out(self, steps: Tensor) -> Tensor:
        r"""Normalised $\sum_{s, s'} \alpha_\ell(s) J[s, v, s'] \beta_{\ell+1}(s')$ given steps."""
        forward, _, after = self._forward_backward(steps, backward=True)
        scores = torch.einsum("bls,svt,blt->blv", forward[:, :-1], self.joint, after[:, 1:])
        return scores / scores.sum(-1, keepdim=True).clamp_min(_LOG_ZERO)


@register("language", "synthetic")
class SyntheticLanguage(HMMLanguage):
    r"""The built-in language: a seeded *unifilar* HMM (a probabilistic finite automaton).

    A hidden state $s$ emits a token $x \sim E[s]$ and moves to $s' = f(s, x)$,
    a deterministic function of the state and the token, from the start state
    0; so the tokens determine the state path and the entropy is exact. Each
    state emits mostly from its own random subset of `support` tokens
    (Dirichlet weights), so token frequencies alone say little and a model must
    track the state; a `floor` of probability mass is spread over all tokens,
    so every sequence has a finite likelihood.

    Args:
        vocab_size: Number of tokens $V$.
        states: Number of hidden states $K$.
        support: Tokens each state can emit.
        concentration: Dirichlet concentration of the emission weights.
        floor: Emission mass spread uniformly over all tokens, in [0, 1).
        seed: Seed of the language (not of its samples).

    Example:
        >>> language = SyntheticLanguage()
        >>> x = language.sample(2, 16, generator=torch.Generator().manual_seed(0))
        >>> language.log_prob(x).shape
        torch.Size([2])
    """

    def __init__(
        self,
        vocab_size: int = 32,
        states: int = 16,
        support: int = 8,
        concentration: float = 1.0,
        floor: float = 0.01,
        seed: int = 0,
    ) -> None:
        _check_sizes(vocab_size, states, support, floor)
        self.support, self.concentration = support, concentration
        self.floor, self.seed = floor, seed
        with torch.random.fork_rng(devices=[]):  # seeded without touching the global RNG
            torch.manual_seed(seed)
            emission = torch.stack(
                [_sparse_row(vocab_size, support, concentration) for _ in range(states)]
            )
            next_state = torch.randint(states, (states, vocab_size))
        emission = (1.0 - floor) * emission + floor / vocab_size
        joint = torch.zeros(states, vocab_size, states, dtype=torch.float64)
        joint.scatter_(-1, next_state.unsqueeze(-1), emission.unsqueeze(-1))
        initial = torch.zeros(states, dtype=torch.float64)
        initial[0] = 1.0
        self._set_tables(joint, initial)
        self.next_state = next_state


def monte_carlo_entropy(
    language: object, length: int, *, samples: int = 4096, seed: int = 0, batch: int = 512
) -> EntropyEstimate:
    r"""$-\frac{1}{nL} \sum_i \log p(x^{(i)})$ over exact draws, with its standard error.

    Args:
        language: Anything with `sample(n, length, generator=)` and exact `log_prob`.
        length: $L$.
        samples: Number of draws $n$.
        seed: Seed of the draws.
        batch: Draws per call.

    Returns:
        An `EntropyEstimate` in nats per token.
    """
    generator = torch.Generator().manual_seed(seed)
    draws = (
        language.sample(min(batch, samples - i), length, generator=generator)
        for i in range(0, samples, batch)
    )
    nll = -torch.cat([language.log_prob(x) for x in draws]) / length
    stderr = float(nll.std() / math.sqrt(samples)) if samples > 1 else math.inf
    return EntropyEstimate(float(nll.mean()), stderr)


def _check_sizes(vocab_size: int, states: int, support: int, floor: float) -> None:
    if not 1 <= support <= vocab_size:
        raise ValueError(f"`support` must lie in [1, vocab_size={vocab_size}]; got {support}")
    if states < 1:
        raise ValueError(f"`states` must be at least 1; got {states}")
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"`floor` must lie in [0, 1); got {floor}")


def _check_ids(x: Tensor, vocab_size: int) -> None:
    if bool(((x < 0) | (x >= vocab_size)).any()):
        raise ValueError(f"`x` holds ids outside 0..{vocab_size - 1}")


class LanguageDenoiser:
    r"""The exact denoiser of a language for a forward process.

    For masking, $p(x_\ell \mid \text{unmasked tokens of } z_t)$ from the
    language's `conditionals(z, mask_id)` (`HMMLanguage`, `SyntheticLanguage`,
    `PCFGLanguage`), unmasked positions carrying their token over (SUBS); not
    time-conditioned. For a process without a mask (uniform noise, given as
    `process=`), $p(x_\ell \mid z_t^{-\ell})$ from `conditionals_given` with the
    process's likelihoods as evidence; time-conditioned.

    Args:
        language: The language.
        mask_id: The mask id it reads (masking); taken from `process` when given.
        process: The forward process (any object with `mask_id` and
            `likelihood(z_t, t)`); `None`: masking with `mask_id`.

    Raises:
        ValueError: If neither `mask_id` nor `process` is given.
        TypeError: If the process has no mask and the language no `conditionals_given`.
    """

    def __init__(
        self, language: object, mask_id: int | None = None, *, process: object | None = None
    ) -> None:
        if process is not None:
            mask_id = process.mask_id
        elif mask_id is None:
            raise ValueError("give `mask_id` (masking) or `process`")
        if mask_id is None and not hasattr(language, "conditionals_given"):
            raise TypeError(
                f"{type(language).__name__} has no `conditionals_given(evidence)`, which "
                f"the exact denoiser of a {getattr(process, 'name', '')} process needs"
            )
        self.language, self.mask_id, self.process = language, mask_id, process
        self.time_conditioned = mask_id is None

    def __call__(self, z_t: Tokens, t: Times) -> Float[Tensor, "batch length vocab"]:
        """Exact log-probabilities, computed on the CPU.

        Args:
            z_t: Noisy tokens `(B, L)`.
            t: Times `(B,)` (used only by a process without a mask).

        Returns:
            Float32 log-probabilities `(B, L, V)` on the device of `z_t`.
        """
        z = z_t.cpu()
        if self.mask_id is None:
            evidence = self.process.likelihood(z, t.cpu())
            return self.language.conditionals_given(evidence).log().float().to(z_t.device)
        probs = self.language.conditionals(z, self.mask_id)
        unmasked = z != self.mask_id
        carry = torch.nn.functional.one_hot(
            torch.where(unmasked, z, 0), self.language.vocab_size
        ).double()
        probs = torch.where(unmasked.unsqueeze(-1), carry, probs)
        return probs.log().float().to(z_t.device)
