r"""What samplers and the trainer need from a network: the `Denoiser` protocol.

A *conditional* denoiser takes a class label as well,
$(z_t, t, y) \mapsto x_\theta(z_t \mid y)$, with one extra *null* label
$y = \varnothing$ (id `num_classes`) for the unconditional prediction;
`with_label` binds a label and gives back a plain `Denoiser`, so a conditional
model runs under every sampler unchanged. A *noisy classifier*
$(z_t, t) \mapsto \log p(c \mid z_t)$ (up to a constant) is what
classifier-based guidance asks for.
"""

from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff.typing import Times, Tokens

__all__ = [
    "CachedDenoiser",
    "ConditionalDenoiser",
    "Denoiser",
    "LabelledDenoiser",
    "NoisyClassifier",
    "is_time_conditioned",
    "supports_cache",
    "with_label",
]


@runtime_checkable
class Denoiser(Protocol):
    r"""Any callable `(z_t, t) -> logits` predicting the clean tokens.

    The DiT behind `SUBS`, a Hugging Face masked LM behind
    `HuggingFaceDenoiser`, a plain function or an exact oracle all qualify.

    A denoiser may set `time_conditioned = False` to say that its output does
    not depend on `t`, which lets samplers reuse $x_\theta$ across steps where no
    token changed; without the attribute it is assumed to depend on `t`.
    """

    def __call__(self, z_t: Tokens, t: Times) -> Float[Tensor, "batch length vocab"]:
        r"""Logits of $x_\theta(z_t)$ over the $V$ data tokens (never the mask).

        Args:
            z_t: Noisy tokens `(B, L)`, data ids or the mask id.
            t: Diffusion times `(B,)` in $[0, 1]$.

        Returns:
            Unnormalised log-probabilities `(B, L, V)`.
        """
        ...


@runtime_checkable
class CachedDenoiser(Protocol):
    r"""A denoiser that can run part of a sequence against a key/value cache.

    `step(z_t, t, start, stop, cache=)` gives $\log x_\theta$ at positions
    `start .. stop - 1`, computing their keys and values afresh and reading
    every other position's from `cache` (a `discdiff.models.cache.KVCache`),
    and returns the cache with the fresh ones spliced in. `SUBS` over a `DiT`
    and the `HuggingFaceDenoiser` of a natively loaded LLaDA or Dream qualify
    (their `cacheable` is true). `block_size` says whether attention is
    block-causal (BD3-LM: the exact cache applies) or full (`None`: only
    Fast-dLLM's approximate prefix and dual caches).
    """

    block_size: int | None

    def step(
        self,
        z_t: Tokens,
        t: Times,
        start: int,
        stop: int,
        *,
        cache: object | None = None,
        padding_mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> tuple[Float[Tensor, "batch block vocab"], object]:
        """Log-probabilities `(B, stop - start, V)` and the updated cache."""
        ...


def supports_cache(denoiser: object) -> bool:
    """Whether `denoiser` is a `CachedDenoiser` whose `step` works (`cacheable` not false)."""
    return callable(getattr(denoiser, "step", None)) and bool(getattr(denoiser, "cacheable", True))


def is_time_conditioned(denoiser: object) -> bool:
    """Whether `denoiser`'s output may depend on `t` (`True` unless it says otherwise)."""
    return bool(getattr(denoiser, "time_conditioned", True))


@runtime_checkable
class ConditionalDenoiser(Protocol):
    r"""A denoiser that also takes a class label: `(z_t, t, label) -> logits`.

    It must say how many classes it knows, `num_classes` ($C$); labels are
    `0..C-1`, and label `C` is the null label $\varnothing$ (the unconditional
    prediction, learnt with label dropout). `time_conditioned` is read as for
    `Denoiser`.
    """

    num_classes: int

    def __call__(
        self, z_t: Tokens, t: Times, label: Int[Tensor, "batch"]
    ) -> Float[Tensor, "batch length vocab"]:
        r"""Logits of $x_\theta(z_t \mid y)$ over the $V$ data tokens.

        Args:
            z_t: Noisy tokens `(B, L)`.
            t: Diffusion times `(B,)`.
            label: Labels `(B,)` in `0..num_classes` (`num_classes` is null).

        Returns:
            Unnormalised log-probabilities `(B, L, V)`.
        """
        ...


@runtime_checkable
class NoisyClassifier(Protocol):
    r"""A classifier of noisy sequences: `(z_t, t) -> class logits (B, C)`.

    It models $p_\phi(c \mid z_t)$, the probability of class $c$ given the
    partially masked $z_t$. For first-order (Taylor) guidance it must also
    accept $z_t$ as a float one-hot tensor `(B, L, V + 1)` and be
    differentiable in it.
    """

    def __call__(self, z_t: Tensor, t: Times) -> Float[Tensor, "batch classes"]:
        """Class logits `(B, C)` (normalised here with log-softmax by the caller)."""
        ...


class LabelledDenoiser:
    r"""A `ConditionalDenoiser` with its label bound: a plain `Denoiser`.

    $x_\theta(z_t) := x_\theta(z_t \mid y)$ for a fixed $y$ (one per sequence,
    or one for all).

    Args:
        denoiser: Called as `denoiser(z_t, t, label)`.
        label: One label for every sequence, or `(B,)` labels.
    """

    def __init__(self, denoiser: object, label: int | Tensor) -> None:
        self.denoiser = denoiser
        self.label = label
        self.time_conditioned = is_time_conditioned(denoiser)

    def __repr__(self) -> str:
        return f"LabelledDenoiser({self.denoiser!r}, label={self.label!r})"

    def __call__(self, z_t: Tokens, t: Times) -> Float[Tensor, "batch length vocab"]:
        """`denoiser(z_t, t, label)` with the bound label broadcast to the batch."""
        label = torch.as_tensor(self.label, dtype=torch.long, device=z_t.device)
        return self.denoiser(z_t, t, label.expand(z_t.shape[0]))


def with_label(denoiser: object, label: int | Tensor) -> LabelledDenoiser:
    r"""Bind a class label to a conditional denoiser, giving a plain `Denoiser`.

    Args:
        denoiser: A `ConditionalDenoiser` (or any `(z_t, t, label)` callable,
            e.g. a DDP-wrapped model during training).
        label: An integer, a 0-d tensor, or one label per sequence `(B,)`;
            with `num_classes` known, each must lie in `0..num_classes`.

    Raises:
        ValueError: If a label lies outside `0..num_classes`, or the labels
            are not a scalar or a vector.
    """
    if isinstance(label, Tensor):
        if label.dim() > 1 or label.is_floating_point():
            raise ValueError(
                f"`label` must be an integer or a (B,) integer tensor; got {label.dtype} "
                f"of shape {tuple(label.shape)}"
            )
    elif isinstance(label, bool) or not isinstance(label, int):
        raise ValueError(f"`label` must be an integer or a (B,) tensor; got {label!r}")
    classes = getattr(denoiser, "num_classes", None)
    if classes is not None:
        values = torch.as_tensor(label)
        if bool(((values < 0) | (values > classes)).any()):
            raise ValueError(
                f"`label` must lie in 0..{classes} (num_classes={classes} is the null label); "
                f"got {values.flatten()[:5].tolist()}"
            )
    return LabelledDenoiser(denoiser, label)
