r"""Autoregressive sampling with the diffusion samplers' shaping: the AR baseline's sampler.

$$
x_i \sim \mathrm{shape}\big(p_\theta(\cdot \mid x_{<i})\big), \qquad i = 1, \dots, L,
$$

where "shape" is the sampler's `Shaping` — the same temperature, top-k and nucleus
rules (`nucleus="remdm"` for the paper's numbers) that `AncestralSampler`
applies to $x_\theta$ — and draws are float64 inverse-CDF draws from the
same random streams (`SequenceGenerator`: sequence $i$ draws the same
numbers in any batch). One network call per generated token: the "AR (T=L)"
row of the ReMDM paper's tables, NFE $= L$.

The model is anything with `next_logits(prefix (B, i)) -> (B, V)`: a
`CausalTransformer`, or `discdiff.guidance.FUDGE` around one.
"""

from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff.distributions import draw_categorical
from discdiff.rng import RandomSource, sampling_device, stream_batches
from discdiff.sampling.ancestral import SampleResult
from discdiff.shaping import Shaping

__all__ = ["AutoregressiveSampler", "NextTokenModel"]


@runtime_checkable
class NextTokenModel(Protocol):
    """What `AutoregressiveSampler` asks of a model."""

    def next_logits(self, prefix: Int[Tensor, "batch prefix"]) -> Float[Tensor, "batch vocab"]:
        r"""Logits of $p(x_{i+1} \mid x_{\le i})$ after `prefix` `(B, i)`; `i = 0` is allowed."""
        ...


class AutoregressiveSampler:
    r"""Sample a causal model token by token, shaped like the diffusion samplers.

    Args:
        shaping: Temperature (0: greedy), top-k, nucleus and draw precision
            (`discdiff.shaping.Shaping`), as the diffusion samplers apply them.
        **settings: The `Shaping` by its fields instead (`top_p=0.9`, ...).

    Example:
        >>> from discdiff.models.causal import CausalConfig, CausalTransformer
        >>> model = CausalTransformer(CausalConfig(vocab_size=5, model_length=8, hidden_dim=16))
        >>> result = AutoregressiveSampler(top_p=0.9).sample(model, 3, 8)
        >>> result.tokens.shape, result.nfe
        (torch.Size([3, 8]), 8)
    """

    def __init__(self, *, shaping: Shaping | None = None, **settings: Any) -> None:
        self.shaping = Shaping.given(shaping, **settings)

    def next_probs(
        self, model: NextTokenModel, prefix: Int[Tensor, "batch prefix"]
    ) -> Float[Tensor, "batch vocab"]:
        """The shaped next-token distribution the sampler draws from after `prefix`."""
        logits = model.next_logits(prefix)
        return self.shaping.probs(logits[:, None])[:, 0]

    @torch.no_grad()
    def sample(
        self,
        model: NextTokenModel,
        batch_size: int,
        length: int,
        *,
        prompt: Int[Tensor, "prompt_batch prompt_length"] | None = None,
        generator: RandomSource = None,
        device: torch.device | str | None = None,
    ) -> SampleResult:
        """Draw `batch_size` sequences of `length` tokens (after an optional prompt).

        Args:
            model: A `NextTokenModel`.
            batch_size: Number of sequences $B$.
            length: Tokens per sequence $L$, the prompt included.
            prompt: A prefix `(B or 1, P)` kept as given.
            generator: A `torch.Generator` or a `SequenceGenerator` of `batch_size` sequences.
            device: Where to sample (default: the generator's device, else CPU).

        Returns:
            A `SampleResult`: `tokens` `(B, L)`, `nfe` = `steps` = the generated
            tokens, and `sequence_nfe`.
        """
        device = sampling_device(batch_size, length, generator, device)
        tokens = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
        if prompt is not None:
            if prompt.dim() != 2 or prompt.shape[-1] > length:
                raise ValueError(
                    f"`prompt` must have shape (B or 1, P) with P <= length={length}; "
                    f"got {tuple(prompt.shape)}"
                )
            tokens = prompt.to(device).expand(batch_size, -1).clone()
        nfe = length - tokens.shape[1]
        for _ in range(nfe):
            probs = self.next_probs(model, tokens)
            drawn = draw_categorical(probs, generator=generator, dtype=self.shaping.dtype)
            tokens = torch.cat((tokens, drawn), dim=1)
        per_sequence = torch.full((batch_size,), nfe, dtype=torch.long, device=device)
        return SampleResult(tokens=tokens, nfe=nfe, steps=nfe, sequence_nfe=per_sequence)

    def sample_batches(
        self,
        model: NextTokenModel,
        samples: int,
        length: int,
        *,
        seed: int,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> SampleResult:
        """Draw `samples` sequences, `batch_size` at a time; sequence $i$ uses stream $(seed, i)$.

        As `AncestralSampler.sample_batches`: the tokens do not depend on `batch_size`.
        """
        return SampleResult.joined(
            [
                self.sample(model, size, length, generator=generator, **kwargs)
                for size, generator in stream_batches(samples, batch_size, seed, device)
            ]
        )
