r"""The exact denoiser of a distribution small enough to enumerate.

For a joint $p(x)$ over $V^L$ sequences, the optimal $x_\theta$ of masking is the
exact conditional $x^\star(z_t)_\ell = p(x_\ell \mid \text{unmasked tokens of } z_t)$;
for a process without a mask (uniform noise) it is $p(x_\ell \mid z_t^{-\ell})$,
the posterior given the other noisy positions (see `discdiff.processes.uniform`).
With it, losses and samplers can be checked against the truth rather than
against themselves. For a labelled joint $p(c, x)$ the same enumeration gives
the exact conditional denoisers $x^\star(z_t \mid c)$
(`EnumerableConditionalOracle`) and the exact noisy classifier
$p(c \mid z_t)$ (`EnumerableClassifier`), against which guidance is checked.
"""

import itertools

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from discdiff.typing import Times, Tokens

__all__ = ["EnumerableClassifier", "EnumerableConditionalOracle", "EnumerableOracle"]


class EnumerableOracle:
    r"""The exact conditional denoiser of an enumerable joint $p(x)$.

    Args:
        probs: $p(x)$ as a tensor of shape `(V,) * L` (unnormalised is fine).
        mask_id: The mask id; defaults to $V$ (the process's, when `process` is given).
        process: The forward process (any object with `mask_id` and
            `likelihood(z_t, t)`). For one without a mask the oracle returns
            $\log p(x_\ell \mid z_t^{-\ell})$ and is time-conditioned.

    Example:
        >>> joint = torch.tensor([[0.5, 0.0], [0.0, 0.5]])  # x_1 = x_2, uniform
        >>> oracle = EnumerableOracle(joint)
        >>> oracle(torch.tensor([[1, 2]]), torch.tensor([0.5])).exp()[0, 1]
        tensor([0., 1.])
    """

    def __init__(
        self, probs: Tensor, *, mask_id: int | None = None, process: object | None = None
    ) -> None:
        if probs.dim() < 1 or len(set(probs.shape)) != 1:
            raise ValueError(f"`probs` must have shape (V,) * L; got {tuple(probs.shape)}")
        if bool((probs < 0).any()) or not bool(probs.sum() > 0):
            raise ValueError("`probs` must be non-negative with positive total mass")
        self.vocab_size = probs.shape[0]
        self.length = probs.dim()
        if process is not None:
            mask_id = process.mask_id
        elif mask_id is None:
            mask_id = self.vocab_size
        self.mask_id, self.process = mask_id, process
        self.time_conditioned = mask_id is None
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
        if self.mask_id is None:
            return self._leave_one_out(z_t, t)
        weights = _consistent(z_t, self.sequences, self.mask_id) * self.probs.to(z_t.device)
        empty = weights.sum(-1, keepdim=True) == 0
        weights = torch.where(empty, self.probs.to(z_t.device), weights)
        marginals = torch.einsum("bk,klv->blv", weights, self._one_hot.to(z_t.device))
        marginals = marginals / marginals.sum(-1, keepdim=True)
        return marginals.log().float()

    def _leave_one_out(self, z_t: Tokens, t: Times) -> Float[Tensor, "batch length vocab"]:
        r"""$\log p(x_\ell = v \mid z_t^{-\ell})$ by enumeration.

        $p(x_\ell = v \mid z_t^{-\ell}) \propto \sum_x p(x)\, [x_\ell = v]
        \prod_{j \ne \ell} q(z_t^j \mid x_j)$, the products over the other
        positions taken as prefix times suffix products (no division).
        """
        evidence = self.process.likelihood(z_t, t)  # (B, L, V)
        seq = self.sequences.to(z_t.device)
        per_token = evidence[:, torch.arange(self.length, device=z_t.device), seq]  # (B, K, L)
        ones = torch.ones_like(per_token[..., :1])
        before = torch.cat((ones, per_token[..., :-1]), -1).cumprod(-1)
        after = torch.cat((per_token[..., 1:], ones), -1).flip(-1).cumprod(-1).flip(-1)
        weights = before * after * self.probs.to(z_t.device).unsqueeze(-1)  # (B, K, L)
        marginals = torch.einsum("bkl,klv->blv", weights, self._one_hot.to(z_t.device))
        return (marginals / marginals.sum(-1, keepdim=True)).log().float()


def _all_sequences(vocab_size: int, length: int) -> Int[Tensor, "sequences length"]:
    """Every sequence of `length` data tokens, $V^L$ rows in lexicographic order."""
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=length)))


def _consistent(
    z_t: Int[Tensor, "batch length"], sequences: Int[Tensor, "sequences length"], mask_id: int
) -> Bool[Tensor, "batch sequences"]:
    """Whether each data sequence agrees with the revealed (unmasked) tokens of each $z_t$."""
    seq = sequences.to(z_t.device)
    return ((z_t.unsqueeze(1) == seq) | (z_t.unsqueeze(1) == mask_id)).all(-1)


