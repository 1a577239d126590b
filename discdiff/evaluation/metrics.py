r"""Sample-quality metrics (ReMDM §6): Gen PPL, token entropy, MAUVE, exact NLL.

- **Gen PPL**: perplexity of samples under a separate autoregressive judge,
  corpus-level: $\exp(\sum \mathrm{nll} / \sum \text{tokens})$.
- **Entropy**: per sample, the entropy (nats) of its token-id histogram,
  averaged over samples; low values expose repetitive samples that game Gen PPL.
- **MAUVE** (`mauve-text`) between samples and held-out data, on features from
  a pluggable featuriser (the judge's hidden states by default).
- **Exact NLL** of samples under a language with a known likelihood (the
  built-in `SyntheticLanguage`), next to its exact entropy: their gap measures
  how far samples are from typical data, and cannot go below zero on average
  without losing diversity.
"""

import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["Judge", "exact_nll", "gen_ppl", "mauve_score", "token_entropy"]


@runtime_checkable
class Judge(Protocol):
    """An autoregressive model that scores token sequences."""

    def nll(self, tokens: Int[Tensor, "batch length"]) -> Float[Tensor, "batch"]:
        """Total negative log-likelihood (nats) of each sequence's predicted tokens.

        Args:
            tokens: Token ids `(B, L)`.

        Returns:
            Nats per sequence `(B,)`.
        """
        ...

    def scored_tokens(self, tokens: Int[Tensor, "batch length"]) -> int:
        """How many tokens `nll` scores in the batch.

        Args:
            tokens: Token ids `(B, L)`.

        Returns:
            The count, for corpus-level perplexity.
        """
        ...


def token_entropy(tokens: Int[Tensor, "batch length"]) -> Float[Tensor, "batch"]:
    r"""Entropy in nats of each sequence's token histogram.

    $H = -\sum_v \hat p_v \log \hat p_v$ with $\hat p_v$ the frequency of id $v$
    in the sequence.

    Args:
        tokens: Samples `(B, L)`.

    Returns:
        Entropies in nats `(B,)`.

    Example:
        >>> token_entropy(torch.tensor([[0, 0, 1, 1]]))
        tensor([0.6931])
    """
    counts = torch.zeros(tokens.shape[0], int(tokens.max()) + 1, dtype=torch.float64)
    counts.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=torch.float64))
    freq = counts / tokens.shape[1]
    return (-torch.xlogy(freq, freq).sum(-1)).float()


def gen_ppl(judge: Judge, tokens: Int[Tensor, "batch length"], *, batch_size: int = 64) -> float:
    r"""Corpus-level generative perplexity $\exp(\sum \mathrm{nll} / \sum \text{tokens})$.

    Args:
        judge: The autoregressive judge.
        tokens: Samples `(N, L)` in the judge's ids.
        batch_size: Sequences per judge call.

    Returns:
        The perplexity.
    """
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, tokens.shape[0], batch_size):
            chunk = tokens[start : start + batch_size]
            nll += float(judge.nll(chunk).sum())
            count += judge.scored_tokens(chunk)
    return math.exp(nll / count)


def exact_nll(
    log_prob: Callable[[Tensor], Tensor], tokens: Int[Tensor, "batch length"]
) -> Float[Tensor, "batch"]:
    r"""Exact negative log-likelihood per token of each sample, $-\log p(x)/L$.

    Args:
        log_prob: Exact $\log p$ of `(B, L)` tokens, e.g. `SyntheticLanguage.log_prob`.
        tokens: Samples `(B, L)`.

    Returns:
        Nats per token `(B,)`.
    """
    return (-log_prob(tokens) / tokens.shape[1]).float()


def mauve_score(
    p_features: Float[np.ndarray, "n features"] | Tensor,
    q_features: Float[np.ndarray, "m features"] | Tensor,
    *,
    clusters: int | None = None,
    seed: int = 25,
) -> float:
    """MAUVE between two sets of feature vectors (`mauve-text`, installed with `.[eval]`).

    Args:
        p_features: Features of one set (e.g. samples), `(n, d)`.
        q_features: Features of the other (e.g. data), `(m, d)`.
        clusters: Quantisation clusters; `mauve-text`'s default (n/10) if `None`.
        seed: Seed of the clustering.

    Returns:
        MAUVE in $[0, 1]$ (1: indistinguishable sets).

    Raises:
        ImportError: If `mauve-text` is not installed.
    """
    try:
        import mauve
    except ImportError:
        raise ImportError(
            "MAUVE needs the mauve-text package: pip install 'discdiff[eval]'"
        ) from None
    p = np.asarray(p_features, dtype=np.float32)
    q = np.asarray(q_features, dtype=np.float32)
    kwargs = {"num_buckets": clusters} if clusters is not None else {}
    result = mauve.compute_mauve(p_features=p, q_features=q, seed=seed, verbose=False, **kwargs)
    return float(result.mauve)
