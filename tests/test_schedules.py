import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given

import discdiff as dd
from discdiff.testing import noise_schedules

NOISE_SCHEDULES = noise_schedules()
TIMES = st.floats(0.0, 1.0)


@given(NOISE_SCHEDULES, TIMES, TIMES)
def test_strictly_decreasing(schedule, t1, t2):
    lo, hi = sorted((t1, t2))
    if hi - lo < 1e-6:  # closer times are not distinguishable in float64 α
        return
    a = schedule.alpha(torch.tensor([lo, hi], dtype=torch.float64))
    assert a[0] > a[1]


@given(NOISE_SCHEDULES)
def test_endpoints(schedule):
    ends = schedule.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert 0.98 <= ends[0] <= 1.0  # clean (up to sigma_min) at t = 0
    assert 0.0 <= ends[1] <= 0.05  # (almost) all mask at t = 1


@given(NOISE_SCHEDULES, TIMES)
def test_inverse(schedule, t):
    t = torch.tensor(t, dtype=torch.float64)
    torch.testing.assert_close(schedule.inverse(schedule.alpha(t)), t, atol=1e-6, rtol=0)


@given(NOISE_SCHEDULES, st.floats(0.01, 0.99))
def test_derivative_matches_finite_differences(schedule, t):
    h = 1e-6
    t = torch.tensor(t, dtype=torch.float64)
    numeric = (schedule.alpha(t + h) - schedule.alpha(t - h)) / (2 * h)
    torch.testing.assert_close(schedule.alpha_prime(t), numeric, rtol=1e-5, atol=1e-6)


@given(NOISE_SCHEDULES, st.floats(0.01, 1.0))
def test_weight(schedule, t):
    t = torch.tensor(t, dtype=torch.float64)
    expected = -schedule.alpha_prime(t) / (1 - schedule.alpha(t))
    torch.testing.assert_close(schedule.weight(t), expected)
    assert schedule.weight(t) > 0


# Independent transcriptions of the SPEC §2 table, evaluated at a few times.
SPEC_TABLE = [
    (dd.LogLinear(), lambda t: 1 - (1 - 1e-3) * t),
    (dd.Cosine(), lambda t: 1e-3 + (1 - 1e-3) * math.cos(math.pi * t / 2)),
    (dd.CosineSquared(), lambda t: 1e-3 + (1 - 1e-3) * math.cos(math.pi * t / 2) ** 2),
    (dd.Linear(), lambda t: math.exp(-(1e-3 + t * (7 - 1e-3)))),
    (dd.Geometric(), lambda t: math.exp(-(1e-3 ** (1 - t)) * 7**t)),
    (dd.Polynomial(3.0), lambda t: 1e-3 + (1 - 1e-3) * (1 - t**3)),
]


@pytest.mark.parametrize(("schedule", "formula"), SPEC_TABLE)
def test_matches_spec_formula(schedule, formula):
    times = [0.0, 0.1, 0.37, 0.5, 0.9, 1.0]
    got = schedule.alpha(torch.tensor(times, dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor([formula(t) for t in times], dtype=torch.float64))


def test_loglinear_weight_is_one_over_t():
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(dd.LogLinear(eps=0.0).weight(t), 1 / t)


def test_vectorised_over_any_shape_and_floats():
    schedule = dd.Cosine()
    assert schedule.alpha(torch.rand(3, 4, 5)).shape == (3, 4, 5)
    assert schedule.alpha(0.25).shape == ()


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
@pytest.mark.parametrize("method", ["alpha", "alpha_prime", "weight"])
def test_time_outside_unit_interval_is_rejected(bad, method):
    with pytest.raises(ValueError, match="`t` must lie in"):
        getattr(dd.LogLinear(), method)(torch.tensor([0.5, bad]))


def test_inverse_rejects_alpha_outside_range():
    with pytest.raises(ValueError, match="`alpha` must lie in"):
        dd.Linear().inverse(torch.tensor([1.0]))  # alpha_0 = exp(-1e-3) < 1


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: dd.LogLinear(eps=1.0), "eps"),
        (lambda: dd.Cosine(eps=-0.1), "eps"),
        (lambda: dd.Linear(sigma_min=5.0, sigma_max=1.0), "sigma_min"),
        (lambda: dd.Geometric(sigma_min=0.0), "sigma_min"),
        (lambda: dd.Polynomial(k=0.0), "k"),
    ],
)
def test_bad_parameters_are_rejected(make, name):
    with pytest.raises(ValueError, match=name):
        make()
