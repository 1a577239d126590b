r"""The forward masking process $q(z_t \mid x)$.

Each position is masked independently:

$$
q(z_t \mid x) = \prod_\ell \mathrm{Cat}\big(z_t^\ell;\ \alpha_t x^\ell + (1 - \alpha_t)\, m\big).
$$
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff._checks import as_tensor, validation_enabled
from discdiff.distributions import MaskedCategorical
from discdiff.schedules import LogLinear, NoiseSchedule
from discdiff.typing import Times, Tokens

__all__ = ["MaskingProcess"]

Data = Int[Tensor, "batch length"] | Float[Tensor, "batch length vocab"]


class MaskingProcess:
    r"""The absorbing-state ("masking") forward process of MDLM.

    Args:
        schedule: The noise schedule $\alpha_t$.
        vocab_size: $V$, the number of data tokens `0..V-1`.
        mask_id: Id of the mask token $m$; defaults to `V`. Must not be a data
            token id.

    Example:
        >>> process = MaskingProcess(schedule=LogLinear(), vocab_size=5)
        >>> process.mask_id
        5
        >>> z = process.sample(torch.tensor([[0, 1, 2, 3]]), torch.tensor([1.0]))
        >>> z.shape
        torch.Size([1, 4])
    """

    def __init__(
        self,
        schedule: NoiseSchedule = LogLinear(),
        *,
        vocab_size: int,
        mask_id: int | None = None,
    ) -> None:
        if vocab_size < 1:
            raise ValueError(f"`vocab_size` must be at least 1; got {vocab_size}")
        if mask_id is None:
            mask_id = vocab_size
        if mask_id < vocab_size:
            raise ValueError(
                f"`mask_id` {mask_id} collides with the data tokens 0..{vocab_size - 1}; "
                f"use an id >= {vocab_size}"
            )
        self.schedule = schedule
        self.vocab_size = vocab_size
        self.mask_id = mask_id

    def __repr__(self) -> str:
        return (
            f"MaskingProcess(schedule={self.schedule!r}, vocab_size={self.vocab_size}, "
            f"mask_id={self.mask_id})"
        )

    def check_tokens(self, name: str, tokens: Tensor, *, allow_mask: bool) -> None:
        """Raise `ValueError` naming `name` if `tokens` holds ids outside the vocabulary.

        Args:
            name: The argument's name, for the message.
            tokens: Integer token ids, any shape.
            allow_mask: Whether the mask id is allowed.
        """
        if not validation_enabled():
            return
        ok = (tokens >= 0) & (tokens < self.vocab_size)
        if allow_mask:
            ok |= tokens == self.mask_id
        if not bool(ok.all()):
            allowed = f"0..{self.vocab_size - 1}" + (f" or {self.mask_id}" if allow_mask else "")
            raise ValueError(
                f"`{name}` holds ids {tokens[~ok].unique()[:5].tolist()} outside {allowed}"
            )

    def marginal(self, x: Data, t: Times | float) -> MaskedCategorical:
        r"""$q(z_t \mid x)$ as a distribution with batch shape `(B,)`, event shape `(L,)`.

        Args:
            x: Clean tokens `(B, L)` in `0..V-1`, or a distribution over data
                tokens `(B, L, V)` (e.g. a soft one-hot).
            t: Times in $[0, 1]$, `(B,)` or one float for the whole batch.

        Returns:
            A `MaskedCategorical` with mask probability $1 - \alpha_t$.

        Raises:
            ValueError: If `x` holds ids outside `0..V-1` or `t` lies outside $[0, 1]$.
        """
        t = as_tensor(t)
        alpha = self.schedule.alpha(t)
        batch, length = x.shape[:2]
        mask_prob = (1.0 - alpha).reshape(-1, 1).expand(batch, length)
        if x.is_floating_point():
            return MaskedCategorical(
                mask_prob, vocab_size=self.vocab_size, mask_id=self.mask_id, probs=x
            )
        self.check_tokens("x", x, allow_mask=False)
        return MaskedCategorical(
            mask_prob, vocab_size=self.vocab_size, mask_id=self.mask_id, carry=x
        )

    def sample(
        self, x: Data, t: Times | float, *, generator: torch.Generator | None = None
    ) -> Tokens:
        r"""Draw $z_t \sim q(z_t \mid x)$.

        Args:
            x: Clean tokens `(B, L)` or a distribution over data tokens `(B, L, V)`.
            t: Times in $[0, 1]$, `(B,)` or one float.
            generator: Random generator for reproducible draws.

        Returns:
            Noisy tokens `(B, L)`.
        """
        return self.marginal(x, t).sample(generator=generator)

    def is_masked(self, z: Int[Tensor, "*shape"]) -> torch.Tensor:
        """`True` where `z` holds the mask id.

        Args:
            z: Token ids, any shape.

        Returns:
            A boolean tensor with the shape of `z`.
        """
        return z == self.mask_id
