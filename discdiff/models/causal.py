r"""A causal transformer language model: the AR baseline generator and the AR judge.

$$
p_\theta(x) = \prod_{\ell=1}^{L} p_\theta(x_\ell \mid x_{<\ell}),
$$

one forward pass scoring every position: the network reads
`<bos> x_1 … x_{L-1}` and position $\ell$ predicts $x_\ell$. Pre-norm
transformer layers (GELU MLP $d \to 4d \to d$) with learnt positions and a
causal attention mask. `discdiff.evaluation.ARJudge` is this model used as a
judge; `discdiff.sampling.AutoregressiveSampler` samples it with the same
nucleus rules as the diffusion samplers. The config shares the field names of
`DiTConfig` (`hidden_dim`, `n_blocks`, `n_heads`, `model_length`, `dropout`)
so one run config's `model` section describes either network.
"""

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from discdiff._io import CorruptFileError
from discdiff.models.pretrained import CONFIG_NAME, read_pretrained, write_pretrained
from discdiff.processes.base import ForwardProcess

__all__ = ["CausalConfig", "CausalTransformer", "PrefixClassifier", "next_token_nll"]


def next_token_nll(
    logits: Float[Tensor, "batch length vocab"],
    tokens: Int[Tensor, "batch length"],
    padding_mask: Tensor | None = None,
) -> Float[Tensor, "batch"]:
    r"""$-\sum_\ell \log \mathrm{softmax}(\text{logits}_\ell)[x_\ell]$ per sequence (nats).

    Args:
        logits: Next-token logits `(B, L, V)` (position $\ell$ predicts $x_\ell$).
        tokens: The tokens `(B, L)`.
        padding_mask: `(B, L)`, `True` at real tokens; padded ones are not scored.

    Returns:
        `(B,)` nats.
    """
    log_probs = logits.float().log_softmax(-1)
    nll = -log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if padding_mask is not None:
        nll = nll * padding_mask
    return nll.sum(-1)


