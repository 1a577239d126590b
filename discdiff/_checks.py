"""Argument checks shared by the modules; all honour one switch.

Checks follow torch's distribution-validation flag, so
`torch.distributions.Distribution.set_default_validate_args(False)` (or
`pyro.enable_validation(False)`) turns every check off at once. Inside a
`validation(enabled)` block the setting is local instead: it holds for the
current thread (and asyncio task) only and never touches torch's global
flag, so the sampler can switch its per-step checks off in one thread
while another thread's checks keep running.
"""

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor

_LOCAL: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "discdiff_validation", default=None
)


def validation_enabled() -> bool:
    """Whether argument checks run: the innermost `validation` block, else torch's flag."""
    local = _LOCAL.get()
    return bool(torch.distributions.Distribution._validate_args) if local is None else local


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
    """Turn every argument check on or off in this thread (or task) only, for the block."""
    token = _LOCAL.set(bool(enabled))
    try:
        yield
    finally:
        _LOCAL.reset(token)
