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
  without losing diversity (`language_metrics`: both, with standard errors).
- **FID** and the **Inception Score** on any judge's features and class
  probabilities (`frechet_distance`, `inception_score`).
- **Novelty**: the fraction of distinct samples and each sample's distance to
  its nearest training sequence (`distinct_fraction`, `nearest_distance`).
"""

import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff.data.synthetic import ExactLanguage

__all__ = [
    "Judge",
    "distinct_fraction",
    "exact_nll",
    "frechet_distance",
    "gen_ppl",
    "inception_score",
    "language_metrics",
    "mauve_score",
    "nearest_distance",
    "token_entropy",
]


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


def language_metrics(
    language: ExactLanguage, length: int
) -> Callable[[torch.Tensor], dict[str, float]]:
    r"""Exact NLL per token, its gap to the entropy, and the token-histogram entropy.

    Args:
        language: The language the samples should follow.
        length: Sequence length $L$ (for the exact entropy).

    Returns:
        A function from samples `(N, L)` to `{"exact_nll", "nll_gap", "token_entropy"}`
        (means over the samples) and the standard errors of those means,
        `nll_gap_se` and `token_entropy_se` (sample standard deviation
        $/\sqrt{N}$; `nan` for one sample). The gap's error ignores the
        entropy's own Monte Carlo error, which is common to every row.
    """
    entropy = language.entropy(length)

    def metrics(tokens: torch.Tensor) -> dict[str, float]:
        nll = exact_nll(language.log_prob, tokens).double()
        entropies = token_entropy(tokens).double()
        root = math.sqrt(len(tokens))
        return {
            "exact_nll": float(nll.mean()),
            "nll_gap": float(nll.mean()) - entropy,
            "nll_gap_se": float(nll.std()) / root,
            "token_entropy": float(entropies.mean()),
            "token_entropy_se": float(entropies.std()) / root,
        }

    return metrics


def frechet_distance(a: Float[np.ndarray, "n d"], b: Float[np.ndarray, "m d"]) -> float:
    r"""Fréchet distance between Gaussian fits of two feature sets.

    $\lVert \mu_a - \mu_b \rVert^2 + \operatorname{tr}\Sigma_a + \operatorname{tr}\Sigma_b
    - 2 \operatorname{tr}(\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2})^{1/2}$, the last
    trace from the eigenvalues of a symmetric matrix (no complex square root).

    Args:
        a: Features `(n, d)`, `n >= 2`.
        b: Features `(m, d)`, `m >= 2`.

    Returns:
        The distance (0 for identical sets).

    Raises:
        ValueError: If the feature dimensions differ or a set has fewer than 2 rows.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"`a` and `b` must be (n, d) with the same d; got {a.shape}, {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"each set needs at least 2 rows; got {len(a)} and {len(b)}")
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(sigma_a)
    root_a = (vectors * np.sqrt(values.clip(min=0.0))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ sigma_b @ root_a).clip(min=0.0)
    mean = float(((a.mean(0) - b.mean(0)) ** 2).sum())
    return mean + float(np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.sqrt(middle).sum())


def inception_score(probabilities: Float[np.ndarray, "n classes"]) -> float:
    r"""The Inception Score $\exp \mathbb{E}_x \mathrm{KL}(p(y \mid x) \Vert \bar p(y))$.

    $\bar p$ is the mean of the rows.

    1 when every row is the same distribution; the number of classes when
    the rows are one-hot and the classes balanced.

    Args:
        probabilities: Rows of class probabilities `(n, classes)`.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    marginal = p.mean(0, keepdims=True)
    terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(marginal)), 0.0)
    return float(np.exp(terms.sum(-1).mean()))


def distinct_fraction(samples: Int[Tensor, "n length"]) -> float:
    """Fraction of distinct sequences among `samples`."""
    return len(torch.unique(samples, dim=0)) / len(samples)


def nearest_distance(
    samples: Int[Tensor, "n length"], reference: Int[Tensor, "m length"]
) -> Float[Tensor, "n"]:
    r"""Euclidean distance from each sample to its nearest reference sequence.

    $d(x) = \min_{r} \lVert x - r \rVert_2$ over the token values (for digits,
    intensities 0..16). Zero means a copy of a reference image.
    """
    if samples.shape[-1] != reference.shape[-1]:
        raise ValueError(
            f"`samples` and `reference` must have the same length; got {samples.shape[-1]} "
            f"and {reference.shape[-1]}"
        )
    return torch.cdist(samples.double(), reference.double()).min(-1).values
