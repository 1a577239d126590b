r"""The exact denoiser of a distribution small enough to enumerate.

For a joint $p(x)$ over $V^L$ sequences, the optimal $x_\theta$ is the exact
conditional $x^\star(z_t)_\ell = p(x_\ell \mid \text{unmasked tokens of } z_t)$.
With it, losses and samplers can be checked against the truth rather than
against themselves.
"""

import itertools

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from discdiff.typing import Times, Tokens

__all__ = ["EnumerableOracle"]


class EnumerableOracle:
    r"""The exact conditional denoiser of an enumerable joint $p(x)$.

    Args:
        probs: $p(x)$ as a tensor of shape `(V,) * L` (unnormalised is fine).
        mask_id: The mask id; defaults to $V$.

    Example:
        >>> joint = torch.tensor([[0.5, 0.0], [0.0, 0.5]])  # x_1 = x_2, uniform
        >>> oracle = EnumerableOracle(joint)
        >>> oracle(torch.tensor([[1, 2]]), torch.tensor([0.5])).exp()[0, 1]
        tensor([0., 1.])
    """

    time_conditioned = False

    def __init__(self, probs: Tensor, *, mask_id: int | None = None) -> None:
        if probs.dim() < 1 or len(set(probs.shape)) != 1:
            raise ValueError(f"`probs` must have shape (V,) * L; got {tuple(probs.shape)}")
        if bool((probs < 0).any()) or not bool(probs.sum() > 0):
            raise ValueError("`probs` must be non-negative with positive total mass")
        self.vocab_size = probs.shape[0]
        self.length = probs.dim()
        self.mask_id = self.vocab_size if mask_id is None else mask_id
        self.probs = (probs / probs.sum()).flatten().to(torch.float64)
        self.sequences = _all_sequences(self.vocab_size, self.length)
        self._one_hot = torch.nn.functional.one_hot(self.sequences, self.vocab_size).double()

    def __call__(self, z_t: Tokens, t: Times) -> Float[Tensor, "batch length vocab"]:
        r"""$\log p(x_\ell \mid \text{unmasked tokens of } z_t)$ at every position.

        Rows whose unmasked tokens have probability zero get the prior marginals.

        Args:
            z_t: Noisy tokens `(B, L)`.
            t: Times `(B,)` (unused: the exact conditional does not depend on $t$).

        Returns:
            Float32 log-probabilities `(B, L, V)`; at an unmasked position the
            one-hot of its token.
        """
        weights = _consistent(z_t, self.sequences, self.mask_id) * self.probs.to(z_t.device)
        empty = weights.sum(-1, keepdim=True) == 0
        weights = torch.where(empty, self.probs.to(z_t.device), weights)
        marginals = torch.einsum("bk,klv->blv", weights, self._one_hot.to(z_t.device))
        marginals = marginals / marginals.sum(-1, keepdim=True)
        return marginals.log().float()


def _all_sequences(vocab_size: int, length: int) -> Int[Tensor, "sequences length"]:
    """Every sequence of `length` data tokens, $V^L$ rows in lexicographic order."""
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=length)))


def _consistent(
    z_t: Int[Tensor, "batch length"], sequences: Int[Tensor, "sequences length"], mask_id: int
) -> Bool[Tensor, "batch sequences"]:
    """Whether each data sequence agrees with the revealed (unmasked) tokens of each $z_t$."""
    seq = sequences.to(z_t.device)
    return ((z_t.unsqueeze(1) == seq) | (z_t.unsqueeze(1) == mask_id)).all(-1)
