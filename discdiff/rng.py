r"""Randomness that does not depend on how work is batched.

A `SequenceGenerator` gives every sequence of a batch its own counter-based
stream: the $j$-th uniform number that sequence $i$ draws under seed $s$ is

$$
u_{ij} = 2^{-53} \Big\lfloor \mathrm{mix}\big(k_i + j\,\gamma\big) / 2^{11} \Big\rfloor,
\qquad k_i = \mathrm{mix}\big(\mathrm{mix}(s) + i\,\gamma'\big),
$$

with SplitMix64's finaliser $\mathrm{mix}$ and odd constants $\gamma, \gamma'$
(arithmetic modulo $2^{64}$). Sequence $i$ therefore gets the same numbers
whether it is drawn alone, in a batch of 7 or in a batch of 512: samples drawn
with it do not depend on the batch size. Every draw is a handful of
element-wise integer operations on the device, with no host synchronisation.

`uniform` is the one place the library's draws go through: it accepts a
`torch.Generator` (or `None`), which behaves exactly as `torch.rand`, or a
`SequenceGenerator`. `derive_seed` and `seeded` give each random part of a run
(initialisation, dropout, noise, ...) its own seed derived from the run's.
"""

import contextlib
import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import SupportsIndex

import torch
from torch import Tensor

__all__ = [
    "RandomSource",
    "SequenceGenerator",
    "derive_seed",
    "sampling_device",
    "seeded",
    "stream_batches",
    "uniform",
]

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment (odd)
_GAMMA_SEQ = 0xD1B54A32D192ED03  # a second odd constant for the per-sequence keys
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _signed(value: int) -> int:
    """An unsigned 64-bit value as the int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(z: Tensor, bits: int) -> Tensor:
    """Logical (unsigned) right shift of int64 bit patterns."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mix(z: Tensor) -> Tensor:
    """SplitMix64's finaliser on int64 tensors (multiplication wraps modulo 2^64)."""
    z = (z ^ _shift_right(z, 30)) * _signed(_M1)
    z = (z ^ _shift_right(z, 27)) * _signed(_M2)
    return z ^ _shift_right(z, 31)


