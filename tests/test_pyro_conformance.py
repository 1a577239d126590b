"""Pyro's generic distribution checks, run on every distribution the library builds.

The checks of pyro's `tests/distributions/test_distributions.py` (support,
shapes, `infer_shapes`, scoring errors, enumeration, `expand`, validation),
with pickling, and log-probabilities, entropies, KLs and samples checked
against brute-force enumeration. Every fixture has V = 3 data tokens (mask id
3), L = 2 to 4 positions, and is run with an empty and a (2, 3) batch shape, in
float64 and float32. The processes and posteriors build sequences `(B, L)`;
their six sequences are re-wrapped in the same class with the batch shape
under test.
"""

import pickle
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import scipy.stats
import torch
from exact import all_sequences
from pyro.distributions import TorchDistribution

import discdiff as dd

V, M = 3, 3
BATCH = 6  # sequences a fixture builds, re-wrapped as `()` (the first) or `(2, 3)`
GOF_SAMPLES = 4000  # per batch element
GOF_FLOOR = 1e-3  # false-failure rate of one goodness-of-fit check (seeds fixed)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mu(length: int, seed: int) -> torch.Tensor:
    return torch.rand(BATCH, length, generator=_generator(seed), dtype=torch.float64)


def _probs(length: int, seed: int) -> torch.Tensor:
    logits = torch.randn(BATCH, length, V, generator=_generator(seed), dtype=torch.float64)
    return logits.softmax(-1)


def _tokens(length: int, seed: int, high: int = V) -> torch.Tensor:
    return torch.randint(0, high, (BATCH, length), generator=_generator(seed))


