r"""How a step turns the denoiser's logits into the $x_\theta$ it samples from.

Temperature, top-k, the nucleus (top-p) and its rule, and the precision of
the categorical draws travel together as one frozen `Shaping`, checked once,
when it is made, and used as it is by every sampler (ancestral, block,
autoregressive, particles, the LLM path); result rows carry its `to_dict()`.
"Off" has one spelling: `None` for `top_k` and `top_p` (the `nucleus` rule is
then unused).

$$
x_\theta = \mathrm{nucleus}_p\big(\mathrm{top}_k(\mathrm{softmax}(\ell / \tau))\big),
\qquad \tau = 0:\ x_\theta = \mathrm{onehot}(\arg\max \ell).
$$
"""

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from discdiff.distributions import nucleus_

__all__ = ["UNSHAPED", "Nucleus", "Shaping", "shape_probs"]

Nucleus = Literal["standard", "remdm"]
"""The nucleus rules: `"standard"` (textbook / Hugging Face) and `"remdm"` (ReMDM's code)."""

MAX_TEMPERATURE = 1e3
"""The highest temperature (at it every distribution is all but uniform)."""

MIN_TEMPERATURE = 1e-3
"""The lowest positive temperature; below it, use 0 (greedy), the limit."""

MAX_TOP_K = 2**31
"""The largest `top_k` (any vocabulary is smaller)."""


@dataclass(frozen=True)
class Shaping:
    r"""Temperature, top-k, nucleus and draw precision: how $x_\theta$ is shaped and drawn.

    Args:
        temperature: $\tau$: 0 (greedy: the most likely token, ties to the
            lowest id; decoders then rank by untempered confidences) or a value
            in $[10^{-3}, 10^3]$.
        top_k: Keep the $k$ most likely tokens, $k \in [1, 2^{31}]$; `None`: off.
        top_p: Nucleus mass $p \in (0, 1]$; `None`: off (1 is stored as `None`).
        nucleus: The nucleus rule `top_p` applies (see `shape_probs`); without
            a nucleus it is stored as `"standard"`, so settings that shape
            alike compare equal.
        float64: Draw categoricals in float64 (float32 silently drops the tail
            of a large vocabulary and lowers sample entropy).

    Raises:
        ValueError: Naming the setting and its allowed values.

    Example:
        >>> Shaping(top_p=0.9, nucleus="remdm").to_dict()
        {'temperature': 1.0, 'top_k': None, 'top_p': 0.9, 'nucleus': 'remdm', 'float64': True}
        >>> Shaping(top_p=1.5)
        Traceback (most recent call last):
        ...
        ValueError: `top_p` must lie in (0, 1] or be None (off); got 1.5
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    nucleus: Nucleus = "standard"
    float64: bool = True

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise ValueError(f"`temperature` must be a number; got {t!r}")
        if t != 0 and not MIN_TEMPERATURE <= t <= MAX_TEMPERATURE:
            raise ValueError(
                f"`temperature` must be 0 (greedy) or lie in [{MIN_TEMPERATURE:g}, "
                f"{MAX_TEMPERATURE:g}]; got {t}"
            )
        k = self.top_k
        if k is not None and (
            isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOP_K
        ):
            raise ValueError(f"`top_k` must lie in [1, 2^31] or be None (off); got {k!r}")
        p = self.top_p
        if p is not None and (
            isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1
        ):
            raise ValueError(f"`top_p` must lie in (0, 1] or be None (off); got {p!r}")
        if self.nucleus not in ("standard", "remdm"):
            raise ValueError(f"`nucleus` must be 'standard' or 'remdm'; got {self.nucleus!r}")
        if not isinstance(self.float64, bool):
            raise ValueError(f"`float64` must be true or false; got {self.float64!r}")
        if p == 1:  # the whole distribution: no nucleus, spelled one way
            object.__setattr__(self, "top_p", None)
        if self.top_p is None:  # the rule then shapes nothing
            object.__setattr__(self, "nucleus", "standard")

    @classmethod
    def given(cls, shaping: "Shaping | None", **settings: Any) -> "Shaping":
        """`shaping`, or one made of `settings` (`temperature=`, ... as keywords), not both.

        Raises:
            TypeError: If both are given, or a setting is unknown.
        """
        if shaping is None:
            return cls(**settings)
        if settings:
            raise TypeError(f"give `shaping` or its settings ({', '.join(settings)}), not both")
        return shaping

    @property
    def greedy(self) -> bool:
        """Temperature 0: nothing is drawn at random."""
        return self.temperature == 0

    @property
    def dtype(self) -> torch.dtype:
        """The precision of categorical draws."""
        return torch.float64 if self.float64 else torch.float32

    def to_dict(self) -> dict[str, Any]:
        """The settings by name (as in a config's `sampler` section and in result rows)."""
        return asdict(self)

    def probs(
        self,
        logits: Float[Tensor, "batch length vocab"],
        rows: Bool[Tensor, "batch length"] | None = None,
    ) -> Float[Tensor, "batch length vocab"]:
        """`shape_probs(logits, ...)` with these settings (see there)."""
        return _shape(logits, self, rows)


UNSHAPED = Shaping()
"""Temperature 1, no top-k, no nucleus, float64 draws: $x_\\theta$ as the denoiser gives it."""


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

    The settings are those of a `Shaping` (checked there).

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
    shaping = Shaping(temperature=temperature, top_k=top_k, top_p=top_p, nucleus=nucleus)
    return _shape(logits, shaping, rows)


def _shape(logits: Tensor, shaping: Shaping, rows: Tensor | None) -> Tensor:
    temperature, top_k, top_p = shaping.temperature, shaping.top_k, shaping.top_p
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
        nucleus_(probs.view(-1, probs.shape[-1]), top_p, shaping.nucleus, rows=picked)
    return probs
