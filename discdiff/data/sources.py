"""Batch sources for training: deterministic functions of the batch index.

`batch(index, size)` returns the same tokens for the same index on every
run and every rank, so the data position of a checkpoint is just its step,
and a resumed run sees exactly the batches an uninterrupted one would.
"""

from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Int
from torch import Tensor

from discdiff.data.synthetic import SyntheticLanguage

__all__ = ["BatchSource", "BlockSource", "LanguageSource", "epoch_rows"]


@runtime_checkable
class BatchSource(Protocol):
    """A deterministic stream of `(size, length)` token batches."""

    vocab_size: int
    length: int

    def batch(self, index: int, size: int) -> Int[Tensor, "size length"]:
        """Batch number `index` of `size` sequences (a pure function of `index`).

        Args:
            index: The batch number $k$ (the trainer's step).
            size: Sequences per batch.

        Returns:
            Token ids `(size, length)`.
        """
        ...


class LanguageSource:
    """Fresh samples of a `SyntheticLanguage` (an endless corpus).

    Args:
        language: The language.
        length: Tokens per sequence.
        seed: Seed of the stream; batch `i` uses seed `(seed, i)`.
    """

    def __init__(self, language: SyntheticLanguage, length: int, seed: int = 0) -> None:
        self.language, self.length, self.seed = language, length, seed
        self.vocab_size = language.vocab_size

    def batch(self, index: int, size: int) -> Int[Tensor, "size length"]:
        """Sample `size` sequences with a generator seeded by `(seed, index)`.

        Args:
            index: The batch number.
            size: Sequences per batch.

        Returns:
            Token ids `(size, length)`.
        """
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return self.language.sample(size, self.length, generator=generator)


class BlockSource:
    """Shuffled epochs over fixed blocks (e.g. packed text).

    Args:
        blocks: `(N, L)` token blocks.
        vocab_size: Number of data tokens; ids must lie below it.
        seed: Seed of the per-epoch permutations.

    Raises:
        ValueError: If `blocks` is empty or holds ids outside `0..vocab_size-1`.
    """

    def __init__(self, blocks: Tensor, vocab_size: int, seed: int = 0) -> None:
        if blocks.dim() != 2 or blocks.shape[0] == 0:
            raise ValueError(
                f"`blocks` must be a non-empty (N, L) tensor; got {tuple(blocks.shape)}"
            )
        bad = (blocks < 0) | (blocks >= vocab_size)
        if bool(bad.any()):
            raise ValueError(
                f"`blocks` holds ids {blocks[bad].unique()[:5].tolist()} "
                f"outside 0..{vocab_size - 1}"
            )
        self.blocks, self.vocab_size, self.seed = blocks, vocab_size, seed
        self.length = blocks.shape[1]

    def batch(self, index: int, size: int) -> Int[Tensor, "size length"]:
        """Positions `index * size ...` of the concatenated shuffled epochs.

        Args:
            index: The batch number.
            size: Sequences per batch.

        Returns:
            Blocks `(size, L)`.
        """
        return self.blocks[epoch_rows(self.blocks.shape[0], index, size, self.seed)]


def epoch_rows(count: int, index: int, size: int, seed: int) -> Int[Tensor, "size"]:
    """Rows `index * size ...` of the concatenated epochs of `count` rows, each shuffled.

    Epoch $e$ is the permutation drawn with seed `seed + e`, so batch `index`
    is a pure function of `(count, index, size, seed)`.
    """
    positions = torch.arange(index * size, (index + 1) * size)
    epochs, offsets = positions // count, positions % count
    rows = torch.empty(size, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed + epoch))
        chosen = epochs == epoch
        rows[chosen] = order[offsets[chosen]]
    return rows
