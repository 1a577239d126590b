r"""The masking (absorbing-state) forward process of MDLM.

$$
q(z_t \mid x) = \prod_\ell \mathrm{Cat}\big(z_t^\ell;\ \alpha_t x^\ell + (1 - \alpha_t)\, m\big).
$$
"""

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from discdiff._checks import as_tensor
from discdiff.distributions import MaskedCategorical
from discdiff.processes.base import NEG, check_token_range, data_log_softmax
from discdiff.registry import register
from discdiff.rng import RandomSource
from discdiff.schedules import LogLinear, NoiseSchedule
from discdiff.typing import Times, Tokens

__all__ = ["MaskingProcess"]

Data = Int[Tensor, "batch length"] | Float[Tensor, "batch length vocab"]


@register("process", "masking")
class MaskingProcess:
    r"""The absorbing-state ("masking") forward process of MDLM: a `ForwardProcess`.

    Args:
        schedule: The noise schedule $\alpha_t$.
        vocab_size: $V$, the number of data tokens `0..V-1`.
        mask_id: Id of the mask token $m$; defaults to `V`. Must not be a data
            token id.

    The denoiser's output becomes $x_\theta$ by MDLM's SUBS parameterisation
    (`log_probs`), and its NELBO integrand is
    $w(t)\, \mathbb{1}[z_t^\ell = m]\, (-\log x_\theta(z_t)_\ell[x^\ell])$
    with $w(t) = -\alpha'_t / (1 - \alpha_t)$.

    Example:
        >>> process = MaskingProcess(schedule=LogLinear(), vocab_size=5)
        >>> process.mask_id
        5
        >>> z = process.sample(torch.tensor([[0, 1, 2, 3]]), torch.tensor([1.0]))
        >>> z.shape
        torch.Size([1, 4])
    """

    name = "masking"
    needs_time = False

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
        self.num_states = mask_id + 1

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
        check_token_range(name, tokens, self.vocab_size, self.mask_id if allow_mask else None)

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

    def is_masked(self, z: Int[Tensor, "*shape"]) -> Bool[Tensor, "*shape"]:
        """`True` where `z` holds the mask id.

        Args:
            z: Token ids, any shape.

        Returns:
            A boolean tensor with the shape of `z`.
        """
        return z == self.mask_id

    def prior(
        self, batch: int, length: int, *, device: torch.device | None = None
    ) -> MaskedCategorical:
        """Every position masked: a point mass, batch `(B,)`, event `(L,)`.

        Args:
            batch: $B$.
            length: $L$.
            device: Where to put its tensors.

        Returns:
            A `MaskedCategorical` with mask probability 1.
        """
        flat = torch.full((1, 1, self.vocab_size), 1.0 / self.vocab_size, device=device)
        return MaskedCategorical(
            torch.ones(batch, length, device=device),
            vocab_size=self.vocab_size,
            mask_id=self.mask_id,
            probs=flat.expand(batch, length, -1),
        )

    def sample_prior(
        self,
        batch: int,
        length: int,
        *,
        generator: RandomSource = None,
        device: torch.device | None = None,
    ) -> Tokens:
        r"""$z_1$: every position masked (the generator is not used).

        Args:
            batch: $B$.
            length: $L$.
            generator: Unused (the prior is a point mass).
            device: Where to put the tokens.

        Returns:
            `(B, L)` mask ids.
        """
        return torch.full((batch, length), self.mask_id, dtype=torch.long, device=device)

    def likelihood(self, z_t: Tokens, t: Times | float) -> Float[Tensor, "batch length vocab"]:
        r"""$q(z_t^\ell \mid x^\ell = v)$: $1 - \alpha_t$ at a mask, else $\alpha_t [v = z_t^\ell]$.

        Args:
            z_t: Noisy tokens `(B, L)`.
            t: Times `(B,)` or a float.

        Returns:
            Float64 likelihoods `(B, L, V)`.
        """
        self.check_tokens("z_t", z_t, allow_mask=True)
        alpha = self.schedule.alpha(as_tensor(t)).double().reshape(-1, 1, 1)
        masked = self.is_masked(z_t).unsqueeze(-1)
        token = F.one_hot(torch.where(masked.squeeze(-1), 0, z_t), self.vocab_size).double()
        return torch.where(masked, 1.0 - alpha, alpha * token)

    def log_probs(
        self, logits: Float[Tensor, "batch length width"], z_t: Tokens
    ) -> Float[Tensor, "batch length vocab"]:
        r"""SUBS (MDLM): normalised over the data tokens, unmasked tokens carried over.

        Args:
            logits: `(B, L, W)` with `W >= V`; entries `V..W-1` (the mask and any
                other non-data ids) are dropped.
            z_t: Noisy tokens `(B, L)`.

        Returns:
            $\log x_\theta$ `(B, L, V)` in float32: a log-softmax at masked
            positions, `0` at the carried token and `NEG` elsewhere at unmasked ones.

        Raises:
            ValueError: If `logits` has fewer than `V` entries, or (with validation
                on) holds NaN or infinite values.
        """
        log_probs = data_log_softmax(logits, self.vocab_size)
        unmasked = ~self.is_masked(z_t).unsqueeze(-1)
        index = torch.where(unmasked, z_t.unsqueeze(-1), 0)
        # unmasked rows: NEG everywhere, 0 at the carried token (masked rows scatter back
        # their own value); in place when no gradient needs the log-softmax output
        carried = torch.where(unmasked, 0.0, log_probs.gather(-1, index))
        if log_probs.requires_grad:
            log_probs = log_probs.masked_fill(unmasked, NEG)
        else:
            log_probs.masked_fill_(unmasked, NEG)
        return log_probs.scatter_(-1, index, carried)

    def nelbo_integrand(
        self,
        log_probs: Float[Tensor, "batch length vocab"],
        x: Tokens,
        z_t: Tokens,
        t: Times,
    ) -> Float[Tensor, "batch length"]:
        r"""$w(t)\, \mathbb{1}[z_t^\ell = m]\, (-\log x_\theta(z_t)_\ell[x^\ell])$ per position.

        Args:
            log_probs: $\log x_\theta(z_t)$ `(B, L, V)` (normalised).
            x: Clean tokens `(B, L)`.
            z_t: Noisy tokens `(B, L)`.
            t: Times `(B,)`.

        Returns:
            `(B, L)` integrands in nats.
        """
        nll = -log_probs.gather(-1, x.unsqueeze(-1)).squeeze(-1).float()
        return self.schedule.weight(t).reshape(-1, 1) * nll * self.is_masked(z_t)

    def remove_noise(self, z_t: Tokens, x: Tensor, t: Times | float) -> Tokens:
        r"""Fill every mask with the argmax of $x_\theta$; data tokens stay.

        Args:
            z_t: Tokens `(B, L)` at the last time.
            x: $x_\theta(z_t)$ `(B, L, V)` (probabilities or log-probabilities).
            t: The last time (unused: a mask's posterior at $s = 0$ is $x_\theta$).

        Returns:
            `(B, L)` data tokens.
        """
        return torch.where(self.is_masked(z_t), x.argmax(-1), z_t)
