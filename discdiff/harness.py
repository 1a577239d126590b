r"""Diffusion language models in EleutherAI's lm-evaluation-harness.

`DiscdiffLM` is an `lm_eval` model, registered under the name `discdiff`
(install the extra `discdiff[harness]`). It wraps a run directory, a built-in
run (`run=hmm`) or a natively loaded LLaDA / Dream (`model=DIR`) and answers
the harness's three requests.

**loglikelihood.** For a context $x$ and a continuation $c$ of $n$ tokens the
model's conditional bound (`discdiff.objectives.nelbo` with a `prompt_mask`:
the context is never masked and not summed over)

$$
-\log p_\theta(c \mid x) \le \mathcal{L}(c \mid x) = \int_0^1
\mathbb{E}_{z_t \sim q(\cdot \mid c)} \Big[\frac{-\alpha'_t}{1 - \alpha_t}
\sum_{\ell:\, z_t^\ell = m} -\log x_\theta(x \oplus z_t)_\ell[c_\ell]\Big]\, dt
$$

is estimated with $D$ draws (`draws`), and $-\hat{\mathcal{L}}$ is the score;
its Monte-Carlo standard error $s_D / \sqrt{D}$ (the draws' standard deviation)
is recorded beside the harness output. Two estimators (`estimator=`):

- `"nelbo"` (default): times antithetic over the draws,
  $t_j = \delta + (1 - \delta)\big((u + j)/D \bmod 1\big)$ with one uniform $u$
  ($\delta = 10^{-3}$), each token of $c$ masked with probability $1 - \alpha_{t_j}$;
  the integral is over $[\delta, 1]$ (`nelbo`'s convention).
- `"llada"`: LLaDA's (its `mc_num` is $D$): draw $j$ masks exactly $l_j$ of
  the $n$ tokens, chosen uniformly, with
  $l_j = \big((k - 1 + \lfloor j n / D \rfloor) \bmod n\big) + 1$ stratified over
  $1, \dots, n$ from one uniform $k$, and weighs each masked token's
  cross-entropy by $n / l_j$. It is the same bound in its discrete, any-order
  form (LogLinear weight $1/t$ at $t = l_j / n$), unbiased with no $\delta$.
  LLaDA stratifies within each forward batch of draws; here the strata span
  all $D$ draws of a request.

With the exact conditional denoiser both have expectation $-\log p(c \mid x)$
(the `"nelbo"` one misses the integral over $[0, \delta]$, about $\delta n$
times a cross-entropy). The noise of a request comes from a generator seeded
by `seed` and the request's tokens, and the network sees only that request's
draws (`draws_per_call` rows per call, default all $D$), so a score is the
same bit for bit whatever `batch_size`, the order of the requests or the
other requests are.

A run's model has a fixed length $L$: it sees $x \oplus c$ followed by
$L - |x| - |c|$ positions that stay masked and are not scored, so the score is
the likelihood of $c$ with the rest of the window summed out (for the exact
denoiser, exactly $\log p(c \mid x)$ under the length-$L$ joint). `is_greedy`
is whether every token of $c$ is the argmax of $x_\theta$ in one call with the
whole continuation masked (the first call of a greedy decoder).

**loglikelihood_rolling.** The NELBO of a whole text, cut into windows of the
model's length $W$ (`rolling_windows`): the first window is scored with no
context; every later one scores the next $W - C$ tokens given the $C$ tokens
before them (`rolling_context`, default $W / 2$), and the last window takes as
much context as fits. Each token is scored once; the sum of the windows'
bounds is returned (their standard errors add in quadrature). LLaDA and Dream
have no fixed length: $W$ is `max_length` (default the config's
`max_sequence_length`, else `max_position_embeddings`, else 4096).

**generate_until.** Any discdiff sampler configuration (`sampler.*` model
arguments: MDLM, every ReMDM schedule, the confidence, threshold and dilated
decoders; `blocks=` for LLaDA's semi-autoregressive blocks; a block-causal
run decodes block by block with its exact cache). Each request draws from its
own random stream (`SequenceGenerator`, keyed by its index), so generations do
not depend on `batch_size`. A run generates every position after the context
up to $L$ (its model never saw shorter sequences) and keeps the first
`max_gen_toks`; rows with different context lengths share a batch. LLaDA and
Dream generate `max_gen_toks` positions after the context; requests are
batched with others of the same context length. The text is cut at the first
stop sequence (`until`). The sampler's settings are the model's: a task's
`temperature` or `do_sample` is not applied (set `sampler.temperature`).

**What a score carries.** `get_model_info` adds, under `discdiff` in the
harness's `results.json` config, the model, the estimator and the full
sampler settings, and per request type and task: requests, network calls,
calls per generated token, tokens per second and the mean and largest
Monte-Carlo standard error of the loglikelihoods. `discdiff eval --harness`
writes the same beside the harness output (`discdiff.json`).

**Errors.** A context (with its continuation or generation) longer than the
model's length raises `ContextTooLongError` unless `truncation=left` (the
oldest context tokens are dropped, as lm-eval's own models do); a request the
model cannot serve raises `MissingCapabilityError` (loglikelihood with a
process that has no mask; an autoregressive run); a model without a usable
tokenizer raises `MissingTokenizerError` (pass `tokenizer=DIR`).

The lm-eval command has no plugin discovery for models, so
`python -m discdiff.harness ARGS` is `lm_eval ARGS` with the
`discdiff` model registered.
"""