class EnumerableConditionalOracle:
    r"""Exact conditional denoisers of an enumerable joint $p(c, x)$.

    For label $c$ it is the exact $x^\star(z_t \mid c)_\ell = p(x_\ell \mid
    \text{unmasked tokens of } z_t, c)$; for the null label $C$ it is the
    exact unconditional $p(x_\ell \mid \text{unmasked tokens of } z_t)$.

    Args:
        joint: $p(c, x)$ as a tensor of shape `(C,) + (V,) * L`
            (unnormalised is fine).
        mask_id: The mask id; defaults to $V$.
    """

    time_conditioned = False

    def __init__(self, joint: Tensor, *, mask_id: int | None = None) -> None:
        _check_joint(joint)
        self.joint = joint.double() / joint.double().sum()
        self.num_classes = joint.shape[0]
        self.oracles = [EnumerableOracle(p, mask_id=mask_id) for p in self.joint]
        self.oracles.append(EnumerableOracle(self.joint.sum(0), mask_id=mask_id))
        self.vocab_size, self.length = self.oracles[0].vocab_size, self.oracles[0].length
        self.mask_id = self.oracles[0].mask_id

    def __call__(
        self, z_t: Tokens, t: Times, label: Int[Tensor, "batch"]
    ) -> Float[Tensor, "batch length vocab"]:
        r"""$\log p(x_\ell \mid \text{unmasked tokens of } z_t, y)$, `(B, L, V)`."""
        out = torch.empty(*z_t.shape, self.vocab_size, device=z_t.device)
        for y in label.unique().tolist():
            rows = label == y
            out[rows] = self.oracles[y](z_t[rows], t[rows])
        return out

    def classifier(self) -> "EnumerableClassifier":
        r"""The exact noisy classifier $p(c \mid z_t)$ of the same joint."""
        return EnumerableClassifier(self.joint, mask_id=self.mask_id)


class EnumerableClassifier:
    r"""The exact noisy-sequence classifier $p(c \mid z_t)$ of an enumerable $p(c, x)$.

    $$
    p(c \mid z_t) \propto \sum_x p(c, x) \prod_\ell
    \big([z_t^\ell = x^\ell] + [z_t^\ell = m]\big).
    $$

    For a float input (one-hot rows $h^\ell$) the indicator product becomes
    the multilinear $\prod_\ell (h^\ell_{x^\ell} + h^\ell_m)$, which equals it on
    one-hot inputs and is differentiable, so first-order guidance can use it.
    Sequences whose revealed tokens have zero probability get the prior $p(c)$.

    Args:
        joint: $p(c, x)$, shape `(C,) + (V,) * L`.
        mask_id: The mask id; defaults to $V$.
        chunk_size: Sequences scored per batch (bounds memory).
    """

    time_conditioned = False

    def __init__(self, joint: Tensor, *, mask_id: int | None = None, chunk_size: int = 4096):
        _check_joint(joint)
        self.num_classes, self.vocab_size = joint.shape[0], joint.shape[1]
        self.length = joint.dim() - 1
        self.mask_id = self.vocab_size if mask_id is None else mask_id
        self.chunk_size = chunk_size
        joint = joint.double() / joint.double().sum()
        self.table = joint.reshape(self.num_classes, -1).T.contiguous()  # (K, C)
        self.sequences = _all_sequences(self.vocab_size, self.length)

    def __call__(self, z_t: Tensor, t: Times) -> Float[Tensor, "batch classes"]:
        r"""$\log p(c \mid z_t)$ `(B, C)`, from ids `(B, L)` or one-hot `(B, L, V+1)`."""
        score = self._score_one_hot if z_t.is_floating_point() else self._score_ids
        size = self.chunk_size
        parts = [score(z_t[i : i + size]) for i in range(0, z_t.shape[0], size)]
        return torch.cat(parts).float()

    def _score_ids(self, z: Tensor) -> Tensor:
        return self._normalise(_consistent(z, self.sequences, self.mask_id).double())

    def _score_one_hot(self, h: Tensor) -> Tensor:
        h = h.double()
        seq = self.sequences.to(h.device)
        positions = torch.arange(self.length, device=h.device)
        agrees = h[:, positions, seq] + h[:, :, self.mask_id].unsqueeze(1)  # (B, K, L)
        return self._normalise(agrees.prod(-1))

    def _normalise(self, weights: Tensor) -> Tensor:
        r"""$\log p(c \mid z)$ from the consistency weights `(B, K)` of the sequences."""
        table = self.table.to(weights.device)
        mass = weights @ table  # (B, C)
        empty = mass.detach().sum(-1, keepdim=True) <= 0
        mass = torch.where(empty, table.sum(0).expand_as(mass), mass)
        return (mass / mass.sum(-1, keepdim=True)).log()


def _check_joint(joint: Tensor) -> None:
    if joint.dim() < 2 or len(set(joint.shape[1:])) != 1:
        raise ValueError(f"`joint` must have shape (C,) + (V,) * L; got {tuple(joint.shape)}")
    if joint.shape[0] < 1 or bool((joint < 0).any()) or not bool(joint.sum() > 0):
        raise ValueError("`joint` must be non-negative with positive total mass")
