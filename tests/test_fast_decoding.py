"""Fast decoding: confidence-threshold parallel decoding, alone and with ReMDM remasking."""

import pytest
import torch

import discdiff as dd
from discdiff.config import ConfigError, build_strategy

V = 6


class Scripted:
    """A denoiser whose confidence at position ℓ is `confidence[ℓ]` on token ℓ mod V."""

    time_conditioned = False

    def __init__(self, confidence):
        self.confidence = torch.as_tensor(confidence, dtype=torch.float64)
        self.calls = 0

    def __call__(self, z, t):
        self.calls += 1
        length = z.shape[1]
        c = self.confidence[:length]
        probs = ((1 - c) / (V - 1)).unsqueeze(-1).repeat(1, V)
        probs[torch.arange(length), torch.arange(length) % V] = c
        return probs.log().float().expand(z.shape[0], length, V)


def test_every_position_above_the_threshold_decodes_in_the_first_step():
    process = dd.MaskingProcess(vocab_size=V)
    denoiser = Scripted([0.95] * 6 + [0.3] * 26)
    sampler = dd.AncestralSampler(process, dd.ThresholdDecoder(0.9), steps=32)
    result = sampler.sample(
        denoiser, 64, 32, generator=torch.Generator().manual_seed(0), return_trajectory=True
    )
    decoded = ~process.is_masked(result.trajectory[1])
    assert decoded[:, :6].all()
    # the unsure positions follow MDLM's posterior: each unmasks with probability 1/32
    assert 0.01 < decoded[:, 6:].double().mean() < 0.06
    # ... and the confident ones were drawn from x_θ, not set to its argmax (5 % elsewhere)
    drawn = result.trajectory[1][:, :6]
    assert 0.02 < (drawn != torch.arange(6)).double().mean() < 0.09
    assert not process.is_masked(result.tokens).any()


def test_a_confident_model_needs_far_fewer_calls_than_the_step_budget():
    process = dd.MaskingProcess(vocab_size=V)
    denoiser = Scripted([0.9999] * 32)
    result = dd.AncestralSampler(process, dd.ThresholdDecoder(0.9), steps=32).sample(
        denoiser, 3, 32, generator=torch.Generator().manual_seed(0)
    )
    # decode everything, then one call on the finished sequence (the loop cannot know that
    # no strategy would remask it); the remaining steps change nothing and reuse the cache
    assert result.nfe == 2 and result.sequence_nfe.tolist() == [2, 2, 2]
    mdlm = dd.AncestralSampler(process, dd.MaskingPosterior(), steps=32).sample(
        denoiser, 3, 32, generator=torch.Generator().manual_seed(0)
    )
    assert mdlm.nfe > 10


@pytest.mark.parametrize(
    "schedule", [dd.CapSchedule(0.2), dd.ConfidenceSchedule(), dd.LoopSchedule(eta=0.1)], ids=repr
)
def test_threshold_decoding_composes_with_remasking(schedule):
    """Decoded tokens are remasked; prompts and pads never change; everything ends decoded."""
    process = dd.MaskingProcess(vocab_size=V)
    denoiser = Scripted([0.95] * 10 + [0.4] * 10)
    decoder = dd.ThresholdDecoder(0.9, dd.RemaskPosterior(schedule))
    sampler = dd.AncestralSampler(process, decoder, steps=24)
    # mixed lengths: row 0 has 20 tokens, row 1 has 14 then 6 fixed pad tokens (id 0)
    infill = torch.full((2, 20), -1)
    infill[1, 14:] = 0
    prompt = torch.tensor([[5, 4]])
    result = sampler.sample(
        denoiser,
        2,
        20,
        prompt=prompt,
        infill=infill,
        generator=torch.Generator().manual_seed(3),
        return_trajectory=True,
        return_stats=True,
    )
    assert int(result.remasked.sum()) > 0
    assert (result.trajectory[:, :, :2] == prompt).all()
    assert (result.trajectory[:, 1, 14:] == 0).all()
    assert not process.is_masked(result.tokens).any()


