"""The reverse chain as a Pyro program: the same chain as AncestralSampler, and its ELBO."""

import itertools

import pyro
import pytest
import torch
from pyro import poutine

import discdiff as dd
from discdiff.testing import sample_distribution

V, L = 2, 2


@pytest.fixture(scope="module")
def oracle():
    generator = torch.Generator().manual_seed(0)
    joint = torch.rand(V**L, generator=generator) + 0.1
    return dd.EnumerableOracle((joint / joint.sum()).reshape((V,) * L))


def index(tokens: torch.Tensor) -> torch.Tensor:
    return (tokens * V ** torch.arange(tokens.shape[-1] - 1, -1, -1)).sum(-1)


STRATEGIES = [
    dd.MaskingPosterior(),
    dd.RemaskPosterior(dd.CapSchedule(0.3)),
    dd.RemaskPosterior(dd.ConfidenceSchedule()),
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_enumerated_program_gives_the_samplers_exact_distribution(oracle, strategy):
    """Every path z_2, z_1, z_0 (9^3 of them) scored by the conditioned trace; the final
    sequences' probabilities equal `sample_distribution`'s to float32 precision (1e-6)."""
    process = dd.MaskingProcess(vocab_size=V)
    sampler = dd.AncestralSampler(process, strategy, steps=3)
    chain = dd.ReverseChain(sampler)
    assert chain.sites == ["z_3", "z_2", "z_1", "z_0"]
    states = torch.tensor(list(itertools.product(range(V + 1), repeat=L)))
    paths = torch.tensor(list(itertools.product(range(len(states)), repeat=3)))
    n = len(paths)
    path = torch.cat([process.sample_prior(n, L)[None], states[paths].permute(1, 0, 2)])
    data = dict(zip(chain.sites, path, strict=True))
    trace = poutine.trace(poutine.condition(chain.model, data=data)).get_trace(oracle, n, L)
    log_p = chain.path_log_prob(oracle, path)
    final = trace.nodes["x"]["value"]
    probs = torch.zeros(V**L, dtype=torch.float64).index_add_(0, index(final), log_p.exp().double())
    _, exact = sample_distribution(sampler, oracle, L)
    assert torch.allclose(probs, exact, atol=1e-6)


def test_program_draws_and_sampler_draws_follow_the_same_distribution(oracle):
    """20 000 draws through Pyro and through AncestralSampler, each within 3x the TV floor of
    20 000 exact draws (≈ 0.006 for 4 outcomes) of the enumerated distribution."""
    process = dd.MaskingProcess(vocab_size=V)
    sampler = dd.AncestralSampler(process, dd.RemaskPosterior(dd.CapSchedule(0.3)), steps=3)
    _, exact = sample_distribution(sampler, oracle, L)
    n = 20_000
    pyro.set_rng_seed(0)
    through_pyro = dd.ReverseChain(sampler).model(oracle, n, L)
    direct = sampler.sample(oracle, n, L, generator=torch.Generator().manual_seed(1)).tokens
    for tokens in (through_pyro, direct):
        empirical = torch.bincount(index(tokens), minlength=V**L).double() / n
        assert 0.5 * float((empirical - exact).abs().sum()) < 0.02


@pytest.mark.parametrize("strategy", STRATEGIES[:2], ids=repr)
def test_trace_elbo_with_the_forward_guide_is_the_discrete_nelbo(oracle, strategy):
    """Pyro's Trace_ELBO (model: the chain with x observed at z_0; guide: the forward
    process) equals `discrete_nelbo` in expectation: |difference| < 3 combined standard
    errors over 10 batches of 1000 sequences each (false-failure rate 0.3 %)."""
    process = dd.MaskingProcess(schedule=dd.LogLinear(eps=0.0), vocab_size=V)
    sampler = dd.AncestralSampler(process, strategy, steps=4, noise_removal=False, t_min=0.0)
    chain = dd.ReverseChain(sampler)
    batch, repeats = 1000, 10
    pyro.set_rng_seed(0)
    x = oracle.sequences[torch.multinomial(oracle.probs, batch, replacement=True)]
    elbo = pyro.infer.Trace_ELBO()
    losses = torch.tensor(
        [
            elbo.loss(chain.model, chain.forward_guide, oracle, batch, L, observed=x) / batch
            for _ in range(repeats)
        ]
    )
    nelbo = torch.cat(
        [
            dd.objectives.discrete_nelbo(process, strategy, oracle, x, steps=4)
            for _ in range(repeats)
        ]
    )
    se = (losses.var() / repeats + nelbo.var() / len(nelbo)) ** 0.5
    assert abs(float(losses.mean() - nelbo.mean())) < 3 * float(se)


@pytest.mark.parametrize("potential", ["difference", "max", "sum"])
def test_factor_sites_add_up_to_the_reward(oracle, potential):
    """Whatever the potential, the factors G_T-1 ... G_0 of a path sum to r(x_0)."""
    process = dd.MaskingProcess(vocab_size=V)
    chain = dd.ReverseChain(dd.AncestralSampler(process, dd.MaskingPosterior(), steps=4))

    def reward(x: torch.Tensor) -> torch.Tensor:
        return 0.7 * (x == 0).sum(-1).double() - 0.2 * (x == 1).sum(-1).double()

    pyro.set_rng_seed(1)
    trace = poutine.trace(chain.model).get_trace(oracle, 64, L, reward=reward, potential=potential)
    trace.compute_log_prob()
    factors = [name for name in trace.nodes if name.startswith("G_")]
    assert factors == ["G_3", "G_2", "G_1", "G_0"]
    total = sum(trace.nodes[name]["log_prob"] for name in factors)
    assert torch.allclose(total, reward(trace.nodes["_RETURN"]["value"]))


def test_program_rejects_what_it_cannot_express(oracle):
    process = dd.MaskingProcess(vocab_size=V)
    with pytest.raises(TypeError, match="`sampler` must use a posterior"):
        dd.ReverseChain(dd.AncestralSampler(process, dd.ThresholdDecoder(0.5), steps=2))
    chain = dd.ReverseChain(dd.AncestralSampler(process, dd.MaskingPosterior(), steps=2))
    with pytest.raises(ValueError, match="`observed`"):
        chain.model(oracle, 1, L, observed=torch.zeros(1, L, dtype=torch.long))
    with pytest.raises(ValueError, match="`path`"):
        chain.path_log_prob(oracle, torch.zeros(2, 1, L, dtype=torch.long))
