"""Property suites for the posteriors: marginal preservation, normalisation, bounds.

The exact checks and the hypothesis strategies are the public suite in
`discdiff.testing`, the same one users run on their own schedules.
"""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given

import discdiff as dd
from discdiff import testing

F64 = torch.float64


@st.composite
def setups(draw):
    vocab_size = draw(st.integers(1, 3))
    length = draw(st.integers(1, 2))
    mask_id = vocab_size + draw(st.sampled_from([0, 0, 2]))  # default and a configured id
    process = dd.MaskingProcess(
        schedule=draw(testing.noise_schedules()), vocab_size=vocab_size, mask_id=mask_id
    )
    posterior = dd.RemaskPosterior(draw(testing.remasking_schedules()))
    x = draw(testing.data(vocab_size, length))
    psi = draw(testing.confidences(length))
    t, s = draw(testing.times())
    return process, posterior, x, psi, t, s


@given(setups())
def test_marginal_preservation(setup):
    process, posterior, x, psi, t, s = setup
    testing.check_marginal_preservation(
        posterior, process, x=x, steps=[(t, s)], confidence=psi, atol=1e-6
    )


@given(setups())
def test_posterior_is_normalised_and_keeps_or_remasks_tokens(setup):
    process, posterior, x, psi, t, s = setup
    testing.check_normalisation(posterior, process, x=x, steps=[(t, s)], confidence=psi)


@given(setups())
def test_mdlm_posterior_keeps_unmasked_tokens(setup):
    process, _, x, psi, t, s = setup
    z, table = testing.posterior_table(dd.MaskingPosterior(), process, x, t, s, confidence=psi)
    differs = (z.unsqueeze(0) != z.unsqueeze(1)) & (z.unsqueeze(1) != process.mask_id)
    assert (table[differs.any(-1)] == 0).all()


@given(setups())
def test_posterior_objects_accept_valid_steps_with_validation_on(setup):
    """The guards do not fire on valid steps (the checks above run with them off)."""
    process, posterior, x, psi, t, s = setup
    z = testing.enumerate_states(process, x.shape[1])
    k = len(z)
    q = posterior(
        process,
        z,
        x.expand(k, -1, -1),
        torch.full((k,), t, dtype=F64),
        torch.full((k,), s, dtype=F64),
        confidence=psi.expand(k, -1),
    )
    assert q.batch_shape == (k,)


def test_process_marginal_is_the_posterior_marginal():
    process = dd.MaskingProcess(schedule=dd.Cosine(), vocab_size=3)
    x = torch.softmax(torch.randn(2, 4, 3, dtype=F64), -1)
    t = torch.tensor([0.3, 0.8], dtype=F64)
    alpha_t, _ = dd.MaskingPosterior().alphas(process, t, t / 2)
    torch.testing.assert_close(process.marginal(x, t).mask_prob[:, 0], 1 - alpha_t)


class Overshoot(dd.RemaskingSchedule):
    """A user schedule that leaves the valid range by `by` (relative)."""

    def __init__(self, by):
        self.by = by

    def _sigma(self, t, s, alpha_t, alpha_s, confidence):
        return dd.sigma_max(alpha_t, alpha_s) * (1 + self.by)


@pytest.mark.parametrize("by", [1e-3, 0.5, -2.0])
def test_sigma_outside_bound_is_rejected(by):
    process = dd.MaskingProcess(vocab_size=3)
    z = torch.tensor([[3, 0, 3]])
    x = torch.full((1, 3, 3), 1 / 3)
    with pytest.raises(ValueError, match="outside \\[0, sigma_max\\]"):
        dd.RemaskPosterior(Overshoot(by))(process, z, x, torch.tensor([0.5]), torch.tensor([0.4]))