def _times(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = 0.3 + 0.6 * torch.rand(BATCH, generator=_generator(seed), dtype=torch.float64)
    return t, t * 0.6


def _masking() -> dd.MaskingProcess:
    return dd.MaskingProcess(schedule=dd.LogLinear(), vocab_size=V)


def _uniform() -> dd.UniformProcess:
    return dd.UniformProcess(vocab_size=V)


def _masked_with_edges(seed: int) -> TorchDistribution:
    """Mask probabilities 0 and 1 and tokens of probability 0, with carried positions."""
    mu = _mu(4, seed)
    mu[:, 0], mu[:, 1] = 0.0, 1.0
    probs = _probs(4, seed + 1)
    probs[:, 2, 0] = 0.0
    probs = probs / probs.sum(-1, keepdim=True)
    carry = _tokens(4, seed + 2, high=V + 1)
    return dd.distributions.MaskedCategorical(mu, vocab_size=V, mask_id=M, probs=probs, carry=carry)


def _factorized_with_a_zero(seed: int) -> TorchDistribution:
    probs = _probs(3, seed)
    probs[:, 1, 2] = 0.0
    return dd.distributions.FactorizedCategorical(probs / probs.sum(-1, keepdim=True))


def _posterior(posterior, seed: int, s_zero: bool = False) -> TorchDistribution:
    z_t = _tokens(3, seed, high=V + 1)
    t, s = _times(seed + 1)
    return posterior(_masking(), z_t, _probs(3, seed + 2), t, 0.0 if s_zero else s)


def _uniform_posterior(seed: int) -> TorchDistribution:
    t, s = _times(seed + 1)
    return dd.UniformPosterior()(_uniform(), _tokens(3, seed), _probs(3, seed + 2), t, s)


FIXTURES: dict[str, Callable[[int], TorchDistribution]] = {
    "MaskedCategorical(probs)": lambda seed: dd.distributions.MaskedCategorical(
        _mu(2, seed), vocab_size=V, mask_id=M, probs=_probs(2, seed + 1)
    ),
    "MaskedCategorical(carry)": lambda seed: dd.distributions.MaskedCategorical(
        _mu(3, seed), vocab_size=V, mask_id=M, carry=_tokens(3, seed + 1)
    ),
    "MaskedCategorical(probs, carry) at its edges": _masked_with_edges,
    "FactorizedCategorical with a zero": _factorized_with_a_zero,
    "MaskingProcess.marginal(tokens)": lambda seed: _masking().marginal(
        _tokens(3, seed), _times(seed)[0]
    ),
    "MaskingProcess.marginal(probs)": lambda seed: _masking().marginal(
        _probs(2, seed), _times(seed)[0]
    ),
    "MaskingProcess.prior": lambda seed: _masking().prior(BATCH, 2),
    "UniformProcess.marginal": lambda seed: _uniform().marginal(_tokens(3, seed), _times(seed)[0]),
    "UniformProcess.prior": lambda seed: _uniform().prior(BATCH, 2),
    "MaskingPosterior": lambda seed: _posterior(dd.MaskingPosterior(), seed),
    "MaskingPosterior at s = 0": lambda seed: _posterior(dd.MaskingPosterior(), seed, True),
    "RemaskPosterior(CapSchedule(0.04))": lambda seed: _posterior(
        dd.RemaskPosterior(dd.CapSchedule(0.04)), seed
    ),
    "UniformPosterior": _uniform_posterior,
}


def params_of(d: TorchDistribution) -> dict:
    """The constructor's arguments of `d` (pyro's `dist_params`)."""
    if isinstance(d, dd.distributions.FactorizedCategorical):
        return {"probs": d.probs}
    out = {"mask_prob": d.mask_prob, "vocab_size": d.vocab_size, "mask_id": d.mask_id}
    out.update({k: v for k, v in (("probs", d.probs), ("carry", d.carry)) if v is not None})
    return out


def rebatch(d: TorchDistribution, batch_shape: tuple[int, ...], dtype: torch.dtype):
    """`d`'s sequences as a distribution of the same class with `batch_shape`, in `dtype`."""

    def reshape(value):
        if not isinstance(value, torch.Tensor):
            return value
        value = value[0] if batch_shape == () else value.reshape(*batch_shape, *value.shape[1:])
        return value.to(dtype) if value.is_floating_point() else value

    params = {k: reshape(v) for k, v in params_of(d).items()}
    if "probs" in params:  # a float32 cast may leave the simplex by an ulp: renormalise
        params["probs"] = params["probs"] / params["probs"].sum(-1, keepdim=True)
    return type(d)(**params)


@dataclass(frozen=True)
class Case:
    """One fixture at one batch shape and dtype."""

    name: str
    batch_shape: tuple[int, ...]
    dtype: torch.dtype

    def build(self, seed: int = 0) -> TorchDistribution:
        return rebatch(FIXTURES[self.name](seed), self.batch_shape, self.dtype)

    def __str__(self) -> str:
        return f"{self.name}-{self.batch_shape}-{str(self.dtype)[6:]}"


CASES = [
    Case(name, batch, dtype)
    for name in FIXTURES
    for batch in ((), (2, 3))
    for dtype in (torch.float64, torch.float32)
]


@pytest.fixture(params=CASES, ids=str)
def case(request) -> Case:
    return request.param


def enumerated(d: TorchDistribution) -> torch.Tensor:
    """Every sequence of the distribution's alphabet, `(K, 1, ..., 1, L)` (built by hand)."""
    ids = [*range(V), M] if isinstance(d, dd.distributions.MaskedCategorical) else list(range(V))
    support = all_sequences(d.event_shape[0], ids)
    return support.reshape(len(support), *(1,) * len(d.batch_shape), d.event_shape[0])


def position_table(d: TorchDistribution) -> torch.Tensor:
    """Probabilities `(*batch, L, V + 1)` of each token (and the mask) per position, by hand."""
    if isinstance(d, dd.distributions.FactorizedCategorical):
        return d.probs.double()
    mu = d.mask_prob.double().unsqueeze(-1)
    if d.carry is not None:
        carried = (d.carry != M).unsqueeze(-1)
        one_hot = torch.nn.functional.one_hot(d.carry.clamp_max(V - 1), V).double()
        y = one_hot if d.probs is None else torch.where(carried, one_hot, d.probs.double())
    else:
        y = d.probs.double()
    return torch.cat([(1 - mu) * y, mu], -1)


def brute_log_prob(d: TorchDistribution, z: torch.Tensor) -> torch.Tensor:
    """log P(z) as the sum over positions of the log of the looked-up table entry."""
    table = position_table(d)
    shape = torch.broadcast_shapes(z.shape, table.shape[:-1])
    column = torch.where(z == M, V, z) if isinstance(d, dd.distributions.MaskedCategorical) else z
    picked = table.expand(*shape, -1).gather(-1, column.expand(shape).unsqueeze(-1))
    return picked.squeeze(-1).log().sum(-1)


def tolerance(dtype: torch.dtype) -> dict:
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}


# pyro: test_support_shape, test_support_is_discrete, test_infer_shapes ---------------------------


def test_support_shape(case):
    d = case.build()
    assert d.support.is_discrete
    assert d.support.event_dim == d.event_dim == 1
    x = d.sample()
    ok = d.support.check(x)
    assert ok.shape == d.batch_shape and ok.all()


