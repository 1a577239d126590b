"""Shared jaxtyping aliases for the shapes that recur across discdiff.

The dimension names are the ones used throughout the docs: ``batch`` (B),
``length`` (L) and ``vocab`` (V, data tokens only, never the mask).
"""

from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = [
    "Confidence",
    "MaskFlags",
    "PerPosition",
    "Probs",
    "Times",
    "Tokens",
]

Tokens = Int[Tensor, "batch length"]
"""Token ids in `{0..V-1}` plus the mask id."""

Probs = Float[Tensor, "batch length vocab"]
"""A distribution over the `V` data tokens at every position."""

Times = Float[Tensor, "batch"]
"""One diffusion time (or one `α`) per sequence."""

PerPosition = Float[Tensor, "batch length"]
"""One real number per position, e.g. a mask probability."""

Confidence = Float[Tensor, "batch length"]
"""Decode confidences `ψ` (ReMDM-conf); `+inf` marks "no confidence"."""

MaskFlags = Bool[Tensor, "batch length"]
"""`True` where a position holds the mask token."""
