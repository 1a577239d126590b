r"""The ancestral sampler: $z_1 \to z_0$ with any posterior or decoder.

Each step asks the denoiser for $x_\theta(z_t)$, shapes it (temperature,
top-k, nucleus), and asks the strategy for $z_s$. The loop is written against
two interfaces only: the `ForwardProcess` (the prior $z_1$ and the final
noise-removal step) and the `Strategy` (the time grid, per-run state such as
ReMDM-conf's decode confidences, and one draw per step): a `RemaskPosterior`
(MDLM, ReMDM cap / rescale / conf / loop, forward-backward, DFM, SEDD's score
samplers), a `ConfidenceDecoder`, or a `UniformPosterior`. The strategy's
`shape_output(logits, shaping, masked)` makes its `x` from the network's
output with the sampler's `Shaping` (SEDD's keep the scores' total; decoders
keep the untempered confidences). The sampler never looks at which one it has.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from discdiff._checks import validation
from discdiff.models.protocol import Denoiser, is_time_conditioned
from discdiff.processes.base import ForwardProcess, Strategy
from discdiff.rng import RandomSource, SequenceGenerator, sampling_device, stream_batches
from discdiff.shaping import Shaping
from discdiff.typing import Tokens

__all__ = ["AncestralSampler", "SampleResult"]


@dataclass
class SampleResult:
    r"""What `AncestralSampler.sample` returns.

    Attributes:
        tokens: The samples `(B, L)`.
        nfe: Number of denoiser calls (function evaluations).
        steps: Number of reverse steps taken (plus the noise-removal step).
        sequence_nfe: `(B,)` denoiser calls each sequence needed: the calls a
            batch of that sequence alone would make (with the cache, a call
            only after the sequence changed). Unlike `nfe` it does not depend
            on the batch size.
        trajectory: `(steps + 1, B, L)` states from $z_1$ on, if requested.
        masked_fraction: `(steps + 1, B)` fraction of generated positions still
            masked after each step, if statistics were requested.
        remasked: `(steps, B)` tokens remasked at each step, if requested.
        log_evidence: `(B,)` $\log \hat Z$ of each particle system (`ParticleSampler`).
        ess: `(reweightings, B)` effective sample sizes of the particle systems
            (`ParticleSampler`).
    """

    tokens: Tokens
    nfe: int
    steps: int
    sequence_nfe: Int[Tensor, "batch"] | None = None
    trajectory: Int[Tensor, "states batch length"] | None = None
    masked_fraction: Float[Tensor, "states batch"] | None = None
    remasked: Int[Tensor, "steps batch"] | None = None
    log_evidence: Float[Tensor, "batch"] | None = None
    ess: Float[Tensor, "reweightings batch"] | None = None

    @classmethod
    def joined(cls, parts: "list[SampleResult]", **extra: Any) -> "SampleResult":
        """The results of consecutive batches as one result.

        Tokens and `sequence_nfe` are concatenated on the CPU, `nfe` summed,
        `steps` the most of any batch; `extra` fields are passed as given.
        """
        return cls(
            tokens=torch.cat([p.tokens.cpu() for p in parts]),
            nfe=sum(p.nfe for p in parts),
            steps=max(p.steps for p in parts),
            sequence_nfe=torch.cat([p.sequence_nfe.cpu() for p in parts]),
            **extra,
        )


class AncestralSampler:
    r"""Ancestral sampling from a masked diffusion model.

    Args:
        process: The forward process (vocabulary, prior, noise removal, $\alpha_t$).
        posterior: The strategy: a posterior (e.g. `MaskingPosterior()`,
            `RemaskPosterior(CapSchedule(0.04))`, `UniformPosterior()`) or a
            `ConfidenceDecoder`; it must work with the process (`process_type`).
        steps: Number of steps $T$ (DFM's adaptive grid takes more); with
            blocks, the total over all blocks (each gets $T / \text{blocks}$, as
            in LLaDA).
        shaping: Temperature (0: greedy), top-k, nucleus and draw precision
            (`discdiff.shaping.Shaping`; default: none of them, float64 draws).
        noise_removal: Finish with the process's noise-removal step (masking:
            fill every remaining mask with the argmax of $x_\theta$, as MDLM).
        cache: Reuse $x_\theta$ when no token changed and the denoiser is not
            time-conditioned (the loop's only host synchronisation, and only
            then).
        t_min: Last time of the grid before noise removal.
        progress: Show a progress bar with the throughput in generated tokens
            per second (off by default; the CLI turns it on).
        **settings: The `Shaping` by its fields instead (`temperature=0`,
            `top_p=0.9`, ...), not together with `shaping`.

    Example:
        >>> from discdiff import MaskingPosterior, MaskingProcess
        >>> process = MaskingProcess(vocab_size=4)
        >>> uniform = lambda z, t: torch.zeros(*z.shape, 4)
        >>> sampler = AncestralSampler(process, MaskingPosterior(), steps=8)
        >>> sampler.sample(uniform, batch_size=2, length=5).tokens.shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        process: ForwardProcess,
        posterior: Strategy,
        steps: int,
        *,
        shaping: Shaping | None = None,
        noise_removal: bool = True,
        cache: bool = True,
        t_min: float = 1e-5,
        progress: bool = False,
        **settings: Any,
    ) -> None:
        if steps < 1:
            raise ValueError(f"`steps` must be at least 1; got {steps}")
        if not isinstance(posterior, Strategy):
            raise TypeError(
                f"`posterior` {posterior!r} is not a Strategy (derive from "
                "discdiff.processes.base.Strategy for its optional members' defaults)"
            )
        if not isinstance(process, posterior.process_type):
            raise TypeError(
                f"`posterior` {posterior!r} works with a {posterior.process_type.__name__}; "
                f"got `process` {process!r}"
            )
        self.process = process
        self.posterior = posterior
        self.steps = steps
        self.shaping = Shaping.given(shaping, **settings)
        self.noise_removal = noise_removal
        self.cache = cache
        self.t_min = t_min
        self.progress = progress
        self.grid = posterior.time_grid(steps, t_min)

    def _x_theta(self, denoiser: Denoiser, z: Tensor, t: Tensor) -> Any:
        masked = self.process.is_masked(z) if self.posterior.masked_only else None
        return self.posterior.shape_output(denoiser(z, t), self.shaping, masked)

    def _given(
        self,
        batch_size: int,
        length: int,
        prompt: Tensor | None,
        infill: Tensor | None,
        device: torch.device,
    ) -> tuple[Tensor, Tensor]:
        """Values `(B, L)` and flags `(B, L)` of the positions that stay fixed (free: -1)."""
        values = torch.full((batch_size, length), -1, dtype=torch.long, device=device)
        if infill is not None:
            if infill.shape[-1] != length or infill.dim() != 2:
                raise ValueError(
                    f"`infill` must have shape (B or 1, length={length}); got {tuple(infill.shape)}"
                )
            free = (infill == -1) | self.process.is_masked(infill)
            self.process.check_tokens("infill", infill[~free], allow_mask=False)
            values = torch.where(free, -1, infill).to(device).expand(batch_size, length).clone()
        if prompt is not None:
            if prompt.dim() != 2 or prompt.shape[-1] > length:
                raise ValueError(
                    f"`prompt` must have shape (B or 1, P) with P <= length={length}; "
                    f"got {tuple(prompt.shape)}"
                )
            self.process.check_tokens("prompt", prompt, allow_mask=False)
            values[:, : prompt.shape[-1]] = prompt.to(device).expand(batch_size, -1)
        return values, values >= 0

    def spans(
        self, generated: int, blocks: int = 1, block_length: int | None = None
    ) -> list[tuple[int, int]]:
        """The blocks `[(start, stop), ...]` of the `generated` positions, and a check of `steps`.

        Args:
            generated: Positions to generate (after the prompt).
            blocks: Number of equal blocks.
            block_length: Positions per block (instead of `blocks`).

        Returns:
            Spans relative to the first generated position.

        Raises:
            ValueError: If the blocks do not divide `generated`, or `steps` is not
                divisible by their number.
        """
        if block_length is not None:
            if blocks != 1:
                raise ValueError("give `blocks` or `block_length`, not both")
            if not 1 <= block_length <= generated or generated % block_length:
                raise ValueError(
                    f"`block_length` ({block_length}) must divide the generated length "
                    f"({generated})"
                )
        else:
            if not 1 <= blocks <= generated or generated % blocks:
                raise ValueError(
                    f"`blocks` ({blocks}) must divide the generated length ({generated})"
                )
            block_length = generated // blocks
        count = generated // block_length
        if self.steps % count:
            raise ValueError(
                f"`steps` ({self.steps}) must be divisible by the number of blocks ({count}): "
                "it is the total over all blocks"
            )
        return [(b * block_length, (b + 1) * block_length) for b in range(count)]

    @torch.no_grad()
    def sample(
        self,
        denoiser: Denoiser,
        batch_size: int,
        length: int,
        *,
        prompt: Int[Tensor, "prompt_batch prompt_length"] | None = None,
        infill: Int[Tensor, "infill_batch length"] | None = None,
        blocks: int = 1,
        block_length: int | None = None,
        generator: RandomSource = None,
        device: torch.device | str | None = None,
        return_trajectory: bool = False,
        return_stats: bool = False,
    ) -> SampleResult:
        r"""Draw `batch_size` sequences of `length` tokens.

        Args:
            denoiser: Any `(z_t, t) -> logits` callable.
            batch_size: Number of sequences $B$.
            length: Tokens per sequence $L$.
            prompt: A prefix `(B or 1, P)` kept fixed.
            infill: `(B or 1, L)` with data tokens at fixed positions and `-1`
                (or the mask id, for a masking process) where tokens are to be
                generated.
            blocks: Generate the positions after the prompt left to right in
                this many equal blocks (semi-autoregressive decoding, LLaDA's
                `gen_length / block_length`), each with `steps / blocks` steps
                while later blocks wait masked. The strategy sees one block at
                a time (its counts and ranking are the block's); the denoiser
                sees the whole sequence.
            block_length: Positions per block instead of `blocks` (LLaDA's
                `block_length`); it must divide `length - P`.
            generator: Random generator; the same seed gives the same samples. A
                `SequenceGenerator` of `batch_size` sequences gives each sequence
                its own stream, so the samples do not depend on the batch size
                (see `sample_batches`).
            device: Where to sample (default: the generator's device, else CPU).
            return_trajectory: Keep every intermediate state.
            return_stats: Keep per-step masked fractions and remask counts.

        Returns:
            A `SampleResult`; `.tokens` holds the samples.

        Raises:
            ValueError: On prompt or infill ids outside the vocabulary, shapes that
                do not match, blocks that do not divide the generated length or
                `steps`, or a denoiser that returns NaN or infinite values.
        """
        device = sampling_device(batch_size, length, generator, device)
        values, given = self._given(batch_size, length, prompt, infill, device)
        free = ~given
        offset = 0 if prompt is None else prompt.shape[-1]
        whole = blocks == 1 and block_length is None
        spans = None if whole else self.spans(length - offset, blocks, block_length)
        prior = self.process.sample_prior(batch_size, length, generator=generator, device=device)
        z = torch.where(given, values, prior)
        state = _Run(self, denoiser, generator, return_trajectory, return_stats)
        if spans is None:
            return state.result(state.run(z, free, self.grid.to(device)))
        steps = self.steps // len(spans)
        grid = self.grid if steps == self.steps else self.posterior.time_grid(steps, self.t_min)
        for start, stop in spans:
            start, stop = start + offset, stop + offset
            view = _BlockView(denoiser, z, start, stop)
            z[:, start:stop] = state.run(
                z[:, start:stop].clone(), free[:, start:stop], grid.to(device), view=view
            )
        return state.result(z)

    @torch.no_grad()
    def complete(
        self,
        denoiser: Denoiser,
        prompts: Sequence[Int[Tensor, "_prompt"]] | Int[Tensor, "batch prompt"],
        length: int,
        *,
        lengths: Int[Tensor, "batch"] | None = None,
        blocks: int = 1,
        block_length: int | None = None,
        generator: RandomSource = None,
        device: torch.device | str | None = None,
    ) -> SampleResult:
        r"""Complete prompts of different lengths in one batch: `length` new tokens each.

        The prompts are left-padded to the longest, $P$; the padding is never
        attended to (the denoiser gets `padding_mask`) and each row's positions
        start at 0 on its first real token (the denoiser gets `positions`), so
        a row's completion is the one it gets alone (to float rounding).
        The `length` new tokens are generated in blocks as in `sample` (one
        block of `length` by default); the strategy only ever sees the current
        block, so a row's random draws do not depend on the other rows either.

        Args:
            denoiser: A denoiser called as `denoiser(z, t, padding_mask=,
                positions=)` when the prompts differ in length (e.g. the
                `HuggingFaceDenoiser` of `load_diffusion_llm`), else `(z, t)`.
            prompts: A list of 1-D prompts (process ids, each non-empty), or a
                `(B, P)` tensor whose row $b$ holds its prompt in its first
                `lengths[b]` entries.
            length: New tokens per prompt.
            lengths: With a tensor of prompts, each row's prompt length (all
                $P$ by default).
            blocks: Equal blocks of the new tokens (see `sample`).
            block_length: Positions per block (see `sample`).
            generator: Random generator (a `SequenceGenerator` of $B$ streams
                makes each row independent of the batch; see `complete_batches`).
            device: Where to sample.

        Returns:
            A `SampleResult` whose `tokens` `(B, length)` are the completions.

        Raises:
            ValueError: For an empty prompt, bad shapes or ids, or blocks that do
                not divide `length` or `steps`.
        """
        rows = _prompt_rows(prompts, lengths)
        longest = max(len(row) for row in rows)
        device = torch.device(
            device if device is not None else (generator.device if generator else "cpu")
        )
        padded = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
        real = torch.zeros(len(rows), longest + length, dtype=torch.bool, device=device)
        for b, row in enumerate(rows):
            padded[b, longest - len(row) :] = row.to(device)
            real[b, longest - len(row) :] = True
        model = denoiser
        if not bool(real.all()):
            model = _Padded(denoiser, real, (real.long().cumsum(-1) - 1).clamp_min(0))
        if block_length is None and blocks == 1:
            block_length = length
        result = self.sample(
            model,
            len(rows),
            longest + length,
            prompt=padded,
            blocks=blocks,
            block_length=block_length,
            generator=generator,
            device=device,
        )
        result.tokens = result.tokens[:, longest:]
        return result

    def complete_batches(
        self,
        denoiser: Denoiser,
        prompts: Sequence[Int[Tensor, "_prompt"]],
        length: int,
        *,
        seed: int,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> SampleResult:
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
            **kwargs: Passed on to `complete` (`blocks`, `block_length`).

        Returns:
            A `SampleResult` with `(N, length)` completions on the CPU and `sequence_nfe` `(N,)`.
        """
        parts = [
            self.complete(denoiser, chunk, length, generator=generator, device=device, **kwargs)
            for chunk, generator in _prompt_batches(prompts, batch_size, seed, device)
        ]
        return SampleResult.joined(parts)

    def sample_long(
        self,
        denoiser: Denoiser,
        batch_size: int,
        length: int,
        *,
        model_length: int,
        stride: int,
        prompt: Int[Tensor, "prompt_batch prompt_length"] | None = None,
        generator: RandomSource = None,
        device: torch.device | str | None = None,
    ) -> SampleResult:
        """Semi-autoregressive generation beyond the model's length (MDLM's stride scheme).

        The first window of `model_length` tokens is sampled as usual; each next
        window keeps the last `model_length - stride` tokens as a prompt and
        generates `stride` new ones, until `length` tokens exist.

        Args:
            denoiser: Any `(z_t, t) -> logits` callable.
            batch_size: Number of sequences.
            length: Total tokens wanted (may exceed `model_length`).
            model_length: Longest sequence the denoiser takes.
            stride: New tokens per window after the first, in `[1, model_length)`.
            prompt: An optional prefix for the first window.
            generator: Random generator.
            device: Where to sample.

        Returns:
            A `SampleResult` with `(B, length)` tokens and the total NFE.
        """
        if not 1 <= stride < model_length:
            raise ValueError(f"`stride` must lie in [1, model_length={model_length}); got {stride}")
        first = self.sample(
            denoiser,
            batch_size,
            min(length, model_length),
            prompt=prompt,
            generator=generator,
            device=device,
        )
        tokens, nfe, steps = first.tokens, first.nfe, first.steps
        while tokens.shape[1] < length:
            context = tokens[:, tokens.shape[1] - (model_length - stride) :]
            window = self.sample(
                denoiser,
                batch_size,
                model_length,
                prompt=context,
                generator=generator,
                device=tokens.device,
            )
            tokens = torch.cat((tokens, window.tokens[:, context.shape[1] :]), dim=1)
            nfe, steps = nfe + window.nfe, steps + window.steps
        return SampleResult(tokens=tokens[:, :length], nfe=nfe, steps=steps)

    def sample_batches(
        self,
        denoiser: Denoiser,
        samples: int,
        length: int,
        *,
        seed: int,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> SampleResult:
        """Draw `samples` sequences, `batch_size` at a time; sequence $i$ uses stream $(seed, i)$.

        Each batch gets a `SequenceGenerator` for its global sequence indices,
        so the tokens, and `sequence_nfe`, are the same for any `batch_size`
        (given a denoiser whose output for a sequence does not depend on the
        rest of the batch; see the reproducibility guide).

        Args:
            denoiser: Any `(z_t, t) -> logits` callable.
            samples: Number of sequences $N$.
            length: Tokens per sequence $L$.
            seed: Seed of the streams.
            batch_size: Sequences per sampler call (all at once by default).
            device: Where to sample.
            **kwargs: Passed on to `sample` (`prompt`, `infill`, `blocks`).

        Returns:
            A `SampleResult` with `(N, L)` tokens on the CPU, `sequence_nfe`
            `(N,)`, and `nfe` the total number of denoiser calls made.
        """
        return SampleResult.joined(
            [
                self.sample(denoiser, size, length, generator=generator, **kwargs)
                for size, generator in stream_batches(samples, batch_size, seed, device)
            ]
        )


def _prompt_batches(
    prompts: Sequence[Tensor], batch_size: int | None, seed: int, device: Any
) -> list[tuple[list[Tensor], SequenceGenerator]]:
    """`stream_batches` of prompts: each batch's prompts with its rows' streams $(seed, i)$."""
    batches, first = [], 0
    for size, generator in stream_batches(len(prompts), batch_size, seed, device):
        batches.append((list(prompts[first : first + size]), generator))
        first += size
    return batches


def _prompt_rows(prompts: Sequence[Tensor] | Tensor, lengths: Tensor | None) -> list[Tensor]:
    """The prompts as a list of 1-D tensors, each checked to be non-empty."""
    if isinstance(prompts, Tensor):
        if prompts.dim() != 2:
            raise ValueError(f"`prompts` must be (B, P) or a list; got {tuple(prompts.shape)}")
        if lengths is None:
            lengths = torch.full((prompts.shape[0],), prompts.shape[1])
        if lengths.shape != (prompts.shape[0],):
            raise ValueError(f"`lengths` must have shape ({prompts.shape[0]},)")
        rows = [prompts[b, : int(n)] for b, n in enumerate(lengths.tolist())]
    else:
        if lengths is not None:
            raise ValueError("`lengths` goes with a tensor of prompts, not a list")
        rows = [torch.as_tensor(row, dtype=torch.long).reshape(-1) for row in prompts]
    if not rows:
        raise ValueError("`prompts` is empty: give at least one prompt")
    for b, row in enumerate(rows):
        if row.numel() == 0:
            raise ValueError(f"prompt {b} is empty: give at least one token")
    return rows


class _BlockView:
    r"""$x_\theta$ of positions `start:stop` of `context`, the rest of the sequence as it stands."""

    def __init__(self, denoiser: Denoiser, context: Tensor, start: int, stop: int) -> None:
        self.denoiser, self.context, self.start, self.stop = denoiser, context, start, stop
        self.time_conditioned = is_time_conditioned(denoiser)

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        whole = self.context.clone()
        whole[:, self.start : self.stop] = z
        return self.denoiser(whole, t)[:, self.start : self.stop]


class _Padded:
    """A denoiser over left-padded rows: padding never attended to, positions per row."""

    def __init__(self, denoiser: Denoiser, real: Tensor, positions: Tensor) -> None:
        self.denoiser, self.real, self.positions = denoiser, real, positions
        self.time_conditioned = is_time_conditioned(denoiser)

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        return self.denoiser(z, t, padding_mask=self.real, positions=self.positions)


class _Run:
    """The state of one `sample` call: counters, cache and optional records."""

    def __init__(
        self,
        sampler: AncestralSampler,
        denoiser: Denoiser,
        generator: RandomSource,
        trajectory: bool,
        stats: bool,
    ) -> None:
        self.sampler, self.denoiser, self.generator = sampler, denoiser, generator
        self.use_cache = sampler.cache and not is_time_conditioned(denoiser)
        self.nfe = self.steps = 0
        self.sequence_nfe: Tensor | None = None  # (B,) calls each sequence needed
        self.stale: Tensor | None = None  # (B,) sequences changed since their last call
        self.checked = False
        self.view: _BlockView | None = None
        self.trajectory: list[Tensor] | None = [] if trajectory else None
        self.fractions: list[Tensor] | None = [] if stats else None
        self.remasks: list[Tensor] | None = [] if stats else None

    def x_theta(self, z: Tensor, t: Tensor, needed: Tensor) -> Any:
        r"""$x_\theta(z)$; `needed` `(B,)`: the rows that have work left (alone, they call)."""
        self.nfe += 1
        if self.sequence_nfe is None:
            self.sequence_nfe = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        if self.stale is None or not self.use_cache:
            self.sequence_nfe += needed
        else:
            self.sequence_nfe += self.stale & needed
        self.stale = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
        # The first call runs with every check on (NaN logits, σ bounds, ids);
        # later ones without, so the loop does not synchronise with the host.
        denoiser = self.denoiser if self.view is None else self.view
        with validation(not self.checked):
            return self.sampler._x_theta(denoiser, z, t.expand(z.shape[0]).float())

    def record(self, z: Tensor, active: Tensor, remasked: Tensor | None) -> None:
        if self.trajectory is not None:
            if self.view is not None:  # the whole sequence with this block in place
                whole = self.view.context.clone()
                whole[:, self.view.start : self.view.stop] = z
                z = whole
            self.trajectory.append(z.clone())
        if self.fractions is not None:
            masked = (self.sampler.process.is_masked(z) & active).sum(-1)
            self.fractions.append(masked / active.sum(-1).clamp_min(1))
            if remasked is not None:
                self.remasks.append(remasked.sum(-1))

    def run(
        self, z: Tensor, active: Tensor, grid: Tensor, view: "_BlockView | None" = None
    ) -> Tensor:
        """Run the grid on the `active` positions; all others stay as they are.

        With a `view`, `z` is the view's block and the denoiser is the view.
        """
        sampler, process = self.sampler, self.sampler.process
        self.view = view
        self.stale = None  # a new grid (block) starts with a call every row with work needs
        frozen = z.clone()
        memory = sampler.posterior.start(process, z)
        done_when_unmasked = sampler.posterior.never_remasks
        batch = z.shape[0]
        self.record(z, active, None)
        x = None
        bar = tqdm(range(len(grid) - 1), disable=not sampler.progress, desc="sampling", unit="step")
        # Throughput: the tokens this grid generates, spread over its steps (one sync, if shown).
        per_step = int(active.sum()) / max(1, len(grid) - 1) if sampler.progress else 0.0
        for i in bar:
            t, s = grid[i].expand(batch), grid[i + 1].expand(batch)
            # a strategy that never remasks has nothing left to do once all is decoded: no call
            finished = x is None and done_when_unmasked and i > 0
            if finished and not bool((process.is_masked(z) & active).any()):
                break
            if x is None:
                work = active & process.is_masked(z) if done_when_unmasked else active
                x = self.x_theta(z, grid[i], work.any(-1))
            with validation(not self.checked):
                z_s = sampler.posterior.draw(
                    process,
                    z,
                    x,
                    t,
                    s,
                    state=memory,
                    generator=self.generator,
                    dtype=sampler.shaping.dtype,
                )
            self.checked = True
            z_s = torch.where(active, z_s, frozen)
            if memory is not None:
                memory.observe(x, z, z_s)
            self.steps += 1
            self.record(z_s, active, ~process.is_masked(z) & process.is_masked(z_s))
            if sampler.progress:
                rate = (i + 1) * per_step / max(bar.format_dict["elapsed"], 1e-9)
                bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
            changed = (z_s != z).any(-1)
            self.stale |= changed
            keep = self.use_cache and not bool(changed.any())
            z = z_s
            if not keep:
                x = None
        # no call once nothing is left to decode (one host synchronisation per grid)
        if sampler.noise_removal and bool((process.is_masked(z) & active).any()):
            if x is None:
                x = self.x_theta(z, grid[-1], (process.is_masked(z) & active).any(-1))
            probs = getattr(x, "probs", x)  # a decoder's input carries its probabilities
            z = torch.where(active, process.remove_noise(z, probs, grid[-1].expand(batch)), z)
            self.steps += 1
            self.record(z, active, torch.zeros_like(active))
        return z

    def result(self, z: Tensor) -> SampleResult:
        def stack(items: list[Tensor] | None) -> Tensor | None:
            return None if items is None else torch.stack(items)

        return SampleResult(
            tokens=z,
            nfe=self.nfe,
            steps=self.steps,
            sequence_nfe=self.sequence_nfe,
            trajectory=stack(self.trajectory),
            masked_fraction=stack(self.fractions),
            remasked=stack(self.remasks),
        )
