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

Both are usable at the edges of their parameters: a mask probability of
exactly 0 or 1 and token probabilities of exactly 0 give finite gradients of
`log_prob`, `entropy` and the registered KLs wherever the value is finite, equal
to the analytic derivative where that is finite. Every logarithm masks its
argument before it is taken (`torch.where` differentiates both branches, and a
$\log 0$ in the unused one would turn the gradient into NaN): $\log 0 = -\infty$
with a zero gradient, and a term $a \log b$ with $a = 0$ is dropped, value and
gradient alike. Where the one-sided derivative diverges ($\partial_a\, a \log a$
at $a = 0$: the entropy or KL at a surely-masked or never-masked position, or at
a token of probability 0), that convention gives the derivative of the sum
over the outcomes of positive probability, which is finite and, after any
parameterisation whose Jacobian vanishes there (softmax, sigmoid), exact.

Small supports can be listed (`enumerate_support`, at most
`MAX_ENUMERATED_STATES` sequences), so pyro's `TraceEnum_ELBO` sums over them
exactly (pyro's `infer_discrete` gathers site values as if they had no event
dimension, and does not take these sites). Sampling is the same under
`torch.jit.trace` and `torch.compile` as in eager mode: the data-dependent row
selection that saves work in eager mode is skipped when tracing.
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
    "MAX_ENUMERATED_STATES",
    "FactorizedCategorical",
    "MaskedCategorical",
    "TokenOrMask",
    "draw_categorical",
    "nucleus_",
]

_SIMPLEX_TOL = 1e-4

MAX_ENUMERATED_STATES = 4096
"""The most sequences `enumerate_support` lists: $(V + 1)^L$ or $V^L$ above it is refused."""


def _log(x: Tensor) -> Tensor:
    r"""$\log x$; $-\infty$ with a zero gradient at $x = 0$ (no $0 \cdot \infty$ in backward)."""
    zero = x == 0
    return torch.where(zero, -torch.inf, torch.where(zero, 1.0, x).log())


def _log1m(x: Tensor) -> Tensor:
    r"""$\log(1 - x)$, and $-\infty$ with a zero gradient at $x = 1$."""
    one = x == 1
    return torch.where(one, -torch.inf, torch.log1p(-torch.where(one, 0.0, x)))


def _xlogy(a: Tensor, b: Tensor) -> Tensor:
    r"""$a \log b$, with the term dropped (value and gradient 0) where $a = 0$."""
    zero = a == 0
    return torch.where(zero, 0.0, a * _log(torch.where(zero, 1.0, b)))


