r"""A hidden Markov language tilted by an additive reward: the exact target of steering.

For an `HMMLanguage` $p$ with joint table $J[s, x, s']$ and a per-token reward
$w$ (so $r(x) = \sum_\ell w(x_\ell)$), the tilted distribution

$$
\pi(x) = \frac{p(x)\, e^{r(x)}}{Z}
= \frac{1}{Z} \sum_{s_{1:L+1}} \pi_0(s_1) \prod_{\ell=1}^{L} J[s_\ell, x_\ell, s_{\ell+1}]\,
e^{w(x_\ell)}
$$

is the same chain with reweighted emissions $J'[s, x, s'] = J[s, x, s']\,
e^{w(x)}$. With the tokens summed out it is a linear-chain CRF over the hidden
states with edge potentials $T'[s, s'] = \sum_x J'[s, x, s']$ (torch-struct's
`LinearChainCRF`): its partition is $\log Z$ and its edge marginals
$\mu_\ell(s, s')$ give every expectation under $\pi$. Draws are exact
(backward messages, then forward sampling), and so is $\log \pi(x)$.

The entropy is exact when the tokens determine the hidden path (a unifilar
language with a fixed start, e.g. `SyntheticLanguage`):

$$
H(\pi) = \log Z - \sum_\ell \sum_{s, s'} \mu_\ell(s, s') \sum_x
\frac{J'[s, x, s']}{T'[s, s']} \log J'[s, x, s'],
$$

and a Monte Carlo average of $-\log \pi(x)$ over exact draws otherwise.
"""

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff.data.synthetic import (
    EntropyEstimate,
    HMMLanguage,
    _structured,
    monte_carlo_entropy,
)

__all__ = ["TiltedHMM"]

_TINY = 1e-300


