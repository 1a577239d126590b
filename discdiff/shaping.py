r"""How a step turns the denoiser's logits into the $x_\theta$ it samples from.

Temperature, top-k, the nucleus (top-p) and its rule, and the precision of
the categorical draws travel together as one frozen `Shaping`, validated when
it is made and used as it is by every sampler (ancestral, block,
autoregressive, the LLM path) and written to result rows as itself. "Off"
has one spelling: `None` for `top_k` and `top_p`.
"""

from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from discdiff.distributions import nucleus_

__all__ = ["Nucleus", "shape_probs"]

Nucleus = Literal["standard", "remdm"]
"""The nucleus rules: `"standard"` (textbook / Hugging Face) and `"remdm"` (ReMDM's code)."""


def shape_probs(
    logits: Float[Tensor, "batch length vocab"],
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    nucleus: Nucleus = "standard",
    rows: Bool[Tensor, "batch length"] | None = None,
) -> Float[Tensor, "batch length vocab"]:
    r"""Turn denoiser logits into the $x_\theta$ a step samples from.

    Temperature divides the logits (temperature 0 is the limit: the one-hot
    of the most likely token, ties to the lowest id); top-k keeps the $k$ most
    likely tokens;
    nucleus (top-p) keeps a prefix of the tokens sorted by probability,
    $p_{(1)} \ge p_{(2)} \ge \dots$, with cumulative masses
    $c_j = \sum_{i \le j} p_{(i)}$, and renormalises:

    - `"standard"` (textbook, Hugging Face): the smallest prefix whose mass
      reaches $p$, i.e. token $j$ is kept iff $c_{j-1} < p$ (the token that
      crosses $p$ is kept);
    - `"remdm"` (ReMDM's code, used for the paper's numbers): token $j$ is kept
      iff $c_j \le p$, and the top token always.

    For $(0.85, 0.10, 0.05)$ at $p = 0.9$ the first gives $(0.895, 0.105, 0)$,
    the second $(1, 0, 0)$.

    Args:
        logits: `(B, L, V)` unnormalised log-probabilities.
        temperature: Temperature $\ge 0$ (0: greedy, a one-hot of the argmax).
        top_k: Keep this many tokens, or all when `None`.
        top_p: Nucleus mass in $(0, 1]$, or no nucleus when `None`.
        nucleus: Which nucleus rule `top_p` applies.
        rows: Apply the nucleus at these positions only (the others keep the
            softmax): the positions a strategy reads, to skip its $O(V)$ work
            elsewhere. All positions when `None`.

    Returns:
        Probabilities `(B, L, V)` in float32.

    Example:
        >>> logits = torch.tensor([[[0.85, 0.10, 0.05]]]).log()
        >>> shape_probs(logits, top_p=0.9, nucleus="remdm")
        tensor([[[1., 0., 0.]]])
    """
    logits = logits.float()
    if temperature == 0:  # the limit of low temperatures: all mass on the argmax
        top = logits.argmax(-1, keepdim=True)
        return torch.zeros_like(logits).scatter_(-1, top, 1.0)
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    probs = logits.softmax(-1)
    if top_p is not None and top_p < 1.0:
        picked = None if rows is None else rows.reshape(-1).nonzero().squeeze(-1)
        nucleus_(probs.view(-1, probs.shape[-1]), top_p, nucleus, rows=picked)
    return probs
