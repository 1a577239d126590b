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
  `"none"` exactly. On a natively loaded LLaDA this is Fast-dLLM's
  `generate_with_prefix_cache` / `generate_with_dual_cache`, token for token.

The caches need a `CachedDenoiser` (`discdiff.models.protocol`): `SUBS` over
a `DiT`, or the `HuggingFaceDenoiser` of a natively loaded LLaDA or Dream,
whose `step` runs some positions against a `KVCache`. `sample` splits the
whole sequence into blocks from position 0 (BD3-LM); `complete` left-pads
prompts of different lengths and splits only the new tokens (LLaDA's
`block_length`). `steps` are the total over the blocks, as in
`AncestralSampler` and LLaDA.

`BlockSampleResult.tokens_processed` counts the positions the network ran
per sequence, beside the honest `nfe` (a cached call is still a call).
"""

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff.models.cache import KVCache
from discdiff.models.protocol import is_time_conditioned, supports_cache
from discdiff.rng import RandomSource, stream_batches
from discdiff.sampling.ancestral import (
    AncestralSampler,
    SampleResult,
    _prompt_batches,
    _prompt_rows,
)
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


def _per_block(sampler: AncestralSampler, steps: int) -> AncestralSampler:
    """`sampler` with `steps` steps (its grid rebuilt), everything else shared."""
    if steps == sampler.steps:
        return sampler
    each = copy.copy(sampler)
    each.steps, each.grid = steps, sampler.posterior.time_grid(steps, sampler.t_min)
    return each


class _BlockDenoiser:
    r"""$x_\theta$ of one block given the rest of the sequence, through the chosen cache."""

    def __init__(
        self,
        owner: "BlockSampler",
        denoiser: Any,
        context: Tensor,
        padding: Tensor | None,
        positions: Tensor | None,
        mode: str,
    ) -> None:
        self.owner, self.denoiser, self.mode = owner, denoiser, mode
        self.cached = supports_cache(denoiser)
        self.time_conditioned = is_time_conditioned(denoiser)
        self.context, self.padding, self.positions = context, padding, positions  # (B, L) each
        self.causal = self.cached and denoiser.block_size is not None
        self.cache: KVCache | None = None  # exact: finished blocks; approximate: every position
        self.start = self.stop = 0
        self.calls = 0  # calls in the current block
        self.processed = 0

    def begin(self, start: int, stop: int) -> None:
        self.start, self.stop, self.calls = start, stop, 0
        if self.mode in ("prefix", "dual"):
            self.cache = None

    def finish(self, block: Tensor) -> None:
        self.context[:, self.start : self.stop] = block

    def _step(self, whole: Tensor, t: Tensor, start: int, stop: int, cache: Any) -> Any:
        self.processed += stop - start
        return self.denoiser.step(
            whole, t, start, stop, cache=cache, padding_mask=self.padding, positions=self.positions
        )

    def __call__(self, z: Tokens, t: Times) -> Float[Tensor, "batch block vocab"]:
        start, stop, mode = self.start, self.stop, self.mode
        first = self.calls == 0
        self.calls += 1
        whole = self.context.clone()
        whole[:, start:stop] = z
        if self.causal and mode == "exact":
            # the finished blocks not yet cached join the cache in this call
            cached = 0 if self.cache is None else self.cache.length
            log_probs, new = self._step(whole, t, cached, stop, self.cache)
            self.cache = new.prefix(start)
            return log_probs[:, start - cached :]
        if self.causal:  # no cache: the finished blocks and this one
            return self._step(whole, t, 0, stop, None)[0][:, start:]
        length = whole.shape[1]
        if not self.cached or mode == "none":  # the whole sequence, as the denoiser runs it
            self.processed += length
            if self.padding is None and self.positions is None:
                return self.denoiser(whole, t)[:, start:stop]
            padded = self.denoiser(whole, t, padding_mask=self.padding, positions=self.positions)
            return padded[:, start:stop]
        refresh = self.owner.refresh
        if first or (refresh is not None and (self.calls - 1) % refresh == 0):
            log_probs, self.cache = self._step(whole, t, 0, length, None)
            return log_probs[:, start:stop]
        if mode == "prefix":  # the block and everything after it, the prefix from the cache
            return self._step(whole, t, start, length, self.cache.prefix(start))[0][
                :, : stop - start
            ]
        return self._step(whole, t, start, stop, self.cache)[0]  # dual: the block only


class BlockSampler:
    r"""Generate left to right in blocks, each block a run of `sampler`, with a KV cache.

    Args:
        sampler: The per-block sampler. Its `steps` are the total over all
            blocks, as LLaDA's `steps` and `AncestralSampler.sample(blocks=)`:
            each block gets `steps / blocks` (the number of blocks run must
            divide it). Its strategy, nucleus, temperature and float64 draws
            apply unchanged.
        block_size: Positions per block $n$; default the model's `block_size`
            (and it must equal it for a block-causal model).
        cache: `"exact"` (default for a block-causal model), `"none"` (default
            otherwise), `"prefix"` or `"dual"` (the approximate caches of a
            full-attention model; see the module docstring). The caches need a
            `CachedDenoiser` (`SUBS` over a `DiT`, or a natively loaded LLaDA
            or Dream); any other denoiser takes `"none"` only.
        refresh: Approximate caches: recompute every position on every
            `refresh`-th call of a block (`1`: always, exact); `None` (default):
            only on the block's first call.

    Example:
        >>> from discdiff import DiT, DiTConfig, MaskingPosterior, MaskingProcess, SUBS
        >>> process = MaskingProcess(vocab_size=4)
        >>> net = DiT(DiTConfig.micro(vocab_size=5, block_size=4)).eval()
        >>> sampler = BlockSampler(AncestralSampler(process, MaskingPosterior(), steps=12))
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
        """The block size and the cache for `denoiser` (named errors for what it cannot do)."""
        if not supports_cache(denoiser):  # any denoiser: full attention, no cache
            if self.cache not in (None, "none"):
                raise ValueError(
                    f"`cache` {self.cache!r}: {type(denoiser).__name__} has no working `step` "
                    "(it is no CachedDenoiser), so it takes cache 'none' only"
                )
            if self.block_size is None:
                raise ValueError(
                    f"`block_size` is needed for {type(denoiser).__name__} (it has none of its own)"
                )
            return self.block_size, "none"
        model_block = denoiser.block_size
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
                    f"`cache`: a block-causal model takes 'exact' or 'none'; got {cache!r}"
                )
        else:
            cache = self.cache or "none"
            if cache == "exact":
                raise ValueError(
                    "`cache` 'exact' needs a block-causal model (DiTConfig.block_size); a "
                    "full-attention one takes 'none', 'prefix' or 'dual' (approximate)"
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

        Blocks are `[0, n), [n, 2n), ...` over the whole sequence (BD3-LM's);
        a block fixed in every row (prompt or padding) is not run, and the
        `steps` are split over the blocks that are.

        Args:
            denoiser: A `CachedDenoiser` (`SUBS` over a `DiT`, block-causal or
                not; a natively loaded LLaDA or Dream), or any denoiser with
                `block_size` given and no cache (run on the whole sequence,
                later blocks masked; e.g. a language's exact one).
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
            ValueError: On bad shapes or ids, a cache the model cannot use, or
                `steps` not divisible by the number of blocks run.
        """
        block, mode = self._settings(denoiser)
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        device = torch.device(device)
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
        spans = [(a, min(a + block, length)) for a in range(0, length, block)]
        spans = [(a, b) for a, b in spans if not bool(given[:, a:b].all())]
        result = self._blocks(denoiser, mode, values, given, padding, None, spans, generator)
        if padding is not None:
            result.tokens = torch.where(padding, result.tokens, self.sampler.process.mask_id)
        return result

    @torch.no_grad()
    def complete(
        self,
        denoiser: Any,
        prompts: Sequence[Int[Tensor, "_prompt"]] | Int[Tensor, "batch prompt"],
        length: int,
        *,
        lengths: Int[Tensor, "batch"] | None = None,
        generator: RandomSource = None,
        device: torch.device | str | None = None,
    ) -> BlockSampleResult:
        r"""Complete prompts of different lengths: `length` new tokens each, in blocks after them.

        As `AncestralSampler.complete`: the prompts are left-padded to the
        longest, $P$; padding is never attended to and each row's rotary
        positions start at 0 on its first real token, so a row's completion is
        the one it gets alone, with every cache. The blocks split the new
        tokens only (LLaDA's `block_length`): `[P, P + n), [P + n, P + 2n), ...`.
        With `cache="prefix"` / `"dual"` and a LLaDA loaded natively this is
        Fast-dLLM's `generate_with_prefix_cache` / `generate_with_dual_cache`.

        Args:
            denoiser: A `CachedDenoiser` (e.g. the `HuggingFaceDenoiser` of
                `load_diffusion_llm`), or any denoiser called as
                `denoiser(z, t, padding_mask=, positions=)` with cache `"none"`.
            prompts: A list of 1-D prompts (process ids, each non-empty), or a
                `(B, P)` tensor whose row $b$ holds its prompt in its first
                `lengths[b]` entries.
            length: New tokens per prompt.
            lengths: With a tensor of prompts, each row's prompt length.
            generator: Random generator (a `SequenceGenerator` of $B$ streams
                makes each row independent of the batch).
            device: Where to sample.

        Returns:
            A `BlockSampleResult` whose `tokens` `(B, length)` are the completions.

        Raises:
            ValueError: For an empty prompt, a cache the denoiser cannot use, or
                `steps` not divisible by the number of blocks.
        """
        block, mode = self._settings(denoiser)
        if length < 1:
            raise ValueError(f"`length` must be at least 1; got {length}")
        rows = _prompt_rows(prompts, lengths)
        longest = max(len(row) for row in rows)
        device = torch.device(
            device if device is not None else (generator.device if generator else "cpu")
        )
        total = longest + length
        values = torch.full((len(rows), total), -1, dtype=torch.long, device=device)
        real = torch.zeros(len(rows), total, dtype=torch.bool, device=device)
        for b, row in enumerate(rows):
            self.sampler.process.check_tokens("prompts", row, allow_mask=False)
            values[b, : longest - len(row)] = 0  # padding: any data id, never attended to
            values[b, longest - len(row) : longest] = row.to(device)
            real[b, longest - len(row) :] = True
        padding = positions = None
        if not bool(real.all()):
            padding, positions = real, (real.long().cumsum(-1) - 1).clamp_min(0)
        spans = [(a, min(a + block, total)) for a in range(longest, total, block)]
        result = self._blocks(
            denoiser, mode, values, values >= 0, padding, positions, spans, generator
        )
        result.tokens = result.tokens[:, longest:]
        return result

    def _blocks(
        self,
        denoiser: Any,
        mode: str,
        values: Tensor,
        given: Tensor,
        padding: Tensor | None,
        positions: Tensor | None,
        spans: list[tuple[int, int]],
        generator: RandomSource,
    ) -> BlockSampleResult:
        """Run the per-block sampler on each span in order; the rest stays as `values`."""
        if (
            padding is not None
            and not supports_cache(denoiser)
            and "padding_mask" not in inspect.signature(denoiser).parameters
        ):
            raise ValueError(
                f"padding (`lengths` or prompts of different lengths) needs a denoiser that "
                f"takes `padding_mask`; {type(denoiser).__name__} does not"
            )
        steps = self.sampler.steps
        if spans and steps % len(spans):
            raise ValueError(
                f"`steps` ({steps}) must be divisible by the number of blocks ({len(spans)}): "
                "it is the total over all blocks"
            )
        each = _per_block(self.sampler, steps // max(1, len(spans)))
        process, device = self.sampler.process, values.device
        batch = values.shape[0]
        context = torch.where(given, values, process.mask_id)
        model = _BlockDenoiser(self, denoiser, context, padding, positions, mode)
        nfe = taken = 0
        sequence_nfe = torch.zeros(batch, dtype=torch.long, device=device)
        for start, stop in spans:
            model.begin(start, stop)
            fixed = values[:, start:stop]
            infill = torch.where(given[:, start:stop], fixed, -1)
            result = each.sample(
                model, batch, stop - start, infill=infill, generator=generator, device=device
            )
            model.finish(result.tokens)
            nfe, taken = nfe + result.nfe, taken + result.steps
            sequence_nfe += result.sequence_nfe
        return BlockSampleResult(
            tokens=model.context,
            nfe=nfe,
            steps=taken,
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
            denoiser: As for `sample`.
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

    def complete_batches(
        self,
        denoiser: Any,
        prompts: Sequence[Int[Tensor, "_prompt"]],
        length: int,
        *,
        seed: int,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> BlockSampleResult:
        """`complete` `batch_size` prompts at a time; prompt $i$ uses stream $(seed, i)$.

        The completions, and `sequence_nfe`, do not depend on `batch_size` or on
        which prompts share a batch.

        Args:
            denoiser: As for `complete`.
            prompts: 1-D prompts (process ids).
            length: New tokens per prompt.
            seed: Seed of the streams.
            batch_size: Prompts per call (all at once by default).
            device: Where to sample.

        Returns:
            A `BlockSampleResult` with `(N, length)` completions on the CPU.
        """
        parts = [
            self.complete(denoiser, chunk, length, generator=generator, device=device)
            for chunk, generator in _prompt_batches(prompts, batch_size, seed, device)
        ]
        processed = max(p.tokens_processed for p in parts)
        return BlockSampleResult.joined(parts, tokens_processed=processed)
