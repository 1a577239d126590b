"""MaskedCategorical and the masking process as pyro distributions."""

import pytest
import torch
from exact import all_sequences, states
from pyro.distributions.testing.gof import multinomial_goodness_of_fit

import discdiff as dd

F64 = torch.float64
N_SAMPLES = 20_000
P_VALUE_FLOOR = 1e-3  # false-failure rate of one goodness-of-fit check (fixed seed)


def counts_of(samples, support):
    """How often each row of `support` occurs among `samples` (N, L)."""
    match = (samples.unsqueeze(1) == support.unsqueeze(0)).all(-1)
    assert match.any(-1).all(), "a sample fell outside the enumerated support"
    return match.sum(0).double()


def p_value(probs, counts):
    """Pearson's test over the support; draws of zero-probability events fail outright."""
    keep = probs > 0
    assert counts[~keep].sum() == 0, "drew an event of probability zero"
    return multinomial_goodness_of_fit(probs[keep], counts[keep])


def tiny_process():
    return dd.MaskingProcess(schedule=dd.Cosine(), vocab_size=3, mask_id=5)


def test_process_marginal_goodness_of_fit():
    process = tiny_process()
    x = torch.tensor([[0, 2, 1]])
    q = process.marginal(x, torch.tensor([0.6]))
    support = states(process, 3)
    samples = q.sample((N_SAMPLES,), generator=torch.Generator().manual_seed(1))[:, 0]
    probs = q.log_prob(support).exp()
    assert p_value(probs, counts_of(samples, support)) > P_VALUE_FLOOR


@pytest.mark.parametrize(
    "schedule",
    [
        dd.NoRemasking(),
        dd.CapSchedule(0.3),
        dd.RescaleSchedule(0.7),
        dd.ForwardBackward(),
        dd.LoopSchedule(alpha_on=0.5, eta=0.5),
        dd.ConfidenceSchedule(),
    ],
    ids=repr,
)
def test_posterior_goodness_of_fit(schedule):
    process = tiny_process()
    generator = torch.Generator().manual_seed(2)
    z_t = torch.tensor([[5, 1, 5]])
    x = torch.softmax(torch.randn(1, 3, 3, generator=generator, dtype=F64), -1)
    t, s = torch.tensor([0.5], dtype=F64), torch.tensor([0.3], dtype=F64)
    psi = torch.tensor([[float("inf"), 0.4, float("inf")]], dtype=F64)
    q = dd.RemaskPosterior(schedule)(process, z_t, x, t, s, confidence=psi)
    support = states(process, 3)
    samples = q.sample((N_SAMPLES,), generator=generator)[:, 0]
    probs = q.log_prob(support).exp()
    assert p_value(probs, counts_of(samples, support)) > P_VALUE_FLOOR


def test_goodness_of_fit_detects_a_mismatch():
    """Control: samples of the cap posterior do not fit MDLM's log_prob."""
    process = tiny_process()
    generator = torch.Generator().manual_seed(3)
    z_t, x = torch.tensor([[5, 5, 5]]), torch.full((1, 3, 3), 1 / 3, dtype=F64)
    t, s = torch.tensor([0.5], dtype=F64), torch.tensor([0.3], dtype=F64)
    cap = dd.RemaskPosterior(dd.CapSchedule(0.3))(process, z_t, x, t, s)
    samples = cap.sample((N_SAMPLES,), generator=generator)[:, 0]
    support = states(process, 3)
    counts = counts_of(samples, support)
    assert p_value(cap.log_prob(support).exp(), counts) > P_VALUE_FLOOR
    mdlm = dd.MaskingPosterior()(process, z_t, x, t, s)
    assert p_value(mdlm.log_prob(support).exp(), counts) < 1e-6


def test_log_prob_matches_enumeration_and_sums_to_one():
    generator = torch.Generator().manual_seed(4)
    mask_prob = torch.rand(2, 2, generator=generator, dtype=F64)
    probs = torch.softmax(torch.randn(2, 2, 3, generator=generator, dtype=F64), -1)
    carry = torch.tensor([[3, 1], [0, 3]])
    d = dd.MaskedCategorical(mask_prob, vocab_size=3, mask_id=3, probs=probs, carry=carry)
    support = all_sequences(2, [0, 1, 2, 3])
    table = d.log_prob(support.unsqueeze(1)).exp()  # (K, 2)
    torch.testing.assert_close(table.sum(0), torch.ones(2, dtype=F64))
    # position by position by hand: sequence 0 = (draw, carry 1), sequence 1 = (carry 0, draw)
    by_hand = (1 - mask_prob[0, 0]) * probs[0, 0, 2] * mask_prob[0, 1]
    torch.testing.assert_close(table[(support == torch.tensor([2, 3])).all(-1), 0][0], by_hand)


