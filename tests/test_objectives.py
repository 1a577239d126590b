"""NELBOs against exact likelihoods, and the generic KL against the closed form."""

import pytest
import torch

import discdiff as dd
from discdiff.objectives import Bound, antithetic_times, discrete_nelbo, nelbo

F64 = torch.float64


@pytest.fixture(scope="module")
def tiny():
    """A random joint over 3^4 sequences and its exact conditional denoiser."""
    generator = torch.Generator().manual_seed(0)
    joint = torch.rand(3, 3, 3, 3, generator=generator, dtype=F64) ** 2
    joint = joint / joint.sum()
    return joint, dd.EnumerableOracle(joint)


@pytest.mark.parametrize(
    "schedule",
    [dd.LogLinear(eps=0.0), dd.Cosine(eps=0.0), dd.Polynomial(2.0, eps=0.0), dd.Linear()],
    ids=lambda s: type(s).__name__,
)
def test_continuous_nelbo_of_the_exact_denoiser_is_the_nll(tiny, schedule):
    """E[NELBO(x)] = -log p(x) for every x with the exact denoiser (any-order AR NLL);
    checked for three sequences within 3 standard errors of 4000 draws each."""
    joint, oracle = tiny
    process = dd.MaskingProcess(schedule=schedule, vocab_size=3)
    generator = torch.Generator().manual_seed(1)
    for index in (0, 40, 77):
        x = oracle.sequences[index].expand(4000, 4)
        draws = nelbo(process, oracle, x, generator=generator).double()
        mean, se = draws.mean(), draws.std() / draws.numel() ** 0.5
        target = -joint.flatten()[index].log()
        assert abs(mean - target) < 3 * se + 2e-3 * target, (index, float(mean), float(target))


def test_continuous_nelbo_detects_a_wrong_denoiser(tiny):
    joint, oracle = tiny
    process = dd.MaskingProcess(vocab_size=3)
    best = int(joint.flatten().argmax())  # a uniform x_θ over-pays on likely sequences
    x = oracle.sequences[best].expand(4000, 4)
    uniform = nelbo(
        process,
        lambda z, t: torch.zeros(*z.shape, 3),
        x,
        generator=torch.Generator().manual_seed(1),
    )
    assert uniform.mean() > -joint.flatten()[best].log() + 0.3


def test_antithetic_times_are_stratified():
    t = antithetic_times(8, generator=torch.Generator().manual_seed(0))
    bins = ((t - 1e-3) / (1 - 1e-3) * 8).floor().long()
    assert sorted(bins.tolist()) == list(range(8))


@pytest.fixture(scope="module")
def model_setup():
    process = dd.MaskingProcess(vocab_size=6)
    backbone = dd.DiT(dd.DiTConfig.micro(vocab_size=7))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in backbone.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    denoiser = dd.SUBS(backbone.eval(), process)
    x = torch.randint(6, (16, 12), generator=generator)
    return process, denoiser, x


@pytest.mark.parametrize("steps", [4, 32])
def test_generic_kl_matches_the_closed_form_for_mdlm(model_setup, steps):
    process, denoiser, x = model_setup
    step = torch.randint(1, steps + 1, (x.shape[0],), generator=torch.Generator().manual_seed(2))
    common = dict(steps=steps, step=step, generator=torch.Generator().manual_seed(3))
    closed = discrete_nelbo(process, dd.MaskingPosterior(), denoiser, x, **common)
    common["generator"] = torch.Generator().manual_seed(3)
    generic = discrete_nelbo(process, dd.MaskingPosterior(), denoiser, x, exact_kl=True, **common)
    torch.testing.assert_close(generic.double(), closed.double(), atol=1e-6, rtol=1e-6)
    # and the closed form is MDLM's weight (α_s - α_t)/(1 - α_t) on the masked cross-entropy
    t, s = step / steps, (step - 1) / steps
    z_t = process.sample(x, t, generator=torch.Generator().manual_seed(3))
    alpha_t, alpha_s = process.schedule.alpha(t), process.schedule.alpha(s)
    log_x = denoiser(z_t, t).log_softmax(-1).gather(-1, x.unsqueeze(-1)).squeeze(-1)
    mdlm = steps * ((alpha_s - alpha_t) / (1 - alpha_t)).unsqueeze(-1) * -log_x
    torch.testing.assert_close(
        closed, (mdlm * process.is_masked(z_t)).sum(-1), rtol=1e-5, atol=1e-5
    )


def test_remasking_makes_the_discrete_bound_larger(model_setup):
    """SPEC §3: the ReMDM weight exceeds MDLM's, so the same x_θ pays more."""
    process, denoiser, x = model_setup
    step = torch.randint(1, 17, (x.shape[0],), generator=torch.Generator().manual_seed(4))
    values = {}
    for name, posterior in {
        "mdlm": dd.MaskingPosterior(),
        "cap": dd.RemaskPosterior(dd.CapSchedule(0.1)),
        "rescale": dd.RemaskPosterior(dd.RescaleSchedule(0.5)),
    }.items():
        values[name] = discrete_nelbo(
            process,
            posterior,
            denoiser,
            x,
            steps=16,
            step=step,
            generator=torch.Generator().manual_seed(5),
            exact_kl=True,
        )
    assert (values["cap"] >= values["mdlm"] - 1e-6).all() and values["cap"].sum() > values[
        "mdlm"
    ].sum()
    assert values["rescale"].sum() > values["mdlm"].sum()
    closed = discrete_nelbo(
        process,
        dd.RemaskPosterior(dd.CapSchedule(0.1)),
        denoiser,
        x,
        steps=16,
        step=step,
        generator=torch.Generator().manual_seed(5),
    )
    torch.testing.assert_close(closed, values["cap"], atol=1e-5, rtol=1e-5)


def test_discrete_nelbo_approaches_the_continuous_one(tiny):
    joint, oracle = tiny
    process = dd.MaskingProcess(schedule=dd.LogLinear(eps=0.0), vocab_size=3)
    x = oracle.sequences[77].expand(4000, 4)
    value = discrete_nelbo(
        process,
        dd.MaskingPosterior(),
        oracle,
        x,
        steps=64,
        generator=torch.Generator().manual_seed(6),
    ).double()
    target = -joint.flatten()[77].log()
    assert abs(value.mean() - target) < 3 * value.std() / 4000**0.5 + 0.02


def test_bound_units():
    bound = Bound(nats=2.0 * 100, tokens=100)
    assert bound.nats_per_token == 2.0
    assert abs(bound.bits_per_token - 2.0 / 0.6931471805599453) < 1e-12
    assert abs(bound.perplexity - torch.e**2) < 1e-4


def test_mdlm_convention_averages_over_the_time_interval():
    """MDLM's estimate averages over U[δ, 1]: the integral's draws divided by 1 − δ."""
    process = dd.MaskingProcess(vocab_size=5)
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(5, (6, 7), generator=generator)
    t = dd.objectives.antithetic_times(6, generator=generator)
    z_t = process.sample(x, t, generator=generator)
    flat = lambda z, t: torch.zeros(*z.shape, 5)  # noqa: E731
    ours = dd.nelbo(process, flat, x, t=t, z_t=z_t)
    mdlm = dd.nelbo(process, flat, x, t=t, z_t=z_t, convention="mdlm")
    torch.testing.assert_close(mdlm * (1 - dd.objectives.T_MIN), ours)
