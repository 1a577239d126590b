"""SEDD (absorb): score entropy against exact likelihoods; its samplers against SEDD's code."""

import math

import pytest
import torch

import discdiff as dd
from discdiff.baseline_objectives import ScoreEntropy, score_entropy
from discdiff.data import HMMLanguage, LanguageSource
from discdiff.models.score import DenoiserScores, ScoreModel, log_score_ratio
from discdiff.processes.masking.sedd import SEDDAnalytic, SEDDEuler
from discdiff.testing import sample_distribution
from discdiff.training import TrainConfig, Trainer

F64 = torch.float64


@pytest.fixture(scope="module")
def tiny():
    """A random joint over 3^4 sequences and its exact conditional denoiser."""
    generator = torch.Generator().manual_seed(0)
    joint = torch.rand(3, 3, 3, 3, generator=generator, dtype=F64) ** 2
    joint = joint / joint.sum()
    return joint, dd.EnumerableOracle(joint)


def _mean_and_se(draws: torch.Tensor) -> tuple[float, float]:
    draws = draws.double()
    return float(draws.mean()), float(draws.std() / draws.numel() ** 0.5)


@pytest.mark.parametrize(
    "schedule", [dd.LogLinear(eps=0.0), dd.Cosine(eps=0.0)], ids=lambda s: type(s).__name__
)
def test_score_entropy_of_the_exact_scores_is_the_nll(tiny, schedule):
    """E[score entropy(x)] = -log p(x) with s_v = r_t p(x^l = v | z_t); three sequences,
    within 3 standard errors of 4000 draws each (a 0.3 % false-failure rate per check)."""
    joint, oracle = tiny
    process = dd.MaskingProcess(schedule=schedule, vocab_size=3)
    scores = DenoiserScores(oracle, process)
    generator = torch.Generator().manual_seed(1)
    for index in (0, 40, 77):
        x = oracle.sequences[index].expand(4000, 4)
        mean, se = _mean_and_se(score_entropy(process, scores, x, generator=generator))
        target = float(-joint.flatten()[index].log())
        # the integral runs over [1e-3, 1]: the missing sliver is below 2e-3 * target
        assert abs(mean - target) < 3 * se + 2e-3 * target, (index, mean, target)


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_score_entropy_penalises_mis_scaled_scores(tiny, scale):
    """The same denoiser with its scores' total off by `scale` pays clearly more
    (each bracket is a Bregman divergence: r(c - 1 - log c) per masked token)."""
    _, oracle = tiny
    process = dd.MaskingProcess(schedule=dd.LogLinear(eps=0.0), vocab_size=3)
    x = oracle.sequences[40].expand(4000, 4)
    exact = score_entropy(
        process, DenoiserScores(oracle, process), x, generator=torch.Generator().manual_seed(2)
    )
    wrong = score_entropy(
        process,
        DenoiserScores(oracle, process, scale=scale),
        x,
        generator=torch.Generator().manual_seed(2),
    )
    # same noise: the difference is exactly sum over masked of w(t) (c - 1 - log c) >= 0
    excess = float((wrong - exact).mean())
    expected = 4 * (scale - 1 - math.log(scale))  # E ∫ σ' r · #masked dt = L · ∫ -α'/(1-α)(1-α) dt
    assert excess > 0.5 * expected > 0.05
    assert abs(excess - expected) < 0.05 * expected


def test_score_entropy_of_the_exact_language_scores_is_its_nll():
    """On the synthetic language (HMM, exact denoiser and log-probabilities), L = 8:
    three sequences within 3 SE of 2000 draws each."""
    language = HMMLanguage()
    length = 8
    process = dd.MaskingProcess(schedule=dd.LogLinear(eps=0.0), vocab_size=language.vocab_size)
    scores = DenoiserScores(language.denoiser(process.mask_id), process)
    data = language.sample(3, length, generator=torch.Generator().manual_seed(3))
    target = -language.log_prob(data).double()
    generator = torch.Generator().manual_seed(4)
    for row in range(3):
        x = data[row].expand(2000, length)
        mean, se = _mean_and_se(score_entropy(process, scores, x, generator=generator))
        assert abs(mean - float(target[row])) < 3 * se + 2e-3 * float(target[row])
        wrong = score_entropy(
            process, DenoiserScores(language.denoiser(), process, scale=3.0), x[:500]
        )
        assert float(wrong.mean()) > float(target[row]) + 1.0


