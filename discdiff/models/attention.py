"""Bidirectional multi-head attention with interchangeable backends.

- `"xformers"`: `xformers.ops.memory_efficient_attention`, CUDA only; xformers
  is imported lazily, on first use on a CUDA tensor, so CPU users never load it.
- `"sdpa"`: `torch.nn.functional.scaled_dot_product_attention` (fused kernels
  on CUDA, a C++ kernel on CPU).
- `"math"`: the textbook softmax(QKᵀ/√d)V in plain torch, for checking.
- `"auto"`: xformers on CUDA when importable, SDPA otherwise.

All take `q, k, v` of shape `(B, L, H, D)` and an optional key padding mask
`(B, L)` (`True` = a real token, attended to).
"""

import functools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = ["AttentionBackend", "attention", "resolve_backend", "xformers_available"]

AttentionBackend = Literal["auto", "xformers", "sdpa", "math"]
"""The attention backends a `DiTConfig` can name (`"auto"` picks xformers on CUDA, else SDPA)."""
Heads = Float[Tensor, "batch length heads head_dim"]


@functools.cache
def xformers_available() -> bool:
    """Whether xformers imports with CUDA support (imported here, lazily, once).

    Returns:
        `True` on a CUDA machine with a working xformers install.
    """
    if not torch.cuda.is_available():
        return False
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: AttentionBackend, device: torch.device) -> str:
    """The concrete backend `backend` means on `device`.

    Args:
        backend: `"auto"`, `"xformers"`, `"sdpa"` or `"math"`.
        device: Where the attention runs.

    Returns:
        `"xformers"`, `"sdpa"` or `"math"` (`"auto"` picks xformers on CUDA
        when it imports, SDPA otherwise).

    Raises:
        ValueError: For an unknown name, or `"xformers"` off CUDA or without xformers.
    """
    if backend == "auto":
        return "xformers" if device.type == "cuda" and xformers_available() else "sdpa"
    if backend == "xformers" and (device.type != "cuda" or not xformers_available()):
        raise ValueError(
            "`attention='xformers'` needs a CUDA device and the xformers package "
            "(pip install 'discdiff[cuda]'); use 'sdpa' or 'auto' elsewhere"
        )
    if backend not in ("xformers", "sdpa", "math"):
        raise ValueError(
            f"`attention` must be one of 'auto', 'xformers', 'sdpa', 'math'; got {backend!r}"
        )
    return backend


def _math(q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None) -> Tensor:
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if keep is not None:
        scores = scores.masked_fill(~keep[:, None, None, :], -torch.inf)
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None) -> Tensor:
    mask = None if keep is None else keep[:, None, None, :]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2)


def _xformers(q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None) -> Tensor:
    import xformers.ops as xops

    bias = None
    if keep is not None:
        batch, length, heads, _ = q.shape
        # xformers wants the bias's last dimension 8-aligned in memory: allocate
        # wider, then slice.
        padded = (length + 7) // 8 * 8
        storage = torch.zeros(batch, heads, length, padded, dtype=q.dtype, device=q.device)
        bias = storage[..., :length]
        bias.masked_fill_(~keep[:, None, None, :], -torch.inf)
    return xops.memory_efficient_attention(q, k, v, attn_bias=bias)


_KERNELS = {"math": _math, "sdpa": _sdpa, "xformers": _xformers}


def attention(
    q: Heads,
    k: Heads,
    v: Heads,
    *,
    backend: AttentionBackend = "auto",
    padding_mask: Bool[Tensor, "batch length"] | None = None,
) -> Heads:
    r"""Bidirectional attention $\operatorname{softmax}(QK^\top/\sqrt{d})\,V$ per head.

    Args:
        q: Queries `(B, L, H, D)`.
        k: Keys `(B, L, H, D)`.
        v: Values `(B, L, H, D)`.
        backend: `"auto"`, `"xformers"`, `"sdpa"` or `"math"`.
        padding_mask: `(B, L)`, `True` at real tokens; padded keys get no weight.

    Returns:
        The attended values `(B, L, H, D)`.
    """
    return _KERNELS[resolve_backend(backend, q.device)](q, k, v, padding_mask)
