"""The ancestral sampler against exact ground truth, and its mechanics."""

import threading

import pytest
import torch

import discdiff as dd
from discdiff._checks import validation_enabled
from discdiff.distributions import draw_categorical
from discdiff.models import SUBS, DiT, DiTConfig
from discdiff.processes import Strategy
from discdiff.shaping import shape_probs

V, L, N = 3, 4, 20_000


@pytest.fixture(scope="module")
def truth():
    """A random joint over V^L = 81 sequences, its exact denoiser and the TV noise floor."""
    generator = torch.Generator().manual_seed(0)
    joint = torch.rand((V,) * L, generator=generator) ** 3
    joint = joint / joint.sum()
    oracle = dd.EnumerableOracle(joint)
    exact = oracle.sequences[
        torch.multinomial(joint.flatten(), N, replacement=True, generator=generator)
    ]
    return joint, oracle, total_variation(exact, joint)


def total_variation(tokens, joint):
    index = (tokens * V ** torch.arange(L - 1, -1, -1)).sum(-1)
    empirical = torch.bincount(index, minlength=V**L).double() / len(tokens)
    return 0.5 * float((empirical - joint.flatten().double()).abs().sum())


# Measured with the fixture above (seed 0/1), TV between the empirical joint of
# 20 000 samples and the truth; the noise floor (20 000 exact samples) is 0.024.
#
#   strategy          T=1     T=8     T=64
#   MDLM              0.449   0.085   0.022
#   ReMDM-cap 0.02    0.449   0.086   0.028
#   ReMDM-rescale 0.2 0.449   0.098   0.033
#   ReMDM-loop        0.449   0.108   0.023
#   forward-backward  0.449   0.127   0.023
#
# With T = 1 every token is drawn independently from its marginal: far from the
# joint. The bound 1.5 x floor at T = 64 fails for a wrong posterior or oracle.
TV_STRATEGIES = {
    "MDLM": dd.MaskingPosterior(),
    "cap": dd.RemaskPosterior(dd.CapSchedule(0.02)),
    "rescale": dd.RemaskPosterior(dd.RescaleSchedule(0.2)),
    "loop": dd.RemaskPosterior(dd.LoopSchedule()),
    "forward-backward": dd.RemaskPosterior(dd.ForwardBackward()),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", TV_STRATEGIES)
def test_total_variation_shrinks_to_the_noise_floor(truth, name):
    joint, oracle, floor = truth
    process = dd.MaskingProcess(vocab_size=V)
    tvs = {}
    for steps in (1, 8, 64):
        sampler = dd.AncestralSampler(process, TV_STRATEGIES[name], steps=steps)
        tokens = sampler.sample(oracle, N, L, generator=torch.Generator().manual_seed(1)).tokens
        tvs[steps] = total_variation(tokens, joint)
    print(name, tvs, "floor", floor)
    assert tvs[1] > 10 * floor
    assert tvs[1] > tvs[8] > tvs[64]
    assert tvs[64] < 1.5 * floor


def test_value_independent_orderings_are_exact_and_maskgit_is_not(truth):
    """One token per step from the exact conditional samples exactly when the order
    ignores the drawn value (entropy, margin); MaskGIT's prefers likely values."""
    joint, oracle, floor = truth
    process = dd.MaskingProcess(vocab_size=V)
    tv = {}
    for decoder in (dd.EntropyDecoder(), dd.MarginDecoder(), dd.MaskGITDecoder()):
        sampler = dd.AncestralSampler(process, decoder, steps=16)
        result = sampler.sample(oracle, N, L, generator=torch.Generator().manual_seed(2))
        tv[type(decoder).__name__] = total_variation(result.tokens, joint)
    assert tv["EntropyDecoder"] < 1.5 * floor and tv["MarginDecoder"] < 1.5 * floor
    assert tv["MaskGITDecoder"] > 5 * floor


@pytest.mark.slow
def test_threshold_decoding_costs_nothing_at_a_high_threshold(truth):
    """With the exact conditionals, τ = 0.9 keeps MDLM's samples at the noise floor; τ = 0.5
    decodes unsure positions together (drawn independently) and measurably leaves it.
    Measured (seed 4, T = 64): MDLM 0.024, τ = 0.9 0.022, τ = 0.5 0.064; floor 0.024."""
    joint, oracle, floor = truth
    process = dd.MaskingProcess(vocab_size=V)
    tv = {
        tau: total_variation(
            dd.AncestralSampler(process, dd.ThresholdDecoder(tau), steps=64)
            .sample(oracle, N, L, generator=torch.Generator().manual_seed(4))
            .tokens,
            joint,
        )
        for tau in (0.9, 0.5)
    }
    assert tv[0.9] < 1.5 * floor < tv[0.5]


class Counting:
    """Wraps a denoiser and counts its calls."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0
        self.time_conditioned = dd.models.is_time_conditioned(denoiser)

    def __call__(self, z, t):
        self.calls += 1
        return self.denoiser(z, t)


def test_cache_skips_calls_and_changes_nothing(truth):
    _, oracle, _ = truth
    process = dd.MaskingProcess(vocab_size=V)
    results = {}
    for cache in (True, False):
        counting = Counting(oracle)
        sampler = dd.AncestralSampler(process, dd.MaskingPosterior(), steps=200, cache=cache)
        results[cache] = sampler.sample(
            counting, 3, L, generator=torch.Generator().manual_seed(3), return_trajectory=True
        )
        assert results[cache].nfe == counting.calls
    assert torch.equal(results[True].tokens, results[False].tokens)
    trajectory = results[True].trajectory
    changed_steps = int((trajectory[1:-1] != trajectory[:-2]).any(-1).any(-1).sum())
    assert results[True].nfe <= changed_steps + 1
    assert results[False].nfe == 200  # no call for noise removal: nothing is left masked
    assert results[True].nfe < 20


def test_time_conditioned_denoisers_are_never_cached():
    process = dd.MaskingProcess(vocab_size=5)
    counting = Counting(lambda z, t: torch.zeros(*z.shape, 5))  # no attribute: conditioned
    sampler = dd.AncestralSampler(process, dd.MaskingPosterior(), steps=50)
    result = sampler.sample(counting, 2, 3, generator=torch.Generator().manual_seed(0))
    # one call a step, and none for noise removal: nothing is left masked at the end
    assert not process.is_masked(result.tokens).any()
    assert result.nfe == counting.calls == 50


def test_float64_draws_keep_the_tail_that_float32_loses():
    """50 000 tail tokens of probability 2e-8 each behind a head of ~0.999.

    A float32 CDF next to 0.999 moves in steps of 6e-8, so most tail tokens get an
    interval of width zero: the float32 path can never draw them (their mass goes
    to a neighbour), and the tail's entropy collapses. float64 resolves them all.
    """
    vocab = 50_001
    probs = torch.full((1, vocab), 2e-8)
    probs[0, 0] = 1 - 2e-8 * (vocab - 1)
    cdf32 = probs.cumsum(-1)
    unreachable32 = torch.cat((torch.tensor([False]), cdf32[0, 1:] == cdf32[0, :-1]))
    assert unreachable32.double().mean() > 0.5  # over half of the tail has zero float32 mass

    draws = 200_000  # about 200 tail draws
    generator = torch.Generator().manual_seed(0)
    tail64 = draw_categorical(probs, draws, generator=generator)[0]
    tail32 = draw_categorical(probs, draws, generator=generator, dtype=torch.float32)[0]
    tail64, tail32 = tail64[tail64 != 0], tail32[tail32 != 0]
    assert 130 < len(tail64) < 270 and 130 < len(tail32) < 270  # aggregate tail mass is kept
    assert unreachable32[tail64].double().mean() > 0.5  # float64 draws them at their rate
    assert not unreachable32[tail32].any()  # float32 never does


class Spy(Strategy):
    """A strategy that records the dtype the sampler asks for, then acts as MDLM."""

    def __init__(self):
        self.inner, self.dtypes = dd.MaskingPosterior(), set()

    def time_grid(self, steps, t_min=1e-5):
        return self.inner.time_grid(steps, t_min)

    def alphas(self, process, t, s):
        return self.inner.alphas(process, t, s)

    process_type = dd.MaskingProcess

    def start(self, process, z):
        return self.inner.start(process, z)

    def draw(self, process, z_t, x, t, s, *, state=None, generator=None, dtype=torch.float64):
        self.dtypes.add(dtype)
        return self.inner.draw(process, z_t, x, t, s, state=state, generator=generator, dtype=dtype)


@pytest.mark.parametrize(("float64", "dtype"), [(True, torch.float64), (False, torch.float32)])
def test_sampler_draws_in_the_requested_precision(float64, dtype):
    spy = Spy()
    process = dd.MaskingProcess(vocab_size=4)
    dd.AncestralSampler(process, spy, steps=4, float64=float64).sample(
        lambda z, t: torch.zeros(*z.shape, 4), 2, 3
    )
    assert spy.dtypes == {dtype}


def test_shape_probs():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.2]]]))
    torch.testing.assert_close(shape_probs(logits), torch.tensor([[[0.5, 0.3, 0.2]]]))
    torch.testing.assert_close(
        shape_probs(logits, top_p=0.6), torch.tensor([[[0.625, 0.375, 0.0]]])
    )
    torch.testing.assert_close(shape_probs(logits, top_p=0.4), torch.tensor([[[1.0, 0.0, 0.0]]]))
    torch.testing.assert_close(shape_probs(logits, top_k=2), torch.tensor([[[0.625, 0.375, 0.0]]]))
    torch.testing.assert_close(shape_probs(logits, temperature=0.5), (logits / 0.5).softmax(-1))


def micro_denoiser(vocab=20, seed=0):
    process = dd.MaskingProcess(vocab_size=vocab)
    model = DiT(DiTConfig.micro(vocab_size=vocab + 1))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return process, SUBS(model.eval(), process)


ALL_STRATEGIES = [
    dd.MaskingPosterior(),
    dd.RemaskPosterior(dd.CapSchedule(0.04)),
    dd.RemaskPosterior(dd.RescaleSchedule(0.015)),
    dd.RemaskPosterior(dd.ConfidenceSchedule()),
    dd.RemaskPosterior(dd.LoopSchedule(t_on=0.55, t_off=0.05, alpha_on=0.9, eta=0.02)),
    dd.RemaskPosterior(dd.ForwardBackward()),
    dd.RemaskPosterior(dd.DFMCorrector()),
    dd.MaskGITDecoder(),
    dd.MaskGITDecoder(tokens_per_step=2),
    dd.EntropyDecoder(),
    dd.MarginDecoder(),
    dd.ThresholdDecoder(0.5),
    dd.ThresholdDecoder(0.5, dd.RemaskPosterior(dd.ConfidenceSchedule())),
    dd.DilatedDecoder(),
    dd.DilatedDecoder(tokens_per_step=3),
]


@pytest.mark.parametrize("strategy", ALL_STRATEGIES, ids=repr)
def test_every_strategy_runs_on_a_dit_and_keeps_the_prompt(strategy):
    process, denoiser = micro_denoiser()
    prompt = torch.tensor([[1, 2, 3, 4, 5]])
    sampler = dd.AncestralSampler(process, strategy, steps=12, top_p=0.9)
    result = sampler.sample(
        denoiser,
        3,
        16,
        prompt=prompt,
        generator=torch.Generator().manual_seed(0),
        return_trajectory=True,
        return_stats=True,
    )
    assert result.tokens.shape == (3, 16)
    assert not process.is_masked(result.tokens).any()
    assert (result.trajectory[:, :, :5] == prompt).all()
    assert result.masked_fraction[0].eq(1).all() and result.masked_fraction[-1].eq(0).all()
    again = sampler.sample(
        denoiser, 3, 16, prompt=prompt, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again.tokens, result.tokens)


def test_remasking_strategies_do_remask_and_report_it():
    process, denoiser = micro_denoiser()
    sampler = dd.AncestralSampler(process, dd.RemaskPosterior(dd.CapSchedule(0.2)), steps=32)
    result = sampler.sample(
        denoiser, 4, 16, return_stats=True, generator=torch.Generator().manual_seed(0)
    )
    assert result.remasked.sum() > 0
    mdlm = dd.AncestralSampler(process, dd.MaskingPosterior(), steps=32)
    assert mdlm.sample(denoiser, 4, 16, return_stats=True).remasked.sum() == 0


def test_dfm_reports_its_adaptive_number_of_calls():
    process, denoiser = micro_denoiser()
    sampler = dd.AncestralSampler(
        process, dd.RemaskPosterior(dd.DFMCorrector()), steps=8, cache=False
    )
    result = sampler.sample(denoiser, 2, 8, generator=torch.Generator().manual_seed(0))
    steps = len(sampler.grid) - 1  # one call a step, and one for noise removal if masks remain
    assert steps > 8 and result.nfe == steps + int(result.steps > steps)


def test_infill_positions_never_change():
    process, denoiser = micro_denoiser()
    m = process.mask_id
    infill = torch.tensor([[7, m, m, 9, m, m, m, 11]])
    sampler = dd.AncestralSampler(process, dd.RemaskPosterior(dd.CapSchedule(0.5)), steps=16)
    result = sampler.sample(denoiser, 5, 8, infill=infill, return_trajectory=True)
    given = infill != m
    assert (result.trajectory[:, :, given[0]] == infill[given]).all()


def test_blockwise_generation_waits_for_earlier_blocks():
    process, denoiser = micro_denoiser()
    sampler = dd.AncestralSampler(process, dd.MaskingPosterior(), steps=12)
    result = sampler.sample(denoiser, 2, 12, blocks=3, return_trajectory=True)
    masked = process.is_masked(result.trajectory)
    # while the first block is still being decoded, the last one is entirely masked
    first_block_busy = masked[:, :, :4].any(-1).any(-1)
    assert masked[first_block_busy][:, 8:].all()
    assert not process.is_masked(result.tokens).any()


def test_semi_autoregressive_generation_beyond_the_model_length():
    process, denoiser = micro_denoiser()
    sampler = dd.AncestralSampler(process, dd.MaskingPosterior(), steps=4)
    prompt = torch.tensor([[3, 1, 4]])
    result = sampler.sample_long(
        denoiser, 2, 300, model_length=128, stride=64, prompt=prompt, generator=torch.Generator()
    )
    assert result.tokens.shape == (2, 300)
    assert (result.tokens[:, :3] == prompt).all()
    assert not process.is_masked(result.tokens).any()
    # windows end at 128, 192, 256, 320; T calls each, and one for noise removal in a window
    # where masks remain after the last step (rare: each mask unmasks with probability 1 - 4e-5)
    assert 4 * 4 <= result.nfe == result.steps <= 4 * 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompt": torch.tensor([[1, 25]])}, "prompt"),
        ({"infill": torch.tensor([[1, 2]])}, "infill"),
        ({"blocks": 9}, "blocks"),
    ],
)
def test_bad_sampling_arguments_are_rejected(kwargs, match):
    process, denoiser = micro_denoiser()
    sampler = dd.AncestralSampler(process, dd.MaskingPosterior(), steps=4)
    with pytest.raises(ValueError, match=match):
        sampler.sample(denoiser, 2, 8, **kwargs)


def test_nan_from_a_denoiser_is_caught():
    process = dd.MaskingProcess(vocab_size=4)
    sampler = dd.AncestralSampler(process, dd.MaskingPosterior(), steps=4)
    with pytest.raises(ValueError, match="probs"):
        sampler.sample(lambda z, t: torch.full((*z.shape, 4), float("nan")), 2, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"steps": 0}, "steps"), ({"top_p": 0.0}, "top_p"), ({"temperature": -1.0}, "temperature")],
)
def test_bad_sampler_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dd.AncestralSampler(
            dd.MaskingProcess(vocab_size=4), dd.MaskingPosterior(), **{"steps": 4, **kwargs}
        )


def test_a_sampler_switches_checks_off_in_its_own_thread_only():
    """The sampler's unchecked steps never switch off another thread's checks (or torch's flag).

    Thread A pauses inside its second denoiser call, where its checks are off;
    meanwhile this thread must still reject a bad time and a NaN denoiser.
    """
    process = dd.MaskingProcess(vocab_size=4)
    sampler = dd.AncestralSampler(process, dd.MaskingPosterior(), steps=4, cache=False)
    inside, release, seen = threading.Event(), threading.Event(), []

    def pausing(z, t):
        seen.append(validation_enabled())
        if len(seen) == 2:
            inside.set()
            assert release.wait(30)
        return torch.zeros(*z.shape, 4)

    worker = threading.Thread(target=sampler.sample, args=(pausing, 2, 3))
    worker.start()
    try:
        assert inside.wait(30)
        assert torch.distributions.Distribution._validate_args
        assert validation_enabled()
        with pytest.raises(ValueError, match="`t`"):
            dd.LogLinear().alpha(torch.tensor([2.0]))
        with pytest.raises(ValueError, match="probs"):
            sampler.sample(lambda z, t: torch.full((*z.shape, 4), float("nan")), 2, 3)
    finally:
        release.set()
        worker.join(30)
    assert seen[:2] == [True, False]  # A itself checked its first call only
