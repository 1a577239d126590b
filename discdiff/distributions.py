r"""Distributions over sequences that factorise over positions.

`FactorizedCategorical` is the plain case, one categorical per position (the
marginals and posteriors of uniform-state noise). `MaskedCategorical` is the
one family of masked diffusion, mask-or-token per position:

Every distribution masked diffusion needs (the forward marginal
$q(z_t \mid x)$, the posteriors $q_\sigma(z_s \mid z_t, x)$ and the model's
reverse step $p_\theta(z_s \mid z_t)$) factorises over positions, and at each
position is a two-way mixture of the mask token and a distribution over data
tokens:

$$
P(z^\ell = m) = \mu^\ell, \qquad
P(z^\ell = v) = (1 - \mu^\ell)\, y^\ell_v, \quad v \in \{0, \dots, V-1\},
$$

where $y^\ell$ is either a given categorical $x^\ell$ (`probs`) or a point mass
on a carried-over token $c^\ell$ (`carry`). Keeping the two parts apart is
exact and never materialises a $(B, L, V+1)$ tensor.
"""

from typing import ClassVar

import torch
from jaxtyping import Bool, Float, Int
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.kl import register_kl

from discdiff._checks import validation_enabled
from discdiff.rng import RandomSource, uniform

__all__ = [
    "FactorizedCategorical",
    "MaskedCategorical",
    "TokenOrMask",
    "draw_categorical",
    "nucleus_",
]

_SIMPLEX_TOL = 1e-4


_CHUNKS = 8
"""Row chunks for per-row work on (..., V) tensors: a float64 buffer is ¼ of float32 probs."""


def draw_categorical(
    probs: Float[Tensor, "*batch vocab"],
    n: int = 1,
    *,
    generator: RandomSource = None,
    dtype: torch.dtype = torch.float64,
    where: Bool[Tensor, "*batch"] | None = None,
) -> Int[Tensor, "*batch n"]:
    r"""`n` exact inverse-CDF draws from each categorical in `probs` (unnormalised is fine).

    The cumulative sums are taken in `dtype`. In float32 an increment below
    $2^{-24}$ of the running total is lost, so tokens in the tail of a large
    vocabulary are never drawn; float64 keeps them (Zheng et al., 2024). The
    CDF is built an eighth of the rows at a time in one reused buffer, a
    quarter of the size of float32 `probs`. Zero-probability entries are never
    drawn.

    Args:
        probs: Non-negative weights, `(..., V)`.
        n: Draws per categorical.
        generator: Random generator for reproducible draws; with a
            `SequenceGenerator` the first dimension of `probs` indexes its sequences.
        dtype: Precision of the cumulative sums.
        where: Draw only for these categoricals (the others return 0): the
            uniform numbers are still made for every one, so the draws that are
            made equal those without `where`, and the $O(V)$ work is spent on the
            selected rows only (one host synchronisation to count them).

    Returns:
        Indices `(..., n)`.
    """
    u = uniform((*probs.shape[:-1], n), generator=generator, dtype=dtype, device=probs.device)
    return _categorical_from(probs, u, dtype, where)


def _categorical_from(probs: Tensor, u: Tensor, dtype: torch.dtype, where: Tensor | None) -> Tensor:
    """`draw_categorical` with its uniform numbers `u` `(..., n)` already made."""
    n = u.shape[-1]
    rows = probs.detach().reshape(-1, probs.shape[-1])
    u = u.reshape(rows.shape[0], n)
    if where is not None:
        picked = where.reshape(-1).nonzero().squeeze(-1)
        out = torch.zeros(rows.shape[0], n, dtype=torch.long, device=probs.device)
        if picked.numel():
            drawn = _inverse_cdf(rows.index_select(0, picked), u.index_select(0, picked), dtype)
            out.index_copy_(0, picked, drawn)
        return out.reshape(*probs.shape[:-1], n)
    return _inverse_cdf(rows, u, dtype).reshape(*probs.shape[:-1], n)