def test_score_entropy_counts_only_real_and_masked_tokens(tiny):
    _, oracle = tiny
    process = dd.MaskingProcess(vocab_size=3)
    # a context-free denoiser: only the counting differs between the two calls
    scores = DenoiserScores(lambda z, t, padding_mask=None: z.new_zeros(*z.shape, 3), process)
    x = oracle.sequences[40].expand(64, 4)
    t = torch.full((64,), 0.5)
    z_t = process.sample(x, t, generator=torch.Generator().manual_seed(0))
    padding = torch.ones(64, 4, dtype=torch.bool)
    padding[:, 2:] = False
    full = score_entropy(process, scores, x, t=t, z_t=torch.where(padding, z_t, x))
    padded = score_entropy(process, scores, x, t=t, z_t=z_t, padding_mask=padding)
    torch.testing.assert_close(full, padded)
    with pytest.raises((ValueError, TypeError), match="padding_mask"):  # beartype's, or ours
        score_entropy(process, scores, x, padding_mask=padding[:, :2])


# -- samplers ---------------------------------------------------------------------------


def _sedd_reference_step(log_scores, z, dsigma, vocab, euler_rate=None):
    """SEDD's code for one absorbing step (graph_lib.Absorbing, sampling.py), transcribed:
    the model's scores with the mask column, then staggered_score x transp_transition
    (analytic) or one_hot + dt * sigma' * reverse_rate (Euler). Returns (B, L, V + 1) probs."""
    dim = vocab + 1
    score = log_scores.double().exp()
    score = torch.cat((score, torch.ones_like(score[..., :1])), -1)  # the mask's score is 1
    one_hot = torch.nn.functional.one_hot(z, dim).double()
    if euler_rate is None:
        extra = (1 - dsigma.exp())[:, None] * score.sum(-1)
        stag = score * dsigma.exp()[:, None, None]
        stag[..., -1] += extra
        edge = (-dsigma).exp()[:, None, None] * one_hot
        edge = edge + torch.where(z == dim - 1, 1 - (-dsigma).exp()[:, None], 0.0)[..., None]
        probs = stag * edge
    else:
        edge = -one_hot.clone()
        edge[z == dim - 1] += 1
        rate = edge * score
        rate.scatter_(-1, z[..., None], 0.0)
        rate.scatter_(-1, z[..., None], -rate.sum(-1, keepdim=True))
        probs = one_hot + euler_rate[:, None, None] * rate
    probs = probs.clamp_min(0.0)  # SEDD's Gumbel argmax never picks a negative entry
    return probs / probs.sum(-1, keepdim=True)


@pytest.mark.parametrize("strategy", [SEDDAnalytic(), SEDDEuler()], ids=repr)
def test_score_steps_match_seddss_arithmetic(strategy):
    """Step probabilities equal SEDD's reference computation, for random (mis-scaled) scores."""
    generator = torch.Generator().manual_seed(0)
    vocab, process = 5, dd.MaskingProcess(schedule=dd.LogLinear(), vocab_size=5)
    z = torch.randint(0, vocab + 1, (4, 6), generator=generator)
    log_scores = torch.randn(4, 6, vocab, generator=generator) - 1.0
    t, s = torch.tensor([0.9, 0.6, 0.3, 0.05]), torch.tensor([0.8, 0.55, 0.1, 0.01])
    alpha = process.schedule.alpha
    dsigma = (alpha(s.double()) / alpha(t.double())).log()
    euler = None
    if isinstance(strategy, SEDDEuler):
        euler = (t - s).double() * -process.schedule.alpha_prime(t.double()) / alpha(t.double())
    expected = _sedd_reference_step(log_scores, z, dsigma, vocab, euler)
    x = strategy.shape_output(log_scores)
    q = strategy(process, z, x, t, s)
    states = torch.arange(vocab + 1)
    got = torch.stack(
        [q.position_log_prob(states[v].expand(4, 6)).exp() for v in range(vocab + 1)], -1
    )
    # unmasked positions are carried in both
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-5)