def _tracing() -> bool:
    """Whether the code runs under `torch.jit.trace` or `torch.compile` (shapes must not vary)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def _enumerate(
    ids: list[int], length: int, batch_dims: int, device: torch.device
) -> Int[Tensor, "states ..."]:
    """Every sequence of `length` tokens from `ids`, `(K, 1, ..., 1, length)`, the last fastest."""
    count = len(ids) ** length
    if count > MAX_ENUMERATED_STATES:
        raise ValueError(
            f"enumerate_support would list {len(ids)}^{length} = {count} sequences, more than "
            f"MAX_ENUMERATED_STATES = {MAX_ENUMERATED_STATES}; enumerate fewer positions "
            "or a smaller vocabulary"
        )
    index = torch.arange(count, device=device).unsqueeze(-1)
    place = len(ids) ** torch.arange(length - 1, -1, -1, device=device)
    digits = index.div(place, rounding_mode="floor").remainder(len(ids))
    values = torch.tensor(ids, device=device)[digits]
    return values.reshape(count, *(1,) * batch_dims, length)


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
            selected rows only (one host synchronisation to count them; under
            `torch.jit.trace` or `torch.compile` every row is drawn instead).

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
    if where is not None and _tracing():  # the selected rows' count is data: draw every row
        drawn = _inverse_cdf(rows, u, dtype)
        return torch.where(where.reshape(-1, 1), drawn, 0).reshape(*probs.shape[:-1], n)
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
        top_p: Nucleus mass $p \in (0, 1]$ (a `discdiff.shaping.Shaping` checks it).
        rule: `"standard"` (textbook, Hugging Face) or `"remdm"` (checked there too).
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
    when `carry[ℓ]` is the mask id (or `carry` is omitted). The event shape
    is `(L,)` and the batch shape that of `mask_prob` without its last
    dimension: `(B,)` for a batch of sequences, or any other (none included).

    Args:
        mask_prob: $\mu$, the probability of the mask at each position, `(*batch, L)`.
        vocab_size: $V$, the number of data tokens.
        mask_id: The id of the mask token, $\ge V$.
        probs: Distribution over data tokens at each position, `(*batch, L, V)`.
            May be omitted when every position is carried.
        carry: Token ids `(*batch, L)`: data tokens are carried over, the mask id
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
    has_enumerate_support = True

    def __init__(
        self,
        mask_prob: Float[Tensor, "*batch length"],
        *,
        vocab_size: int,
        mask_id: int,
        probs: Float[Tensor, "*batch length vocab"] | None = None,
        carry: Int[Tensor, "*batch length"] | None = None,
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

    @classmethod
    def infer_shapes(
        cls,
        mask_prob: tuple[int, ...],
        vocab_size: tuple[int, ...] = (),
        mask_id: tuple[int, ...] = (),
        probs: tuple[int, ...] | None = None,
        carry: tuple[int, ...] | None = None,
    ) -> tuple[torch.Size, torch.Size]:
        """`(batch_shape, event_shape)` of the distribution built from arguments of these shapes.

        Args:
            mask_prob: The shape of `mask_prob`, `(*batch, L)`.
            vocab_size: Unused (an integer).
            mask_id: Unused (an integer).
            probs: The shape of `probs`, `(*batch, L, V)`, if given.
            carry: The shape of `carry`, `(*batch, L)`, if given.

        Returns:
            `(*batch,)` and `(L,)`.
        """
        return torch.Size(mask_prob[:-1]), torch.Size(mask_prob[-1:])

    def enumerate_support(self, expand: bool = True) -> Int[Tensor, "states *batch length"]:
        r"""Every sequence in $\{0, \dots, V-1, m\}^L$, the last position varying fastest.

        The list is the same for every batch element (sequences a carried
        position rules out have probability 0), $(V + 1)^L$ of them, at most
        `MAX_ENUMERATED_STATES`.

        Args:
            expand: Expand over the batch shape (else its dimensions have size 1).

        Returns:
            Token ids `(K,) + batch_shape + (L,)`, or `(K, 1, ..., 1, L)`.

        Raises:
            ValueError: If $(V + 1)^L$ exceeds `MAX_ENUMERATED_STATES`.
        """
        ids = [*range(self.vocab_size), self.mask_id]
        support = _enumerate(ids, self.event_shape[0], len(self.batch_shape), self.mask_prob.device)
        return support.expand(-1, *self.batch_shape, -1) if expand else support

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
        mu = self.mask_prob
        # Each log sees only the argument of the branch that uses it (the safe where).
        log_keep = _log1m(torch.where(is_mask, 0.0, mu))
        if self.probs is not None:
            probs = self.probs.expand((*value.shape, self.vocab_size))
            token_p = probs.gather(-1, token.unsqueeze(-1)).squeeze(-1)
            token_lp = _log(torch.where(is_mask | self.carried, 1.0, token_p))
        else:
            token_lp = torch.zeros_like(log_keep)
        if self.carry is not None:
            match = torch.where(token == self.carry, 0.0, -torch.inf).to(log_keep.dtype)
            token_lp = torch.where(self.carried, match, token_lp)
        return torch.where(is_mask, _log(torch.where(is_mask, mu, 1.0)), log_keep + token_lp)

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
            _xlogy(mu_q, mu_q)
            - _xlogy(mu_q, mu_p)
            + _xlogy(1 - mu_q, 1 - mu_q)
            - _xlogy(1 - mu_q, 1 - mu_p)
        )
        # Surely masked under `self`: no token part (its KL may be infinite there).
        y_q = torch.where((mu_q < 1).unsqueeze(-1), self.token_probs(), 0.0)
        token_kl = (_xlogy(y_q, y_q) - _xlogy(y_q, other.token_probs())).sum(-1)
        return binary + (1 - mu_q) * token_kl

    def entropy(self) -> Tensor:
        r"""$H = \sum_\ell h(\mu^\ell) + (1 - \mu^\ell) H(y^\ell)$, in nats.

        $h$ is the binary entropy of the mask indicator and $H(y^\ell)$ the
        entropy of the token part (0 where carried).

        Returns:
            The entropy per batch element, `(B,)`.
        """
        mu = self.mask_prob
        y = self.token_probs()
        token_entropy = -_xlogy(y, y).sum(-1)
        binary = -_xlogy(mu, mu) - _xlogy(1 - mu, 1 - mu)
        return (binary + (1 - mu) * token_entropy).sum(-1)


@register_kl(MaskedCategorical, MaskedCategorical)
def _kl_masked_categorical(q, p):
    """Closed-form KL, summed over positions (`MaskedCategorical.position_kl`)."""
    return q.position_kl(p).sum(-1)


class FactorizedCategorical(TorchDistribution):
    r"""Independent categoricals over the data tokens: $\prod_\ell \mathrm{Cat}(p^\ell)$.

    The batch shape is `probs.shape[:-2]` (`(B,)` for a batch of sequences)
    and the event shape `(L,)`, as for `MaskedCategorical`; draws go through
    `draw_categorical` (float64 CDFs, `SequenceGenerator` streams).

    Args:
        probs: Probabilities `(*batch, L, V)`, each row on the simplex.
        validate_args: Check arguments and values (defaults to torch's flag).

    Example:
        >>> d = FactorizedCategorical(torch.tensor([[[0.5, 0.5], [1.0, 0.0]]]))
        >>> d.log_prob(torch.tensor([[1, 0]])).exp()
        tensor([0.5000])
    """

    arg_constraints: ClassVar[dict] = {"probs": _LooseSimplex()}
    has_enumerate_support = True

    def __init__(
        self,
        probs: Float[Tensor, "*batch length vocab"],
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

    @classmethod
    def infer_shapes(cls, probs: tuple[int, ...]) -> tuple[torch.Size, torch.Size]:
        """`(batch_shape, event_shape)` of the distribution built from `probs` of this shape.

        Args:
            probs: The shape of `probs`, `(*batch, L, V)`.

        Returns:
            `(*batch,)` and `(L,)`.
        """
        return torch.Size(probs[:-2]), torch.Size(probs[-2:-1])

    def enumerate_support(self, expand: bool = True) -> Int[Tensor, "states *batch length"]:
        r"""Every sequence in $\{0, \dots, V-1\}^L$, the last position varying fastest.

        Args:
            expand: Expand over the batch shape (else its dimensions have size 1).

        Returns:
            Token ids `(K,) + batch_shape + (L,)` with $K = V^L$, or `(K, 1, ..., 1, L)`.

        Raises:
            ValueError: If $V^L$ exceeds `MAX_ENUMERATED_STATES`.
        """
        ids = list(range(self.vocab_size))
        support = _enumerate(ids, self.event_shape[0], len(self.batch_shape), self.probs.device)
        return support.expand(-1, *self.batch_shape, -1) if expand else support

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
        return _log(probs.gather(-1, value.expand(shape).long().unsqueeze(-1)).squeeze(-1))

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
        return (_xlogy(p, p) - _xlogy(p, q)).sum(-1)

    def entropy(self) -> Tensor:
        r"""$H = -\sum_\ell \sum_v p^\ell_v \log p^\ell_v$ per batch element, in nats."""
        return -_xlogy(self.probs, self.probs).sum((-1, -2))


@register_kl(FactorizedCategorical, FactorizedCategorical)
def _kl_factorized_categorical(p, q):
    """Closed-form KL, summed over positions (`FactorizedCategorical.position_kl`)."""
    return p.position_kl(q).sum(-1)
