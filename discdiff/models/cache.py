r"""Key/value caches of attention layers, shared by the DiT and the open diffusion LLMs.

A `KVCache` holds, for every layer, the keys $k_j$ and values $v_j$ of
positions $j = 0 .. C - 1$. A network's `step` runs some positions
`offset .. offset + n - 1` afresh and reads every other position's keys and
values from the cache,

$$
\mathrm{Attn}(q_i) = \sum_j \operatorname{softmax}_j\big(q_i \cdot \tilde k_j / \sqrt d\big)\,
\tilde v_j, \quad (\tilde k, \tilde v)_j = \begin{cases} \text{fresh} & j \in
[\text{offset}, \text{offset} + n) \\ \text{cached} & \text{otherwise,} \end{cases}
$$

and returns the cache with its fresh keys and values spliced in. Keys are
stored rotated (rotary embeddings already applied at their own positions).
"""

from dataclasses import dataclass

import torch
from jaxtyping import Bool
from torch import Tensor

__all__ = ["KVCache", "splice"]


@dataclass(frozen=True)
class KVCache:
    r"""Keys and values of every layer at positions `0 .. length - 1`, from a network's `step`.

    Attributes:
        keys: One `(B, C, H, D)` tensor per layer (rotated keys; $H$ key/value heads).
        values: One `(B, C, H, D)` tensor per layer.
        padding_mask: `(B, C)`, `True` at real tokens; `None`: all real.
    """

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    padding_mask: Bool[Tensor, "batch cached"] | None = None

    @property
    def length(self) -> int:
        """The number of cached positions $C$."""
        return self.keys[0].shape[1]

    def prefix(self, length: int) -> "KVCache":
        """The cache of positions `0 .. length - 1` only (views, no copy)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"`length` must lie in [0, {self.length}]; got {length}")
        mask = None if self.padding_mask is None else self.padding_mask[:, :length]
        return KVCache(
            tuple(k[:, :length] for k in self.keys),
            tuple(v[:, :length] for v in self.values),
            mask,
        )


def splice(cached: Tensor, fresh: Tensor, offset: int) -> Tensor:
    """`cached` along dim 1 with positions `offset .. offset + n - 1` replaced by `fresh`."""
    return torch.cat((cached[:, :offset], fresh, cached[:, offset + fresh.shape[1] :]), dim=1)
