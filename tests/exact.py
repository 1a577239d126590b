"""Exact enumeration over tiny state spaces, shared by the tests."""

import itertools

import hypothesis.strategies as st
import torch

import discdiff as dd


def all_sequences(length: int, ids: list[int]) -> torch.Tensor:
    """Every sequence of `length` tokens drawn from `ids`, as a (K, length) tensor."""
    return torch.tensor(list(itertools.product(ids, repeat=length)), dtype=torch.long)


def states(process: dd.MaskingProcess, length: int) -> torch.Tensor:
    """Every noisy sequence: data tokens and the mask id at each position."""
    return all_sequences(length, [*range(process.vocab_size), process.mask_id])


NOISE_SCHEDULES = st.one_of(
    st.builds(dd.LogLinear, eps=st.floats(0.0, 0.05)),
    st.builds(dd.Cosine, eps=st.floats(0.0, 0.05)),
    st.builds(dd.CosineSquared, eps=st.floats(0.0, 0.05)),
    st.builds(dd.Linear, sigma_min=st.floats(0.0, 0.01), sigma_max=st.floats(3.0, 10.0)),
    st.builds(dd.Geometric, sigma_min=st.floats(1e-4, 0.01), sigma_max=st.floats(3.0, 10.0)),
    st.builds(dd.Polynomial, k=st.floats(0.5, 4.0), eps=st.floats(0.0, 0.05)),
)


@st.composite
def loop_schedules(draw):
    alpha_on = draw(st.floats(0.05, 0.95))
    eta_max = min(1.0, (1 - alpha_on) / alpha_on)
    return dd.LoopSchedule(
        t_on=draw(st.floats(0.3, 0.9)),
        t_off=draw(st.floats(0.01, 0.25)),
        alpha_on=alpha_on,
        eta=draw(st.floats(0.0, eta_max)),
    )


PER_SEQUENCE_REMASKING = st.one_of(
    st.just(dd.NoRemasking()),
    st.builds(dd.CapSchedule, eta=st.floats(0.0, 1.0)),
    st.builds(dd.RescaleSchedule, eta=st.floats(0.0, 1.0)),
    st.just(dd.ForwardBackward()),
    st.builds(dd.DFMCorrector, A=st.floats(0.0, 20.0)),
    loop_schedules(),
)

REMASKING = st.one_of(
    PER_SEQUENCE_REMASKING,
    st.builds(dd.ConfidenceSchedule, base=st.none() | PER_SEQUENCE_REMASKING),
)
