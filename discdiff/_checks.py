"""Argument checks shared by the modules; all honour one global switch.

Checks follow torch's distribution-validation flag, so
`torch.distributions.Distribution.set_default_validate_args(False)` (or
`pyro.enable_validation(False)`) turns every check off at once, e.g. inside a
tuned sampling loop where a check would cost a host synchronisation.
"""

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor


def validation_enabled() -> bool:
    """Whether argument checks run (torch's default `validate_args`)."""
    return bool(torch.distributions.Distribution._validate_args)


def check_in_range(name: str, value: Tensor, low: float, high: float) -> None:
    """Raise `ValueError` naming `name` unless every entry lies in `[low, high]`."""
    if not validation_enabled():
        return
    bad = torch.isnan(value) | (value < low) | (value > high)
    if bool(bad.any()):
        raise ValueError(
            f"`{name}` must lie in [{low}, {high}]; got {value[bad].flatten()[:5].tolist()}"
        )


def as_tensor(value: Tensor | float) -> Tensor:
    """A float tensor from a tensor or a Python number (default dtype)."""
    if isinstance(value, Tensor):
        return value if value.is_floating_point() else value.to(torch.get_default_dtype())
    return torch.tensor(float(value))


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Temporarily turn every argument check on or off (torch's global flag)."""
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(enabled)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)