import hashlib
import json
import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from lm_eval.api.model import LM
from lm_eval.api.registry import model_registry
from torch import Tensor

from discdiff._io import atomic_write
from discdiff.data.text import CharTokenizer
from discdiff.models.diffusion_llms import load_diffusion_llm, load_tokenizer, resolve_model
from discdiff.models.llm import read_config
from discdiff.models.protocol import is_time_conditioned
from discdiff.objectives import Method, antithetic_times, nelbo
from discdiff.processes.base import ForwardProcess
from discdiff.processes.masking.process import MaskingProcess
from discdiff.provenance import provenance
from discdiff.rng import SequenceGenerator, derive_seed
from discdiff.runs import config_from_overrides, load_run
from discdiff.sampling.blocks import BlockSampler
from discdiff.schedules import LogLinear

__all__ = [
    "ContextTooLongError",
    "DiscdiffLM",
    "HarnessError",
    "IntegerCodec",
    "MissingCapabilityError",
    "MissingTokenizerError",
    "Scorer",
    "main",
    "rolling_windows",
    "run_harness",
]

DEFAULT_MAX_LENGTH = 4096
"""Window of LLaDA / Dream when their config names no length."""


class HarnessError(ValueError):
    """A model argument or request the harness model cannot take."""


class ContextTooLongError(HarnessError):
    """A request longer than the model's length (and `truncation` is `"error"`)."""


class MissingCapabilityError(HarnessError):
    """A request type the model cannot serve (e.g. loglikelihood without a mask)."""


class MissingTokenizerError(HarnessError):
    """No tokenizer to turn the harness's text into the model's tokens."""


class IntegerCodec:
    """Text as whitespace-separated token ids: the tokenizer of the synthetic languages.

    Args:
        vocab_size: Ids are `0 .. vocab_size - 1`.

    Example:
        >>> codec = IntegerCodec(8)
        >>> codec.encode(" 3 1  4"), repr(codec.decode([2, 7]))
        ([3, 1, 4], "' 2 7'")
    """

    eos = None

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        """The ids written in `text`.

        Raises:
            HarnessError: On a word that is not an id of the vocabulary.
        """
        ids = []
        for word in text.split():
            if not word.isdigit() or int(word) >= self.vocab_size:
                raise HarnessError(
                    f"text {text[:60]!r}: {word!r} is not a token id in 0..{self.vocab_size - 1} "
                    "(this model reads whitespace-separated ids)"
                )
            ids.append(int(word))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Each id preceded by a space (so that it continues a context)."""
        return "".join(f" {i}" for i in ids)


class _CharCodec:
    """A run's character tokenizer (its special ids decode to nothing)."""

    eos = None

    def __init__(self, tokenizer: CharTokenizer) -> None:
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        try:
            return self.tokenizer.encode(text)
        except ValueError as error:
            raise HarnessError(f"text {text[:60]!r}: {error}") from None

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))


class _HFCodec:
    """A Hugging Face tokenizer, mapped onto a `HuggingFaceDenoiser`'s process ids."""

    def __init__(self, tokenizer: Any, denoiser: Any) -> None:
        self.tokenizer, self.denoiser = tokenizer, denoiser
        self.eos = None  # `decode` stops at the end-of-sequence id itself

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.denoiser.encode(torch.tensor(ids, dtype=torch.long)).tolist()

    def decode(self, ids: Sequence[int]) -> str:
        """The text of the ids up to the first end-of-sequence token."""
        model_ids = self.denoiser.decode(torch.tensor(list(ids), dtype=torch.long)).tolist()
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is not None and eos in model_ids:
            model_ids = model_ids[: model_ids.index(eos)]
        return self.tokenizer.decode(model_ids, skip_special_tokens=True)


def rolling_windows(length: int, window: int, context: int) -> list[tuple[int, int, int]]:
    r"""The windows `loglikelihood_rolling` scores a text of `length` tokens in.

    Window $k$ is `(start, split, stop)`: tokens `[split, stop)` are scored
    given tokens `[start, split)`. The first window scores `[0, window)` alone;
    each next one scores the next `window - context` tokens given the `context`
    before them, and the last one takes as much context as fits in `window`.
    Every token is scored exactly once.

    Args:
        length: Tokens of the text.
        window: The model's length $W$.
        context: Context tokens $C$ of every window after the first, in `[0, W)`.

    Returns:
        The windows, in order.

    Raises:
        ValueError: If `window` < 1 or `context` is outside `[0, window)`.

    Example:
        >>> rolling_windows(10, 4, 2)
        [(0, 0, 4), (2, 4, 6), (4, 6, 8), (6, 8, 10)]
        >>> rolling_windows(9, 4, 2)
        [(0, 0, 4), (2, 4, 6), (4, 6, 8), (5, 8, 9)]
    """
    if window < 1 or not 0 <= context < window:
        raise ValueError(f"need window >= 1 and 0 <= context < window; got {window}, {context}")
    if length <= window:
        return [(0, 0, length)]
    windows = [(0, 0, window)]
    split = window
    while split < length:
        stop = min(split + window - context, length)
        windows.append((max(0, stop - window), split, stop))
        split = stop
    return windows