class TiltedHMM:
    r"""$\pi(x) \propto p(x)\, e^{\sum_\ell w(x_\ell)}$ for a hidden Markov language $p$.

    Args:
        language: The language $p$ (`HMMLanguage`, `SyntheticLanguage`).
        token_reward: $w$ `(V,)`, finite: the log-reward of each token.

    Raises:
        ValueError: If `token_reward` is not a finite `(V,)` vector.

    Example:
        >>> from discdiff.data import SyntheticLanguage
        >>> language = SyntheticLanguage(vocab_size=4, states=3, support=2)
        >>> tilted = TiltedHMM(language, torch.tensor([1.0, 0.0, 0.0, 0.0]))
        >>> x = tilted.sample(3, 5, generator=torch.Generator().manual_seed(0))
        >>> tilted.log_prob(x).shape, tilted.entropy(5).exact
        (torch.Size([3]), True)
    """

    def __init__(self, language: HMMLanguage, token_reward: Float[Tensor, "vocab"]) -> None:
        w = torch.as_tensor(token_reward, dtype=torch.float64)
        if w.shape != (language.vocab_size,) or not bool(torch.isfinite(w).all()):
            raise ValueError(
                f"`token_reward` must be a finite vector of shape ({language.vocab_size},); "
                f"got {tuple(w.shape)}"
            )
        self.language, self.token_reward = language, w
        self.vocab_size = language.vocab_size
        self.joint = language.joint * w.exp()[None, :, None]  # J'[s, x, s']
        self.transition = self.joint.sum(1)  # T'[s, s']

    def __repr__(self) -> str:
        return f"TiltedHMM({self.language!r}, token_reward={self.token_reward.tolist()})"

    def reward(self, x: Int[Tensor, "batch length"]) -> Float[Tensor, "batch"]:
        r"""$r(x) = \sum_\ell w(x_\ell)$, float64 `(B,)`."""
        return self.token_reward.to(x.device)[x].sum(-1)

    def chain(self, length: int) -> object:
        r"""The hidden path under $\pi$ as a torch-struct `LinearChainCRF` (batch 1).

        Edge potentials $\log T'$ in torch-struct's layout `[ℓ, s', s]`, with
        $\log \pi_0$ folded into the first edge.
        """
        from torch_struct import LinearChainCRF

        edges = self.transition.T.clamp_min(_TINY).log().expand(1, length, -1, -1).clone()
        edges[:, 0] = edges[:, 0] + self.language.initial.clamp_min(_TINY).log()
        return _structured(LinearChainCRF, edges)

    def log_partition(self, length: int) -> float:
        r"""$\log Z = \log \mathbb{E}_p\, e^{r(x)}$ for sequences of `length` tokens."""
        return float(self.chain(length).partition[0].detach())

    def log_prob(self, x: Int[Tensor, "batch length"]) -> Float[Tensor, "batch"]:
        r"""Exact $\log \pi(x) = \log p(x) + r(x) - \log Z$, float64 `(B,)`."""
        return self.language.log_prob(x) + self.reward(x.cpu()) - self.log_partition(x.shape[-1])

    def mean_reward(self, length: int) -> float:
        r"""Exact $\mathbb{E}_\pi\, r(x) = \sum_\ell \sum_{s, s'} \mu_\ell(s, s')\, \bar w(s, s')$.

        $\bar w(s, s')$ is the mean token reward of an edge, weighted by $J'$.
        """
        marginals = self.chain(length).marginals[0].detach().transpose(-1, -2)  # (L, s, s')
        w = torch.einsum("sxt,x->st", self.joint, self.token_reward)
        return float((marginals * w / self.transition.clamp_min(_TINY)).sum())

    def entropy(self, length: int, *, samples: int = 4096, seed: int = 0) -> EntropyEstimate:
        r"""$H(\pi) / L$ in nats per token: exact for a unifilar language, else Monte Carlo.

        Args:
            length: $L$.
            samples: Exact draws for the Monte Carlo estimate.
            seed: Seed of those draws.

        Returns:
            An `EntropyEstimate` (with `.stderr`, 0 when exact).
        """
        if not self.language.unifilar:
            return monte_carlo_entropy(self, length, samples=samples, seed=seed)
        marginals = self.chain(length).marginals[0].detach().transpose(-1, -2)  # (L, s, s')
        log_j = self.joint.clamp_min(_TINY).log()
        expected = torch.einsum("sxt,sxt->st", self.joint, log_j) / self.transition.clamp_min(_TINY)
        energy = float((marginals * expected).sum())
        return EntropyEstimate((self.log_partition(length) - energy) / length)

    def sample(
        self, n: int, length: int, *, generator: torch.Generator | None = None
    ) -> Int[Tensor, "n length"]:
        r"""Exact draws from $\pi$: backward messages, then (token, next state) forward.

        $\beta_{L+1} = 1$, $\beta_\ell(s) = \sum_{s'} T'[s, s']\, \beta_{\ell+1}(s')$
        (normalised); then $s_1 \sim \pi_0\, \beta_1$ and
        $(x_\ell, s_{\ell+1}) \sim J'[s_\ell, x, s']\, \beta_{\ell+1}(s')$.

        Args:
            n: Number of sequences.
            length: Tokens per sequence.
            generator: Random generator for reproducible draws.

        Returns:
            Token ids `(n, length)`.
        """
        states = self.language.states
        beta = [torch.ones(states, dtype=torch.float64)]
        for _ in range(length):
            b = self.transition @ beta[0]
            beta.insert(0, b / b.sum())
        first = self.language.initial * beta[0]
        s = torch.multinomial(first / first.sum(), n, replacement=True, generator=generator)
        tokens = torch.empty(n, length, dtype=torch.long)
        flat = self.joint.reshape(states, -1)  # [s, x * K + s']
        for position in range(length):
            weights = flat[s] * beta[position + 1].repeat(self.vocab_size)
            pick = torch.multinomial(weights, 1, generator=generator).squeeze(-1)
            tokens[:, position], s = pick // states, pick % states
        return tokens

    def summary(self, length: int, **entropy_options: int) -> dict[str, float]:
        """`{"log_partition", "entropy", "entropy_stderr", "mean_reward"}` (per sequence / token).

        Args:
            length: $L$.
            **entropy_options: `samples`, `seed` for a Monte Carlo entropy.
        """
        entropy = self.entropy(length, **entropy_options)
        return {
            "log_partition": self.log_partition(length),
            "entropy": float(entropy),
            "entropy_stderr": entropy.stderr if math.isfinite(entropy.stderr) else math.nan,
            "mean_reward": self.mean_reward(length),
        }
