"""Batch sources for training: deterministic functions of the batch index.

`batch(index, size)` returns the same tokens for the same index on every
run and every rank, so the data position of a checkpoint is just its step,
and a resumed run sees exactly the batches an uninterrupted one would.
"""

from typing import NamedTuple, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from discdiff.data.synthetic import ExactLanguage

__all__ = [
    "BatchSource",
    "BlockSource",
    "LanguageSource",
    "Padded",
    "PaddedSource",
    "Prompted",
    "PromptedSource",
    "epoch_rows",
]


class Padded(NamedTuple):
    """A batch of padded sequences: the trainer leaves the padding out of the loss.

    Attributes:
        tokens: Token ids `(B, L)`, padding included.
        padding_mask: `True` at real tokens `(B, L)` (the DiT's convention).
    """

    tokens: Int[Tensor, "batch length"]
    padding_mask: Bool[Tensor, "batch length"]


class Prompted(NamedTuple):
    """A batch of prompt/response sequences: the loss bounds each response given its prompt.

    Attributes:
        tokens: Token ids `(B, L)`: prompt, response, padding.
        padding_mask: `True` at real tokens `(B, L)` (prompt and response).
        prompt_mask: `True` at prompt tokens `(B, L)`: never noised, never scored.
    """

    tokens: Int[Tensor, "batch length"]
    padding_mask: Bool[Tensor, "batch length"]
    prompt_mask: Bool[Tensor, "batch length"]


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
    """Fresh samples of an exact language, e.g. `SyntheticLanguage` (an endless corpus).

    Args:
        language: The language.
        length: Tokens per sequence.
        seed: Seed of the stream; batch `i` uses seed `(seed, i)`.
    """

    def __init__(self, language: ExactLanguage, length: int, seed: int = 0) -> None:
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


class PaddedSource:
    """Shuffled epochs over padded rows, e.g. one document per row from `data.pad`.

    Args:
        rows: `(N, L)` token ids, padding included.
        padding_mask: `(N, L)`, `True` at real tokens.
        vocab_size: Number of data tokens; ids must lie below it.
        seed: Seed of the per-epoch permutations.

    Raises:
        ValueError: If the shapes differ, a row has no real token, or `rows`
            holds ids outside `0..vocab_size-1`.
    """

    def __init__(self, rows: Tensor, padding_mask: Tensor, vocab_size: int, seed: int = 0) -> None:
        if padding_mask.shape != rows.shape or padding_mask.dtype != torch.bool:
            raise ValueError(
                f"`padding_mask` must be a bool tensor of the shape of `rows` "
                f"{tuple(rows.shape)}; got {padding_mask.dtype} {tuple(padding_mask.shape)}"
            )
        if padding_mask.shape[0] and not bool(padding_mask.any(-1).all()):
            raise ValueError("every row of `padding_mask` needs at least one real token")
        self.rows = BlockSource(rows, vocab_size, seed)
        self.padding_mask = padding_mask
        self.vocab_size, self.length = vocab_size, self.rows.length

    def batch(self, index: int, size: int) -> Padded:
        """Rows `index * size ...` of the shuffled epochs, with their padding masks.

        Args:
            index: The batch number.
            size: Sequences per batch.

        Returns:
            `Padded(tokens (size, L), padding_mask (size, L))`.
        """
        rows = epoch_rows(self.rows.blocks.shape[0], index, size, self.rows.seed)
        return Padded(self.rows.blocks[rows], self.padding_mask[rows])


class PromptedSource:
    """Shuffled epochs over prompt/response rows (e.g. from `discdiff.data.sft`).

    Args:
        rows: `(N, L)` token ids, padding included.
        padding_mask: `(N, L)`, `True` at real tokens.
        prompt_mask: `(N, L)`, `True` at prompt tokens.
        vocab_size: Number of data tokens; ids must lie below it.
        seed: Seed of the per-epoch permutations.

    Raises:
        ValueError: If the shapes differ, a row has no real response token, or
            `rows` holds ids outside `0..vocab_size-1`.
    """

    def __init__(
        self,
        rows: Tensor,
        padding_mask: Tensor,
        prompt_mask: Tensor,
        vocab_size: int,
        seed: int = 0,
    ) -> None:
        if prompt_mask.shape != rows.shape or prompt_mask.dtype != torch.bool:
            raise ValueError(
                f"`prompt_mask` must be a bool tensor of the shape of `rows` "
                f"{tuple(rows.shape)}; got {prompt_mask.dtype} {tuple(prompt_mask.shape)}"
            )
        self.padded = PaddedSource(rows, padding_mask, vocab_size, seed)
        if rows.shape[0] and not bool((padding_mask & ~prompt_mask).any(-1).all()):
            raise ValueError("every row needs at least one real response token")
        self.prompt_mask = prompt_mask
        self.vocab_size, self.length = vocab_size, self.padded.length

    def __len__(self) -> int:
        return self.padded.rows.blocks.shape[0]

    def batch(self, index: int, size: int) -> Prompted:
        """Rows `index * size ...` of the shuffled epochs, with their masks.

        Args:
            index: The batch number.
            size: Sequences per batch.

        Returns:
            `Prompted(tokens, padding_mask, prompt_mask)`, each `(size, L)`.
        """
        rows = epoch_rows(len(self), index, size, self.padded.rows.seed)
        return Prompted(
            self.padded.rows.blocks[rows], self.padded.padding_mask[rows], self.prompt_mask[rows]
        )


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