def test_infer_shapes(case):
    d = case.build()
    shapes = {k: v.shape if isinstance(v, torch.Tensor) else () for k, v in params_of(d).items()}
    assert type(d).infer_shapes(**shapes) == (d.batch_shape, d.event_shape)


# pyro: test_batch_log_prob_shape, test_batch_entropy_shape, test_score_errors_* ------------------


def test_batch_log_prob_and_entropy_shapes(case):
    d = case.build()
    for sample_shape in ((), (2,), (4, 1)):
        x = d.sample(sample_shape)
        assert x.shape == sample_shape + d.batch_shape + d.event_shape
        assert d.log_prob(x).shape == sample_shape + d.batch_shape
    assert d.entropy().shape == d.batch_shape


def test_score_errors_event_dim_mismatch(case):
    d = case.build()
    with pytest.raises((ValueError, RuntimeError)):
        d.log_prob(torch.zeros((*d.shape(), 1), dtype=torch.long))


def test_score_errors_non_broadcastable_data_shape(case):
    d = case.build()
    shape = d.shape()
    with pytest.raises((ValueError, RuntimeError)):
        d.log_prob(torch.zeros((shape[0] + 1, *shape[1:]), dtype=torch.long))


# pyro: test_enumerate_support, test_enumerate_support_shape --------------------------------------


def test_enumerate_support(case):
    d = case.build()
    support = d.enumerate_support()
    n = support.shape[0]
    assert support.shape == (n, *d.batch_shape, *d.event_shape)
    assert torch.equal(support, d.enumerate_support(expand=True))
    unexpanded = d.enumerate_support(expand=False)
    assert unexpanded.shape == (n, *(1,) * len(d.batch_shape), *d.event_shape)
    assert (support == unexpanded).all()
    assert torch.equal(unexpanded, enumerated(d))


# pyro: test_batch_log_prob (against a reference instead of scipy), entropy and KL ----------------


def test_log_prob_matches_the_position_table_and_sums_to_one(case):
    d = case.build()
    z = d.enumerate_support(expand=False)
    lp = d.log_prob(z)
    torch.testing.assert_close(lp.double(), brute_log_prob(d, z), **tolerance(case.dtype))
    total = torch.logsumexp(lp.double(), 0)
    torch.testing.assert_close(total, torch.zeros_like(total), **tolerance(case.dtype))


def test_entropy_matches_enumeration(case):
    d = case.build()
    lp = brute_log_prob(d, d.enumerate_support(expand=False))
    exact = -torch.where(lp > -torch.inf, lp.exp() * lp, 0.0).sum(0)
    torch.testing.assert_close(d.entropy().double(), exact, **tolerance(case.dtype))


def test_kl_matches_enumeration(case):
    """KL against the same fixture with other parameters (infinite where q leaves p's support)."""
    q, p = case.build(), case.build(seed=1)
    z = q.enumerate_support(expand=False)
    lq, lp = brute_log_prob(q, z), brute_log_prob(p, z)
    exact = torch.where(lq > -torch.inf, lq.exp() * (lq - lp), 0.0).sum(0)
    torch.testing.assert_close(
        torch.distributions.kl_divergence(q, p).double(), exact, **tolerance(case.dtype)
    )
    torch.testing.assert_close(
        torch.distributions.kl_divergence(q, q), torch.zeros(q.batch_shape, dtype=case.dtype)
    )


# pyro: test_expand_by, test_expand_new_dim, test_expand_existing_dim, test_subsequent_expands_ok,
# test_expand_error (each with the distribution's own expand and pyro's default one)


def check_sample_shapes(small, large):
    x = small.sample()
    torch.testing.assert_close(small.log_prob(x).expand(large.batch_shape), large.log_prob(x))
    x = large.sample()
    torch.testing.assert_close(small.log_prob(x), large.log_prob(x))