class _MaskedTail(torch.nn.Module):
    """A denoiser that sees the positions past each row's text as masks (summed out)."""

    def __init__(self, denoiser: Any, mask_id: int) -> None:
        super().__init__()
        self.denoiser, self.mask_id = denoiser, mask_id
        self.time_conditioned = is_time_conditioned(denoiser)

    def forward(self, z_t: Tensor, t: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        if padding_mask is not None:
            z_t = torch.where(padding_mask, z_t, self.mask_id)
        return self.denoiser(z_t, t)


@dataclass
class _Draws:
    """The Monte-Carlo draws of one request: `D` rows of width `W`."""

    x: Int[Tensor, "draws width"]
    prompt: Bool[Tensor, "draws width"]
    real: Bool[Tensor, "draws width"] | None
    t: Float[Tensor, "draws"]
    z_t: Int[Tensor, "draws width"]


@dataclass
class _Usage:
    """What one kind of request cost, for one task."""

    requests: int = 0
    calls: int = 0
    tokens: int = 0
    positions: int = 0
    seconds: float = 0.0
    stderr: list[float] = field(default_factory=list)

    def summary(self, generated: bool) -> dict[str, float | int]:
        record: dict[str, float | int] = {
            "requests": self.requests,
            "network_calls": self.calls,
            ("generated_tokens" if generated else "scored_tokens"): self.tokens,
            "seconds": self.seconds,
            "tokens_per_second": self.tokens / self.seconds if self.seconds else 0.0,
        }
        if generated:  # tokens returned (max_gen_toks each); positions the sampler drew
            record["generated_positions"] = self.positions
            record["calls_per_generated_token"] = self.calls / max(1, self.tokens)
        else:
            record["calls_per_request"] = self.calls / max(1, self.requests)
        if self.stderr:
            record["mc_stderr_mean"] = sum(self.stderr) / len(self.stderr)
            record["mc_stderr_max"] = max(self.stderr)
        return record


class Scorer:
    r"""Likelihood bounds and generations of a diffusion denoiser, over token ids.

    `DiscdiffLM` is this plus text; the scorer can be used without lm-eval.

    Args:
        denoiser: $x_\theta(z_t, t)$ (a run's SUBS, a `HuggingFaceDenoiser`,
            an exact denoiser).
        process: Its forward process.
        sampler: The `AncestralSampler` of `generate` (`None`: no generation).
        model_length: The fixed length of the model (a run's); `None`: any length.
        max_length: The longest sequence of a model without a fixed length.
        draws: Monte-Carlo draws $D$ per loglikelihood.
        estimator: `"nelbo"` or `"llada"`.
        seed: Seed of every draw.
        batch_size: Generations per sampler call.
        draws_per_call: Rows of one request's draws per network call (default
            all $D$); the network only ever sees one request's rows, so scores do
            not depend on `batch_size` or on the other requests.
        blocks: Semi-autoregressive blocks of a generation (LLaDA's `block_length`
            is `max_gen_toks / blocks`): the most blocks, up to this many, that
            divide both the generated length and `sampler.steps`.
        block_causal: Generate block by block with the exact cache (a run
            trained with `model.block_size`).
        truncation: `"error"` or `"left"` (drop the oldest context tokens).
        rolling_context: Context tokens $C$ of the later windows of `rolling`
            (default half the window).
        device: Where the network runs.

    Raises:
        HarnessError: For a bad argument, naming it and its range.

    Example:
        >>> from discdiff import EnumerableOracle, MaskingProcess
        >>> joint = torch.tensor([[0.5, 0.0], [0.25, 0.25]])  # p(x_1, x_2)
        >>> scorer = Scorer(EnumerableOracle(joint), MaskingProcess(vocab_size=2),
        ...                 model_length=2, draws=4, estimator="llada")
        >>> ((ll, se, greedy),) = scorer.loglikelihood([([1], [0])])  # log p(x_2 = 0 | x_1 = 1)
        >>> round(ll, 4), se
        (-0.6931, 0.0)
    """

    def __init__(
        self,
        denoiser: Any,
        process: ForwardProcess,
        *,
        sampler: Any = None,
        model_length: int | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        draws: int = 128,
        estimator: str = "nelbo",
        seed: int = 0,
        batch_size: int = 16,
        draws_per_call: int | None = None,
        blocks: int = 1,
        block_causal: bool = False,
        truncation: str = "error",
        rolling_context: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        draws_per_call = draws if draws_per_call is None else draws_per_call
        checked = (
            ("draws", draws),
            ("batch_size", batch_size),
            ("draws_per_call", draws_per_call),
            ("blocks", blocks),
        )
        for name, value in checked:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HarnessError(f"`{name}` must be a positive integer; got {value!r}")
        if estimator not in ("nelbo", "llada"):
            raise HarnessError(f"`estimator` must be 'nelbo' or 'llada'; got {estimator!r}")
        if truncation not in ("error", "left"):
            raise HarnessError(f"`truncation` must be 'error' or 'left'; got {truncation!r}")
        self.denoiser, self.process, self.sampler = denoiser, process, sampler
        self.model_length = model_length
        self.window = model_length or max_length
        context = self.window // 2 if rolling_context is None else rolling_context
        if not 0 <= context < self.window:
            raise HarnessError(
                f"`rolling_context` must lie in [0, {self.window}); got {rolling_context!r}"
            )
        self.rolling_context = context
        self.draws, self.estimator, self.seed = draws, estimator, int(seed)
        self.batch_size, self.draws_per_call = batch_size, draws_per_call
        self.blocks, self.block_causal = blocks, block_causal
        self.truncation, self.device = truncation, torch.device(device)

    # --- loglikelihood -------------------------------------------------------------

    def _fit(self, context: list[int], extra: int, what: str) -> list[int]:
        """The context, left-truncated (or refused) so that context + `extra` fits the model."""
        limit = self.model_length or self.window
        if extra > limit:
            raise ContextTooLongError(
                f"{what} of {extra} tokens is longer than the model's length {limit}"
            )
        if len(context) + extra <= limit:
            return context
        if self.truncation == "error":
            raise ContextTooLongError(
                f"context of {len(context)} tokens + {what} of {extra} tokens is longer than the "
                f"model's length {limit}; pass truncation=left to drop the oldest context tokens"
            )
        return context[len(context) + extra - limit :]

    def _check_masking(self) -> None:
        if self.process.mask_id is None:
            raise MissingCapabilityError(
                f"loglikelihood needs a masking process; this model's is {self.process!r} "
                "(it can still generate: generate_until)"
            )

    def _draws(self, context: list[int], continuation: list[int]) -> _Draws:
        """The noise of one request, from its own generator."""
        n_ctx, n = len(context), len(continuation)
        width = self.model_length or n_ctx + n
        tokens = torch.zeros(width, dtype=torch.long)
        tokens[: n_ctx + n] = torch.tensor(context + continuation, dtype=torch.long)
        x = tokens.expand(self.draws, width)
        positions = torch.arange(width)
        prompt = (positions < n_ctx).expand(self.draws, width)
        real = (positions < n_ctx + n).expand(self.draws, width)
        digest = hashlib.sha256(repr((context, continuation)).encode()).hexdigest()
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "loglikelihood", digest))
        if self.estimator == "nelbo":
            t = antithetic_times(self.draws, generator=generator)
            z_t = self.process.sample(x, t, generator=generator)
        else:  # LLaDA: exactly l_j of the n continuation tokens masked, l_j stratified
            k = int(torch.randint(1, n + 1, (), generator=generator))
            j = torch.arange(self.draws)
            masked_count = (k - 1 + (j * n) // self.draws) % n + 1
            rank = torch.rand(self.draws, n, generator=generator).argsort(-1).argsort(-1)
            hide = torch.zeros(self.draws, width, dtype=torch.bool)
            hide[:, n_ctx : n_ctx + n] = rank < masked_count[:, None]
            z_t = torch.where(hide, self.process.mask_id, x)
            t = masked_count.double().div(n).float()
        return _Draws(x, prompt, real if self.model_length else None, t, z_t)

    def _bounds(self, draws: _Draws) -> Tensor:
        """The bound of each draw of one request, `draws_per_call` rows per network call.

        The network never sees another request's rows, so a score does not depend
        on which requests are scored together.
        """
        if self.estimator == "llada":  # the discrete any-order bound: weight n / l = 1 / t
            process = MaskingProcess(
                LogLinear(), vocab_size=self.process.vocab_size, mask_id=self.process.mask_id
            )
            convention = "mdlm"
        else:
            process, convention = self.process, "integral"
        denoiser = _MaskedTail(self.denoiser, self.process.mask_id)
        values = []
        for first in range(0, self.draws, self.draws_per_call):
            rows, on = slice(first, first + self.draws_per_call), self.device
            values.append(
                nelbo(
                    process,
                    denoiser,
                    draws.x[rows].to(on),
                    prompt_mask=draws.prompt[rows].to(on),
                    padding_mask=None if draws.real is None else draws.real[rows].to(on),
                    t=draws.t[rows].to(on),
                    z_t=draws.z_t[rows].to(on),
                    convention=convention,
                ).cpu()
            )
        return torch.cat(values)

    def _greedy(self, context: list[int], continuation: list[int]) -> bool:
        """Whether the continuation is the argmax of one call with all of it masked."""
        width = self.model_length or len(context) + len(continuation)
        z = torch.full((1, width), self.process.mask_id, dtype=torch.long)
        z[0, : len(context)] = torch.tensor(context, dtype=torch.long)
        t = torch.ones(1, device=self.device)
        best = self.denoiser(z.to(self.device), t).argmax(-1)[0].cpu()
        return best[len(context) : len(context) + len(continuation)].tolist() == continuation

    @torch.no_grad()
    def loglikelihood(
        self, pairs: Sequence[tuple[list[int], list[int]]], *, greedy: bool = True
    ) -> list[tuple[float, float, bool]]:
        r"""$-\hat{\mathcal{L}}(c \mid x)$, its standard error and `is_greedy`, per pair.

        Args:
            pairs: `(context ids, continuation ids)`; the continuation non-empty.
            greedy: Also compute `is_greedy` (one more call per request).

        Returns:
            `(loglikelihood, stderr, is_greedy)` per pair, in nats.

        Raises:
            MissingCapabilityError: If the process has no mask.
            ContextTooLongError: If a pair does not fit the model (`truncation="error"`).
            HarnessError: For an empty continuation.
        """
        self._check_masking()
        fitted = []
        for context, continuation in pairs:
            if not continuation:
                raise HarnessError("loglikelihood: the continuation is empty (nothing to score)")
            context = self._fit(list(context), len(continuation), "continuation")
            fitted.append((context, list(continuation)))
        out = []
        for context, continuation in fitted:
            value = self._bounds(self._draws(context, continuation)).double()
            stderr = float(value.std() / math.sqrt(len(value))) if len(value) > 1 else math.nan
            flag = greedy and self._greedy(context, continuation)
            out.append((-float(value.mean()), stderr, flag))
        return out

    def rolling(self, ids: Sequence[int]) -> tuple[float, float, int]:
        """The bound of a whole text in windows (`rolling_windows`).

        Returns:
            `(loglikelihood, stderr, windows)`.
        """
        ids = list(ids)
        if not ids:
            return 0.0, 0.0, 0
        windows = rolling_windows(len(ids), self.window, self.rolling_context)
        pairs = [(ids[a:b], ids[b:c]) for a, b, c in windows]
        scores = self.loglikelihood(pairs, greedy=False)
        total = sum(s for s, _, _ in scores)
        return total, math.sqrt(sum(e * e for _, e, _ in scores)), len(windows)

    # --- generation ----------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self, contexts: Sequence[list[int]], max_new: int, indices: Sequence[int]
    ) -> list[tuple[list[int], int, int]]:
        """Generate after each context, request `indices[i]` drawing from its own stream.

        Args:
            contexts: Context ids per request.
            max_new: Tokens to keep after each context.
            indices: A global index per request (its random stream).

        Returns:
            `(new ids, network calls, generated positions)` per request.

        Raises:
            MissingCapabilityError: Without a sampler.
            ContextTooLongError: If a context and `max_new` do not fit the model.
        """
        if self.sampler is None:
            raise MissingCapabilityError("this model has no sampler: it cannot generate")
        fitted = [self._fit(list(c), max_new, "generation") for c in contexts]
        groups: dict[int, list[int]] = defaultdict(list)
        for row, context in enumerate(fitted):  # a fixed-length model batches every context
            groups[0 if self.model_length else len(context)].append(row)
        out: list[tuple[list[int], int, int] | None] = [None] * len(fitted)
        for members in groups.values():
            for first in range(0, len(members), self.batch_size):
                rows = members[first : first + self.batch_size]
                self._generate_rows([fitted[r] for r in rows], max_new, rows, indices, out)
        return out  # type: ignore[return-value]

    def _generate_rows(
        self,
        contexts: list[list[int]],
        max_new: int,
        rows: list[int],
        indices: Sequence[int],
        out: list,
    ) -> None:
        size = len(contexts)
        generator = SequenceGenerator.of(self.seed, [indices[r] for r in rows], device=self.device)
        kwargs: dict[str, Any] = {"generator": generator, "device": self.device}
        if self.model_length is not None:
            length = self.model_length
            infill = torch.full((size, length), -1, dtype=torch.long)
            for row, context in enumerate(contexts):
                infill[row, : len(context)] = torch.tensor(context, dtype=torch.long)
            kwargs["infill"] = infill
        else:
            length = len(contexts[0]) + max_new
            if contexts[0]:
                kwargs["prompt"] = torch.tensor(contexts, dtype=torch.long)
        if self.block_causal:
            result = BlockSampler(self.sampler).sample(self.denoiser, size, length, **kwargs)
        else:
            blocks = _block_count(self.blocks, length - len(contexts[0]), self.sampler.steps)
            result = self.sampler.sample(self.denoiser, size, length, blocks=blocks, **kwargs)
        tokens = result.tokens.cpu()
        for row, context in enumerate(contexts):
            new = tokens[row, len(context) : len(context) + max_new].tolist()
            generated = length - len(context)
            out[rows[row]] = (new, int(result.sequence_nfe[row]), generated)


