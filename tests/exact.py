"""Exact enumeration over tiny state spaces, shared by the tests."""

import itertools

import torch

import discdiff as dd


def all_sequences(length: int, ids: list[int]) -> torch.Tensor:
    """Every sequence of `length` tokens drawn from `ids`, as a (K, length) tensor."""
    return torch.tensor(list(itertools.product(ids, repeat=length)), dtype=torch.long)


def states(process: dd.MaskingProcess, length: int) -> torch.Tensor:
    """Every noisy sequence: data tokens and the mask id at each position."""
    return all_sequences(length, [*range(process.vocab_size), process.mask_id])
