r"""The SUBS parameterisation of $x_\theta$ (MDLM).

From a backbone's logits, SUBS makes a distribution over data tokens that

1. gives the mask token zero mass (its logit is removed: exactly the same as
   forcing it to $-\infty$, and safe in any precision),
2. is normalised (log-softmax, computed in float32 even under bf16/fp16
   autocast),
3. carries over unmasked tokens: at a position with $z_t^\ell \ne m$ it is the
   one-hot of $z_t^\ell$, so those positions add nothing to the loss.

`ConditionalSUBS` is the same over a label-conditioned backbone,
$x_\theta(z_t \mid y)$, the model that classifier-free guidance wraps.

The parameterisation belongs to the forward process (`log_probs` of a
`ForwardProcess`): `SUBS` over a `UniformProcess` is a plain log-softmax over
the data tokens (nothing is carried over: any token may be noise), and its
backbone must be time-conditioned.
"""

from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from discdiff.models.cache import KVCache
from discdiff.processes.base import ForwardProcess
from discdiff.processes.masking.process import MaskingProcess
from discdiff.typing import Times, Tokens

__all__ = ["SUBS", "ConditionalSUBS", "subs_log_probs"]


def subs_log_probs(
    logits: Float[Tensor, "batch length width"],
    z_t: Tokens,
    *,
    vocab_size: int,
    mask_id: int,
) -> Float[Tensor, "batch length vocab"]:
    r"""Apply SUBS to backbone logits (`MaskingProcess.log_probs`).

    Args:
        logits: `(B, L, W)` with `W >= V`; entries `V..W-1` (the mask and any
            other non-data ids) are dropped.
        z_t: Noisy tokens `(B, L)`.
        vocab_size: $V$, the number of data tokens.
        mask_id: The mask id in `z_t`.

    Returns:
        $\log x_\theta$ `(B, L, V)` in float32: a log-softmax at masked positions,
        `0` at the carried token and `NEG` elsewhere at unmasked ones.
    """
    return MaskingProcess(vocab_size=vocab_size, mask_id=mask_id).log_probs(logits, z_t)


