"""Uniform-state diffusion and the `ForwardProcess` interface, against exact enumeration."""

import itertools

import hypothesis
import hypothesis.strategies as st
import pytest
import torch

import discdiff as dd
from discdiff import testing
from discdiff.config import ConfigError, RunConfig
from discdiff.data import HMMLanguage, LanguageDenoiser, LanguageSource, PCFGLanguage
from discdiff.objectives import DiscreteNELBO, held_out_bound, nelbo
from discdiff.runs import load_run
from discdiff.training import TrainConfig, Trainer

F64 = torch.float64
V, L = 3, 3


@pytest.fixture(scope="module")
def tiny():
    """A random joint over 3^3 sequences, its uniform process and exact (leave-one-out) denoiser."""
    generator = torch.Generator().manual_seed(0)
    joint = torch.rand((V,) * L, generator=generator, dtype=F64) ** 3
    joint = joint / joint.sum()
    process = dd.UniformProcess(dd.LogLinear(eps=0.0), vocab_size=V)
    return joint, process, dd.EnumerableOracle(joint, process=process)


def test_both_processes_implement_the_interface():
    for process in (dd.MaskingProcess(vocab_size=4), dd.UniformProcess(vocab_size=4)):
        assert isinstance(process, dd.ForwardProcess)
    uniform = dd.UniformProcess(vocab_size=4)
    assert (uniform.mask_id, uniform.num_states, uniform.needs_time) == (None, 4, True)
    masking = dd.MaskingProcess(vocab_size=4)
    assert (masking.mask_id, masking.num_states, masking.needs_time) == (4, 5, False)


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True, database=None)
@hypothesis.given(
    st.integers(2, 3).flatmap(
        lambda v: st.tuples(
            testing.processes(v), st.integers(1, 2).flatmap(lambda n: testing.data(v, n))
        )
    ),
    testing.times(),
)
def test_marginal_composition_for_every_process_and_schedule(setup, step):
    r"""$\sum_{z_t} q(z_s \mid z_t, x)\, q(z_t \mid x) = q(z_s \mid x)$ to 1e-6, exactly enumerated,
    with rows that are distributions, for masking and uniform noise over every noise schedule."""
    (process, posterior), x = setup
    testing.check_normalisation(posterior, process, x=x, steps=[step])
    assert testing.check_marginal_preservation(posterior, process, x=x, steps=[step]) <= 1e-6


def test_marginal_composition_fails_for_a_wrong_posterior():
    class Mixture(dd.UniformPosterior):
        """The mixture of posteriors over x: not the reverse model (normaliser depends on x)."""

        def __call__(self, process, z_t, x, t, s):
            columns = [
                super(Mixture, self)
                .__call__(
                    process,
                    z_t,
                    torch.nn.functional.one_hot(torch.full_like(z_t, v), V).to(F64),
                    t,
                    s,
                )
                .probs
                for v in range(V)
            ]
            mixed = sum(x[..., v : v + 1] * c for v, c in enumerate(columns))
            return dd.distributions.FactorizedCategorical(mixed)

    process = dd.UniformProcess(vocab_size=V)
    soft = torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]], dtype=F64)
    # one-hot x: the mixture and the reverse model coincide; soft x: only the latter is right
    testing.check_marginal_preservation(Mixture(), process, x=soft.round())
    with pytest.raises(AssertionError, match="does not preserve"):
        testing.check_marginal_preservation(Mixture(), process, x=soft)


def test_uniform_posterior_is_bayes_rule():
    """q(z_s | z_t, x) ∝ q(z_t | z_s) q(z_s | x) from the forward transition matrices."""
    process = dd.UniformProcess(dd.Cosine(), vocab_size=V)
    t, s = torch.tensor([0.7], dtype=F64), torch.tensor([0.3], dtype=F64)
    a_t, a_s = process.schedule.alpha(t).item(), process.schedule.alpha(s).item()
    step = a_t / a_s * torch.eye(V, dtype=F64) + (1 - a_t / a_s) / V  # [z_s, z_t]
    for z_t, x in itertools.product(range(V), repeat=2):
        prior = a_s * torch.eye(V, dtype=F64)[x] + (1 - a_s) / V
        expected = step[:, z_t] * prior
        expected = expected / expected.sum()
        one_hot = torch.nn.functional.one_hot(torch.tensor([[x]]), V).to(F64)
        q = dd.UniformPosterior()(process, torch.tensor([[z_t]]), one_hot, t, s)
        torch.testing.assert_close(q.probs[0, 0], expected, rtol=1e-12, atol=1e-14)


