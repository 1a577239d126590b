r"""A built-in synthetic language with exact likelihood, entropy and denoiser.

The language is a seeded *unifilar* hidden Markov model (a probabilistic
finite automaton): a hidden state $z$ emits a token $x \sim E[z]$ and moves to
$z' = f(z, x)$, a deterministic function of the state and the token. Because
the token sequence determines the state path, everything a study needs is
exact:

- $\log p(x)$, by the forward algorithm;
- the entropy $H(X_{1:L}) = \sum_t \sum_z P(z_t = z)\, H(E[z])$ and the
  unigram cross-entropy $H(\bar u)$ of the pooled token marginal — the floor a
  model reaches by learning structure, and the loss of one that learns only
  token frequencies;
- the optimal denoiser $p(x_\ell \mid \text{unmasked tokens of } z_t)$, by
  forward–backward message passing with masked positions summed out.
"""

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff.typing import Times, Tokens

__all__ = ["LanguageDenoiser", "SyntheticLanguage"]


class SyntheticLanguage:
    r"""A seeded unifilar HMM over `vocab_size` tokens.

    Each of the `states` hidden states emits mostly from its own random subset
    of `support` tokens (Dirichlet weights), so token frequencies alone say
    little and a model must track the state; a `floor` of probability mass is
    spread over all tokens, so every sequence has a finite likelihood and the
    exact NLL of imperfect samples stays finite. The start state is 0.

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
        if not 1 <= support <= vocab_size:
            raise ValueError(f"`support` must lie in [1, vocab_size={vocab_size}]; got {support}")
        if states < 1:
            raise ValueError(f"`states` must be at least 1; got {states}")
        if not 0.0 <= floor < 1.0:
            raise ValueError(f"`floor` must lie in [0, 1); got {floor}")
        emission = torch.zeros(states, vocab_size, dtype=torch.float64)
        with torch.random.fork_rng(devices=[]):  # seeded without touching the global RNG
            torch.manual_seed(seed)
            for z in range(states):
                tokens = torch.randperm(vocab_size)[:support]
                # Dirichlet(concentration) weights as normalised Gamma draws
                gamma = torch._standard_gamma(
                    torch.full((support,), concentration, dtype=torch.float64)
                )
                emission[z, tokens] = gamma / gamma.sum()
            next_state = torch.randint(states, (states, vocab_size))
        emission = (1.0 - floor) * emission + floor / vocab_size
        self.emission = emission
        self.next_state = next_state
        self.vocab_size, self.states = vocab_size, states
        # transition[z, z'] = P(z' | z) with the token summed out
        self.transition = torch.zeros(states, states, dtype=torch.float64)
        self.transition.scatter_add_(1, self.next_state, emission)

    def state_marginals(self, length: int) -> Float[Tensor, "length states"]:
        r"""Hidden-state marginals $P(s_\ell = k)$ for $\ell = 1..L$ (start state 0).

        Args:
            length: $L$.

        Returns:
            `(L, K)` float64 probabilities.
        """
        marginal = torch.zeros(self.states, dtype=torch.float64)
        marginal[0] = 1.0
        out = []
        for _ in range(length):
            out.append(marginal)
            marginal = marginal @ self.transition
        return torch.stack(out)

    def entropy(self, length: int) -> float:
        r"""Exact $H(X_{1:L}) / L$ in nats per token.

        Unifilar: the tokens determine the state path, so
        $H(X_{1:L}) = \sum_\ell \sum_k P(s_\ell = k)\, H(E_k)$ with $E_k$ the
        emission distribution of state $k$.

        Args:
            length: $L$.

        Returns:
            The entropy rate over $L$ tokens, in nats.
        """
        per_state = -torch.xlogy(self.emission, self.emission).sum(-1)
        return float((self.state_marginals(length) @ per_state).mean())

    def unigram(self, length: int) -> Float[Tensor, "vocab"]:
        r"""The pooled token distribution $\bar u$ over positions $1..L$.

        Args:
            length: $L$.

        Returns:
            $\bar u$ `(V,)`, float64.
        """
        return (self.state_marginals(length) @ self.emission).mean(0)

    def unigram_cross_entropy(self, length: int) -> float:
        r"""$H(\bar u)$: the per-token loss of the best position-free unigram model.

        Args:
            length: $L$.

        Returns:
            Nats per token.
        """
        u = self.unigram(length)
        return float(-(u * u.clamp_min(1e-300).log()).sum())

    def sample(
        self, n: int, length: int, *, generator: torch.Generator | None = None
    ) -> Int[Tensor, "n length"]:
        """Draw `n` sequences of `length` tokens.

        Args:
            n: Number of sequences.
            length: Tokens per sequence.
            generator: Random generator for reproducible draws.

        Returns:
            Token ids `(n, length)` in `0..V-1`.
        """
        state = torch.zeros(n, dtype=torch.long)
        cdf = self.emission.cumsum(-1)
        tokens = torch.empty(n, length, dtype=torch.long)
        for t in range(length):
            u = torch.rand(n, 1, generator=generator, dtype=torch.float64)
            x = torch.searchsorted(cdf[state], u * cdf[state, -1:], right=True).squeeze(-1)
            tokens[:, t] = x.clamp_max(self.vocab_size - 1)
            state = self.next_state[state, tokens[:, t]]
        return tokens

    def _steps(self, z: Tensor) -> Tensor:
        """Per-position transition matrices `(B, L, K, K)` given observations (mask = any)."""
        observed = (z >= 0) & (z < self.vocab_size)
        token = torch.where(observed, z, 0)
        weight = self.emission[:, token].permute(1, 2, 0)  # (B, L, K)
        target = self.next_state[:, token].permute(1, 2, 0)  # (B, L, K)
        step = torch.zeros(*z.shape, self.states, self.states, dtype=torch.float64)
        step.scatter_add_(-1, target.unsqueeze(-1), weight.unsqueeze(-1))
        return torch.where(observed[..., None, None], step, self.transition)

    def log_prob(self, x: Int[Tensor, "batch length"]) -> Float[Tensor, "batch"]:
        r"""Exact $\log p(x)$ by the forward algorithm.

        Args:
            x: Token ids `(B, L)` in `0..V-1`.

        Returns:
            $\log p(x)$ in nats, `(B,)`, float64.

        Raises:
            ValueError: If `x` holds ids outside the vocabulary.
        """
        if bool(((x < 0) | (x >= self.vocab_size)).any()):
            raise ValueError(f"`x` holds ids outside 0..{self.vocab_size - 1}")
        steps = self._steps(x)
        alpha = torch.zeros(x.shape[0], self.states, dtype=torch.float64)
        alpha[:, 0] = 1.0
        log_norm = torch.zeros(x.shape[0], dtype=torch.float64)
        for t in range(x.shape[1]):
            alpha = torch.einsum("bk,bkj->bj", alpha, steps[:, t])
            total = alpha.sum(-1)
            log_norm += total.log()
            alpha = alpha / total.clamp_min(1e-300).unsqueeze(-1)
        return log_norm

    def conditionals(
        self, z: Int[Tensor, "batch length"], mask_id: int
    ) -> Float[Tensor, "batch length vocab"]:
        r"""$p(x_\ell = v \mid \text{tokens of } z \text{ other than } \ell)$, masks summed out.

        Forward-backward message passing over the hidden states, with masked
        positions marginalised.

        Args:
            z: Noisy tokens `(B, L)`: data ids or `mask_id`.
            mask_id: The id that marks a masked position.

        Returns:
            Float64 probabilities `(B, L, V)`.
        """
        observed = z != mask_id
        steps = self._steps(torch.where(observed, z, -1))
        batch, length = z.shape
        forward = torch.zeros(batch, length + 1, self.states, dtype=torch.float64)
        forward[:, 0, 0] = 1.0
        for t in range(length):
            a = torch.einsum("bk,bkj->bj", forward[:, t], steps[:, t])
            forward[:, t + 1] = a / a.sum(-1, keepdim=True).clamp_min(1e-300)
        backward = torch.ones(batch, length + 1, self.states, dtype=torch.float64)
        for t in range(length - 1, -1, -1):
            b = torch.einsum("bkj,bj->bk", steps[:, t], backward[:, t + 1])
            backward[:, t] = b / b.sum(-1, keepdim=True).clamp_min(1e-300)
        # p(x_t = v | rest) ∝ Σ_z forward_t(z) E[z, v] backward_{t+1}(f(z, v))
        after = backward[:, 1:, :][..., self.next_state]  # (B, L, K, V)
        scores = torch.einsum("blk,kv,blkv->blv", forward[:, :-1], self.emission, after)
        return scores / scores.sum(-1, keepdim=True).clamp_min(1e-300)

    def denoiser(self, mask_id: int | None = None) -> "LanguageDenoiser":
        """The exact conditional denoiser of this language (a `Denoiser`).

        Args:
            mask_id: The mask id it reads; defaults to $V$.

        Returns:
            A `LanguageDenoiser`.
        """
        return LanguageDenoiser(self, self.vocab_size if mask_id is None else mask_id)

    def summary(self, length: int) -> dict[str, float]:
        """Entropy, unigram cross-entropy and their gap, in nats per token.

        Args:
            length: $L$.

        Returns:
            `{"entropy", "unigram", "gap", "entropy_bits"}`.
        """
        entropy, unigram = self.entropy(length), self.unigram_cross_entropy(length)
        return {
            "entropy": entropy,
            "unigram": unigram,
            "gap": unigram - entropy,
            "entropy_bits": entropy / math.log(2),
        }


class LanguageDenoiser:
    r"""The exact denoiser $p(x_\ell \mid \text{unmasked tokens of } z_t)$ of a language.

    Unmasked positions carry their token over (SUBS). Not time-conditioned.

    Args:
        language: The language.
        mask_id: The mask id it reads.
    """

    time_conditioned = False

    def __init__(self, language: SyntheticLanguage, mask_id: int) -> None:
        self.language, self.mask_id = language, mask_id

    def __call__(self, z_t: Tokens, t: Times) -> Float[Tensor, "batch length vocab"]:
        """Exact log-probabilities, computed on the CPU.

        Args:
            z_t: Noisy tokens `(B, L)`.
            t: Times `(B,)` (unused).

        Returns:
            Float32 log-probabilities `(B, L, V)` on the device of `z_t`.
        """
        probs = self.language.conditionals(z_t.cpu(), self.mask_id)
        unmasked = z_t.cpu() != self.mask_id
        carry = torch.nn.functional.one_hot(
            torch.where(unmasked, z_t.cpu(), 0), self.language.vocab_size
        ).double()
        probs = torch.where(unmasked.unsqueeze(-1), carry, probs)
        return probs.log().float().to(z_t.device)
