"""Multi-head attention with interchangeable backends.

- `"xformers"`: `xformers.ops.memory_efficient_attention`, CUDA only; xformers
  is imported lazily, on first use on a CUDA tensor, so CPU users never load it.
- `"sdpa"`: `torch.nn.functional.scaled_dot_product_attention` (fused kernels
  on CUDA, a C++ kernel on CPU).
- `"math"`: the textbook softmax(QKᵀ/√d)V in plain torch, for checking.
- `"auto"`: xformers on CUDA when importable, SDPA otherwise.

All take queries `(B, L_q, H, D)`, keys and values `(B, L_k, H, D)` (the
same length for self-attention; longer keys when cached keys of other
positions join, as in block diffusion's KV cache), an optional key padding
mask `(B, L_k)` (`True` = a real token, attended to) and an optional
attention mask `(L_q, L_k)` or `(B, L_q, L_k)` (`True` = query may attend
to key), e.g. block diffusion's block-causal mask. Without either mask the
attention is bidirectional over every key.
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
Queries = Float[Tensor, "batch queries heads head_dim"]
Keys = Float[Tensor, "batch keys heads head_dim"]


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
        scores = scores.masked_fill(~keep, -torch.inf)
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None) -> Tensor:
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keep
    )
    return out.transpose(1, 2)


def _xformers(q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None) -> Tensor:
    import xformers.ops as xops

    bias = None
    if keep is not None:
        batch, queries, heads, _ = q.shape
        keys = k.shape[1]
        # xformers wants the bias's last dimension 8-aligned in memory: allocate
        # wider, then slice.
        padded = (keys + 7) // 8 * 8
        storage = torch.zeros(batch, heads, queries, padded, dtype=q.dtype, device=q.device)
        bias = storage[..., :keys]
        bias.masked_fill_(~keep.expand(batch, heads, queries, keys), -torch.inf)
    return xops.memory_efficient_attention(q, k, v, attn_bias=bias)


_KERNELS = {"math": _math, "sdpa": _sdpa, "xformers": _xformers}


def attention(
    q: Queries,
    k: Keys,
    v: Keys,
    *,
    backend: AttentionBackend = "auto",
    padding_mask: Bool[Tensor, "batch keys"] | None = None,
    mask: Bool[Tensor, "queries keys"] | Bool[Tensor, "batch queries keys"] | None = None,
) -> Queries:
    r"""Attention $\operatorname{softmax}(QK^\top/\sqrt{d} + M)\,V$ per head.

    $M_{ij} = 0$ where query $i$ may attend to key $j$ (key $j$ is real and
    `mask[i, j]`), $-\infty$ elsewhere. Every query must keep at least one key.

    Args:
        q: Queries `(B, L_q, H, D)`.
        k: Keys `(B, L_k, H, D)`.
        v: Values `(B, L_k, H, D)`.
        backend: `"auto"`, `"xformers"`, `"sdpa"` or `"math"`.
        padding_mask: `(B, L_k)`, `True` at real tokens; padded keys get no weight.
        mask: `(L_q, L_k)` or `(B, L_q, L_k)`, `True` where a query may attend
            to a key; `None` lets every query attend to every (real) key.

    Returns:
        The attended values `(B, L_q, H, D)`.
    """
    keep = None if padding_mask is None else padding_mask[:, None, None, :]
    if mask is not None:
        mask = mask[None, None] if mask.dim() == 2 else mask[:, None]
        keep = mask if keep is None else keep & mask
    return _KERNELS[resolve_backend(backend, q.device)](q, k, v, keep)
