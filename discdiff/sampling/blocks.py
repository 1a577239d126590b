r"""Block-by-block sampling with key/value caches: BD3-LM's exact one, Fast-dLLM's approximate ones.

The sequence is generated in blocks of $n$ positions, left to right. Block
$b$ is a whole masked-diffusion run of the given `AncestralSampler` (any
strategy: MDLM, every ReMDM remasking schedule, the confidence and threshold
decoders) on its $n$ positions, with the denoiser

$$
x_\theta(z^b_t \mid x^{<b}),
$$

the network's prediction for block $b$ given the finished blocks. The
strategy only ever sees the block, so its per-step counts and softmaxes are
over the block's positions, as in BD3-LM.

Caches (`cache=`):

- `"none"`: every call runs the network on the whole context: the finished
  blocks and the current block for a block-causal `DiT` (`block_size`), the
  whole sequence (later blocks masked) for a full-attention one or any other
  denoiser (an exact one, for ground truth).
- `"exact"` (block-causal models): the keys and values of finished blocks
  are computed once and reused by every later call. Block-causal attention
  makes them independent of anything after them, so the samples equal the
  uncached ones (up to float rounding of a different reduction order: to
  $10^{-15}$ in float64). The finished block joins the cache on the first
  call of the next block (one call over $2n$ positions), so the number of
  network calls does not change; the positions each call processes drop
  from the whole prefix to one or two blocks.
- `"prefix"` / `"dual"` (full-attention models; Fast-dLLM, Wu et al. 2025):
  the first call of a block (and every `refresh`-th after) runs the whole
  sequence and stores every position's keys and values; the other calls
  recompute only the current block and everything after it (`"prefix"`),
  or only the current block (`"dual"`), and read the other positions' keys
  and values from the store. Those were computed before the block changed,
  so this is an approximation whose cost must be measured; with
  `refresh=1` every call runs the whole sequence and the sampler equals
  `"none"` exactly.

`BlockSampleResult.tokens_processed` counts the positions the network ran
per sequence, beside the honest `nfe` (a cached call is still a call).
"""

from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff.models.dit import KVCache
from discdiff.rng import RandomSource, stream_batches
from discdiff.sampling.ancestral import AncestralSampler, SampleResult
from discdiff.typing import Times, Tokens

__all__ = ["BlockCache", "BlockSampleResult", "BlockSampler"]

BlockCache = Literal["none", "exact", "prefix", "dual"]
"""The caches of `BlockSampler`: none, BD3-LM's exact one, Fast-dLLM's prefix and dual caches."""


@dataclass
class BlockSampleResult(SampleResult):
    """A `SampleResult` with the network's work per sequence.

    Attributes:
        tokens_processed: Positions the network ran, summed over its calls, per sequence.
    """

    tokens_processed: int = 0


def _dit(denoiser: Any) -> Any:
    """The DiT under a SUBS (it has `step`, for the caches), or `None` for any other denoiser."""
    network = getattr(denoiser, "backbone", None)
    return network if hasattr(network, "step") and hasattr(network, "config") else None


class _BlockDenoiser:
    r"""$x_\theta$ of one block given the rest of the sequence, through the chosen cache."""

    def __init__(
        self, owner: "BlockSampler", denoiser: Any, context: Tensor, padding: Tensor | None
    ) -> None:
        self.owner, self.denoiser = owner, denoiser
        self.network = _dit(denoiser)  # None: any denoiser, run on the whole sequence
        self.time_conditioned = bool(getattr(denoiser, "time_conditioned", False))
        self.context, self.padding = context, padding  # (B, L) tokens, (B, L) real flags
        self.causal = self.network is not None and self.network.config.block_size is not None
        self.cache: KVCache | None = None  # exact: finished blocks; approximate: every position
        self.done = 0  # positions finished and fixed in `context`
        self.start = self.stop = 0
        self.calls = 0  # calls in the current block
        self.processed = 0

    def begin(self, start: int, stop: int) -> None:
        self.start, self.stop, self.calls = start, stop, 0
        if self.owner.cache in ("prefix", "dual"):
            self.cache = None

    def finish(self, block: Tensor) -> None:
        self.context[:, self.start : self.stop] = block
        self.done = self.stop

    def _mask(self, start: int, stop: int) -> Tensor | None:
        return None if self.padding is None else self.padding[:, start:stop]

    def _run(self, tokens: Tensor, t: Tensor, start: int, cache: KVCache | None) -> Any:
        self.processed += tokens.shape[1]
        sigma = self.denoiser.sigma(t)
        logits, new = self.network.step(
            tokens, sigma, self._mask(start, start + tokens.shape[1]), cache=cache, offset=start
        )
        return self.denoiser.process.log_probs(logits, tokens), new

    def __call__(self, z: Tokens, t: Times) -> Float[Tensor, "batch block vocab"]:
        start, stop, mode = self.start, self.stop, self.owner.cache
        first = self.calls == 0
        self.calls += 1
        if self.causal and mode == "exact":
            # the finished blocks not yet cached join the cache in this call
            cached = 0 if self.cache is None else self.cache.length
            tokens = torch.cat((self.context[:, cached:start], z), dim=1)
            log_probs, new = self._run(tokens, t, cached, self.cache)
            self.cache = new.prefix(start)
            return log_probs[:, start - cached :]
        if self.causal:  # no cache: the finished blocks and this one
            tokens = torch.cat((self.context[:, :start], z), dim=1)
            return self._run(tokens, t, 0, None)[0][:, start:]
        whole = self.context.clone()
        whole[:, start:stop] = z
        if self.network is None:
            self.processed += whole.shape[1]
            return self.denoiser(whole, t)[:, start:stop]
        refresh = self.owner.refresh
        if mode == "none" or first or (refresh is not None and (self.calls - 1) % refresh == 0):
            log_probs, new = self._run(whole, t, 0, None)
            if mode != "none":
                self.cache = new
            return log_probs[:, start:stop]
        end = whole.shape[1] if mode == "prefix" else stop
        log_probs, _ = self._run(whole[:, start:end], t, start, self.cache)
        return log_probs[:, : stop - start]


