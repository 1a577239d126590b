"""What samplers and the trainer need from a network: the `Denoiser` protocol."""

from typing import Protocol, runtime_checkable

from jaxtyping import Float
from torch import Tensor

from discdiff.typing import Times, Tokens

__all__ = ["Denoiser", "is_time_conditioned"]


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


def is_time_conditioned(denoiser: object) -> bool:
    """Whether `denoiser`'s output may depend on `t` (`True` unless it says otherwise)."""
    return bool(getattr(denoiser, "time_conditioned", True))