def _block_count(blocks: int, generated: int, steps: int) -> int:
    """The most blocks, at most `blocks`, that split `generated` positions and `steps` evenly."""
    fits = [k for k in range(1, min(blocks, max(generated, 1)) + 1) if generated % k == 0]
    return max(k for k in fits if steps % k == 0)


def _arg(value: Any, kind: type, name: str) -> Any:
    """A model argument as `kind`: lm-eval passes strings, or ints, floats and booleans."""
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() not in ("true", "false"):
            raise HarnessError(f"`{name}` must be true or false; got {value!r}")
        return str(value).lower() == "true"
    if isinstance(value, bool) or (kind is int and isinstance(value, float)):
        raise HarnessError(f"`{name}` must be an integer; got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise HarnessError(f"`{name}` must be {kind.__name__}; got {value!r}") from None


class DiscdiffLM(LM):
    r"""A discdiff diffusion model as an lm-evaluation-harness `LM` (registered as `discdiff`).

    Model arguments (`--model_args k=v,...`):

    - `run`: a run directory or a built-in run (`hmm`, `synthetic`, ...); or
    - `model`: a LLaDA / Dream directory or Hub id (loaded natively, no checkpoint
      code), with `tokenizer` (a directory; default the model's), `dtype`
      (`bfloat16`, `float32`, ...) and `max_length` (the rolling window);
    - `draws` (or LLaDA's `mc_num`; 128), `estimator` (`nelbo` | `llada`), `seed` (0),
      `truncation` (`error` | `left`), `rolling_context`, `greedy` (compute
      `is_greedy`; true), `draws_per_call` (default `draws`), `blocks` (1);
    - `sampler.KEY=VALUE`: the generation sampler (the `sampler` section of a
      run config, e.g. `sampler.steps=64`, `sampler.posterior=loop`); a run
      starts from its own `sampler` section;
    - `batch_size` (generations per sampler call; lm-eval's `--batch_size`; `auto`
      is 16), `device` (default CUDA when available; a CUDA device without CUDA,
      as lm-eval's command line asks by default, falls back to the CPU).

    Raises:
        HarnessError: For an unknown or malformed argument (naming it), or a
            missing tokenizer (`MissingTokenizerError`) or an autoregressive run
            (`MissingCapabilityError`).
    """

    ARGUMENTS = (
        "run",
        "model",
        "tokenizer",
        "dtype",
        "max_length",
        "draws",
        "mc_num",
        "estimator",
        "seed",
        "truncation",
        "rolling_context",
        "greedy",
        "draws_per_call",
        "blocks",
        "batch_size",
        "max_batch_size",
        "device",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        overrides = [f"{k}={v}" for k, v in kwargs.items() if k.startswith("sampler.")]
        unknown = sorted(k for k in kwargs if k not in self.ARGUMENTS and "." not in k)
        unknown += sorted(k for k in kwargs if "." in k and not k.startswith("sampler."))
        if unknown:
            raise HarnessError(
                f"unknown model argument {unknown[0]!r}; allowed: {', '.join(self.ARGUMENTS)} "
                "and sampler.KEY"
            )
        if (kwargs.get("run") is None) == (kwargs.get("model") is None):
            raise HarnessError("give exactly one of `run` (a run or built-in run) and `model`")
        if kwargs.get("draws") is not None and kwargs.get("mc_num") is not None:
            raise HarnessError("give `draws` or `mc_num` (the same setting), not both")
        draws = _arg(kwargs.get("draws", kwargs.get("mc_num")), int, "draws")
        draws = 128 if draws is None else draws
        batch_size = kwargs.get("batch_size")
        batch_size = 16 if batch_size in (None, "auto") else _arg(batch_size, int, "batch_size")
        device = kwargs.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line asks for cuda:0 unless told otherwise
            logging.getLogger(__name__).warning("device %s: no CUDA here; using the CPU", device)
            device = "cpu"
        self._device = torch.device(device)
        self.greedy = _arg(kwargs.get("greedy", True), bool, "greedy")
        self.codec, denoiser, process, sampling, described = self._load(kwargs, overrides)
        sampler = sampling.pop("sampler")
        self.scorer = Scorer(
            denoiser,
            process,
            sampler=sampler,
            draws=draws,
            estimator=kwargs.get("estimator", "nelbo"),
            seed=_arg(kwargs.get("seed", 0), int, "seed"),
            batch_size=batch_size,
            draws_per_call=_arg(kwargs.get("draws_per_call"), int, "draws_per_call"),
            blocks=_arg(kwargs.get("blocks", 1), int, "blocks"),
            truncation=kwargs.get("truncation", "error"),
            rolling_context=_arg(kwargs.get("rolling_context"), int, "rolling_context"),
            device=self._device,
            **sampling,
        )
        self.settings = {
            **described,
            "likelihood": {
                "estimator": self.scorer.estimator,
                "draws": draws,
                "draws_per_call": self.scorer.draws_per_call,
                "seed": self.scorer.seed,
                "truncation": self.scorer.truncation,
                "window": self.scorer.window,
                "rolling_context": self.scorer.rolling_context,
            },
            "blocks": self.scorer.blocks,
            "batch_size": batch_size,
            "device": str(self._device),
        }
        self.usage: dict[str, dict[str, _Usage]] = defaultdict(lambda: defaultdict(_Usage))

    def _load(
        self, kwargs: dict[str, Any], overrides: list[str]
    ) -> tuple[Any, Any, ForwardProcess, dict[str, Any], dict[str, Any]]:
        """Codec, denoiser, process, scorer settings and their record, from the arguments."""
        if kwargs.get("run") is not None:
            for name in ("tokenizer", "dtype", "max_length"):
                if kwargs.get(name) is not None:
                    raise HarnessError(f"`{name}` is for `model=`; a run has its own")
            run = load_run(str(kwargs["run"]))
            if Method.named(run.objective).sampler is None:  # a causal model
                raise MissingCapabilityError(
                    f"run {kwargs['run']!r} is autoregressive: score it with lm-eval's own "
                    "models; the discdiff model needs a diffusion run"
                )
            config = run.config.replace(overrides)
            if run.data.alphabet is not None:
                codec: Any = _CharCodec(CharTokenizer(run.data.alphabet))
            elif config.data.kind == "synthetic":
                codec = IntegerCodec(run.data.vocab_size)
            else:
                raise MissingTokenizerError(f"run {kwargs['run']!r} has no tokenizer")
            denoiser = run.denoiser.to(self._device)
            process = run.process
            block = config.block_size
            sampling = {
                "sampler": config.sampler.build(process),
                "model_length": config.data.length,
                "block_causal": bool(block),
            }
            described = {"run": str(kwargs["run"]), "sampler": config.to_dict()["sampler"]}
            return codec, denoiser, process, sampling, described
        config = config_from_overrides(overrides)
        dtype = kwargs.get("dtype")
        if dtype is not None and not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise HarnessError(f"`dtype` must name a torch dtype (e.g. bfloat16); got {dtype!r}")
        directory = resolve_model(str(kwargs["model"]))
        denoiser = load_diffusion_llm(
            directory,
            dtype=None if dtype is None else getattr(torch, str(dtype)),
            device=self._device,
            tokenizer=False,
        )
        source = kwargs.get("tokenizer") or directory
        if not Path(source).is_dir():
            raise MissingTokenizerError(f"`tokenizer`: {str(source)!r} is not a folder")
        try:
            tokenizer = load_tokenizer(source)
        except (FileNotFoundError, OSError, ValueError) as error:
            raise MissingTokenizerError(
                f"`tokenizer`: no usable tokenizer in {str(source)!r} ({error}); pass "
                "tokenizer=DIR (a folder with tokenizer.json)"
            ) from None
        model_config = read_config(directory)
        max_length = kwargs.get("max_length") or model_config.get(
            "max_sequence_length", model_config.get("max_position_embeddings", DEFAULT_MAX_LENGTH)
        )
        process = denoiser.process()
        sampling = {
            "sampler": config.sampler.build(process),
            "max_length": _arg(max_length, int, "max_length"),
        }
        described = {
            "model": str(kwargs["model"]),
            "tokenizer": str(source),
            "dtype": dtype,
            "sampler": config.to_dict()["sampler"],
        }
        return _HFCodec(tokenizer, denoiser), denoiser, process, sampling, described

    # --- lm-eval's interface -------------------------------------------------------

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of a request, as lm-eval's own models split them."""
        spaces = len(context) - len(context.rstrip())
        if spaces:  # trailing spaces of the context belong to the continuation
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.codec.encode(context + continuation)
        context_ids = self.codec.encode(context)
        if whole[: len(context_ids)] == context_ids and len(whole) > len(context_ids):
            return context_ids, whole[len(context_ids) :]
        return context_ids, self.codec.encode(continuation)

    def _record(self, kind: str, requests: list[Any], **counts: Any) -> None:
        columns = [counts[k] for k in ("calls", "tokens", "positions", "stderr")]
        for request, calls, tokens, positions, stderr in zip(requests, *columns, strict=True):
            usage = self.usage[kind][str(request.task_name)]
            usage.requests += 1
            usage.calls += calls
            usage.tokens += tokens
            usage.positions += positions
            if stderr is not None:
                usage.stderr.append(stderr)

    def _time(self, kind: str, requests: list[Any], seconds: float) -> None:
        tokens = {}
        for request in requests:
            name = str(request.task_name)
            tokens[name] = tokens.get(name, 0) + 1
        for name, count in tokens.items():  # time shared out by requests
            self.usage[kind][name].seconds += seconds * count / len(requests)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple]:
        """`(log p(continuation | context), is_greedy)` per request (the bound; see module)."""
        if not requests:
            return []
        start = time.perf_counter()
        pairs = [self._pair(*request.args) for request in requests]
        scores = self.scorer.loglikelihood(pairs, greedy=self.greedy)
        self._time("loglikelihood", requests, time.perf_counter() - start)
        extra = 1 if self.greedy else 0
        self._record(
            "loglikelihood",
            requests,
            calls=[self.scorer.draws + extra] * len(requests),
            tokens=[len(c) for _, c in pairs],
            positions=[len(c) for _, c in pairs],
            stderr=[s for _, s, _ in scores],
        )
        return [(value, flag) for value, _, flag in scores]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list:
        """The bound of each whole text, in windows of the model's length (see module)."""
        if not requests:
            return []
        start = time.perf_counter()
        results, calls, tokens, errors = [], [], [], []
        for request in requests:
            ids = self.codec.encode(request.args[0])
            value, stderr, windows = self.scorer.rolling(ids)
            results.append(value)
            calls.append(windows * self.scorer.draws)
            tokens.append(len(ids))
            errors.append(stderr)
        self._time("loglikelihood_rolling", requests, time.perf_counter() - start)
        self._record(
            "loglikelihood_rolling",
            requests,
            calls=calls,
            tokens=tokens,
            positions=tokens,
            stderr=errors,
        )
        return results

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Generations cut at the first stop sequence, with the model's sampler settings."""
        if not requests:
            return []
        start = time.perf_counter()
        by_settings: dict[tuple[tuple[str, ...], int], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            kwargs = dict(request.args[1] or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = _arg(kwargs.get("max_gen_toks", 256), int, "max_gen_toks")
            by_settings[(tuple(until), max_new)].append(index)
        texts: list[str] = [""] * len(requests)
        calls, tokens, positions = ([0] * len(requests) for _ in range(3))
        for (stops, max_new), members in by_settings.items():
            until = list(stops)
            if self.codec.eos:
                until = [*until, self.codec.eos]
            contexts = [self.codec.encode(requests[i].args[0]) for i in members]
            outputs = self.scorer.generate(contexts, max_new, members)
            for index, (ids, nfe, generated) in zip(members, outputs, strict=True):
                text = self.codec.decode(ids)
                for stop in until:
                    if stop and stop in text:
                        text = text[: text.index(stop)]
                texts[index], calls[index] = text, nfe
                tokens[index], positions[index] = len(ids), generated
        self._time("generate_until", requests, time.perf_counter() - start)
        self._record(
            "generate_until",
            requests,
            calls=calls,
            tokens=tokens,
            positions=positions,
            stderr=[None] * len(requests),
        )
        return texts

    @property
    def tokenizer_name(self) -> str:
        """The tokenizer's name (lm-eval keys its request caches by it)."""
        tokenizer = getattr(self.codec, "tokenizer", None)
        return str(getattr(tokenizer, "name_or_path", type(self.codec).__name__))

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The tokenizer's chat template (instruct LLaDA / Dream), if it has one."""
        return getattr(getattr(self.codec, "tokenizer", None), "chat_template", None)

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The conversation as the tokenizer's chat template writes it (`--apply_chat_template`).

        Raises:
            MissingCapabilityError: If the tokenizer has no chat template.
        """
        if not self.chat_template():
            raise MissingCapabilityError(
                "--apply_chat_template: this model's tokenizer has no chat template"
            )
        return self.codec.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def record(self) -> dict[str, Any]:
        """The model's settings and what each request type cost, per task."""
        usage = {
            kind: {task: u.summary(kind == "generate_until") for task, u in sorted(tasks.items())}
            for kind, tasks in self.usage.items()
        }
        return {**self.settings, "usage": usage}

    def get_model_info(self) -> dict[str, Any]:
        """Added by lm-eval to its results' `config`: `{"discdiff": record()}`."""
        return {"discdiff": self.record()}


def _model_args(model_args: str | dict[str, Any]) -> dict[str, Any]:
    """`k=v,k=v` (lm-eval's form, values typed as lm-eval types them) or a mapping."""
    if isinstance(model_args, str):
        from lm_eval.utils import simple_parse_args_string

        return simple_parse_args_string(model_args)
    return dict(model_args)


def run_harness(
    tasks: Sequence[str],
    model_args: str | dict[str, Any],
    *,
    out: str | Path,
    include_path: str | Path | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    bootstrap_iters: int = 1000,
    default_tasks: bool = True,
) -> Path:
    """Score the `discdiff` model on lm-eval tasks; write the harness output and what it cost.

    Args:
        tasks: lm-eval task names (local ones need `include_path`).
        model_args: `DiscdiffLM`'s arguments, as `k=v,...` or a mapping.
        out: Folder for `results.json` (lm-eval's results: metrics with their
            stderr, configs, versions) and `discdiff.json` (per task the
            metrics and stderrs, and `DiscdiffLM.record()`: settings, network
            calls, calls per generated token, tokens per second, Monte-Carlo
            standard errors).
        include_path: A folder of task YAML files (lm-eval's `--include_path`).
        limit: Documents per task (lm-eval's `--limit`).
        num_fewshot: Few-shot examples (lm-eval's `--num_fewshot`).
        bootstrap_iters: Bootstrap resamples for the stderr of non-mean metrics.
        default_tasks: Also index lm-eval's own tasks (thousands of files, seconds
            of start-up); `False` keeps to the tasks of `include_path`.

    Returns:
        The path of `discdiff.json`.

    Raises:
        HarnessError: For a bad model argument; lm-eval's own errors for unknown tasks.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    model = DiscdiffLM(**_model_args(model_args))
    manager = TaskManager(
        include_path=None if include_path is None else str(include_path),
        include_defaults=default_tasks,
    )
    results = lm_eval.simple_evaluate(
        model=model,
        tasks=list(tasks),
        task_manager=manager,
        limit=limit,
        num_fewshot=num_fewshot,
        bootstrap_iters=bootstrap_iters,
        log_samples=False,
        verbosity="WARNING",
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
    atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(text))
    scores = {
        task: {k: v for k, v in metrics.items() if k != "alias" and not isinstance(v, str)}
        for task, metrics in results["results"].items()
    }
    record = {"tasks": list(tasks), "results": scores, "discdiff": model.record()}
    record["provenance"] = provenance({"tasks": list(tasks), **_model_args(model_args)}, None)
    path = out / "discdiff.json"
    text = json.dumps(record, indent=2, default=handle_non_serializable)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


# A placeholder, the same from `python -m` (module `__main__`) as from an import.
if "discdiff" not in model_registry:
    model_registry.register("discdiff", target="discdiff.harness:DiscdiffLM")


def main(argv: Sequence[str] | None = None) -> None:
    """`lm_eval ARGS` with the `discdiff` model registered.

    `python -m discdiff.harness ARGS` runs it.

    Args:
        argv: The arguments (default `sys.argv[1:]`).
    """
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()


if __name__ == "__main__":
    main()
