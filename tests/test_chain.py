"""Statistical check: the forward-conditioned reverse chain z_1 -> z_0 keeps q(z_s | x).

Given fixed data x, drawing z_1 ~ q(z_1 | x) and then z_s ~ q_σ(z_s | z_t, x) step by
step must give, at every time s, masked fraction 1 - α_s and data tokens equal to x.
With N = 20 000 positions the masked fraction has standard deviation at most
0.0036; the tolerance 0.02 is 5.6 standard deviations (false-failure rate below
1e-7 per check, ~1e-5 over the whole table). Seeds are fixed.
"""

import itertools

import pytest
import torch

import discdiff as dd

STRATEGIES = [
    dd.NoRemasking(),
    dd.CapSchedule(0.05),
    dd.RescaleSchedule(0.5),
    dd.ConfidenceSchedule(),
    dd.ConfidenceSchedule(dd.CapSchedule(0.2)),
    # α_s from s's phase: consecutive steps agree on α (the reference's "t" does not at
    # t_on / t_off unless the grid lands on them, as 0.55 and 0.05 do here)
    dd.LoopSchedule(t_on=0.55, t_off=0.05, alpha_on=0.9, eta=0.02),
    dd.LoopSchedule(t_on=0.53, t_off=0.06, alpha_on=0.9, eta=0.02, phase_from="s"),
    dd.ForwardBackward(),
    dd.DFMCorrector(),
]
SCHEDULES = [dd.LogLinear(), dd.Cosine(), dd.Geometric(), dd.Polynomial(2.0)]
TOLERANCE = 0.02


def max_masked_fraction_error(process, posterior, seed=0):
    """Run the chain given fixed x; the largest |masked fraction - (1 - α_s)| seen."""
    generator = torch.Generator().manual_seed(seed)
    batch, length, vocab, steps = 10, 2000, process.vocab_size, 40
    x = torch.randint(vocab, (batch, length), generator=generator)
    x_probs = torch.nn.functional.one_hot(x, vocab).double()
    psi = torch.rand(batch, length, generator=generator, dtype=torch.float64)  # fixed ψ
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).unsqueeze(-1)

    alpha_1, _ = posterior.alphas(process, grid[0], grid[1])
    z = dd.distributions.MaskedCategorical(
        (1 - alpha_1).expand(batch, length), vocab_size=vocab, mask_id=process.mask_id, carry=x
    ).sample(generator=generator)
    worst = 0.0
    for t, s in itertools.pairwise(grid):
        t, s = t.expand(batch), s.expand(batch)
        z = posterior(process, z, x_probs, t, s, confidence=psi).sample(generator=generator)
        masked = process.is_masked(z)
        assert (z[~masked] == x[~masked]).all(), "a decoded token differs from the data"
        _, alpha_s = posterior.alphas(process, t, s)
        worst = max(worst, abs(float(masked.double().mean() - (1 - alpha_s[0]))))
    return worst


@pytest.mark.parametrize("noise", SCHEDULES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_reverse_chain_keeps_the_masked_fraction(noise, strategy):
    process = dd.MaskingProcess(schedule=noise, vocab_size=7)
    assert max_masked_fraction_error(process, dd.RemaskPosterior(strategy)) < TOLERANCE


class SlowUnmasking(dd.RemaskPosterior):
    """A wrong posterior: masked tokens unmask 20% less often than they should."""

    def __call__(self, process, z_t, x, t, s, *, confidence=None):
        q = super().__call__(process, z_t, x, t, s, confidence=confidence)
        unmask = 0.8 * (1 - q.mask_prob)
        mask_prob = torch.where(process.is_masked(z_t), 1 - unmask, q.mask_prob)
        return dd.distributions.MaskedCategorical(
            mask_prob, vocab_size=q.vocab_size, mask_id=q.mask_id, probs=q.probs, carry=q.carry
        )


def test_chain_check_detects_a_wrong_posterior():
    process = dd.MaskingProcess(vocab_size=7)
    assert max_masked_fraction_error(process, SlowUnmasking(dd.NoRemasking())) > 2 * TOLERANCE
