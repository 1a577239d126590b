r"""scikit-learn's handwritten digits as token sequences with class labels.

`sklearn.datasets.load_digits()` ships inside scikit-learn (no download):
1797 grey-scale images of 8 × 8 pixels with intensities `0..16`, labelled with
the digit `0..9`. Read row by row, each image is a sequence of $L = 64$
tokens over a vocabulary of $V = 17$ intensities (the mask is id 17), a small
real data set for class-conditional generation.

scikit-learn is an optional dependency (`pip install discdiff[digits]`).
"""

import torch
from jaxtyping import Int
from torch import Tensor

from discdiff.data.sources import epoch_rows

__all__ = [
    "DIGITS_CLASSES",
    "DIGITS_LENGTH",
    "DIGITS_VOCAB",
    "LabelledSource",
    "load_digits",
    "split_digits",
]

DIGITS_VOCAB = 17
"""Data tokens: pixel intensities 0..16."""

DIGITS_LENGTH = 64
"""Tokens per image (8 × 8, row by row)."""

DIGITS_CLASSES = 10
"""Digit classes 0..9."""


def load_digits() -> tuple[Int[Tensor, "images 64"], Int[Tensor, "images"]]:
    """All 1797 digits as tokens `(N, 64)` in `0..16` and labels `(N,)` in `0..9`.

    Raises:
        ImportError: If scikit-learn is not installed (it is the `digits` extra).
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError:
        raise ImportError(
            "the digits data set comes with scikit-learn; install it with "
            "`pip install scikit-learn` (or `pip install discdiff[digits]`)"
        ) from None
    data = sklearn_load_digits()
    tokens = torch.as_tensor(data.data, dtype=torch.float64).round().long()
    return tokens, torch.as_tensor(data.target, dtype=torch.long)


def split_digits(
    test_fraction: float = 0.2, seed: int = 0
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """A reproducible train/test split of `load_digits()`.

    Args:
        test_fraction: Share of images held out, in `(0, 1)`.
        seed: Seed of the permutation.

    Returns:
        `((train_tokens, train_labels), (test_tokens, test_labels))`.

    Raises:
        ValueError: If `test_fraction` is not in `(0, 1)`.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must lie in (0, 1); got {test_fraction}")
    tokens, labels = load_digits()
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * len(tokens))
    test, train = order[:n_test], order[n_test:]
    return (tokens[train], labels[train]), (tokens[test], labels[test])


class LabelledSource:
    """Shuffled epochs over fixed sequences and their labels: `(x, label)` batches.

    A `BatchSource` for the trainer whose batches are tuples; the trainer
    passes the labels on to the objective (`ConditionalNELBO`,
    `NoisyClassification`). Batch `index` depends only on `(seed, index)`.

    Args:
        tokens: `(N, L)` sequences.
        labels: `(N,)` labels in `0..num_classes - 1`.
        vocab_size: Number of data tokens; ids must lie below it.
        num_classes: Number of classes.
        seed: Seed of the per-epoch permutations.

    Raises:
        ValueError: On empty or mismatched inputs, ids or labels out of range.
    """

    def __init__(
        self,
        tokens: Int[Tensor, "n length"],
        labels: Int[Tensor, "n"],
        vocab_size: int,
        num_classes: int,
        seed: int = 0,
    ) -> None:
        if tokens.dim() != 2 or tokens.shape[0] == 0:
            raise ValueError(
                f"`tokens` must be a non-empty (N, L) tensor; got {tuple(tokens.shape)}"
            )
        if labels.shape != (tokens.shape[0],):
            raise ValueError(
                f"`labels` must have shape ({tokens.shape[0]},); got {tuple(labels.shape)}"
            )
        if bool(((tokens < 0) | (tokens >= vocab_size)).any()):
            raise ValueError(f"`tokens` holds ids outside 0..{vocab_size - 1}")
        if bool(((labels < 0) | (labels >= num_classes)).any()):
            raise ValueError(f"`labels` must lie in 0..{num_classes - 1}")
        self.tokens, self.labels = tokens, labels
        self.vocab_size, self.num_classes, self.seed = vocab_size, num_classes, seed
        self.length = tokens.shape[1]

    def batch(
        self, index: int, size: int
    ) -> tuple[Int[Tensor, "size length"], Int[Tensor, "size"]]:
        """Rows `index * size ...` of the concatenated shuffled epochs, with their labels."""
        rows = epoch_rows(self.tokens.shape[0], index, size, self.seed)
        return self.tokens[rows], self.labels[rows]