class BlockSampler:
    r"""Generate left to right in blocks, each block a run of `sampler`, with a KV cache.

    Args:
        sampler: The per-block sampler (its `steps` are per block; its
            strategy, nucleus, temperature and float64 draws apply unchanged).
        block_size: Positions per block $n$; default the model's `block_size`
            (and it must equal it for a block-causal model).
        cache: `"exact"` (default for a block-causal model), `"none"`,
            `"prefix"` or `"dual"` (the approximate caches of a full-attention
            model; see the module docstring).
        refresh: Approximate caches: recompute every position on every
            `refresh`-th call of a block (`1`: always, exact); `None` (default):
            only on the block's first call.

    Example:
        >>> from discdiff import DiT, DiTConfig, MaskingPosterior, MaskingProcess, SUBS
        >>> process = MaskingProcess(vocab_size=4)
        >>> net = DiT(DiTConfig.micro(vocab_size=5, block_size=4)).eval()
        >>> sampler = BlockSampler(AncestralSampler(process, MaskingPosterior(), steps=4))
        >>> result = sampler.sample(SUBS(net, process), batch_size=2, length=12)
        >>> result.tokens.shape
        torch.Size([2, 12])
    """

    def __init__(
        self,
        sampler: AncestralSampler,
        block_size: int | None = None,
        *,
        cache: BlockCache | None = None,
        refresh: int | None = None,
    ) -> None:
        if cache not in (None, "none", "exact", "prefix", "dual"):
            raise ValueError(f"`cache` must be 'none', 'exact', 'prefix' or 'dual'; got {cache!r}")
        if block_size is not None and block_size < 1:
            raise ValueError(f"`block_size` must be at least 1; got {block_size}")
        if refresh is not None and refresh < 1:
            raise ValueError(f"`refresh` must be None or at least 1; got {refresh}")
        self.sampler, self.block_size, self.cache, self.refresh = (
            sampler,
            block_size,
            cache,
            refresh,
        )

    def _settings(self, denoiser: Any) -> tuple[int, str]:
        network = _dit(denoiser)
        if network is None:  # any denoiser: full attention, no cache
            if self.block_size is None or self.cache not in (None, "none"):
                raise TypeError(
                    "a denoiser that is not a SUBS over a DiT is sampled with an explicit "
                    "`block_size` and cache 'none' (the caches need `backbone.step`); got "
                    f"{type(denoiser).__name__} with block_size={self.block_size}, "
                    f"cache={self.cache!r}"
                )
            return self.block_size, "none"
        model_block = network.config.block_size
        block = self.block_size or model_block
        if block is None:
            raise ValueError("`block_size` is needed for a full-attention model")
        if model_block is not None:
            if block != model_block:
                raise ValueError(
                    f"`block_size` ({block}) must equal the block-causal model's ({model_block})"
                )
            cache = self.cache or "exact"
            if cache not in ("none", "exact"):
                raise ValueError(
                    f"a block-causal model takes cache 'exact' or 'none'; got {cache!r}"
                )
        else:
            cache = self.cache or "none"
            if cache == "exact":
                raise ValueError(
                    "cache 'exact' needs a block-causal model (DiTConfig.block_size); "
                    "use 'prefix' or 'dual' (approximate) for full attention"
                )
        return block, cache

    @torch.no_grad()
    def sample(
        self,
        denoiser: Any,
        batch_size: int,
        length: int,
        *,
        prompt: Int[Tensor, "prompt_batch prompt_length"] | None = None,
        infill: Int[Tensor, "infill_batch length"] | None = None,
        lengths: Int[Tensor, "batch"] | None = None,
        generator: RandomSource = None,
        device: torch.device | str | None = None,
    ) -> BlockSampleResult:
        r"""Draw `batch_size` sequences of `length` tokens, block by block.

        Args:
            denoiser: A `SUBS` over a `DiT` (block-causal or not), or any
                denoiser with `block_size` given and no cache (run on the whole
                sequence, later blocks masked; e.g. a language's exact one).
            batch_size: Number of sequences $B$.
            length: Tokens per sequence $L$ (the last block may be shorter).
            prompt: A prefix `(B or 1, P)` kept fixed.
            infill: `(B or 1, L)`: data tokens at fixed positions, `-1` (or the
                mask id) where tokens are generated; rows may fix different
                prefixes (prompts of different lengths).
            lengths: `(B,)` real length of each row; positions past it are
                padding: not generated, not attended to, returned as the mask id.
            generator: Random generator (a `SequenceGenerator` of $B$ streams
                makes rows independent of the batch).
            device: Where to sample.

        Returns:
            A `BlockSampleResult`: tokens `(B, L)`, the calls made (`nfe`,
            `sequence_nfe`) and `tokens_processed`.

        Raises:
            ValueError: On bad shapes or ids, or a cache the model cannot use.
        """
        block, _ = self._settings(denoiser)
        if lengths is not None and _dit(denoiser) is None:
            raise ValueError("`lengths` (padding) needs a SUBS over a DiT, which masks attention")
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        device = torch.device(device)
        process = self.sampler.process
        values, given = self.sampler._given(batch_size, length, prompt, infill, device)
        padding = None
        if lengths is not None:
            if lengths.shape != (batch_size,) or bool(((lengths < 1) | (lengths > length)).any()):
                raise ValueError(
                    f"`lengths` must be ({batch_size},) values in [1, {length}]; got {lengths}"
                )
            padding = torch.arange(length, device=device) < lengths.to(device)[:, None]
            values = torch.where(padding, values, 0)  # any data id: fixed and never attended to
            given = given | ~padding
        context = torch.where(given, values, process.mask_id)
        model = _BlockDenoiser(self, denoiser, context, padding)
        nfe = steps = 0
        sequence_nfe = torch.zeros(batch_size, dtype=torch.long, device=device)
        for start in range(0, length, block):
            stop = min(start + block, length)
            model.begin(start, stop)
            fixed = values[:, start:stop]
            if bool(given[:, start:stop].all()):  # a prompt or padding block: nothing to draw
                model.finish(fixed)
                continue
            infill_b = torch.where(given[:, start:stop], fixed, -1)
            result = self.sampler.sample(
                model, batch_size, stop - start, infill=infill_b, generator=generator, device=device
            )
            model.finish(result.tokens)
            nfe, steps = nfe + result.nfe, steps + result.steps
            sequence_nfe += result.sequence_nfe
        tokens = model.context
        if padding is not None:
            tokens = torch.where(padding, tokens, process.mask_id)
        return BlockSampleResult(
            tokens=tokens,
            nfe=nfe,
            steps=steps,
            sequence_nfe=sequence_nfe,
            tokens_processed=model.processed,
        )

    def sample_batches(
        self,
        denoiser: Any,
        samples: int,
        length: int,
        *,
        seed: int,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> BlockSampleResult:
        """Draw `samples` sequences, `batch_size` at a time; sequence $i$ uses stream $(seed, i)$.

        As `AncestralSampler.sample_batches`: the tokens do not depend on `batch_size`.

        Args:
            denoiser: A `SUBS` over a `DiT`.
            samples: Number of sequences $N$.
            length: Tokens per sequence $L$.
            seed: Seed of the streams.
            batch_size: Sequences per call (all at once by default).
            device: Where to sample.
            **kwargs: Passed on to `sample` (`prompt`, `infill`).

        Returns:
            A `BlockSampleResult` with `(N, L)` tokens on the CPU, `sequence_nfe`
            `(N,)`, the total `nfe` and the `tokens_processed` per sequence.
        """
        parts = [
            self.sample(denoiser, size, length, generator=generator, **kwargs)
            for size, generator in stream_batches(samples, batch_size, seed, device)
        ]
        processed = max(p.tokens_processed for p in parts)
        return BlockSampleResult.joined(parts, tokens_processed=processed)
