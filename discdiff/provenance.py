"""What produced a result: settings, seed, versions, threads and kernels.

Every result discdiff writes (training history and checkpoints, samples,
evaluations, study tables) carries a `provenance` record, so a number can be
traced to the settings and the software and machine class that made it.
Bit-identical reruns are promised for the same record: the same discdiff and
torch versions, thread count and CPU kernel path (`cpu_capability`: float32
results can differ in their last bits between AVX-512, AVX2 and baseline
kernels) or GPU.
"""

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

__all__ = ["environment", "provenance"]


def _discdiff_version() -> str:
    try:
        return version("discdiff")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def environment() -> dict[str, Any]:
    """The software and machine a result was computed with.

    Returns:
        `discdiff`, `torch` and `python` versions, torch's intra-op `threads`,
        the CPU kernel path `cpu_capability`, the `cuda` device name (or
        `None`) and whether torch's deterministic algorithms were on.
    """
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "discdiff": _discdiff_version(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": cuda,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def provenance(settings: Any, seed: int | None) -> dict[str, Any]:
    """The record written beside a result: its settings, seed and `environment()`.

    Args:
        settings: The settings that produced the result (a plain mapping, as in
            a config file).
        seed: The seed its randomness derives from (`None` if it has none).

    Returns:
        `{"settings": ..., "seed": ..., **environment()}`.
    """
    return {"settings": settings, "seed": seed, **environment()}