class SUBS(nn.Module):
    r"""A `Denoiser` from a backbone `(tokens, sigma, padding_mask) -> logits`.

    The backbone (e.g. `DiT`) sees the total noise $\sigma(t) = -\log\alpha_t$
    when time-conditioned, zeros otherwise (MDLM's default). Its logits become
    $\log x_\theta$ through the process's parameterisation (`process.log_probs`:
    SUBS for masking).

    Args:
        backbone: Module called as `backbone(z_t, sigma, padding_mask=...)`,
            returning `(B, L, W)` logits with `W >= V`.
        process: Supplies $V$, the parameterisation and $\alpha_t$.
        time_conditioning: Feed $\sigma(t)$ to the backbone; defaults to the
            backbone's `config.time_conditioning` (or `False`).

    Raises:
        ValueError: If the process needs a time-conditioned denoiser
            (`process.needs_time`, e.g. uniform noise) and it is not.
    """

    def __init__(
        self,
        backbone: nn.Module,
        process: ForwardProcess,
        *,
        time_conditioning: bool | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.process = process
        if time_conditioning is None:
            config = getattr(backbone, "config", None)
            time_conditioning = bool(getattr(config, "time_conditioning", False))
        if process.needs_time and not time_conditioning:
            raise ValueError(
                f"`backbone` must be time-conditioned for a {process.name} process "
                "(set `time_conditioning=True` in its config): its inputs do not reveal t"
            )
        self.time_conditioned = time_conditioning
        self.cacheable = callable(getattr(backbone, "step", None))
        """Whether `step` (key/value caches) works: the backbone has a `step` (the `DiT`)."""

    @property
    def block_size(self) -> int | None:
        """The backbone's block size if it is block-causal (BD3-LM), else `None`."""
        return getattr(getattr(self.backbone, "config", None), "block_size", None)

    def step(
        self,
        z_t: Tokens,
        t: Times,
        start: int,
        stop: int,
        *,
        cache: KVCache | None = None,
        padding_mask: Bool[Tensor, "batch length"] | None = None,
        positions: Int[Tensor, "batch length"] | None = None,
    ) -> tuple[Float[Tensor, "batch block vocab"], KVCache]:
        r"""$\log x_\theta$ at positions `start .. stop - 1` of $z_t$, the others read from `cache`.

        The `CachedDenoiser` protocol, through `DiT.step`.

        Args:
            z_t: The whole sequence `(B, L)`.
            t: Times `(B,)`.
            start: First position to run.
            stop: One past the last.
            cache: Keys and values of positions `0 .. C - 1` ($C \ge$ `start`), or `None`
                (then `start` is 0).
            padding_mask: `(B, L)`, `True` at real tokens.
            positions: Not supported with a cache (the `DiT` takes per-row positions
                only in `forward`).

        Returns:
            Log-probabilities `(B, stop - start, V)` and the cache with positions
            `start .. stop - 1` spliced in.

        Raises:
            ValueError: If `positions` is given.
        """
        if positions is not None:
            raise ValueError("`positions`: the DiT's `step` takes no per-row positions")
        tokens = z_t[:, start:stop]
        mask = None if padding_mask is None else padding_mask[:, start:stop]
        logits, new = self.backbone.step(tokens, self.sigma(t), mask, cache=cache, offset=start)
        return self.process.log_probs(logits, tokens), new

    def forward(
        self,
        z_t: Tokens,
        t: Times,
        padding_mask: torch.Tensor | None = None,
        *,
        clean: Tokens | None = None,
        positions: Int[Tensor, "batch length"] | None = None,
    ) -> Float[Tensor, "batch length vocab"]:
        r"""$\log x_\theta(z_t)$ over the data tokens.

        Args:
            z_t: Noisy tokens `(B, L)`.
            t: Times `(B,)`; used only when time-conditioned (as
                $\sigma(t) = -\log\alpha_t$).
            padding_mask: `(B, L)`, `True` at real tokens; `None` attends to all.
            clean: Block diffusion training only: the clean tokens, passed on to
                a block-causal backbone (`DiT(..., clean=x)`, BD3-LM's
                $z_t \oplus x$ pass).
            positions: `(B, L)` positions of each row, passed on to the backbone
                (left-padded prompts of different lengths; see `DiT.forward`).

        Returns:
            Float32 log-probabilities `(B, L, V)` (see `subs_log_probs`).
        """
        extra: dict[str, Any] = {}
        if clean is not None:
            extra["clean"] = clean
        if positions is not None:
            extra["positions"] = positions
        return self._log_probs(z_t, t, padding_mask=padding_mask, **extra)

    def sigma(self, t: Times) -> Float[Tensor, "batch"]:
        r"""The backbone's input: $\sigma(t) = -\log\alpha_t$ if time-conditioned, else zeros."""
        if self.time_conditioned:
            # α_1 = 0 (e.g. LogLinear(eps=0)) would feed σ = inf: cap σ at -log(1e-12)
            return -torch.log(self.process.schedule.alpha(t).clamp_min(1e-12)).float()
        return torch.zeros(t.shape[0], device=t.device)

    def _log_probs(self, z_t: Tokens, t: Times, **backbone_kwargs: Any) -> Tensor:
        r"""Feed $\sigma(t)$ (or zeros) and `backbone_kwargs` to the backbone, then SUBS."""
        if self.time_conditioned:
            sigma = self.sigma(t)
        else:
            sigma = torch.zeros(z_t.shape[0], device=z_t.device)
        return self.process.log_probs(self.backbone(z_t, sigma, **backbone_kwargs), z_t)


class ConditionalSUBS(SUBS):
    r"""SUBS over a label-conditioned backbone: a `ConditionalDenoiser`.

    $\log x_\theta(z_t \mid y)$ with SUBS's guarantees (no mass on the mask,
    normalised, unmasked tokens carried over) for labels $y \in \{0..C\}$,
    $C$ being the null label. Called without a label it is the unconditional
    $x_\theta(z_t \mid \varnothing)$, so the trainer's validation NELBO and
    plain samplers work on it as they are.

    Args:
        backbone: A `DiT` whose config has `num_classes > 0` (any module
            called as `backbone(z_t, sigma, padding_mask=..., label=...)`
            with `backbone.config.num_classes`).
        process: Supplies $V$, the mask id and $\alpha_t$.
        time_conditioning: As for `SUBS`.

    Raises:
        ValueError: If the backbone is not label-conditioned.

    Example:
        >>> from discdiff import DiT, DiTConfig, MaskingProcess
        >>> net = DiT(DiTConfig.micro(vocab_size=5, num_classes=3))
        >>> denoiser = ConditionalSUBS(net, MaskingProcess(vocab_size=4))
        >>> denoiser(torch.full((2, 6), 4), torch.ones(2), torch.tensor([0, 3])).shape
        torch.Size([2, 6, 4])
    """

    def __init__(
        self,
        backbone: nn.Module,
        process: ForwardProcess,
        *,
        time_conditioning: bool | None = None,
    ) -> None:
        super().__init__(backbone, process, time_conditioning=time_conditioning)
        classes = int(getattr(getattr(backbone, "config", None), "num_classes", 0))
        if classes < 1:
            raise ValueError(
                "`backbone` is not label-conditioned: its `config.num_classes` must be "
                f"at least 1; got {classes}"
            )
        self.num_classes = classes

    def forward(
        self,
        z_t: Tokens,
        t: Times,
        label: Int[Tensor, "batch"] | None = None,
        padding_mask: Tensor | None = None,
    ) -> Float[Tensor, "batch length vocab"]:
        r"""$\log x_\theta(z_t \mid y)$, `(B, L, V)`; `label=None` is the null label."""
        return self._log_probs(z_t, t, padding_mask=padding_mask, label=label)
