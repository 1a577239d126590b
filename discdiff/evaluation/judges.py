r"""Autoregressive judges for Gen PPL and MAUVE features.

`ARJudge` is a small causal transformer the library trains itself on the same
corpus (tests and CPU studies cannot download GPT-2); `HFCausalJudge` wraps any
Hugging Face causal LM for users who have one, re-tokenising decoded text as
the ReMDM paper does with GPT-2 Large.
"""

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from discdiff.baseline_objectives import AutoregressiveNLL
from discdiff.models.causal import CausalConfig, CausalTransformer

__all__ = ["ARJudge", "AutoregressiveNLL", "HFCausalJudge"]


class ARJudge(CausalTransformer):
    r"""A causal transformer language model over `vocab_size` tokens, used as a judge.

    The architecture is `discdiff.models.CausalTransformer` (the AR baseline
    generator's): it reads `<bos> x_1 … x_{L-1}` and predicts `x_1 … x_L`, so
    `nll` scores every token: $-\sum_\ell \log p(x_\ell \mid x_{<\ell})$.

    Args:
        vocab_size: Number of tokens.
        length: Longest sequence.
        width: Model width.
        layers: Transformer layers.
        heads: Attention heads.
    """

    def __init__(
        self, vocab_size: int, length: int, *, width: int = 128, layers: int = 3, heads: int = 4
    ) -> None:
        super().__init__(
            CausalConfig(
                vocab_size=vocab_size,
                model_length=length,
                hidden_dim=width,
                n_blocks=layers,
                n_heads=heads,
            )
        )

    def scored_tokens(self, tokens: Int[Tensor, "batch length"]) -> int:
        """Every token is scored.

        Args:
            tokens: Token ids `(B, L)`.

        Returns:
            `B * L`.
        """
        return tokens.numel()

    def features(self, tokens: Int[Tensor, "batch length"]) -> Float[Tensor, "batch width"]:
        """Mean-pooled hidden states: the default MAUVE featuriser.

        Args:
            tokens: Token ids `(B, L)`.

        Returns:
            Features `(B, width)`.
        """
        return self.hidden(tokens).mean(1)

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None
    ) -> Int[Tensor, "n length"]:
        """Ancestral samples, token by token (an AR reference for studies).

        Args:
            n: Number of sequences.
            generator: Random generator (CPU) for the draws.

        Returns:
            Token ids `(n, length)`.
        """
        tokens = torch.zeros(n, 0, dtype=torch.long, device=self.position.device)
        for _ in range(self.length):
            padded = torch.cat((tokens, tokens.new_zeros(n, 1)), dim=1)
            probs = self(padded)[:, -1].float().softmax(-1)
            nxt = torch.multinomial(probs.double().cpu(), 1, generator=generator)
            tokens = torch.cat((tokens, nxt.to(tokens.device)), dim=1)
        return tokens


class HFCausalJudge:
    """Any Hugging Face causal LM as a judge, on re-tokenised text.

    Args:
        model: E.g. `AutoModelForCausalLM.from_pretrained("gpt2-large")`.
        tokenizer: Its tokenizer.
        decode: Turns a row of sample ids into text (the sampling tokenizer's decode).
    """

    def __init__(self, model: Any, tokenizer: Any, decode: Callable[[list[int]], str]) -> None:
        self.model, self.tokenizer, self.decode = model, tokenizer, decode

    def _encode(self, tokens: Tensor) -> list[Tensor]:
        texts = [self.decode(row.tolist()) for row in tokens]
        return [torch.tensor(self.tokenizer.encode(text)) for text in texts]

    def nll(self, tokens: Int[Tensor, "batch length"]) -> Float[Tensor, "batch"]:
        """Total NLL of each re-tokenised sample (its first token is context).

        Args:
            tokens: Samples `(B, L)` in the sampling tokenizer's ids.

        Returns:
            Nats per sample `(B,)`.
        """
        out = []
        for ids in self._encode(tokens):
            logits = self.model(input_ids=ids[None]).logits[0, :-1].float()
            out.append(-logits.log_softmax(-1).gather(-1, ids[1:, None]).sum())
        return torch.stack(out)

    def scored_tokens(self, tokens: Int[Tensor, "batch length"]) -> int:
        """Re-tokenised tokens that were scored.

        Args:
            tokens: Samples `(B, L)` in the sampling tokenizer's ids.

        Returns:
            The number of scored judge tokens.
        """
        return sum(len(ids) - 1 for ids in self._encode(tokens))