def _inverse_cdf(rows: Tensor, u: Tensor, dtype: torch.dtype) -> Tensor:
    """Indices `(N, n)` of the draws `u` `(N, n)` from `(N, V)` weights, chunk by chunk."""
    probs = rows
    out = torch.empty(rows.shape[0], u.shape[1], dtype=torch.long, device=probs.device)
    step = max(1, -(-rows.shape[0] // _CHUNKS))
    cdf = torch.empty(min(step, rows.shape[0]), rows.shape[1], dtype=dtype, device=probs.device)
    for start in range(0, rows.shape[0], step):
        chunk = rows[start : start + step]
        block = cdf[: chunk.shape[0]]
        torch.cumsum(chunk, -1, dtype=dtype, out=block)
        drawn = torch.searchsorted(block, u[start : start + step] * block[:, -1:], right=True)
        out[start : start + step] = drawn.clamp_max(probs.shape[-1] - 1)
    return out


def nucleus_(
    probs: Float[Tensor, "rows vocab"],
    top_p: float,
    rule: str = "standard",
    *,
    head: int = 128,
    rows: Int[Tensor, "picked"] | None = None,
) -> Float[Tensor, "rows vocab"]:
    r"""Nucleus (top-p) in place on normalised rows, by a threshold found in the head.

    With the probabilities sorted, $p_{(1)} \ge p_{(2)} \ge \dots$, and
    cumulative masses $c_j$, the nucleus keeps the tokens with
    $p_v \ge \lambda^* = p_{(j^*)}$ and renormalises, where $j^*$ is the last kept
    rank: the first $j$ with $c_j \ge p$ (`"standard"`: the token that crosses
    $p$ is kept) or the last with $c_j \le p$, at least 1 (`"remdm"`, ReMDM's
    code). The threshold $\lambda^*$ is searched among the `head` largest
    probabilities of each row (a partial selection, $O(V)$), not by sorting all
    $V$: a row whose head already holds mass $p$ is decided by its head alone.
    Only rows whose nucleus is wider than the head (near-uniform rows) are
    sorted in full; deciding whether there are any is one host synchronisation
    per chunk of rows. Rows are processed an eighth at a time (bounded memory).

    Args:
        probs: `(N, V)` probabilities, each row summing to 1; changed in place.
        top_p: Nucleus mass $p \in (0, 1]$.
        rule: `"standard"` (textbook, Hugging Face) or `"remdm"`.
        head: Size of the partial selection searched first.
        rows: Indices of the rows to shape (the others are left as they are);
            all rows when `None`.

    Returns:
        `probs`, renormalised over each (selected) row's nucleus.

    Example:
        >>> nucleus_(torch.tensor([[0.05, 0.85, 0.10]]), 0.9)
        tensor([[0.0000, 0.8947, 0.1053]])
        >>> nucleus_(torch.tensor([[0.05, 0.85, 0.10]]), 0.9, "remdm")
        tensor([[0., 1., 0.]])
    """
    if rule not in ("standard", "remdm"):
        raise ValueError(f"`rule` must be 'standard' or 'remdm'; got {rule!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"`top_p` must lie in (0, 1]; got {top_p}")
    count = probs.shape[0] if rows is None else rows.numel()
    step = max(1, -(-count // _CHUNKS))
    for start in range(0, count, step):
        if rows is None:
            _nucleus_chunk_(probs[start : start + step], top_p, rule, head)
        else:  # shaped a chunk at a time, while it is in cache
            picked = rows[start : start + step]
            probs.index_copy_(
                0, picked, _nucleus_chunk_(probs.index_select(0, picked), top_p, rule, head)
            )
    return probs


def _nucleus_chunk_(chunk: Tensor, top_p: float, rule: str, head: int) -> Tensor:
    """`nucleus_` on contiguous rows, in place: the head decides, the rest go to the histogram."""
    k = min(head, chunk.shape[-1])
    values, index = chunk.topk(k, dim=-1, sorted=True)
    decided = _keep_sorted_(values, top_p, rule)
    if k == chunk.shape[-1] or bool(decided.all()):
        return chunk.zero_().scatter_(-1, index, values)
    if not bool(decided.any()):
        return _wide_nucleus_(chunk, top_p, rule)
    wide, narrow = (~decided).nonzero().squeeze(-1), decided.nonzero().squeeze(-1)
    chunk.index_copy_(0, wide, _wide_nucleus_(chunk.index_select(0, wide), top_p, rule))
    heads = torch.zeros(len(narrow), chunk.shape[-1], dtype=chunk.dtype, device=chunk.device)
    heads.scatter_(-1, index[narrow], values[narrow])
    return chunk.index_copy_(0, narrow, heads)


_BIN_SHIFT = 19  # keep the exponent and 4 mantissa bits: 16 bins per octave
_BINS = (0x3F800000 >> _BIN_SHIFT) + 1  # the bin of 1.0 (float32 bits 0x3F800000) is the last


def _wide_nucleus_(rows: Tensor, top_p: float, rule: str) -> Tensor:
    r"""The nucleus of float32 rows wider than the head, in place: a histogram, then exact.

    Tokens are binned by the top bits of their float32 probability (exponent
    and four mantissa bits: 16 bins per octave, ordered by probability since the
    bit patterns of non-negative floats are), and the bins' masses summed, one
    pass; the bin where the cumulative mass (from the top) crosses $p$ holds
    $\lambda^*$. Lower bins are dropped, higher ones kept, and only the few
    tokens inside that bin are gathered and ordered (by row, then by
    probability, ties by position) to place the cut exactly.
    """
    # Bin ids offset by row, so that one flat index_add (int32 ids) sums every row's bins.
    key = rows.view(torch.int32).bitwise_right_shift(_BIN_SHIFT)
    offsets = torch.arange(0, rows.shape[0] * _BINS, _BINS, dtype=torch.int32, device=rows.device)
    key += offsets.unsqueeze(1)
    mass = torch.zeros(rows.shape[0] * _BINS, dtype=rows.dtype, device=rows.device)
    mass.index_add_(0, key.view(-1), rows.reshape(-1))
    mass = mass.view(rows.shape[0], _BINS).flip(1).double()  # most likely bin first
    cumulative = mass.cumsum(1)
    crossed = cumulative < top_p if rule == "standard" else cumulative <= top_p
    cut = crossed.sum(1, keepdim=True).clamp_max(_BINS - 1)
    above = (cumulative - mass).gather(1, cut).squeeze(1)  # the mass of the kept bins
    cut_key = (_BINS - 1 - cut).int() + offsets.unsqueeze(1)
    # The cut bin's tokens, row by row, most likely first.
    row, col = (key == cut_key).nonzero(as_tuple=True)
    values = rows[row, col].double()
    order = values.argsort(descending=True, stable=True)
    order = order[row[order].argsort(stable=True)]
    row, col, values = row[order], col[order], values[order]
    counts = torch.unique_consecutive(row, return_counts=True)[1]
    starts = counts.cumsum(0) - counts  # each row's first token in the bin
    first = torch.zeros_like(row, dtype=torch.bool).index_fill_(0, starts, True)
    within = values.cumsum(0)
    before = (within - values)[starts].repeat_interleave(counts)  # earlier rows' tokens
    reached = above[row] + within - before  # mass up to and including each token
    if rule == "standard":
        keep = (reached - values) < top_p
    else:
        keep = (reached <= top_p) | ((above[row] == 0) & first)  # the top token is kept
    rows.masked_fill_(key < cut_key, 0.0)
    rows[row[~keep], col[~keep]] = 0.0
    return rows.div_(rows.sum(-1, keepdim=True))


def _keep_sorted_(values: Tensor, top_p: float, rule: str) -> Tensor:
    """Apply the nucleus rule in place to descending `(N, k)` values (renormalised over the kept).

    Returns the rows whose decision is complete within the `k` values: the last
    of them is already dropped (or, for `"standard"`, the mass reaches `top_p`).
    """
    mass = values.cumsum(-1)
    if rule == "standard":
        drop = (mass - values) >= top_p  # the more likely tokens already hold p
        decided = mass[:, -1] >= top_p
    else:
        drop = mass > top_p
        drop[:, 0] = False  # the top token is always kept
        decided = drop[:, -1]
    values.masked_fill_(drop, 0.0)
    values.div_(values.sum(-1, keepdim=True))
    return decided


class TokenOrMask(constraints.Constraint):
    r"""The support of a `MaskedCategorical` position: integers in `{0..V-1}` or the mask id.

    Args:
        vocab_size: $V$, the number of data tokens.
        mask_id: The mask id, $\ge V$.
    """

    is_discrete = True
    event_dim = 0

    def __init__(self, vocab_size: int, mask_id: int) -> None:
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        super().__init__()

    def check(self, value: Tensor) -> Tensor:
        """Elementwise: is `value` a data token or the mask id?

        Args:
            value: Token ids, any shape.

        Returns:
            A boolean tensor with the shape of `value`.
        """
        in_vocab = (value >= 0) & (value < self.vocab_size) & (value == value.floor())
        return in_vocab | (value == self.mask_id)

    def __repr__(self) -> str:
        return f"TokenOrMask(vocab_size={self.vocab_size}, mask_id={self.mask_id})"


class _LooseSimplex(constraints.Constraint):
    """The probability simplex, with a tolerance that float32 softmax meets."""

    event_dim = 1

    def check(self, value: Tensor) -> Tensor:
        nonneg = (value >= 0).all(-1)
        return nonneg & ((value.sum(-1) - 1.0).abs() < _SIMPLEX_TOL)


class MaskedCategorical(TorchDistribution):
    r"""A product over positions of "mask with probability $\mu$, else a token".

    At position $\ell$ the token part is the carried-over token
    $c^\ell$ when `carry[ℓ]` is a data token, and a draw from `probs[ℓ]`
    when `carry[ℓ]` is the mask id (or `carry` is omitted). The batch shape
    is `(B,)` and the event shape `(L,)`.

    Args:
        mask_prob: $\mu$, the probability of the mask at each position, `(B, L)`.
        vocab_size: $V$, the number of data tokens.
        mask_id: The id of the mask token, $\ge V$.
        probs: Distribution over data tokens at each position, `(B, L, V)`.
            May be omitted when every position is carried.
        carry: Token ids `(B, L)`: data tokens are carried over, the mask id
            means "draw from `probs`".
        validate_args: Check arguments and values (defaults to torch's flag).

    Example:
        >>> d = MaskedCategorical(torch.full((1, 3), 0.5), vocab_size=2, mask_id=2,
        ...                       carry=torch.tensor([[0, 1, 2]]),
        ...                       probs=torch.tensor([[[0.5, 0.5]] * 3]))
        >>> d.log_prob(torch.tensor([[0, 2, 1]])).exp()
        tensor([0.0625])
    """

    arg_constraints: ClassVar[dict] = {
        "mask_prob": constraints.unit_interval,
        "probs": _LooseSimplex(),
    }
    has_enumerate_support = False

    def __init__(
        self,
        mask_prob: Float[Tensor, "batch length"],
        *,
        vocab_size: int,
        mask_id: int,
        probs: Float[Tensor, "batch length vocab"] | None = None,
        carry: Int[Tensor, "batch length"] | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if mask_id < vocab_size:
            raise ValueError(
                f"`mask_id` must not be a data token (>= vocab_size={vocab_size}); got {mask_id}"
            )
        if probs is None and carry is None:
            raise ValueError("give `probs`, `carry` or both")
        if probs is not None and probs.shape[-1] != vocab_size:
            raise ValueError(
                f"`probs` must have vocab_size={vocab_size} entries in its last "
                f"dimension; got shape {tuple(probs.shape)}"
            )
        self.mask_prob = mask_prob
        self.probs = probs
        self.carry = carry
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        *batch_shape, length = mask_prob.shape
        for name, value in (("probs", probs), ("carry", carry)):
            if value is not None and tuple(value.shape[: len(batch_shape) + 1]) != tuple(
                mask_prob.shape
            ):
                raise ValueError(
                    f"`{name}` has shape {tuple(value.shape)}, which does not match "
                    f"`mask_prob` {tuple(mask_prob.shape)}"
                )
        if validate_args is None:
            validate_args = validation_enabled()
        if probs is None:
            # `arg_constraints` is checked per attribute; skip the missing one.
            self.arg_constraints = {"mask_prob": constraints.unit_interval}
        super().__init__(torch.Size(batch_shape), torch.Size([length]), validate_args)
        if validate_args and carry is not None:
            if not bool(self.support.check(carry).all()):
                raise ValueError(
                    f"`carry` holds ids outside {{0..{vocab_size - 1}}} ∪ {{{mask_id}}}"
                )
            if probs is None and bool((carry == mask_id).any()):
                raise ValueError("`carry` holds the mask id, so `probs` is needed")

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        """Data tokens and the mask id, independently at each position."""
        return constraints.independent(TokenOrMask(self.vocab_size, self.mask_id), 1)

    @property
    def carried(self) -> Tensor:
        """`True` where the token part is a carried-over token."""
        if self.carry is None:
            return torch.zeros_like(self.mask_prob, dtype=torch.bool)
        return self.carry != self.mask_id

    def token_probs(self) -> Float[Tensor, "*batch length vocab"]:
        """The token part $y$ as dense probabilities (one-hot where carried).

        Returns:
            $y$ `(..., L, V)`: `probs`, with the one-hot of `carry` at carried positions.
        """
        if self.carry is None:
            return self.probs
        carried = self.carried
        one_hot = torch.nn.functional.one_hot(
            torch.where(carried, self.carry, 0), self.vocab_size
        ).to(self.mask_prob.dtype)
        if self.probs is None:
            return one_hot
        return torch.where(carried.unsqueeze(-1), one_hot, self.probs)

    def expand(self, batch_shape, _instance=None):  # noqa: D102 (pyro's documented method)
        new = self._get_checked_instance(MaskedCategorical, _instance)
        batch_shape = torch.Size(batch_shape)
        length = self.event_shape[0]
        new.mask_prob = self.mask_prob.expand((*batch_shape, length))
        new.probs = (
            None
            if self.probs is None
            else self.probs.expand((*batch_shape, length, self.vocab_size))
        )
        new.carry = None if self.carry is None else self.carry.expand((*batch_shape, length))
        new.vocab_size, new.mask_id = self.vocab_size, self.mask_id
        if self.probs is None:
            new.arg_constraints = self.arg_constraints
        super(MaskedCategorical, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(
        self,
        sample_shape: tuple[int, ...] = (),
        *,
        generator: RandomSource = None,
        dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        r"""Draw $z$ with shape `sample_shape + batch_shape + (L,)`.

        Factorised and exact: one Bernoulli per position for the mask, and a
        token from `draw_categorical` where the token part is not carried.

        Args:
            sample_shape: Leading shape of independent draws.
            generator: Random generator for reproducible draws (a `torch.Generator`,
                or a `SequenceGenerator` serving the batch's sequences).
            dtype: Precision of the token draw; float64 by default, since
                float32 drops the tail of large vocabularies.

        Returns:
            Token ids `sample_shape + (B, L)`: data tokens or the mask id.
        """
        shape = self._extended_shape(torch.Size(sample_shape))
        device = self.mask_prob.device
        tokens = torch.full(shape, self.mask_id, dtype=torch.long, device=device)
        if self.carry is not None:
            tokens = torch.where(self.carried, self.carry, tokens)
        if self.probs is None:
            return torch.where(
                self._mask_draw(shape, sample_shape, generator), self.mask_id, tokens
            )
        # The token numbers come first, then the mask numbers (the stream's order);
        # the O(V) inverse CDFs wait for the mask numbers, so that a single draw
        # builds them only where a token is drawn and kept.
        n = int(torch.Size(sample_shape).numel())
        u = uniform((*self.probs.shape[:-1], n), generator=generator, dtype=dtype, device=device)
        masked = self._mask_draw(shape, sample_shape, generator)
        needed = ~self.carried.expand(self.probs.shape[:-1])
        if not sample_shape:
            needed = needed & ~masked
        drawn = _categorical_from(self.probs, u, dtype, needed)
        tokens = torch.where(tokens == self.mask_id, drawn.movedim(-1, 0).reshape(shape), tokens)
        return torch.where(masked, self.mask_id, tokens)

    def _mask_draw(
        self, shape: torch.Size, sample_shape: tuple[int, ...], generator: RandomSource
    ) -> Tensor:
        """Where the draw is the mask: `u < μ`, one float64 uniform per position."""
        u = uniform(
            shape,
            generator=generator,
            dtype=torch.float64,
            device=self.mask_prob.device,
            batch_dim=len(sample_shape),
        )
        return u < self.mask_prob

    def position_log_prob(self, value: Int[Tensor, "*batch length"]) -> Tensor:
        r"""Log-probabilities of `value` per position (summed by `log_prob`).

        $\log P(z^\ell) = \log\mu^\ell$ for the mask, and
        $\log(1 - \mu^\ell) + \log y^\ell[z^\ell]$ for a token.

        Args:
            value: Token ids `(..., L)`, broadcastable against the batch shape.

        Returns:
            `(..., L)` log-probabilities ($-\infty$ for impossible tokens).
        """
        if self._validate_args:
            self._validate_sample(value)
        value = value.expand(torch.broadcast_shapes(value.shape, self.mask_prob.shape))
        is_mask = value == self.mask_id
        token = torch.where(is_mask, 0, value).long()
        log_keep = torch.log1p(-self.mask_prob)
        if self.probs is not None:
            probs = self.probs.expand((*value.shape, self.vocab_size))
            token_lp = probs.gather(-1, token.unsqueeze(-1)).squeeze(-1).log()
        else:
            token_lp = torch.zeros_like(log_keep)
        if self.carry is not None:
            match = torch.where(token == self.carry, 0.0, -torch.inf).to(log_keep.dtype)
            token_lp = torch.where(self.carried, match, token_lp)
        return torch.where(is_mask, self.mask_prob.log(), log_keep + token_lp)

    def log_prob(self, value: Int[Tensor, "*batch length"]) -> Tensor:
        r"""$\log P(z) = \sum_\ell \log P(z^\ell)$.

        Args:
            value: Token ids `(..., L)`, broadcastable against the batch shape.

        Returns:
            Log-probabilities with shape `value.shape[:-1]` (broadcast).
        """
        return self.position_log_prob(value).sum(-1)

    def position_kl(self, other: "MaskedCategorical") -> Tensor:
        r"""$\mathrm{KL}(\text{self} \,\|\, \text{other})$ per position (summed by `kl_divergence`).

        $\mathrm{KL}(\mathrm{Ber}(\mu_q) \| \mathrm{Ber}(\mu_p))
        + (1 - \mu_q)\, \mathrm{KL}(y_q \| y_p)$, where the token part is left
        out at positions that are surely masked under `self`.

        Args:
            other: A `MaskedCategorical` over the same vocabulary and mask id.

        Returns:
            `(*batch, L)` KLs in nats.

        Raises:
            ValueError: If the vocabularies or mask ids differ.
        """
        if (self.vocab_size, self.mask_id) != (other.vocab_size, other.mask_id):
            raise ValueError("KL needs both distributions over the same vocabulary and mask id")
        mu_q, mu_p = self.mask_prob, other.mask_prob
        binary = (
            torch.xlogy(mu_q, mu_q)
            - torch.xlogy(mu_q, mu_p)
            + torch.xlogy(1 - mu_q, 1 - mu_q)
            - torch.xlogy(1 - mu_q, 1 - mu_p)
        )
        y_q, y_p = self.token_probs(), other.token_probs()
        token_kl = (torch.xlogy(y_q, y_q) - torch.xlogy(y_q, y_p)).sum(-1)
        return binary + torch.where(mu_q < 1, (1 - mu_q) * token_kl, 0.0)

    def entropy(self) -> Tensor:
        r"""$H = \sum_\ell h(\mu^\ell) + (1 - \mu^\ell) H(y^\ell)$, in nats.

        $h$ is the binary entropy of the mask indicator and $H(y^\ell)$ the
        entropy of the token part (0 where carried).

        Returns:
            The entropy per batch element, `(B,)`.
        """
        mu = self.mask_prob
        y = self.token_probs()
        token_entropy = -torch.xlogy(y, y).sum(-1)
        binary = -torch.xlogy(mu, mu) - torch.xlogy(1 - mu, 1 - mu)
        return (binary + (1 - mu) * token_entropy).sum(-1)


@register_kl(MaskedCategorical, MaskedCategorical)
def _kl_masked_categorical(q, p):
    """Closed-form KL, summed over positions (`MaskedCategorical.position_kl`)."""
    return q.position_kl(p).sum(-1)


class FactorizedCategorical(TorchDistribution):
    r"""Independent categoricals over the data tokens: $\prod_\ell \mathrm{Cat}(p^\ell)$.

    The batch shape is `(B,)` and the event shape `(L,)`, as for
    `MaskedCategorical`; draws go through `draw_categorical` (float64 CDFs,
    `SequenceGenerator` streams).

    Args:
        probs: Probabilities `(B, L, V)`, each row on the simplex.
        validate_args: Check arguments and values (defaults to torch's flag).

    Example:
        >>> d = FactorizedCategorical(torch.tensor([[[0.5, 0.5], [1.0, 0.0]]]))
        >>> d.log_prob(torch.tensor([[1, 0]])).exp()
        tensor([0.5000])
    """

    arg_constraints: ClassVar[dict] = {"probs": _LooseSimplex()}
    has_enumerate_support = False

    def __init__(
        self,
        probs: Float[Tensor, "batch length vocab"],
        *,
        validate_args: bool | None = None,
    ) -> None:
        if probs.dim() < 2:
            raise ValueError(f"`probs` must have shape (..., L, V); got {tuple(probs.shape)}")
        self.probs = probs
        self.vocab_size = probs.shape[-1]
        if validate_args is None:
            validate_args = validation_enabled()
        super().__init__(probs.shape[:-2], probs.shape[-2:-1], validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        """Data tokens, independently at each position."""
        return constraints.independent(constraints.integer_interval(0, self.vocab_size - 1), 1)

    def token_probs(self) -> Float[Tensor, "*batch length vocab"]:
        """The probabilities `(..., L, V)` (as `MaskedCategorical.token_probs`)."""
        return self.probs

    def expand(self, batch_shape, _instance=None):  # noqa: D102 (pyro's documented method)
        new = self._get_checked_instance(FactorizedCategorical, _instance)
        batch_shape = torch.Size(batch_shape)
        new.probs = self.probs.expand((*batch_shape, *self.probs.shape[-2:]))
        new.vocab_size = self.vocab_size
        super(FactorizedCategorical, new).__init__(
            batch_shape, self.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def sample(
        self,
        sample_shape: tuple[int, ...] = (),
        *,
        generator: RandomSource = None,
        dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        """Draw tokens with shape `sample_shape + batch_shape + (L,)`.

        Args:
            sample_shape: Leading shape of independent draws.
            generator: Random generator (a `torch.Generator` or a `SequenceGenerator`).
            dtype: Precision of the inverse-CDF draw.

        Returns:
            Token ids in `0..V-1`.
        """
        shape = self._extended_shape(torch.Size(sample_shape))
        n = int(torch.Size(sample_shape).numel())
        drawn = draw_categorical(self.probs, n, generator=generator, dtype=dtype)
        return drawn.movedim(-1, 0).reshape(shape)

    def position_log_prob(self, value: Int[Tensor, "*batch length"]) -> Tensor:
        r"""$\log p^\ell[z^\ell]$ per position (summed by `log_prob`).

        Args:
            value: Token ids `(..., L)`, broadcastable against the batch shape.

        Returns:
            `(..., L)` log-probabilities.
        """
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape, self.probs.shape[:-1])
        probs = self.probs.expand((*shape, self.vocab_size))
        return probs.gather(-1, value.expand(shape).long().unsqueeze(-1)).squeeze(-1).log()

    def log_prob(self, value: Int[Tensor, "*batch length"]) -> Tensor:
        r"""$\log P(z) = \sum_\ell \log p^\ell[z^\ell]$.

        Args:
            value: Token ids `(..., L)`, broadcastable against the batch shape.

        Returns:
            Log-probabilities with shape `value.shape[:-1]` (broadcast).
        """
        return self.position_log_prob(value).sum(-1)

    def position_kl(self, other: "FactorizedCategorical") -> Tensor:
        r"""$\mathrm{KL}(p^\ell \,\|\, q^\ell)$ per position (summed by `kl_divergence`).

        Args:
            other: A `FactorizedCategorical` over the same vocabulary.

        Returns:
            `(*batch, L)` KLs in nats.
        """
        p, q = self.probs, other.probs
        return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)

    def entropy(self) -> Tensor:
        r"""$H = -\sum_\ell \sum_v p^\ell_v \log p^\ell_v$ per batch element, in nats."""
        return -torch.xlogy(self.probs, self.probs).sum((-1, -2))


@register_kl(FactorizedCategorical, FactorizedCategorical)
def _kl_factorized_categorical(p, q):
    """Closed-form KL, summed over positions (`FactorizedCategorical.position_kl`)."""
    return p.position_kl(q).sum(-1)