def test_threshold_decoder_arguments_are_checked_and_configurable():
    with pytest.raises(ValueError, match="threshold"):
        dd.ThresholdDecoder(0.0)
    with pytest.raises(TypeError, match="posterior"):
        dd.ThresholdDecoder(0.9, posterior=dd.UniformPosterior())
    built = build_strategy({"name": "threshold", "threshold": 0.8, "posterior": {"name": "cap"}})
    assert isinstance(built, dd.ThresholdDecoder) and built.threshold == 0.8
    assert isinstance(built.posterior.schedule, dd.CapSchedule) and built.rule is None
    with pytest.raises(ConfigError, match="posterior"):
        build_strategy({"name": "threshold", "posterior": {"name": "uniform"}})
    # a confidence decoder as the base: Fast-dLLM's rule (its count replaced, the base kept)
    fast = build_strategy({"name": "threshold", "threshold": 0.7, "posterior": "maskgit"})
    assert isinstance(fast.rule, dd.MaskGITDecoder) and fast.rule.count.threshold == 0.7
    assert isinstance(fast.posterior.count, dd.ScheduleCount)


def sorted_nucleus(probs, top_p, rule):
    """The textbook definition: sort everything, keep a prefix, renormalise."""
    ordered, order = probs.sort(-1, descending=True)
    mass = ordered.cumsum(-1)
    if rule == "standard":
        drop = (mass - ordered) >= top_p
    else:
        drop = mass > top_p
        drop[:, 0] = False
    kept = ordered.masked_fill(drop, 0.0)
    out = torch.zeros_like(probs).scatter_(-1, order, kept)
    return out / out.sum(-1, keepdim=True)


@pytest.mark.parametrize("rule", ["standard", "remdm"])
@pytest.mark.parametrize("head", [1, 8, 128])
def test_nucleus_by_threshold_search_equals_the_full_sort(rule, head):
    """Rows peaked and flat (nucleus inside and far beyond the head) in one batch."""
    from discdiff.distributions import nucleus_

    generator = torch.Generator().manual_seed(0)
    scale = torch.logspace(-1, 1.3, 40).repeat_interleave(3).unsqueeze(-1)
    probs = (torch.randn(120, 300, generator=generator) * scale).softmax(-1)
    for top_p in (0.5, 0.9, 0.999):
        expected = sorted_nucleus(probs, top_p, rule)
        got = nucleus_(probs.clone(), top_p, rule, head=head)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
        assert torch.equal(got > 0, expected > 0)


def test_draws_restricted_to_some_rows_equal_the_full_draw():
    """`where=` spends the O(V) work on the selected rows only and changes none of their draws."""
    from discdiff.distributions import draw_categorical

    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 7, 50, generator=generator) ** 4
    where = torch.rand(3, 7, generator=generator) < 0.4
    full = draw_categorical(probs, 2, generator=torch.Generator().manual_seed(1))
    some = draw_categorical(probs, 2, generator=torch.Generator().manual_seed(1), where=where)
    assert torch.equal(some[where], full[where]) and (some[~where] == 0).all()
    none = draw_categorical(probs, generator=dd.rng.SequenceGenerator(0, 3), where=where & False)
    assert (none == 0).all()


def test_subs_in_place_keeps_values_and_gradients():
    """SUBS written in place under no_grad equals the out-of-place result with gradients."""
    process = dd.MaskingProcess(vocab_size=5)
    logits = torch.randn(2, 6, 6, requires_grad=True)
    z = torch.tensor([[5, 1, 5, 0, 4, 5], [2, 5, 5, 5, 3, 1]])
    with_grad = process.log_probs(logits, z)
    with torch.no_grad():
        without = process.log_probs(logits, z)
    torch.testing.assert_close(with_grad.detach(), without)
    unmasked = z != 5
    assert (without[unmasked].argmax(-1) == z[unmasked]).all()
    assert (without[unmasked].amax(-1) == 0).all()
    torch.testing.assert_close(without[~unmasked].exp().sum(-1), torch.ones(6))
    with_grad[~unmasked].sum().backward()
    assert logits.grad[unmasked].abs().sum() == 0 and logits.grad[~unmasked].abs().sum() > 0