def _mix_int(z: int) -> int:
    """`_mix` on one Python integer, exactly."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


class SequenceGenerator:
    r"""Per-sequence random streams: sequence $i$ draws the same numbers in any batch.

    Pass it wherever a sampler takes `generator=`. Sequence indices are
    global: the batch `start, ..., start + size - 1` of a larger set of
    samples, so drawing 64 samples as one batch or as batches of 16 (with
    `start` = 0, 16, 32, 48) gives the same tokens.

    Args:
        seed: The seed of every stream (any integer).
        size: Number of sequences in the batch it serves.
        start: Global index of the batch's first sequence.
        device: Where the numbers are made.

    Example:
        >>> whole = SequenceGenerator(0, 4).rand((4, 3), dtype=torch.float64)
        >>> tail = SequenceGenerator(0, 2, start=2).rand((2, 3), dtype=torch.float64)
        >>> torch.equal(whole[2:], tail)
        True
    """

    def __init__(
        self, seed: int, size: int, *, start: int = 0, device: torch.device | str | None = None
    ) -> None:
        if size < 1:
            raise ValueError(f"`size` must be at least 1; got {size}")
        if start < 0:
            raise ValueError(f"`start` must be non-negative; got {start}")
        self.seed, self.size, self.start = int(seed), size, start
        self.device = torch.device(device if device is not None else "cpu")
        index = torch.arange(start, start + size, dtype=torch.int64, device=self.device)
        self._key(index)

    @classmethod
    def of(
        cls, seed: int, indices: Sequence[int], *, device: torch.device | str | None = None
    ) -> "SequenceGenerator":
        """The streams of the given global sequence indices, in that order (any indices).

        For batches that gather sequences out of order, e.g. requests grouped by
        length: row `r` draws what sequence `indices[r]` draws in any other batch.

        Example:
            >>> whole = SequenceGenerator(0, 4).rand((4, 2))
            >>> torch.equal(SequenceGenerator.of(0, [3, 1]).rand((2, 2)), whole[[3, 1]])
            True
        """
        if not len(indices) or min(indices) < 0:
            raise ValueError(f"`indices` must be non-empty and non-negative; got {list(indices)}")
        streams = cls(seed, len(indices), device=device)
        streams._key(torch.tensor(list(indices), dtype=torch.int64, device=streams.device))
        return streams

    def _key(self, index: Tensor) -> None:
        base = _mix_int(self.seed)
        self.keys = _mix(index * _signed(_GAMMA_SEQ) + _signed(base))
        self.offset = 0
        """Numbers each sequence has drawn so far (the next draw's counter)."""

    def __repr__(self) -> str:
        return (
            f"SequenceGenerator(seed={self.seed}, size={self.size}, start={self.start}, "
            f"device={str(self.device)!r})"
        )

    def rand(self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform numbers in $[0, 1)$ of `shape`, whose first dimension indexes the sequences.

        Args:
            shape: `(size, ...)`.
            dtype: float64 (53 random bits) or float32 / lower (24 bits).

        Returns:
            A tensor of `shape` on `self.device`; row `i` depends only on
            `(seed, start + i)` and how many numbers the streams drew before.

        Raises:
            ValueError: If `shape[0]` is not `size`.
        """
        shape = tuple(shape)
        if not shape or shape[0] != self.size:
            raise ValueError(
                f"this SequenceGenerator serves {self.size} sequences; a draw of shape "
                f"{shape} must have them as its first dimension"
            )
        per_sequence = math.prod(shape[1:])
        counters = torch.arange(
            self.offset, self.offset + per_sequence, dtype=torch.int64, device=self.device
        )
        self.offset += per_sequence
        bits = _mix(self.keys.unsqueeze(-1) + counters * _signed(_GAMMA))
        if dtype == torch.float64:
            values = _shift_right(bits, 11).to(torch.float64) * 2.0**-53
        else:
            values = (_shift_right(bits, 40).to(torch.float32) * 2.0**-24).to(dtype)
        return values.reshape(shape)


RandomSource = torch.Generator | SequenceGenerator | None
"""What the library's draws accept as `generator=`."""


def uniform(
    shape: Sequence[SupportsIndex],
    *,
    generator: RandomSource = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    batch_dim: int = 0,
) -> Tensor:
    """Uniform numbers in $[0, 1)$ from a `torch.Generator` or a `SequenceGenerator`.

    With a `torch.Generator` (or `None`, torch's global one) this is
    `torch.rand(shape, generator=generator, dtype=dtype, device=device)`.
    With a `SequenceGenerator`, dimension `batch_dim` indexes its sequences.

    Args:
        shape: The shape of the draw (sizes: ints, or 0-dim tensors under `torch.jit.trace`).
        generator: The random source.
        dtype: Floating dtype of the numbers.
        device: Where to make them (a `SequenceGenerator` uses its own device).
        batch_dim: The dimension of `shape` that indexes sequences.

    Returns:
        A tensor of `shape`.
    """
    if isinstance(generator, SequenceGenerator):
        shape = tuple(shape)
        front = (shape[batch_dim], *shape[:batch_dim], *shape[batch_dim + 1 :])
        return generator.rand(front, dtype=dtype).movedim(0, batch_dim)
    return torch.rand(tuple(shape), generator=generator, dtype=dtype, device=device)


def sampling_device(
    batch_size: int,
    length: int,
    generator: RandomSource,
    device: torch.device | str | None = None,
) -> torch.device:
    r"""Check a sampling request's sizes against its generator; the device it runs on.

    Args:
        batch_size: Sequences to draw ($B \ge 1$).
        length: Positions per sequence ($L \ge 1$).
        generator: The random source; a `SequenceGenerator` must serve `batch_size` streams.
        device: Where to sample (default: the generator's device, else CPU).

    Returns:
        The device.

    Raises:
        ValueError: If `batch_size` or `length` is below 1, or the generator serves
            another number of sequences.
    """
    if batch_size < 1 or length < 1:
        raise ValueError(f"`batch_size` and `length` must be positive; got {batch_size}, {length}")
    if isinstance(generator, SequenceGenerator) and generator.size != batch_size:
        raise ValueError(
            f"`generator` serves {generator.size} sequences but `batch_size` is {batch_size}"
        )
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    return torch.device(device)


def derive_seed(seed: int, *names: str | int) -> int:
    """An independent 63-bit seed for one named use of a run's seed.

    Example: `derive_seed(config.seed, "init")` seeds a model's initialisation
    without sharing a stream with the dropout seeded by `config.seed`.

    Args:
        seed: The run's seed.
        names: What the seed is for.

    Returns:
        A non-negative integer below $2^{63}$, the same in every process.
    """
    text = "/".join(map(str, (int(seed), *names))).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global generators (CPU and CUDA) seeded, then restore them.

    Args:
        seed: The seed for the block.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def stream_batches(
    samples: int, batch_size: int | None, seed: int, device: torch.device | str | None = None
) -> list[tuple[int, "SequenceGenerator"]]:
    """Split sequences `0 .. samples - 1` into batches, each with the streams of its own sequences.

    Sequence $i$ always draws from stream $(seed, i)$, so what a sampler
    draws for it does not depend on `batch_size` (the `sample_batches`
    methods of the samplers).

    Args:
        samples: Number of sequences.
        batch_size: Sequences per batch (all at once if `None`).
        seed: Seed of the streams.
        device: Where the batches draw.

    Returns:
        `(size, generator)` per batch, in order.

    Raises:
        ValueError: If `samples` or `batch_size` is below 1.

    Example:
        >>> tuple(size for size, _ in stream_batches(5, 2, seed=0))
        (2, 2, 1)
    """
    batch_size = batch_size or samples
    if samples < 1 or batch_size < 1:
        raise ValueError(
            f"`samples` and `batch_size` must be positive; got {samples}, {batch_size}"
        )
    return [
        (size, SequenceGenerator(seed, size, start=first, device=device))
        for first in range(0, samples, batch_size)
        for size in (min(batch_size, samples - first),)
    ]