@pytest.mark.parametrize("default", [False, True], ids=["own", "default"])
def test_expand(case, default):
    small = case.build()

    def expand(d, shape):
        return TorchDistribution.expand(d, shape) if default else d.expand(shape)

    for sample_shape in ((), (2,), (2, 3)):
        for shape_type in (torch.Size, tuple, list):
            by = small.expand_by(shape_type(sample_shape))
            large = expand(small, shape_type(sample_shape + small.batch_shape))
            assert by.batch_shape == large.batch_shape == sample_shape + small.batch_shape
        check_sample_shapes(small, by)
        check_sample_shapes(small, large)
    d = small
    for shape in ((2, 1, 1), (2, 1, 3), (2, 5, 3)):
        d = expand(d, torch.Size(shape) + small.batch_shape)
        assert d.batch_shape == shape + small.batch_shape
        check_sample_shapes(small, d)
    for initial, proposed in (((2, 1), (4, 3)), ((2, 4), (2, 2, 1)), ((1, 2, 1), (2, 1))):
        large = expand(small, initial + small.batch_shape)
        with pytest.raises((RuntimeError, ValueError)):
            large.expand(torch.Size(proposed) + small.batch_shape)


def test_expand_existing_dim():
    """A batch dimension of size 1 grows (pyro: test_expand_existing_dim)."""
    wide = rebatch(FIXTURES["MaskedCategorical(probs)"](0), (2, 3), torch.float64)
    small = dd.distributions.MaskedCategorical(
        wide.mask_prob[:1], vocab_size=V, mask_id=M, probs=wide.probs[:1]
    )
    for default in (False, True):
        large = (TorchDistribution.expand if default else type(small).expand)(small, (5, 3))
        assert large.batch_shape == (5, 3)
        check_sample_shapes(small, large)


# pyro: test_distribution_validate_args; test_pickle -------------------------------------------


def test_validate_args(case):
    params = params_of(case.build())
    name = "mask_prob" if "mask_prob" in params else "probs"
    bad = {**params, name: params[name] + 1.5}  # outside [0, 1], off the simplex
    with pytest.raises(ValueError, match=name):
        type(case.build())(**bad, validate_args=True)
    type(case.build())(**bad, validate_args=False)


def test_pickle(case):
    d = case.build()
    x = d.sample()
    again = pickle.loads(pickle.dumps(d))
    assert (again.batch_shape, again.event_shape) == (d.batch_shape, d.event_shape)
    assert torch.equal(again.log_prob(x), d.log_prob(x))


# Goodness of fit against enumeration (scipy's χ² p-value) ---------------------------------------


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's χ² over one batch element's states; states expected < 5 times are pooled.

    Drawing a state of probability 0 fails outright.
    """
    assert counts[probs == 0].sum() == 0, "drew a sequence of probability zero"
    expected = probs * counts.sum()
    small = expected < 5
    observed = torch.cat([counts[~small], counts[small].sum().reshape(1)])
    expected = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    if len(expected) < 2:
        return 1.0  # a point mass, drawn every time
    expected = expected * observed.sum() / expected.sum()  # rounding of the probabilities
    return float(scipy.stats.chisquare(observed.numpy(), expected.numpy()).pvalue)


def goodness_of_fit(d: TorchDistribution, samples: torch.Tensor) -> float:
    """The smallest p-value over the batch elements, Bonferroni-corrected (`samples` (N, *b, L))."""
    support = d.enumerate_support(expand=False)
    probs = brute_log_prob(d, support).exp().reshape(len(support), -1)
    hits = (samples.unsqueeze(1) == support.unsqueeze(0)).all(-1)  # (N, K, *batch)
    assert hits.any(1).all(), "a sample fell outside the support"
    counts = hits.sum(0).double().reshape(len(support), -1)
    p_values = [chi_square_p_value(counts[:, b], probs[:, b]) for b in range(probs.shape[1])]
    return min(1.0, min(p_values) * len(p_values))


@pytest.mark.slow
def test_samples_fit_the_enumerated_law(case):
    """Draws with a sample shape, and with an expanded batch (the row-selecting path)."""
    d = case.build()
    torch.manual_seed(7)
    half = GOF_SAMPLES // 2
    samples = torch.cat([d.sample((half,)), d.expand_by((half,)).sample()])
    assert goodness_of_fit(d, samples) > GOF_FLOOR


def test_goodness_of_fit_detects_a_wrong_law():
    """Control: a (2, 3) batch sampled from one posterior does not fit another's law."""
    sampled = rebatch(FIXTURES["MaskingPosterior"](0), (2, 3), torch.float64)
    other = rebatch(FIXTURES["RemaskPosterior(CapSchedule(0.04))"](0), (2, 3), torch.float64)
    torch.manual_seed(7)
    samples = sampled.sample((GOF_SAMPLES,))
    assert goodness_of_fit(sampled, samples) > GOF_FLOOR
    assert goodness_of_fit(other, samples) < 1e-6
