r"""Hugging Face masked language models (BERT, RoBERTa, ModernBERT, …) as denoisers.

A masked LM's `[MASK]` id lies inside its vocabulary, while a `MaskingProcess`
keeps the mask outside the data tokens. The adapter therefore relabels ids
with a bijection: the model's ids other than `[MASK]`, in order, are the data
tokens `0..V-1` ($V$ = model vocabulary − 1), and `[MASK]` is the process's
mask id $V$. Use `encode` / `decode` to move between the tokenizer's ids and
the process's.
"""

import os
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from discdiff._checks import validation_enabled
from discdiff.models.cache import KVCache
from discdiff.models.subs import subs_log_probs
from discdiff.processes.base import NEG
from discdiff.processes.masking.process import MaskingProcess
from discdiff.schedules import LogLinear, NoiseSchedule
from discdiff.tokenizer_loader import load_tokenizer
from discdiff.typing import Times, Tokens

__all__ = ["HuggingFaceDenoiser"]


class HuggingFaceDenoiser(nn.Module):
    r"""A `Denoiser` from any masked LM whose call returns `.logits`.

    The model is not time-conditioned; SUBS is applied to its logits (the
    `[MASK]` logit removed, log-softmax, carry-over at unmasked positions).

    Args:
        model: E.g. a `transformers.AutoModelForMaskedLM` instance.
        mask_token_id: The model's `[MASK]` id (from its tokenizer); defaults to
            `model.config.mask_token_id` where the config has one.
        model_vocab_size: Width of the model's logits; defaults to
            `model.config.vocab_size`.
        mask_mass: At masked positions, normalise the data tokens' probabilities
            over the model's whole vocabulary, `[MASK]` included, instead of
            over the data tokens alone (SUBS): they then sum to
            $1 - p_{\text{mask}}$, and confidence decoders score them as
            LLaDA's and Dream's own code does. Samplers that renormalise
            (every posterior, through `shape_probs`) are unaffected.
    """

    time_conditioned = False

    def __init__(
        self,
        model: nn.Module,
        *,
        mask_token_id: int | None = None,
        model_vocab_size: int | None = None,
        mask_mass: bool = False,
    ) -> None:
        super().__init__()
        if mask_token_id is None:
            mask_token_id = getattr(model.config, "mask_token_id", None)
            if mask_token_id is None:
                raise ValueError(
                    "`mask_token_id` is needed: the model's config names no mask token "
                    "(take it from the tokenizer)"
                )
        if model_vocab_size is None:
            model_vocab_size = int(model.config.vocab_size)
        if not 0 <= mask_token_id < model_vocab_size:
            raise ValueError(
                f"`mask_token_id` must lie in 0..{model_vocab_size - 1}; got {mask_token_id}"
            )
        self.model = model
        self.model_mask_id = mask_token_id
        self.vocab_size = model_vocab_size - 1
        self.mask_id = self.vocab_size
        self.mask_mass = mask_mass
        self.cacheable = callable(getattr(model, "step", None))
        """Whether `step` (key/value caches) works: the model has a `step` of its own."""

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, **kwargs: Any
    ) -> "HuggingFaceDenoiser":
        """Load a model and its tokenizer with `transformers` (no remote code).

        Args:
            name_or_path: A local directory or a hub id (needs a network).
            **kwargs: Passed to `AutoModelForMaskedLM.from_pretrained`.

        Returns:
            The denoiser, with the tokenizer as its `tokenizer` attribute.

        Raises:
            ValueError: If the tokenizer has no mask token, or `trust_remote_code` is asked for.
            RemoteCodeError: If the tokenizer exists only as the checkpoint's code.
        """
        from transformers import AutoModelForMaskedLM

        if kwargs.pop("trust_remote_code", False):
            raise ValueError("`trust_remote_code`: discdiff never runs a checkpoint's code")
        tokenizer = load_tokenizer(name_or_path)
        if tokenizer.mask_token_id is None:
            raise ValueError(f"the tokenizer of {name_or_path!s} has no mask token")
        model = AutoModelForMaskedLM.from_pretrained(
            name_or_path, trust_remote_code=False, **kwargs
        )
        denoiser = cls(model, mask_token_id=tokenizer.mask_token_id)
        denoiser.tokenizer = tokenizer
        return denoiser

    def process(self, schedule: NoiseSchedule = LogLinear()) -> MaskingProcess:
        r"""The `MaskingProcess` over this model's data tokens.

        Args:
            schedule: The noise schedule $\alpha_t$.

        Returns:
            `MaskingProcess(schedule, vocab_size=V, mask_id=V)` with $V$ = model vocabulary − 1.
        """
        return MaskingProcess(schedule, vocab_size=self.vocab_size, mask_id=self.mask_id)

    def encode(self, model_ids: Int[Tensor, "*shape"]) -> Int[Tensor, "*shape"]:
        """Model (tokenizer) ids to process ids: `[MASK]` becomes the mask id.

        Ids above `[MASK]` move down by one, so the data tokens are `0..V-1`.

        Args:
            model_ids: Tokenizer ids, any shape.

        Returns:
            Process ids with the shape of `model_ids`.
        """
        shifted = model_ids - (model_ids > self.model_mask_id).long()
        return torch.where(model_ids == self.model_mask_id, self.mask_id, shifted)

    def decode(self, tokens: Int[Tensor, "*shape"]) -> Int[Tensor, "*shape"]:
        """Process ids to model (tokenizer) ids; the inverse of `encode`.

        Args:
            tokens: Process ids (data tokens or the mask id), any shape.

        Returns:
            Tokenizer ids with the shape of `tokens`.
        """
        shifted = tokens + (tokens >= self.model_mask_id).long()
        return torch.where(tokens == self.mask_id, self.model_mask_id, shifted)

    def forward(
        self,
        z_t: Tokens,
        t: Times,
        padding_mask: torch.Tensor | None = None,
        positions: Int[Tensor, "batch length"] | None = None,
    ) -> Float[Tensor, "batch length vocab"]:
        r"""$\log x_\theta(z_t)$ over the $V$ data tokens.

        The model's logits without the `[MASK]` column, through SUBS (with
        `mask_mass`, normalised over the whole vocabulary at masked positions).

        Args:
            z_t: Noisy tokens `(B, L)` in process ids.
            t: Times `(B,)` (unused: a masked LM does not see $t$).
            padding_mask: `(B, L)`, `True` at real tokens, passed on as the
                attention mask.
            positions: `(B, L)` position ids, passed on as `position_ids`
                (default: the model's own, `0 .. L - 1`).

        Returns:
            Float32 log-probabilities `(B, L, V)`.
        """
        ids = self.decode(z_t)
        if positions is None:
            logits = self.model(input_ids=ids, attention_mask=padding_mask).logits
        else:
            logits = self.model(
                input_ids=ids, attention_mask=padding_mask, position_ids=positions
            ).logits
        return self._log_probs(logits, z_t)

    block_size = None
    """Attention is full (not block-causal): only Fast-dLLM's approximate caches apply."""

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

        The `CachedDenoiser` protocol, through the model's own `step`
        (`BidirectionalTransformer.step`). A model whose logits are shifted
        (Dream: position $i$ reads the logit of $i - 1$) also runs position
        `start - 1`, so the output is what `forward` gives when the cache is
        exact.

        Args:
            z_t: The whole sequence `(B, L)` in process ids.
            t: Times `(B,)` (unused).
            start: First position to run.
            stop: One past the last.
            cache: Keys and values of positions `0 .. C - 1` ($C \ge$ the first run
                position); `None`: run from position 0 with nothing cached.
            padding_mask: `(B, L)`, `True` at real tokens.
            positions: `(B, L)` rotary positions of each row.

        Returns:
            Log-probabilities `(B, stop - start, V)` as `forward` makes them, and
            the cache with the run positions' keys and values spliced in.

        Raises:
            TypeError: If the model has no `step` (no cache).
        """
        if not self.cacheable:
            raise TypeError(f"{type(self.model).__name__} has no `step`: it cannot use a cache")
        shift = bool(getattr(self.model.config, "shift_logits", False))
        first = start - 1 if shift and start > 0 else start
        ids = self.decode(z_t[:, first:stop])
        mask = None if padding_mask is None else padding_mask[:, first:stop]
        rows = None if positions is None else positions[:, first:stop]
        logits, new = self.model.step(ids, mask, cache=cache, offset=first, position_ids=rows)
        if shift:
            logits = (
                logits[:, :-1] if first < start else torch.cat((logits[:, :1], logits[:, :-1]), 1)
            )
        return self._log_probs(logits, z_t[:, start:stop]), new

    def _log_probs(self, logits: Tensor, z_t: Tokens) -> Tensor:
        """SUBS of the model's logits (the mask's mass kept with `mask_mass`)."""
        m = self.model_mask_id
        data_logits = torch.cat((logits[..., :m], logits[..., m + 1 :]), dim=-1)
        if not logits.requires_grad:  # sampling: normalised in float64, kept in float32
            return self._sampling_log_probs(logits, data_logits, z_t)
        log_probs = subs_log_probs(
            data_logits, z_t, vocab_size=self.vocab_size, mask_id=self.mask_id
        )
        if not self.mask_mass:
            return log_probs
        # log(1 - p_mask) = logsumexp(data logits) - logsumexp(all logits)
        kept = data_logits.float().logsumexp(-1) - logits.float().logsumexp(-1)
        masked = (z_t == self.mask_id).unsqueeze(-1)
        return torch.where(masked, log_probs + kept.unsqueeze(-1), log_probs)

    def _sampling_log_probs(self, logits: Tensor, data_logits: Tensor, z_t: Tokens) -> Tensor:
        r"""As `_log_probs`, with the normaliser $\log \sum_v e^{\ell_v}$ taken in float64.

        The result is float32, but $\log p = \ell - \log\sum e^{\ell}$ keeps its
        relative precision near $p = 1$ ($\log p \approx -10^{-9}$ stays distinct),
        so the confidences decoders read (`exp` in float64) do not all round to 1
        on a peaked model, and rank as LLaDA's and Fast-dLLM's float64 softmax does.
        """
        if validation_enabled() and not bool(torch.isfinite(logits).all()):
            raise ValueError("the model returned NaN or infinite `logits`")
        whole = logits if self.mask_mass else data_logits
        log_probs = (data_logits.double() - whole.double().logsumexp(-1, keepdim=True)).float()
        unmasked = (z_t != self.mask_id).unsqueeze(-1)
        index = torch.where(unmasked, z_t.unsqueeze(-1), 0)
        carried = torch.where(unmasked, 0.0, log_probs.gather(-1, index))
        return log_probs.masked_fill_(unmasked, NEG).scatter_(-1, index, carried)