def test_analytic_sampler_with_exact_scores_is_mdlm_and_not_an_adapter_otherwise():
    """Exact enumeration of the final-sample distribution on a joint over 3^2 sequences:

    with exact scores (total r_t), SEDD's analytic sampler is MDLM's posterior on the
    normalised scores, to float32 rounding (1e-6); with the same normalised scores but a
    total off by 3x it is not (so it is a strategy that reads the total, not a denoiser adapter)."""
    generator = torch.Generator().manual_seed(5)
    joint = torch.rand(3, 3, generator=generator, dtype=F64) ** 2
    oracle = dd.EnumerableOracle(joint)
    process = dd.MaskingProcess(vocab_size=3)
    exact, scaled = DenoiserScores(oracle, process), DenoiserScores(oracle, process, scale=3.0)
    mdlm = dd.AncestralSampler(process, dd.MaskingPosterior(), steps=4)
    analytic = dd.AncestralSampler(process, SEDDAnalytic(), steps=4)
    _, reference = sample_distribution(mdlm, oracle, 2)
    _, with_exact = sample_distribution(analytic, exact, 2)
    _, adapter = sample_distribution(mdlm, scaled, 2)  # the normalised scores as a denoiser
    _, with_scaled = sample_distribution(analytic, scaled, 2)
    torch.testing.assert_close(with_exact, reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(adapter, reference, atol=1e-6, rtol=0)
    assert float((with_scaled - reference).abs().sum()) > 0.02


def test_euler_sampler_approaches_the_analytic_one_as_steps_grow():
    """Under the cosine schedule the Euler step is first order; under the log-linear
    one (alpha linear in t) it equals the analytic step for exact scores."""
    generator = torch.Generator().manual_seed(6)
    joint = torch.rand(3, 3, generator=generator, dtype=F64) ** 2
    process = dd.MaskingProcess(schedule=dd.Cosine(), vocab_size=3)
    scores = DenoiserScores(dd.EnumerableOracle(joint), process)

    def gap(steps: int) -> float:
        runs = [
            sample_distribution(dd.AncestralSampler(process, s, steps=steps), scores, 2)[1]
            for s in (SEDDAnalytic(), SEDDEuler())
        ]
        return float((runs[0] - runs[1]).abs().sum())

    coarse, fine = gap(4), gap(64)
    assert fine < coarse / 4 and fine < 0.02, (coarse, fine)
    linear = dd.MaskingProcess(vocab_size=3)
    runs = [
        sample_distribution(
            dd.AncestralSampler(linear, s, steps=4),
            DenoiserScores(dd.EnumerableOracle(joint), linear),
            2,
        )[1]
        for s in (SEDDAnalytic(), SEDDEuler())
    ]
    torch.testing.assert_close(runs[0], runs[1], atol=1e-6, rtol=0)


def test_score_model_head_and_training_step():
    """SEDD's head: log s = f - log(e^sigma - 1) - log V at masked positions, carried
    tokens elsewhere; the trainer reduces the score entropy of a micro DiT."""
    process = dd.MaskingProcess(vocab_size=4)
    net = dd.DiT(dd.DiTConfig.micro(5, time_conditioning=True, dropout=0.0))
    model = ScoreModel(net, process)
    z = torch.tensor([[4, 1, 4, 2]])
    t = torch.tensor([0.3])
    out = model(z, t)
    sigma = -torch.log(process.schedule.alpha(t))
    logits = net(z, sigma)[..., :4]
    expected = logits - torch.log(torch.expm1(sigma)) - math.log(4)
    torch.testing.assert_close(out[0, 0], expected[0, 0])
    assert out[0, 1].argmax() == 1 and out[0, 1, 1] == 0.0
    torch.testing.assert_close(log_score_ratio(process, t), -torch.log(torch.expm1(sigma)))

    language = HMMLanguage()
    source = LanguageSource(language, 8, seed=0)
    config = TrainConfig(
        steps=60,
        batch_size=32,
        lr=3e-3,
        warmup=5,
        ema=0.0,
        eval_every=0,
        progress=False,
        eval_sequences=128,
        objective="score-entropy",
    )
    process = dd.MaskingProcess(vocab_size=32)
    net = dd.DiT(dd.DiTConfig.micro(33, model_length=8, dropout=0.0))
    validation = language.sample(128, 8, generator=torch.Generator().manual_seed(9))
    trainer = Trainer(process, ScoreModel(net, process), source, config, validation=validation)
    assert isinstance(trainer.objective, ScoreEntropy)
    before = trainer.evaluate().nats_per_token  # the score entropy, with fixed noise
    trainer.fit(resume=False)
    after = trainer.evaluate().nats_per_token
    assert after < before - 0.1, (before, after)