@given(testing.remasking_schedules(), testing.times())
def test_builtin_schedules_stay_inside_the_bound(schedule, step):
    process = dd.MaskingProcess(vocab_size=2)
    testing.check_sigma_bounds(
        schedule, process, steps=[step], confidence=torch.rand(1, 5, dtype=F64)
    )
    t, s = (torch.tensor([value], dtype=F64) for value in step)
    sigma = dd.RemaskPosterior(schedule).sigma(
        process, t, s, confidence=torch.rand(1, 5, dtype=F64)
    )
    alpha_t, alpha_s = schedule.alphas(process.schedule, t, s)
    assert (sigma >= 0).all()
    assert (sigma <= dd.sigma_max(alpha_t, alpha_s).unsqueeze(-1) * (1 + 1e-12)).all()


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: dd.CapSchedule(eta=1.5), "eta"),
        (lambda: dd.RescaleSchedule(eta=-0.1), "eta"),
        (lambda: dd.LoopSchedule(alpha_on=0.9, eta=0.2), "eta"),  # above (1 - α_on)/α_on
        (lambda: dd.LoopSchedule(t_on=0.1, t_off=0.2), "t_off"),
        (lambda: dd.LoopSchedule(alpha_on=1.0), "alpha_on"),
        (lambda: dd.ConfidenceSchedule(dd.ConfidenceSchedule()), "base"),
    ],
)
def test_bad_remasking_parameters_are_rejected(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_confidence_schedule_needs_confidence():
    process = dd.MaskingProcess(vocab_size=3)
    with pytest.raises(ValueError, match="confidence"):
        dd.RemaskPosterior(dd.ConfidenceSchedule())(
            process,
            torch.tensor([[3, 0]]),
            torch.full((1, 2, 3), 1 / 3),
            torch.tensor([0.5]),
            torch.tensor([0.4]),
        )


def test_confidence_weights_follow_low_confidence():
    """softmax(-ψ): the least confident token gets the largest σ; ψ = inf gets none."""
    psi = torch.tensor([[0.9, 0.1, float("inf"), 0.5]], dtype=F64)
    t, s = torch.tensor([0.5], dtype=F64), torch.tensor([0.4], dtype=F64)
    alpha_t, alpha_s = dd.LogLinear().alpha(t), dd.LogLinear().alpha(s)
    sigma = dd.ConfidenceSchedule().sigma(t, s, alpha_t, alpha_s, confidence=psi)
    weights = sigma / dd.sigma_max(alpha_t, alpha_s)
    expected = torch.tensor([[torch.e**-0.9, torch.e**-0.1, 0.0, torch.e**-0.5]], dtype=F64)
    torch.testing.assert_close(weights, expected / expected.sum())


def test_forward_backward_is_capped_where_the_raw_ratio_is_invalid():
    alpha_t, alpha_s = torch.tensor([0.5], dtype=F64), torch.tensor([0.9], dtype=F64)
    t = s = torch.tensor([0.5], dtype=F64)
    sigma = dd.ForwardBackward().sigma(t, s / 2, alpha_t, alpha_s)
    torch.testing.assert_close(sigma, dd.sigma_max(alpha_t, alpha_s))  # raw ratio 0.8 > 0.2
    alpha_s = torch.tensor([0.52], dtype=F64)
    torch.testing.assert_close(
        dd.ForwardBackward().sigma(t, s / 2, alpha_t, alpha_s), (alpha_s - alpha_t) / alpha_t
    )


def test_loop_phase_keeps_the_masked_fraction():
    loop = dd.LoopSchedule(t_on=0.55, t_off=0.05, alpha_on=0.9, eta=0.02)
    t, s = torch.tensor([0.5], dtype=F64), torch.tensor([0.49], dtype=F64)
    alpha_t, alpha_s = loop.alphas(dd.LogLinear(), t, s)
    torch.testing.assert_close(alpha_t, torch.tensor([0.9], dtype=F64))
    torch.testing.assert_close(alpha_s, alpha_t)
    process = dd.MaskingProcess(vocab_size=2)
    q = dd.RemaskPosterior(loop)(
        process, torch.tensor([[2, 0]]), torch.full((1, 2, 2), 0.5, dtype=F64), t, s
    )
    unmask = 1 - q.mask_prob[0, 0]
    torch.testing.assert_close(unmask, torch.tensor(0.02 * 0.9 / 0.1, dtype=F64))
    torch.testing.assert_close(q.mask_prob[0, 1], torch.tensor(0.02, dtype=F64))


@pytest.mark.parametrize(
    ("z_t", "x_shape", "t", "s", "match"),
    [
        ([[5, 0]], (1, 2, 3), 0.5, 0.4, "z_t"),
        ([[3, 0]], (1, 2, 4), 0.5, 0.4, "x"),
        ([[3, 0]], (1, 2, 3), 0.4, 0.5, "`s` must be earlier"),
        ([[3, 0]], (1, 2, 3), 1.5, 0.4, "`t` must lie in"),
    ],
)
def test_bad_posterior_arguments_are_rejected(z_t, x_shape, t, s, match):
    process = dd.MaskingProcess(vocab_size=3)
    x = torch.full(x_shape, 1 / x_shape[-1])
    with pytest.raises((ValueError, TypeError), match=match):
        dd.MaskingPosterior()(process, torch.tensor(z_t), x, torch.tensor([t]), torch.tensor([s]))


def test_nan_in_x_is_rejected():
    process = dd.MaskingProcess(vocab_size=2)
    x = torch.tensor([[[float("nan"), 1.0]]])
    with pytest.raises(ValueError, match="probs"):
        dd.MaskingPosterior()(
            process, torch.tensor([[2]]), x, torch.tensor([0.5]), torch.tensor([0.4])
        )


def test_loop_retiming_matches_spec():
    loop = dd.LoopSchedule(t_on=0.55, t_off=0.05, alpha_on=0.9, eta=0.02)
    tau = torch.tensor([1.0, 0.8, 0.55, 0.3, 0.05, 0.02, 0.0], dtype=F64)
    expected = torch.tensor(
        [0.0, 0.2 * 0.9 / 0.45, 0.9, 0.9, 0.9, 1 - 0.02 * 0.1 / 0.05, 1.0], dtype=F64
    )
    torch.testing.assert_close(loop.alpha(tau), expected)