def test_the_reverse_model_sums_the_joint_over_x():
    r"""$p_\theta(z_s \mid z_t) \propto \sum_x x_\theta(x)\, q(z_t \mid z_s)\, q(z_s \mid x)$."""
    process = dd.UniformProcess(vocab_size=V)
    t, s = torch.tensor([0.6], dtype=F64), torch.tensor([0.2], dtype=F64)
    a_t, a_s = process.schedule.alpha(t).item(), process.schedule.alpha(s).item()
    x_theta = torch.tensor([[[0.7, 0.2, 0.1]]], dtype=F64)
    z_t = torch.tensor([[2]])
    forward = a_t / a_s * (torch.arange(V) == 2).to(F64) + (1 - a_t / a_s) / V
    joint = sum(
        x_theta[0, 0, x] * forward * (a_s * torch.eye(V, dtype=F64)[x] + (1 - a_s) / V)
        for x in range(V)
    )
    p = dd.UniformPosterior()(process, z_t, x_theta, t, s)
    torch.testing.assert_close(p.probs[0, 0], joint / joint.sum(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("t", [0.05, 0.5, 0.95])
def test_the_nelbo_integrand_is_the_small_step_limit_of_the_kl(t):
    r"""The integrand is $\lim_{h \to 0} \mathrm{KL}(q(z_{t-h} \mid z_t, x) \| p_\theta) / h$."""
    process = dd.UniformProcess(dd.LogLinear(), vocab_size=5)
    x, z = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 4, 2, 1]])
    x_theta = torch.randn(1, 4, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    x_theta = x_theta.softmax(-1)
    t = torch.tensor([t], dtype=F64)
    integrand = process.nelbo_integrand(x_theta.log().float(), x, z, t.float()).double()
    h = 1e-6
    one_hot = torch.nn.functional.one_hot(x, 5).to(F64)
    q = dd.UniformPosterior()(process, z, one_hot, t, t - h)
    p = dd.UniformPosterior()(process, z, x_theta, t, t - h)
    torch.testing.assert_close(q.position_kl(p) / h, integrand, rtol=2e-4, atol=1e-6)
    assert bool((integrand > 0).all())


@pytest.mark.parametrize(
    "schedule", [dd.LogLinear(eps=0.0), dd.Cosine(eps=0.0), dd.LogLinear()], ids=repr
)
def test_uniform_nelbo_of_the_exact_denoiser_is_the_nll(tiny, schedule):
    """E[NELBO(x)] = -log p(x) with the exact denoiser p(x_l | z_t^{-l}): within 3 standard
    errors of 6000 draws, for three sequences."""
    joint, _, _ = tiny
    process = dd.UniformProcess(schedule, vocab_size=V)
    oracle = dd.EnumerableOracle(joint, process=process)
    generator = torch.Generator().manual_seed(1)
    for index in (0, 13, 26):
        x = oracle.sequences[index].expand(6000, L)
        draws = nelbo(process, oracle, x, generator=generator).double()
        mean, se = draws.mean(), draws.std() / draws.numel() ** 0.5
        target = -joint.flatten()[index].log()
        assert abs(mean - target) < 3 * se, (index, float(mean), float(target), float(se))


def test_uniform_nelbo_penalises_the_full_posterior_as_denoiser(tiny):
    """p(x_l | z_t) (which also reads the position's own noisy token) is not the optimum."""
    joint, process, oracle = tiny

    def full_posterior(z, t):
        loo = oracle(z, t).double().exp()
        own = process.likelihood(z, t)
        return (loo * own / (loo * own).sum(-1, keepdim=True)).log().float()

    x = oracle.sequences[torch.multinomial(joint.flatten(), 6000, replacement=True)]
    generator = torch.Generator().manual_seed(2)
    exact = nelbo(process, oracle, x, generator=generator).double()
    generator = torch.Generator().manual_seed(2)
    wrong = nelbo(process, full_posterior, x, generator=generator).double()
    gap = wrong - exact  # paired: the same times and z_t
    assert gap.mean() > 5 * gap.std() / gap.numel() ** 0.5


def test_uniform_nelbo_on_the_exact_language():
    """On an HMM language with its exact denoiser: E[NELBO] = -log p(x) within 3 SE."""
    language = HMMLanguage(vocab_size=6, states=3, support=3, successors=2, seed=0)
    process = dd.UniformProcess(dd.LogLinear(), vocab_size=6)
    denoiser = LanguageDenoiser(language, process=process)
    generator = torch.Generator().manual_seed(3)
    x = language.sample(3000, 8, generator=generator)
    gap = nelbo(process, denoiser, x, generator=generator).double() + language.log_prob(x)
    assert abs(gap.mean()) < 3 * gap.std() / gap.numel() ** 0.5


@pytest.mark.parametrize(
    "language",
    [HMMLanguage(vocab_size=3, states=3, support=2, successors=2, seed=1), PCFGLanguage(3, seed=0)],
    ids=["hmm", "pcfg"],
)
def test_language_denoisers_for_uniform_noise_are_exact(language):
    """`conditionals_given` (forward-backward / inside-outside) equals enumeration."""
    length = 4
    sequences = torch.tensor(list(itertools.product(range(3), repeat=length)))
    joint = language.log_prob(sequences).exp().reshape((3,) * length)
    process = dd.UniformProcess(vocab_size=3)
    oracle = dd.EnumerableOracle(joint, process=process)
    denoiser = LanguageDenoiser(language, process=process)
    assert denoiser.time_conditioned and oracle.time_conditioned
    z = torch.randint(0, 3, (16, length), generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.05, 0.95, 16)
    torch.testing.assert_close(denoiser(z, t).exp(), oracle(z, t).exp(), atol=1e-5, rtol=1e-5)


def test_the_uniform_sampler_converges_to_the_joint(tiny):
    """Exact sample distributions approach p(x) as T grows, and T=256 reaches the floor of
    4000 draws from the truth itself."""
    joint, process, oracle = tiny
    target = joint.flatten()
    distance = {}
    for steps in (4, 16, 64, 256):
        sampler = dd.AncestralSampler(process, dd.UniformPosterior(), steps=steps)
        _, probs = testing.sample_distribution(sampler, oracle, L)
        assert abs(float(probs.sum()) - 1) < 1e-6  # float32 x_θ
        distance[steps] = 0.5 * float((probs - target).abs().sum())
    assert distance[4] > distance[16] > distance[64] > distance[256], distance
    assert distance[256] < 0.01, distance

    n = 4000
    sampler = dd.AncestralSampler(process, dd.UniformPosterior(), steps=256)
    tokens = sampler.sample(oracle, n, L, generator=torch.Generator().manual_seed(4)).tokens
    index = (tokens * torch.tensor([V * V, V, 1])).sum(-1)
    empirical = torch.bincount(index, minlength=V**L).double() / n
    sampled_tv = 0.5 * float((empirical - target).abs().sum())
    generator = torch.Generator().manual_seed(5)
    floor = torch.tensor(
        [
            0.5
            * float(
                (
                    torch.bincount(
                        torch.multinomial(target, n, replacement=True, generator=generator),
                        minlength=V**L,
                    ).double()
                    / n
                    - target
                )
                .abs()
                .sum()
            )
            for _ in range(50)
        ]
    )
    assert sampled_tv < floor.mean() + 3 * floor.std(), (sampled_tv, floor.mean())


def test_a_dit_samples_uniform_noise_batch_size_independently():
    process = dd.UniformProcess(vocab_size=7)
    config = dd.DiTConfig.micro(
        vocab_size=process.num_states, model_length=6, time_conditioning=True
    )
    torch.manual_seed(0)
    denoiser = dd.SUBS(dd.DiT(config), process)
    sampler = dd.AncestralSampler(process, dd.UniformPosterior(), steps=5)
    one = sampler.sample_batches(denoiser, 6, 6, seed=3, batch_size=6)
    two = sampler.sample_batches(denoiser, 6, 6, seed=3, batch_size=4)
    assert torch.equal(one.tokens, two.tokens)
    assert bool(((one.tokens >= 0) & (one.tokens < 7)).all())
    infill = torch.tensor([[2, -1, -1, 5, -1, -1]])
    kept = sampler.sample(denoiser, 3, 6, infill=infill).tokens
    assert bool((kept[:, [0, 3]] == torch.tensor([2, 5])).all())


def test_strategies_and_denoisers_must_fit_the_process():
    uniform = dd.UniformProcess(vocab_size=4)
    with pytest.raises(TypeError, match="posterior"):
        dd.AncestralSampler(uniform, dd.MaskingPosterior(), steps=4)
    with pytest.raises(TypeError, match="posterior"):
        dd.AncestralSampler(dd.MaskingProcess(vocab_size=4), dd.UniformPosterior(), steps=4)
    with pytest.raises(ValueError, match="time-conditioned"):
        dd.SUBS(dd.DiT(dd.DiTConfig.micro(vocab_size=4)), uniform)
    with pytest.raises(ValueError, match="z_t"):
        dd.UniformPosterior()(uniform, torch.tensor([[4]]), torch.full((1, 1, 4), 0.25), 0.5, 0.4)


def test_only_confidence_strategies_keep_per_run_state():
    process, z = dd.MaskingProcess(vocab_size=3), torch.full((2, 4), 3)
    assert dd.RemaskPosterior(dd.CapSchedule(0.1)).start(process, z) is None
    assert dd.MaskGITDecoder().start(process, z) is None
    state = dd.RemaskPosterior(dd.ConfidenceSchedule()).start(process, z)
    assert torch.isinf(state.psi).all()
    x = torch.tensor([[[0.25, 0.5, 0.25]] * 4] * 2)
    state.observe(x, z, torch.tensor([[1, 3, 3, 3], [3, 3, 2, 3]]))
    assert state.psi[0, 0] == 0.5 and state.psi[1, 2] == 0.25 and torch.isinf(state.psi[0, 1])


def test_a_uniform_run_config():
    config = RunConfig.from_dict(
        {"process": {"name": "uniform"}, "sampler": {"posterior": "uniform"}}
    )
    assert config.model["time_conditioning"] is True
    assert config.process.build(10).num_states == 10  # no mask state: the DiT has V outputs
    assert RunConfig().process.build(10).num_states == 11  # the mask state
    with pytest.raises(ConfigError, match=r"sampler\.posterior.*uniform"):
        RunConfig.from_dict({"process": {"name": "uniform"}})
    with pytest.raises(ConfigError, match=r"model\.time_conditioning"):
        RunConfig.from_dict(
            {
                "process": {"name": "uniform"},
                "model": {"time_conditioning": False},
                "sampler": {"posterior": "uniform"},
            }
        )
    with pytest.raises(ConfigError, match=r"process\.name.*masking"):
        RunConfig.from_dict({"process": {"name": "absorbing"}})


def test_the_trainer_trains_and_evaluates_uniform_noise_with_its_objective():
    language = HMMLanguage(vocab_size=6, states=3, support=3, successors=2, seed=0)
    process = dd.UniformProcess(vocab_size=6)
    config = dd.DiTConfig.micro(vocab_size=6, model_length=8, time_conditioning=True)
    torch.manual_seed(0)
    model = dd.SUBS(dd.DiT(config), process)
    objective = DiscreteNELBO(dd.UniformPosterior(), steps=8)
    validation = language.sample(32, 8, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(
        process,
        model,
        LanguageSource(language, 8, seed=0),
        TrainConfig(
            steps=3, batch_size=8, lr=1e-3, warmup=1, ema=0.0, eval_every=0, progress=False
        ),
        validation=validation,
        objective=objective,
    )
    trainer.fit()
    bound = trainer.evaluate(batch_size=16)
    model.eval()
    same = held_out_bound(process, model, validation, batch_size=16, objective=objective)
    continuous = held_out_bound(process, model, validation, batch_size=16)
    assert bound.nats == pytest.approx(same.nats, rel=1e-5)
    assert bound.nats != pytest.approx(continuous.nats, rel=1e-3)


def test_a_time_conditioned_denoiser_is_finite_where_alpha_is_zero():
    process = dd.UniformProcess(dd.LogLinear(eps=0.0), vocab_size=5)
    config = dd.DiTConfig.micro(vocab_size=5, model_length=4, time_conditioning=True)
    out = dd.SUBS(dd.DiT(config), process)(torch.zeros(2, 4, dtype=torch.long), torch.ones(2))
    assert bool(torch.isfinite(out).all())


def test_the_shipped_uniform_run_loads_and_samples():
    run = load_run("hmm-uniform")
    assert isinstance(run.process, dd.UniformProcess) and run.denoiser.time_conditioned
    sampler = run.config.sampler.build(run.process)
    tokens = sampler.sample(run.denoiser, 2, 8, generator=torch.Generator().manual_seed(0)).tokens
    assert tokens.shape == (2, 8) and bool(((tokens >= 0) & (tokens < 32)).all())