def test_kl_matches_enumeration():
    generator = torch.Generator().manual_seed(5)
    process = dd.MaskingProcess(vocab_size=2)
    z_t = torch.tensor([[2, 0, 2], [1, 2, 2]])
    x = torch.nn.functional.one_hot(torch.tensor([[1, 0, 1], [1, 0, 0]]), 2).double()
    x_theta = torch.softmax(torch.randn(2, 3, 2, generator=generator, dtype=F64), -1)
    t, s = torch.tensor([0.7, 0.4], dtype=F64), torch.tensor([0.5, 0.1], dtype=F64)
    for posterior in (dd.MaskingPosterior(), dd.RemaskPosterior(dd.CapSchedule(0.1))):
        q, p = posterior(process, z_t, x, t, s), posterior(process, z_t, x_theta, t, s)
        support = states(process, 3).unsqueeze(1)
        lq, lp = q.log_prob(support), p.log_prob(support)
        brute = torch.where(lq > -torch.inf, lq.exp() * (lq - lp), 0.0).sum(0)
        torch.testing.assert_close(torch.distributions.kl_divergence(q, p), brute)


def test_entropy_matches_enumeration():
    process = tiny_process()
    q = process.marginal(
        torch.softmax(torch.randn(2, 2, 3, dtype=F64), -1), torch.tensor([0.3, 0.9], dtype=F64)
    )
    lp = q.log_prob(states(process, 2).unsqueeze(1))
    torch.testing.assert_close(q.entropy(), -(lp.exp() * lp).sum(0))


def test_expand_and_shapes():
    process = tiny_process()
    q = process.marginal(torch.tensor([[0, 1, 2, 1]]), torch.tensor([0.5]))
    assert q.batch_shape == (1,) and q.event_shape == (4,)
    wide = q.expand((6,))
    assert wide.batch_shape == (6,)
    assert wide.sample((2,)).shape == (2, 6, 4)
    assert wide.log_prob(wide.sample()).shape == (6,)
    assert q.support.check(torch.tensor([[0, 5, 2, 4]])).tolist() == [False]


@pytest.mark.parametrize("bad", [[[0, 3, 1]], [[0, -1, 1]], [[0, 4, 1]]])
def test_log_prob_rejects_tokens_outside_support(bad):
    q = tiny_process().marginal(torch.tensor([[0, 1, 2]]), torch.tensor([0.5]))
    with pytest.raises(ValueError):
        q.log_prob(torch.tensor(bad))


def test_process_rejects_bad_configuration_and_data():
    with pytest.raises(ValueError, match="mask_id"):
        dd.MaskingProcess(vocab_size=5, mask_id=3)
    process = dd.MaskingProcess(vocab_size=5)
    assert process.mask_id == 5
    with pytest.raises(ValueError, match=r"`x` holds ids \[5\] outside 0\.\.4"):
        process.marginal(torch.tensor([[0, 5]]), 0.5)
    with pytest.raises(ValueError, match="`t` must lie in"):
        process.sample(torch.tensor([[0, 1]]), torch.tensor([1.2]))


def test_process_sample_is_seeded_and_honours_endpoints():
    process = dd.MaskingProcess(schedule=dd.LogLinear(eps=0.0), vocab_size=4)
    x = torch.randint(4, (3, 50))
    a = process.sample(x, torch.full((3,), 0.5), generator=torch.Generator().manual_seed(0))
    b = process.sample(x, torch.full((3,), 0.5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert torch.equal(process.sample(x, torch.zeros(3)), x)
    assert process.is_masked(process.sample(x, torch.ones(3))).all()


def test_float64_draw_keeps_the_tail_of_a_large_vocabulary():
    """Tokens with probability ~1e-9 are drawn at their rate (float32 CDFs lose them)."""
    vocab = 50_000
    probs = torch.full((1, 1, vocab), 1e-9, dtype=F64)
    probs[..., 0] = 1 - 1e-9 * (vocab - 1)
    d = dd.MaskedCategorical(
        torch.zeros(1, 1, dtype=F64), vocab_size=vocab, mask_id=vocab, probs=probs
    )
    samples = d.sample((200_000,), generator=torch.Generator().manual_seed(0))
    tail = (samples != 0).double().mean()
    expected = 1e-9 * (vocab - 1)  # 5e-5: about 10 of 200 000 draws
    assert 0.2 * expected < tail < 3 * expected