# -- dilated unmasking -------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 5, 8, 13, 64])
def test_dilated_order_spreads_every_run_of_ranks(length):
    from discdiff.processes.masking.decoders import dilated_order

    rank = dilated_order(length)
    assert sorted(rank.tolist()) == list(range(length))
    if length & (length - 1) == 0:  # L = 2^b: each aligned run of k ranks is spaced L/k apart
        order = rank.argsort()
        for k in (1, 2, 4, 8):
            for start in range(0, length, k) if k <= length else ():
                positions = order[start : start + k].sort().values
                assert (positions.diff() == length // k).all()
    with pytest.raises(ValueError, match="length"):
        dilated_order(0)


def pairs_joint(agree=0.9):
    """Four binary tokens: (x0, x1) and (x2, x3) two independent pairs that agree w.p. `agree`."""
    pair = torch.tensor([[agree, 1 - agree], [1 - agree, agree]], dtype=torch.float64) / 2
    return pair[:, :, None, None] * pair[None, None, :, :]


def total_variation(tokens, joint):
    index = (tokens * 2 ** torch.arange(3, -1, -1)).sum(-1)
    empirical = torch.bincount(index, minlength=16).double() / len(tokens)
    return 0.5 * float((empirical - joint.flatten()).abs().sum())


def test_dilated_decoding_is_exact_where_the_tokens_decoded_together_are_independent():
    """Two tokens a step with the exact denoiser: the dilated order decodes (x0, x2), then
    (x1, x3), each pair independent given the past, so the samples follow the joint; MDLM's
    random positions sometimes decode a dependent pair together and do not.

    Tolerance: the TV of 20 000 exact samples from this 16-sequence joint is ≈ 0.01; the
    dilated sampler must stay within 2x that floor (measured 0.0065, floor 0.0092), MDLM with
    the same two steps must exceed 10x it (measured 0.32).
    """
    joint = pairs_joint()
    oracle = dd.EnumerableOracle(joint)
    process = dd.MaskingProcess(vocab_size=2)
    n = 20_000
    generator = torch.Generator().manual_seed(0)
    exact = oracle.sequences[torch.multinomial(joint.flatten(), n, True, generator=generator)]
    floor = total_variation(exact, joint)
    tv = {}
    for name, strategy in (("dilated", dd.DilatedDecoder()), ("mdlm", dd.MaskingPosterior())):
        sampler = dd.AncestralSampler(process, strategy, steps=2)
        tokens = sampler.sample(oracle, n, 4, generator=torch.Generator().manual_seed(1)).tokens
        tv[name] = total_variation(tokens, joint)
    assert tv["dilated"] < 2 * floor, (tv, floor)
    assert tv["mdlm"] > 10 * floor, (tv, floor)


def test_dilated_decoder_counts_skip_fixed_positions_and_mixed_lengths():
    """k tokens a step, the first masked ones of the order; prompt and pads never change."""
    process = dd.MaskingProcess(vocab_size=V)
    denoiser = Scripted([0.5] * 16)
    infill = torch.full((2, 16), -1)
    infill[1, 10:] = 0  # row 1: 10 tokens, then 6 fixed pads
    prompt = torch.tensor([[3, 1, 4]])
    sampler = dd.AncestralSampler(process, dd.DilatedDecoder(tokens_per_step=2), steps=16)
    result = sampler.sample(
        denoiser,
        2,
        16,
        prompt=prompt,
        infill=infill,
        generator=torch.Generator().manual_seed(0),
        return_trajectory=True,
    )
    path = result.trajectory
    assert (path[:, :, :3] == prompt).all() and (path[:, 1, 10:] == 0).all()
    assert not process.is_masked(result.tokens).any()
    first = ~process.is_masked(path[1]) & (torch.arange(16) >= 3)
    # order 0, 8, 4, 12, 2, 10, 6, 14, 1, ...: the prompt holds 0 and 2, the pads 10..15
    assert first[0].nonzero().flatten().tolist() == [4, 8]
    assert first[1, :10].nonzero().flatten().tolist() == [4, 8]
    decoded = (~process.is_masked(path)).sum(-1)
    assert decoded[1:, 0].diff().le(2).all() and decoded[1:, 1].diff().le(2).all()


def test_dilated_decoder_is_configurable():
    built = build_strategy({"name": "dilated", "tokens_per_step": 4})
    assert isinstance(built, dd.DilatedDecoder) and built.tokens_per_step == 4
    with pytest.raises(ConfigError, match="tokens_per_step"):
        build_strategy({"name": "dilated", "tokens_per_step": "many"})


# -- large-vocabulary step work ------------------------------------------------------------


def test_masked_categorical_draws_tokens_only_where_kept_with_the_same_stream():
    """The token numbers come first, then the mask numbers; a token is the inverse-CDF draw
    of its number at every kept, not-carried position (the O(V) work is done only there)."""
    generator = torch.Generator().manual_seed(3)
    probs = torch.rand(4, 9, 7, generator=generator) ** 3
    probs = probs / probs.sum(-1, keepdim=True)
    carry = torch.where(torch.rand(4, 9, generator=generator) < 0.3, 2, 7)  # 7: the mask id
    mask_prob = torch.rand(4, 9, generator=generator, dtype=torch.float64)
    dist = dd.distributions.MaskedCategorical(
        mask_prob, vocab_size=7, mask_id=7, probs=probs, carry=carry
    )
    drawn = dist.sample(generator=torch.Generator().manual_seed(1))
    stream = torch.Generator().manual_seed(1)
    u_token = torch.rand(4, 9, 1, generator=stream, dtype=torch.float64)
    u_mask = torch.rand(4, 9, generator=stream, dtype=torch.float64)
    cdf = probs.double().cumsum(-1)
    token = torch.searchsorted(cdf, u_token * cdf[..., -1:], right=True).squeeze(-1)
    expected = torch.where(carry == 7, token, carry)
    expected = torch.where(u_mask < mask_prob, 7, expected)
    assert torch.equal(drawn, expected)


def test_nucleus_is_applied_only_at_the_given_rows():
    from discdiff.shaping import shape_probs

    logits = torch.randn(2, 5, 40, generator=torch.Generator().manual_seed(0)) * 2
    rows = torch.tensor([[True, False, True, False, False], [False] * 4 + [True]])
    shaped = shape_probs(logits, top_p=0.5, rows=rows)
    full = shape_probs(logits, top_p=0.5)
    torch.testing.assert_close(shaped[rows], full[rows])
    torch.testing.assert_close(shaped[~rows], logits[~rows].softmax(-1))
    assert (full[rows] == 0).any() and (shaped[~rows] > 0).all()


class _ReadsEveryRow(dd.RemaskPosterior):
    masked_only = False


@pytest.mark.parametrize("schedule", [dd.NoRemasking(), dd.ConfidenceSchedule()], ids=repr)
def test_shaping_only_masked_rows_changes_no_sample(schedule):
    """A masking strategy reads x_θ at masked positions only, so skipping the nucleus
    elsewhere (`masked_only`) leaves every sample as it was, prompts and remasking included."""
    process = dd.MaskingProcess(vocab_size=V)
    denoiser = Scripted([0.5, 0.3, 0.9, 0.2] * 5)
    tokens = {}
    for strategy in (dd.RemaskPosterior(schedule), _ReadsEveryRow(schedule)):
        sampler = dd.AncestralSampler(process, strategy, steps=12, top_p=0.8, nucleus="remdm")
        result = sampler.sample(
            denoiser, 6, 20, prompt=torch.tensor([[1, 2]]), generator=dd.rng.SequenceGenerator(0, 6)
        )
        tokens[strategy.masked_only] = result.tokens
    assert torch.equal(tokens[True], tokens[False])
