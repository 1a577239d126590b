"""The public property suite (discdiff.testing) passes every shipped schedule, fails broken ones."""

import hypothesis.strategies as st
import pytest
import torch

import discdiff as dd
from discdiff import testing

SHIPPED = [
    dd.MaskingPosterior(),
    dd.NoRemasking(),
    dd.CapSchedule(0.04),
    dd.CapSchedule(1.0),
    dd.RescaleSchedule(0.5),
    dd.ForwardBackward(),
    dd.DFMCorrector(),
    dd.LoopSchedule(),
    dd.ConfidenceSchedule(),
    dd.ConfidenceSchedule(dd.LoopSchedule(eta=0.1)),
]


@pytest.mark.parametrize("subject", SHIPPED, ids=repr)
def test_every_shipped_schedule_is_valid(subject):
    assert 0.0 <= testing.check_sigma_bounds(subject) <= 1.0 + 1e-9
    testing.check_normalisation(subject)
    assert testing.check_marginal_preservation(subject) < 1e-9
    testing.assert_valid_remasking(subject, max_examples=15)


def test_shipped_schedules_with_random_parameters_are_valid():
    testing.assert_valid_remasking(testing.remasking_schedules(), max_examples=60)


def test_a_parameter_strategy_is_accepted():
    testing.assert_valid_remasking(
        st.builds(dd.RescaleSchedule, eta=st.floats(0.0, 1.0)), max_examples=10
    )


class Scaled(dd.RemaskingSchedule):
    """σ = factor · σ_max: valid for factor in [0, 1], broken outside."""

    def __init__(self, factor):
        self.factor = factor

    def __repr__(self):
        return f"Scaled({self.factor})"

    def _sigma(self, t, s, alpha_t, alpha_s, confidence):
        return self.factor * dd.sigma_max(alpha_t, alpha_s)


class Unbounded(dd.RemaskingSchedule):
    """σ = η, the classic mistake: no cap at σ_max."""

    def __repr__(self):
        return "Unbounded()"

    def _sigma(self, t, s, alpha_t, alpha_s, confidence):
        return torch.full_like(alpha_t, 0.3)


class WrongStayMasked(dd.RemaskPosterior):
    """A posterior whose masked positions stay masked 10% too rarely (rows still sum to one)."""

    def __call__(self, process, z_t, x, t, s, *, confidence=None):
        q = super().__call__(process, z_t, x, t, s, confidence=confidence)
        mask_prob = torch.where(process.is_masked(z_t), 0.9 * q.mask_prob, q.mask_prob)
        return dd.distributions.MaskedCategorical(
            mask_prob, vocab_size=q.vocab_size, mask_id=q.mask_id, probs=q.probs, carry=q.carry
        )


class TokenSwap(dd.RemaskPosterior):
    """A posterior that re-draws unmasked tokens from x instead of keeping them."""

    def __call__(self, process, z_t, x, t, s, *, confidence=None):
        q = super().__call__(process, z_t, x, t, s, confidence=confidence)
        return dd.distributions.MaskedCategorical(
            q.mask_prob, vocab_size=q.vocab_size, mask_id=q.mask_id, probs=q.probs
        )


@pytest.mark.parametrize("factor", [1.5, -0.2])
def test_sigma_outside_the_bound_fails(factor):
    with pytest.raises(AssertionError, match="outside \\[0, sigma_max"):
        testing.check_sigma_bounds(Scaled(factor))
    with pytest.raises(AssertionError, match="does not preserve the marginals"):
        testing.check_marginal_preservation(Scaled(factor))
    with pytest.raises(AssertionError, match="sigma"):
        testing.assert_valid_remasking(Scaled(factor), max_examples=20, shrink=False)


def test_an_uncapped_schedule_fails_where_sigma_max_is_small():
    testing.check_sigma_bounds(Unbounded(), steps=[(0.9, 0.6)])  # fine on a coarse early step
    with pytest.raises(AssertionError, match="outside"):
        testing.check_sigma_bounds(Unbounded())  # but not on the last steps
    with pytest.raises(AssertionError):
        testing.assert_valid_remasking(Unbounded(), max_examples=50, shrink=False)


def test_a_wrong_stay_masked_probability_fails():
    posterior = WrongStayMasked(dd.CapSchedule(0.1))
    testing.check_sigma_bounds(posterior)  # σ itself is fine ...
    testing.check_normalisation(posterior)  # ... and so are the rows ...
    with pytest.raises(AssertionError, match="does not preserve the marginals"):
        testing.check_marginal_preservation(posterior)  # ... but the marginals are not
    with pytest.raises(AssertionError, match="does not preserve the marginals"):
        testing.assert_valid_remasking(posterior, max_examples=50, shrink=False)


def test_a_posterior_that_swaps_tokens_fails():
    with pytest.raises(AssertionError, match="turns into another token"):
        testing.check_normalisation(TokenSwap(dd.NoRemasking()))


def test_a_wrong_parameter_strategy_fails():
    with pytest.raises(AssertionError):
        testing.assert_valid_remasking(
            st.builds(Scaled, st.floats(0.0, 2.0)), max_examples=50, shrink=False
        )


def test_enumeration_and_table_shapes():
    process = dd.MaskingProcess(vocab_size=2, mask_id=4)
    states = testing.enumerate_states(process, 2)
    assert states.shape == (9, 2)
    assert set(states.flatten().tolist()) == {0, 1, 4}
    x = torch.full((1, 2, 2), 0.5, dtype=torch.float64)
    _, table = testing.posterior_table(dd.CapSchedule(0.1), process, x, 0.5, 0.25)
    assert table.shape == (9, 9)
    torch.testing.assert_close(table.sum(-1), torch.ones(9, dtype=torch.float64))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="s < t"):
        testing.check_marginal_preservation(dd.NoRemasking(), steps=[(0.3, 0.5)])
    with pytest.raises(TypeError, match="RemaskingSchedule"):
        testing.check_marginal_preservation("cap")
    with pytest.raises(TypeError, match="RemaskingSchedule"):
        testing.assert_valid_remasking(0.1)