@dataclass(frozen=True)
class CausalConfig:
    """Hyper-parameters of a `CausalTransformer` (named as `DiTConfig`'s).

    Args:
        vocab_size: Number of tokens $V$ it predicts (`<bos>` is id $V$ of the input).
        model_length: Longest sequence.
        hidden_dim: Model width.
        n_blocks: Transformer layers.
        n_heads: Attention heads.
        dropout: Dropout probability in the layers.
    """

    vocab_size: int
    model_length: int
    hidden_dim: int = 128
    n_blocks: int = 3
    n_heads: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "model_length", "hidden_dim", "n_blocks", "n_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1; got {getattr(self, name)}")
        if self.hidden_dim % self.n_heads:
            raise ValueError(
                f"`hidden_dim` ({self.hidden_dim}) must split into `n_heads` ({self.n_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1); got {self.dropout}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CausalConfig":
        """Read the known keys of a mapping (others, e.g. DiT-only keys, are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class CausalTransformer(nn.Module):
    r"""A causal transformer over `vocab_size` tokens, $p_\theta(x_\ell \mid x_{<\ell})$.

    Args:
        config: The architecture.

    Example:
        >>> model = CausalTransformer(CausalConfig(vocab_size=5, model_length=8, hidden_dim=16))
        >>> model(torch.zeros(2, 8, dtype=torch.long)).shape
        torch.Size([2, 8, 5])
    """

    def __init__(self, config: CausalConfig) -> None:
        super().__init__()
        self.config = config
        width = config.hidden_dim
        self.vocab_size, self.length = config.vocab_size, config.model_length
        self.embed = nn.Embedding(config.vocab_size + 1, width)  # + <bos>
        self.position = nn.Parameter(torch.zeros(config.model_length, width))
        layer = nn.TransformerEncoderLayer(
            width,
            config.n_heads,
            4 * width,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
            activation="gelu",
        )
        self.blocks = nn.TransformerEncoder(layer, config.n_blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, config.vocab_size)

    def hidden(self, tokens: Int[Tensor, "batch length"]) -> Float[Tensor, "batch length width"]:
        r"""Final hidden states (before the output head).

        Args:
            tokens: Token ids `(B, L)`, `L <= model_length`.

        Returns:
            `(B, L, width)`; position $\ell$ has seen `<bos>` and $x_{<\ell}$.

        Raises:
            ValueError: If the sequence is longer than `model_length`.
        """
        length = tokens.shape[1]
        if length > self.length:
            raise ValueError(f"`tokens` has length {length} > model_length={self.length}")
        bos = torch.full_like(tokens[:, :1], self.vocab_size)
        inputs = torch.cat((bos, tokens[:, :-1]), dim=1)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        h = self.embed(inputs) + self.position[:length]
        return self.norm(self.blocks(h, mask=causal, is_causal=True))

    def forward(self, tokens: Int[Tensor, "batch length"]) -> Float[Tensor, "batch length vocab"]:
        r"""Next-token logits: position $\ell$ predicts $x_\ell$ from $x_{<\ell}$.

        Args:
            tokens: Token ids `(B, L)` (the last one is not read).

        Returns:
            Logits `(B, L, V)`.
        """
        return self.head(self.hidden(tokens)).float()

    def nll(
        self,
        tokens: Int[Tensor, "batch length"],
        padding_mask: Tensor | None = None,
    ) -> Float[Tensor, "batch"]:
        r"""Total negative log-likelihood $-\sum_\ell \log p(x_\ell \mid x_{<\ell})$ (nats).

        Args:
            tokens: Token ids `(B, L)`.
            padding_mask: `(B, L)`, `True` at real tokens; padded ones are not scored.

        Returns:
            `(B,)` nats per sequence.
        """
        return next_token_nll(self(tokens), tokens, padding_mask)

    def next_logits(self, prefix: Int[Tensor, "batch prefix"]) -> Float[Tensor, "batch vocab"]:
        r"""Logits of $p(x_{i+1} \mid x_{\le i})$ after a prefix of $i$ tokens (may be empty).

        Args:
            prefix: Token ids `(B, i)`, `i < model_length`.

        Returns:
            `(B, V)` float32 logits.
        """
        placeholder = prefix.new_zeros(prefix.shape[0], 1)  # read by nobody: the mask is causal
        return self(torch.cat((prefix, placeholder), dim=1))[:, -1]

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `config.json` (with `"architecture": "causal"`) and `model.safetensors`."""
        config = {"architecture": "causal", **asdict(self.config)}
        return write_pretrained(directory, config, self.state_dict())

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], *, process: ForwardProcess, model_length: int
    ) -> "CausalTransformer":
        """A new model over the $V$ data tokens of `process` from a run's `model` section.

        Args:
            settings: `CausalConfig` fields (a DiT's other keys are ignored).
            process: The forward process of the run (only its $V$ is read).
            model_length: $L$.
        """
        values = {**settings, "vocab_size": process.vocab_size, "model_length": model_length}
        return cls(CausalConfig.from_dict(values))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "CausalTransformer":
        """Load a model written by `save_pretrained` (safetensors, `strict=True`).

        Raises:
            FileNotFoundError: If a file is missing.
            CorruptFileError: If the config or the weights do not describe this model.
        """
        values, state, weights_path = read_pretrained(directory)
        config_path = Path(directory) / CONFIG_NAME
        if values.get("architecture") != "causal":
            raise CorruptFileError(config_path, "causal transformer config", "not 'causal'")
        try:
            model = cls(CausalConfig.from_dict(values))
        except (ValueError, TypeError) as error:
            raise CorruptFileError(config_path, "causal transformer config", error) from None
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise CorruptFileError(weights_path, f"weight set for {config_path}", error) from None
        return model


class PrefixClassifier(CausalTransformer):
    r"""A classifier of every prefix, $p_\phi(c \mid x_{\le \ell})$ for $\ell = 1..L$ (FUDGE's).

    The causal trunk of `CausalTransformer` with a class head; position
    $\ell$ of the output has read $x_1 \dots x_\ell$.

    Args:
        config: The trunk (its `vocab_size` is the token vocabulary).
        num_classes: Number of classes $C$.

    Example:
        >>> config = CausalConfig(vocab_size=5, model_length=8, hidden_dim=16)
        >>> PrefixClassifier(config, 3)(torch.zeros(2, 8, dtype=torch.long)).shape
        torch.Size([2, 8, 3])
    """

    def __init__(self, config: CausalConfig, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"`num_classes` must be at least 1; got {num_classes}")
        super().__init__(replace(config, model_length=config.model_length + 1))
        self.num_classes = num_classes
        self.head = nn.Linear(config.hidden_dim, num_classes)

    def forward(self, tokens: Int[Tensor, "batch length"]) -> Float[Tensor, "batch length classes"]:
        r"""Class logits of every prefix: position $\ell$ gives $p(c \mid x_{\le \ell})$.

        Args:
            tokens: Token ids `(B, L)`.

        Returns:
            `(B, L, C)` float32 logits.
        """
        shifted = torch.cat((tokens, tokens[:, :1]), dim=1)  # the hidden state after x_ℓ
        return self.head(self.hidden(shifted)[:, 1:]).float()
