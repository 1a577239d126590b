r"""MDLM's diffusion transformer (DiT), loadable from the released checkpoints.

Architecture (SPEC §4): token embedding $[V_m, d]$ (with $V_m = V + 1$: the
data tokens and the mask); a time embedding of $\sigma(t)$ (256-d sinusoidal,
MLP to `cond_dim`, SiLU); `n_blocks` blocks of

$$
\begin{aligned}
h &= x + g_1 \odot \mathrm{Attn}\big(\mathrm{RoPE}(\mathrm{LN}(x) (1 + c_1) + b_1)\big) \\
x' &= h + g_2 \odot \mathrm{MLP}\big(\mathrm{LN}(h) (1 + c_2) + b_2\big)
\end{aligned}
$$

with bias-free float32 LayerNorm, adaLN shift/scale/gate $(b, c, g)$ from a
zero-initialised `Linear(cond_dim → 6d)`, bias-free qkv and output projections,
rotary embeddings (base 10 000) on queries and keys, bidirectional attention,
a tanh-GELU MLP $d \to 4d \to d$ and dropout; then a final adaLN LayerNorm and
a zero-initialised `Linear(d → V_m)`. Parameter names follow MDLM's, so
`backbone.*` state dicts load with `strict=True`.

**Class conditioning** (optional, `num_classes > 0`): a label embedding table
with `num_classes + 1` rows, the last one the *null* label $\varnothing$, is
added to the time embedding before the SiLU, so every adaLN modulation sees
$c = \mathrm{SiLU}(\mathrm{emb}_\sigma(\sigma) + \mathrm{emb}_y(y))$ (as in Peebles & Xie's
class-conditional DiT). In training mode each label is replaced by the null
label with probability `label_dropout`, so one network learns both
$x_\theta(z_t \mid c)$ and $x_\theta(z_t \mid \varnothing)$, the two
ingredients of classifier-free guidance. An unconditional config
(`num_classes = 0`, the default) has no label table, so MDLM's checkpoints and
earlier ones of this library load unchanged.

**Block diffusion** (optional, `block_size = n`; BD3-LM, Arriola et al. 2025):
the sequence is cut into blocks $b(\ell) = \lfloor \ell / n \rfloor$ and
attention is bidirectional inside a block and causal across blocks, so
position $\ell$ attends to $\ell'$ iff $b(\ell') \le b(\ell)$. Training
(`forward(z_t, σ, clean=x)`) runs the noisy and the clean sequence side by
side, $z_t \oplus x$ (length $2L$, both with positions $0..L-1$), with
BD3-LM's mask: a noisy token attends to the noisy tokens of its own block
and to the clean tokens of the blocks before it; a clean token attends
block-causally to clean tokens. Each noisy block $b$ thus sees exactly what
sampling gives it, $(x^{<b}, z_t^b)$: the output at block $b$ equals the
block-causal forward of the sequence $x^{<b} \oplus z_t^b$ (the clean half's
hidden states at blocks $< b$ are those of that forward, layer by layer).
Since a finished block's keys and values never change afterwards, sampling
block by block can cache them exactly (`step` with a `KVCache`).

**KV caches** (`step`): a call may run only some positions, `tokens` at
positions `offset .. offset + n - 1`, with the keys and values of every other
position taken from a `KVCache` of an earlier call. For a block-causal model
with a cache of whole finished blocks this is exact; for a full-attention
model it is Fast-dLLM's approximate prefix / dual cache (the cached positions
would have seen the new tokens).
"""

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from discdiff._checks import validation_enabled
from discdiff._io import CorruptFileError
from discdiff.models.attention import AttentionBackend, attention
from discdiff.models.cache import KVCache, splice
from discdiff.models.pretrained import (
    CONFIG_NAME,
    PREFIX,
    download_pretrained,
    looks_like_repo_id,
    read_lightning,
    read_pretrained,
    write_pretrained,
)
from discdiff.processes.base import ForwardProcess
from discdiff.typing import Tokens

__all__ = ["DiT", "DiTClassifier", "DiTConfig", "KVCache", "block_attention_mask"]


@dataclass(frozen=True)
class DiTConfig:
    r"""Hyper-parameters of a `DiT`, named as in MDLM's Hugging Face `config.json`.

    Args:
        hidden_dim: Model width $d$.
        cond_dim: Width of the time conditioning.
        n_blocks: Number of transformer blocks.
        n_heads: Attention heads; `hidden_dim / n_heads` must be even (rotary).
        vocab_size: Rows of the embedding and width of the logits: the data
            tokens and the mask ($V + 1$ for the default mask id $V$).
        model_length: Longest sequence the model takes.
        dropout: Dropout probability in the blocks.
        time_conditioning: Whether the network sees $\sigma(t)$ (MDLM: no).
        attention: Attention backend: `"auto"`, `"xformers"`, `"sdpa"`, `"math"`.
        num_classes: Number of class labels $C$ the network is conditioned on;
            `0` (default) means unconditional. Label `C` is the null label.
        label_dropout: Probability, in training mode, of replacing a label by
            the null label (classifier-free guidance training); ignored when
            `num_classes = 0`.
        block_size: Block diffusion (BD3-LM): attention is bidirectional
            inside blocks of this many positions and causal across them.
            `None` (default): bidirectional attention over the whole sequence
            (MDLM). Block models are not time-conditioned (each block has its
            own noise level, a per-sequence $\sigma$ cannot carry them).
    """

    hidden_dim: int = 768
    cond_dim: int = 128
    n_blocks: int = 12
    n_heads: int = 12
    vocab_size: int = 50258
    model_length: int = 1024
    dropout: float = 0.1
    time_conditioning: bool = False
    attention: AttentionBackend = "auto"
    num_classes: int = 0
    label_dropout: float = 0.1
    block_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "cond_dim", "n_blocks", "n_heads", "vocab_size", "model_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1; got {getattr(self, name)}")
        if self.hidden_dim % self.n_heads or (self.hidden_dim // self.n_heads) % 2:
            raise ValueError(
                f"`hidden_dim` ({self.hidden_dim}) must split into `n_heads` ({self.n_heads}) "
                "heads of even width (rotary embeddings)"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1); got {self.dropout}")
        if self.num_classes < 0:
            raise ValueError(f"`num_classes` must be at least 0; got {self.num_classes}")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"`label_dropout` must lie in [0, 1]; got {self.label_dropout}")
        if self.block_size is not None:
            if isinstance(self.block_size, bool) or not 1 <= self.block_size <= self.model_length:
                raise ValueError(
                    f"`block_size` must be None or lie in [1, model_length={self.model_length}]; "
                    f"got {self.block_size!r}"
                )
            if self.time_conditioning:
                raise ValueError(
                    "`block_size` needs `time_conditioning=False`: each block has its own "
                    "noise level, which one per-sequence sigma cannot carry"
                )

    @classmethod
    def small(cls, vocab_size: int = 50258, **overrides: Any) -> "DiTConfig":
        """MDLM small: d 768, 12 blocks, 12 heads, cond 128, length 1024 (≈169.6M)."""
        return cls(vocab_size=vocab_size, **overrides)

    @classmethod
    def tiny(cls, vocab_size: int, **overrides: Any) -> "DiTConfig":
        """A CPU preset: d 256, 4 blocks, 4 heads, cond 64, length 256."""
        base = dict(hidden_dim=256, cond_dim=64, n_blocks=4, n_heads=4, model_length=256)
        return cls(vocab_size=vocab_size, **{**base, **overrides})

    @classmethod
    def micro(cls, vocab_size: int, **overrides: Any) -> "DiTConfig":
        """A test-sized preset: d 64, 2 blocks, 2 heads, cond 32, length 128."""
        base = dict(hidden_dim=64, cond_dim=32, n_blocks=2, n_heads=2, model_length=128)
        return cls(vocab_size=vocab_size, **{**base, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DiTConfig":
        """Read the known keys of a `config.json` (others, e.g. `auto_map`, are ignored)."""
        known = {f.name for f in fields(cls)}
        missing = {"hidden_dim", "n_blocks", "n_heads", "vocab_size"} - values.keys()
        if missing:
            raise ValueError(f"config is missing the keys {sorted(missing)}")
        return cls(**{k: v for k, v in values.items() if k in known})


def block_attention_mask(
    block_size: int | None,
    query_positions: Int[Tensor, "queries"],
    key_positions: Int[Tensor, "keys"],
    *,
    query_noisy: Bool[Tensor, "queries"] | None = None,
    key_noisy: Bool[Tensor, "keys"] | None = None,
) -> Bool[Tensor, "queries keys"]:
    r"""BD3-LM's attention mask: who may attend to whom, by block $b = \lfloor \ell / n \rfloor$.

    With every token clean (one sequence, as in sampling) it is block-causal:
    query $i$ sees key $j$ iff $b_j \le b_i$. In training on $z_t \oplus x$,
    a noisy query sees the noisy keys of its own block and the clean keys of
    earlier blocks; a clean query sees clean keys block-causally:

    $$
    M_{ij} = \begin{cases}
    [b_j = b_i] & \text{$i$ noisy, $j$ noisy} \\
    [b_j < b_i] & \text{$i$ noisy, $j$ clean} \\
    0 & \text{$i$ clean, $j$ noisy} \\
    [b_j \le b_i] & \text{$i$ clean, $j$ clean.}
    \end{cases}
    $$

    Args:
        block_size: $n$; `None` means one block (every entry `True`).
        query_positions: Positions `(L_q,)` of the queries.
        key_positions: Positions `(L_k,)` of the keys.
        query_noisy: `(L_q,)`, `True` at noisy queries; `None`: all clean.
        key_noisy: `(L_k,)`, `True` at noisy keys; `None`: all clean.

    Returns:
        `(L_q, L_k)`, `True` where the query may attend to the key.

    Example:
        >>> block_attention_mask(2, torch.arange(4), torch.arange(4)).int()
        tensor([[1, 1, 0, 0],
                [1, 1, 0, 0],
                [1, 1, 1, 1],
                [1, 1, 1, 1]], dtype=torch.int32)
    """
    if block_size is None:
        return torch.ones(
            len(query_positions), len(key_positions), dtype=torch.bool, device=key_positions.device
        )
    q_block = (query_positions // block_size)[:, None]
    k_block = (key_positions // block_size)[None, :]
    q_noisy = torch.zeros_like(q_block, dtype=torch.bool) if query_noisy is None else query_noisy
    k_noisy = torch.zeros_like(k_block, dtype=torch.bool) if key_noisy is None else key_noisy
    q_noisy, k_noisy = q_noisy.reshape(-1, 1), k_noisy.reshape(1, -1)
    clean_key = (k_block < q_block) | ((k_block == q_block) & ~q_noisy)
    noisy_key = q_noisy & (k_block == q_block)
    return torch.where(k_noisy, noisy_key, clean_key)


class LayerNorm(nn.Module):
    """Bias-free LayerNorm computed in float32."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise the last dimension in float32 (float64 stays float64), then scale."""
        with torch.autocast(x.device.type, enabled=False):
            return F.layer_norm(_upcast(x), self.weight.shape) * self.weight


class Rotary(nn.Module):
    """Rotary position embedding (rotate-half convention, base 10 000)."""

    def __init__(self, head_dim: int, base: float = 10_000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """`cos` and `sin` tables `(L, head_dim)` in float32 for positions `0..L-1`."""
        positions = torch.arange(length, device=device, dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq.to(device))
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()


def _upcast(x: Tensor) -> Tensor:
    """Half precisions to float32; float32 and float64 as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Apply the rotation to `(B, L, H, D)` in float32 (float64 stays float64)."""
    x32 = _upcast(x)
    half = x32.shape[-1] // 2
    rotated = torch.cat((-x32[..., half:], x32[..., :half]), dim=-1)
    # tables (L, D), or (B, L, D) for per-row positions, over the heads
    return (x32 * cos.unsqueeze(-2) + rotated * sin.unsqueeze(-2)).to(x.dtype)


class TimestepEmbedder(nn.Module):
    r"""Sinusoidal embedding of a scalar (here $\sigma(t)$) followed by an MLP."""

    def __init__(self, cond_dim: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )

    def forward(self, sigma: Tensor) -> Tensor:
        """Embed `(B,)` values into `(B, cond_dim)`."""
        half = self.frequency_dim // 2
        freqs = torch.exp(
            -math.log(10_000.0) * torch.arange(half, device=sigma.device).float() / half
        )
        args = sigma.float()[:, None] * freqs[None]
        embedded = torch.cat((args.cos(), args.sin()), dim=-1)
        return self.mlp(embedded.to(_upcast(self.mlp[0].weight).dtype))


class EmbeddingLayer(nn.Module):
    """Token embedding stored as a bare `[vocab, dim]` parameter (MDLM's layout)."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, dim))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, tokens: Tensor) -> Tensor:
        """Look up `(B, L)` ids, or mix rows by a float `(B, L, vocab)` (e.g. one-hot) input."""
        if tokens.is_floating_point():
            return tokens.to(self.embedding.dtype) @ self.embedding
        return self.embedding[tokens]


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """One adaLN transformer block (attribute order fixes MDLM's parameter order)."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        d = config.hidden_dim
        self.n_heads = config.n_heads
        self.backend = config.attention
        self.norm1 = LayerNorm(d)
        self.attn_qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.dropout1 = nn.Dropout(config.dropout)
        self.norm2 = LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d)
        )
        self.dropout2 = nn.Dropout(config.dropout)
        self.adaLN_modulation = nn.Linear(config.cond_dim, 6 * d)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor],
        c: Tensor,
        padding_mask: Tensor | None,
        mask: Tensor | None = None,
        past: tuple[Tensor, Tensor, int] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attention then MLP, each gated and residual; also this layer's keys and values.

        `past = (keys, values, offset)` supplies the keys and values of the other
        positions: the ones of `x` replace positions `offset ..` of them.
        `padding_mask` and `mask` refer to the attended keys.
        """
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        batch, length, _ = x.shape
        qkv = self.attn_qkv(_modulate(self.norm1(x), shift1, scale1))
        q, k, v = qkv.view(batch, length, 3, self.n_heads, -1).unbind(2)
        q, k = _rotate(q, *rotary), _rotate(k, *rotary)
        keys, values = k, v
        if past is not None:
            keys, values = splice(past[0], k, past[2]), splice(past[1], v, past[2])
        h = attention(q, keys, values, backend=self.backend, padding_mask=padding_mask, mask=mask)
        x = x + gate1[:, None] * self.dropout1(self.attn_out(h.reshape(batch, length, -1)))
        h = self.mlp(_modulate(self.norm2(x), shift2, scale2))
        return x + gate2[:, None] * self.dropout2(h), keys, values


class FinalLayer(nn.Module):
    """adaLN LayerNorm and the zero-initialised output projection."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.norm_final = LayerNorm(config.hidden_dim)
        self.linear = nn.Linear(config.hidden_dim, config.vocab_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.adaLN_modulation = nn.Linear(config.cond_dim, 2 * config.hidden_dim)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """Logits `(B, L, vocab_size)`."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    r"""MDLM's diffusion transformer: `(tokens, σ) -> logits` over `vocab_size` ids.

    Wrap it in `SUBS` to get a `Denoiser`. On CUDA the blocks run under bf16
    autocast (LayerNorm, rotary and the logits stay float32).

    Args:
        config: The hyper-parameters.

    Example:
        >>> model = DiT(DiTConfig.micro(vocab_size=11))
        >>> model(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2)).shape
        torch.Size([2, 8, 11])
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab_embed = EmbeddingLayer(config.hidden_dim, config.vocab_size)
        self.sigma_map = TimestepEmbedder(config.cond_dim)
        if config.num_classes:
            self.label_embed = nn.Embedding(config.num_classes + 1, config.cond_dim)
            nn.init.normal_(self.label_embed.weight, std=0.02)
        self.rotary_emb = Rotary(config.hidden_dim // config.n_heads)
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.n_blocks))
        self.output_layer = FinalLayer(config)

    @property
    def null_label(self) -> int:
        """The id of the null label, `num_classes` (only meaningful when conditional)."""
        return self.config.num_classes

    def forward(
        self,
        tokens: Tokens | Float[Tensor, "batch length model_vocab"],
        sigma: Float[Tensor, "batch"],
        padding_mask: Bool[Tensor, "batch length"] | None = None,
        label: Int[Tensor, "batch"] | None = None,
        *,
        clean: Tokens | None = None,
        positions: Int[Tensor, "batch length"] | None = None,
    ) -> Float[Tensor, "batch length model_vocab"]:
        r"""Logits for every position.

        Args:
            tokens: Ids `(B, L)` in `0..vocab_size-1`, `L <= model_length`; or a
                float `(B, L, vocab_size)` mixture of them (a one-hot encoding,
                differentiable, as first-order classifier guidance needs).
            sigma: Total noise $\sigma(t) = -\log\alpha_t$ `(B,)` (zeros when
                not time-conditioned).
            padding_mask: `(B, L)`, `True` at real tokens; padding is not attended to.
            label: Class labels `(B,)` in `0..num_classes` (`num_classes` is the
                null label), for a conditional config; `None` means null.
            clean: Block diffusion training: the clean tokens $x$ `(B, L)` of
                which `tokens` is a noisy draw; block $b$ of `tokens` then sees
                the clean blocks before it (BD3-LM's $z_t \oplus x$ pass, see
                the module docstring). Needs `block_size`.
            positions: `(B, L)` rotary positions of each row (default `0 .. L - 1`):
                left-padded rows start at 0 on their first real token, as alone.
                Full attention only.

        Returns:
            Logits `(B, L, vocab_size)`: float32 (float64 for a float64 model).

        Raises:
            ValueError: On ids outside the vocabulary, sequences longer than
                `model_length`, labels out of range (or given to an
                unconditional model), or `clean` without `block_size`.
        """
        x, c, _ = self._run(tokens, sigma, padding_mask, label, clean=clean, rows=positions)
        return self._logits(x[:, : tokens.shape[1]], c)

    def step(
        self,
        tokens: Tokens,
        sigma: Float[Tensor, "batch"],
        padding_mask: Bool[Tensor, "batch length"] | None = None,
        label: Int[Tensor, "batch"] | None = None,
        *,
        cache: KVCache | None = None,
        offset: int = 0,
    ) -> tuple[Float[Tensor, "batch length model_vocab"], KVCache]:
        r"""Logits of `tokens` at positions `offset .. offset + n - 1`, and the keys and values.

        The keys and values of every other position come from `cache`; this
        call's replace positions `offset .. offset + n - 1` of it. With a
        block-causal model (`block_size`) and a cache of whole earlier blocks
        this is exact: the logits equal those of `forward` on the whole
        sequence (the later positions of the cache, if any, are not attended
        to). With full attention the cached positions did not see these
        tokens, so it is an approximation (Fast-dLLM's prefix / dual cache).

        Args:
            tokens: Ids `(B, n)` of the positions to run.
            sigma: $\sigma(t)$ `(B,)` (zeros when not time-conditioned).
            padding_mask: `(B, n)`, `True` at real tokens.
            label: Class labels `(B,)`, as for `forward`.
            cache: Keys and values of positions `0 .. C - 1` (`offset <= C`);
                `None` runs `tokens` alone (then `offset` must be 0).
            offset: Position of the first token.

        Returns:
            Logits `(B, n, vocab_size)` and the cache of positions
            `0 .. max(C, offset + n) - 1` with this call's keys and values spliced in.

        Raises:
            ValueError: For an `offset` outside `[0, C]`, a block-causal model's
                `offset` that is not a multiple of `block_size`, or positions past
                `model_length`.
        """
        x, c, new = self._run(tokens, sigma, padding_mask, label, cache=cache, offset=offset)
        return self._logits(x, c), new

    def _logits(self, x: Tensor, c: Tensor) -> Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
            logits = self.output_layer(x, c)
        return _upcast(logits)

    def features(
        self,
        tokens: Tokens | Float[Tensor, "batch length model_vocab"],
        sigma: Float[Tensor, "batch"],
        padding_mask: Bool[Tensor, "batch length"] | None = None,
        label: Int[Tensor, "batch"] | None = None,
    ) -> tuple[Float[Tensor, "batch length hidden"], Float[Tensor, "batch cond"]]:
        """The last block's hidden states and the conditioning vector (see `forward`)."""
        x, c, _ = self._run(tokens, sigma, padding_mask, label)
        return x, c

    def _check_tokens(self, name: str, tokens: Tensor) -> None:
        if tokens.is_floating_point():
            if tokens.dim() != 3 or tokens.shape[-1] != self.config.vocab_size:
                raise ValueError(
                    f"float `{name}` must have shape (B, L, vocab_size={self.config.vocab_size}); "
                    f"got {tuple(tokens.shape)}"
                )
        elif validation_enabled() and bool(
            ((tokens < 0) | (tokens >= self.config.vocab_size)).any()
        ):
            raise ValueError(f"`{name}` holds ids outside 0..{self.config.vocab_size - 1}")

    def _run(
        self,
        tokens: Tensor,
        sigma: Tensor,
        padding_mask: Tensor | None,
        label: Tensor | None,
        *,
        clean: Tensor | None = None,
        cache: KVCache | None = None,
        offset: int = 0,
        rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, KVCache]:
        """Hidden states, conditioning and the attended keys/values (see `forward`, `step`)."""
        batch, length = tokens.shape[:2]
        block = self.config.block_size
        if offset + length > self.config.model_length:
            raise ValueError(
                f"`tokens` has length {length} at offset {offset}: past "
                f"model_length={self.config.model_length}"
            )
        self._check_tokens("tokens", tokens)
        if clean is not None:
            if block is None:
                raise ValueError(
                    "`clean` is for block diffusion training; this DiT has no block_size"
                )
            if clean.shape != tokens.shape or clean.is_floating_point():
                raise ValueError(
                    f"`clean` must be ids of the shape of `tokens` {tuple(tokens.shape)}; "
                    f"got {clean.dtype} {tuple(clean.shape)}"
                )
            self._check_tokens("clean", clean)
        cached = 0 if cache is None else cache.length
        if not 0 <= offset <= cached:
            raise ValueError(
                f"`offset` must lie in [0, {cached}] (the cached length); got {offset}"
            )
        if cache is not None and block is not None and offset % block:
            raise ValueError(
                f"`offset` ({offset}) must be a multiple of block_size={block}: a cache of a "
                "partial block would not have seen the rest of it"
            )
        device = tokens.device
        x = self.vocab_embed(tokens)
        c = self.sigma_map(sigma)
        if self.config.num_classes:
            c = c + self.label_embed(self._labels(label, batch, device))
        elif label is not None:
            raise ValueError("`label` was given, but this DiT is unconditional (num_classes=0)")
        c = F.silu(c)
        cos, sin = self.rotary_emb(offset + length, device)
        cos, sin = cos[offset:], sin[offset:]
        if rows is not None:  # each row's own positions (left padding)
            if block is not None or cache is not None or clean is not None:
                raise ValueError("`positions` needs a full-attention DiT without a cache")
            angles = rows.float()[..., None] * self.rotary_emb.inv_freq.to(device)
            angles = torch.cat((angles, angles), dim=-1)
            cos, sin = angles.cos(), angles.sin()
        positions = torch.arange(offset, offset + length, device=device)
        keys, noisy = positions, None
        if clean is not None:  # z_t ⊕ x, both at positions 0..L-1
            x = torch.cat((x, self.vocab_embed(clean)), dim=1)
            cos, sin = torch.cat((cos, cos)), torch.cat((sin, sin))
            positions = keys = torch.cat((positions, positions))
            noisy = torch.arange(2 * length, device=device) < length
            if padding_mask is not None:
                padding_mask = torch.cat((padding_mask, padding_mask), dim=1)
        if cache is not None:
            keys = torch.arange(max(cached, offset + length), device=device)
            if padding_mask is not None or cache.padding_mask is not None:
                real = torch.ones(batch, cached, dtype=torch.bool, device=device)
                fresh = torch.ones(batch, length, dtype=torch.bool, device=device)
                padding_mask = splice(
                    real if cache.padding_mask is None else cache.padding_mask,
                    fresh if padding_mask is None else padding_mask,
                    offset,
                )
        key_padding, mask = padding_mask, None
        if block is not None:
            mask = block_attention_mask(block, positions, keys, query_noisy=noisy, key_noisy=noisy)
            if padding_mask is not None:
                # fold the padding in, but let every query see itself: a padded query with
                # no real key in reach would otherwise turn into NaN
                own = torch.zeros_like(mask)
                rows = torch.arange(len(positions), device=device)
                own[rows, rows + (offset if cache is not None else 0)] = True
                mask = (mask & padding_mask[:, None, :]) | own
                key_padding = None
        new_keys, new_values = [], []
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
            for i, layer in enumerate(self.blocks):
                past = None if cache is None else (cache.keys[i], cache.values[i], offset)
                x, k, v = layer(x, (cos, sin), c, key_padding, mask, past)
                new_keys.append(k)
                new_values.append(v)
        return x, c, KVCache(tuple(new_keys), tuple(new_values), padding_mask)

    def _labels(self, label: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """Check `label`, fill in the null label, and apply label dropout in training."""
        null = self.config.num_classes
        if label is None:
            return torch.full((batch,), null, dtype=torch.long, device=device)
        if label.shape != (batch,):
            raise ValueError(f"`label` must have shape ({batch},); got {tuple(label.shape)}")
        if validation_enabled() and bool(((label < 0) | (label > null)).any()):
            raise ValueError(
                f"`label` must lie in 0..{null} (num_classes={null} is the null label); "
                f"got {label.unique()[:5].tolist()}"
            )
        if self.training and self.config.label_dropout > 0:
            drop = torch.rand(batch, device=device) < self.config.label_dropout
            label = torch.where(drop, null, label)
        return label

    # -- checkpoints -------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `config.json` and `model.safetensors` (`backbone.*` keys), atomically.

        See `discdiff.models.pretrained.write_pretrained`: an interrupted save
        never leaves a half-written file.

        Returns:
            The directory.
        """
        weights = {PREFIX + k: v for k, v in self.state_dict().items()}
        return write_pretrained(directory, asdict(self.config), weights)

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], *, process: ForwardProcess, model_length: int
    ) -> "DiT":
        """A new DiT over every state of `process` (masking: $V + 1$) from a run's `model` section.

        Args:
            settings: `DiTConfig` fields other than `vocab_size` and `model_length`.
            process: The forward process the network denoises.
            model_length: $L$.
        """
        return cls(DiTConfig(**settings, vocab_size=process.num_states, model_length=model_length))

    @classmethod
    def from_pretrained(
        cls, source: str | os.PathLike, *, ema: bool = False, **overrides: Any
    ) -> "DiT":
        """Load a DiT from a directory, a Lightning checkpoint or a Hugging Face repo id.

        Sources, tried in order:

        - a directory with `config.json` and `model.safetensors` (this
          library's `save_pretrained`, or MDLM's Hugging Face layout);
        - a Lightning `.ckpt` file from MDLM/ReMDM training: its `state_dict`
          (`backbone.*` keys), or its EMA weights with `ema=True`. It is read
          with `torch.load(weights_only=True)`; foreign objects in it (e.g.
          the saved OmegaConf config) become inert placeholders and no code
          from the file runs. The config is inferred from the weights' shapes,
          and `time_conditioning` and `model_length` are read from the saved
          hyper-parameters when they are there (an override that contradicts
          them is an error); pass anything else as `overrides`;
        - a Hugging Face Hub repo id (e.g. `kuleshov-group/mdlm-owt`), when
          `huggingface_hub` is installed and the network is there. Only
          `config.json` and safetensors weights are fetched; no remote code.

        Weights load with `strict=True`: a missing or unexpected key is an error.

        Args:
            source: Directory, `.ckpt` file or hub repo id.
            ema: Load the EMA weights of a Lightning checkpoint.
            **overrides: `DiTConfig` fields to set (e.g. `attention="sdpa"`).

        Raises:
            FileNotFoundError: If `source` is neither a path nor a reachable repo.
            ValueError: If the weights do not match the architecture, or an
                override contradicts a checkpoint's hyper-parameters.
        """
        path = Path(source)
        if path.is_dir():
            return cls._from_directory(path, ema=ema, **overrides)
        if path.is_file():
            return cls._from_lightning(path, ema=ema, **overrides)
        if looks_like_repo_id(str(source)):
            return cls._from_directory(download_pretrained(str(source)), ema=ema, **overrides)
        raise FileNotFoundError(f"`source` {str(source)!r} is not a file or directory")

    @classmethod
    def _from_directory(cls, directory: Path, *, ema: bool, **overrides: Any) -> "DiT":
        if ema:
            raise ValueError("`ema=True` needs a Lightning checkpoint; a directory holds one set")
        values, state, weights_path = read_pretrained(directory)
        config_path = directory / CONFIG_NAME
        try:
            config = DiTConfig.from_dict(values)
        except (ValueError, TypeError) as error:  # missing keys or bad values
            raise CorruptFileError(config_path, "DiT config", error) from None
        model = cls(replace(config, **overrides))
        try:
            model._load_backbone(state)
        except ValueError as error:
            raise CorruptFileError(weights_path, f"weight set for {config_path}", error) from None
        return model

    @classmethod
    def _from_lightning(cls, path: Path, *, ema: bool, **overrides: Any) -> "DiT":
        checkpoint = read_lightning(path)
        for name, value in checkpoint.settings.items():
            if name in overrides and overrides[name] != value:
                raise ValueError(
                    f"`{name}`={overrides[name]!r} contradicts {path.name}, whose "
                    f"hyper-parameters say {name}={value!r}; leave `{name}` out"
                )
        config = replace(_infer_config(checkpoint.state), **{**checkpoint.settings, **overrides})
        model = cls(config)
        model._load_backbone(checkpoint.state)
        if ema:
            if checkpoint.ema is None:
                raise ValueError(f"{path} holds no EMA weights (`ema.shadow_params`)")
            model._load_ema(checkpoint.ema)
        return model

    def _load_backbone(self, state: dict[str, Tensor]) -> None:
        stripped = {k.removeprefix(PREFIX): v for k, v in state.items()}
        try:
            self.load_state_dict(stripped, strict=True)
        except RuntimeError as error:
            raise ValueError(f"weights do not match the DiT architecture: {error}") from None

    def _load_ema(self, shadow: list[Tensor]) -> None:
        """EMA shadow parameters come in `parameters()` order (MDLM's EMA)."""
        params = list(self.parameters())
        if len(shadow) != len(params):
            raise ValueError(f"EMA has {len(shadow)} tensors; the model has {len(params)}")
        with torch.no_grad():
            for (name, param), value in zip(self.named_parameters(), shadow, strict=True):
                if param.shape != value.shape:
                    raise ValueError(
                        f"EMA tensor for {name} has shape {tuple(value.shape)}, "
                        f"expected {tuple(param.shape)}"
                    )
                param.copy_(value)


class DiTClassifier(nn.Module):
    r"""A noisy-sequence classifier: a DiT trunk, mean pooling and a linear head.

    Models $p_\phi(c \mid z_t)$ for classifier-based guidance: trained on
    $z_t \sim q(z_t \mid x)$ at $t \sim U[0, 1]$ with the labels of the clean
    $x$ (`discdiff.objectives.NoisyClassification`). It accepts token ids or
    a float one-hot `(B, L, vocab_size)` input, through which the first-order
    guidance differentiates.

    Args:
        config: The trunk's hyper-parameters (`vocab_size` counts the mask;
            `num_classes` of the config must be 0 — the trunk is not
            label-conditioned).
        num_classes: Number of classes $C$ the head predicts.
        schedule: Noise schedule giving $\sigma(t)$ when
            `config.time_conditioning`; unused otherwise.

    Example:
        >>> classifier = DiTClassifier(DiTConfig.micro(vocab_size=5), num_classes=3)
        >>> classifier(torch.full((2, 6), 4), torch.ones(2)).shape
        torch.Size([2, 3])
    """

    def __init__(self, config: DiTConfig, num_classes: int, *, schedule: Any = None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be at least 2; got {num_classes}")
        if config.num_classes:
            raise ValueError("the classifier's trunk must be unconditional (`num_classes=0`)")
        if config.time_conditioning and schedule is None:
            raise ValueError("a time-conditioned classifier needs the noise `schedule`")
        self.config, self.num_classes, self.schedule = config, num_classes, schedule
        self.time_conditioned = config.time_conditioning
        self.trunk = DiT(config)
        del self.trunk.output_layer  # the head below replaces the per-token output
        self.norm = LayerNorm(config.hidden_dim)
        self.head = nn.Linear(config.hidden_dim, num_classes)

    def forward(
        self,
        z_t: Tokens | Float[Tensor, "batch length model_vocab"],
        t: Float[Tensor, "batch"],
    ) -> Float[Tensor, "batch classes"]:
        r"""Class logits of $p_\phi(c \mid z_t)$, `(B, C)` in float32.

        Args:
            z_t: Noisy ids `(B, L)` (data ids or the mask id), or their float
                one-hot encoding `(B, L, vocab_size)`.
            t: Diffusion times `(B,)`.
        """
        if self.time_conditioned:
            sigma = -torch.log(self.schedule.alpha(t)).float()
        else:
            sigma = torch.zeros(z_t.shape[0], device=z_t.device)
        hidden, _ = self.trunk.features(z_t, sigma)
        return self.head(self.norm(hidden.float().mean(1))).float()


def _infer_config(state: dict[str, Tensor]) -> DiTConfig:
    """Read the architecture off `backbone.*` weight shapes (heads from the rotary table)."""
    try:
        vocab_size, hidden_dim = state[PREFIX + "vocab_embed.embedding"].shape
        cond_dim = state[PREFIX + "sigma_map.mlp.0.weight"].shape[0]
        head_dim = 2 * state[PREFIX + "rotary_emb.inv_freq"].shape[0]
    except KeyError as missing:
        raise ValueError(f"not an MDLM DiT state dict: no {missing}") from None
    n_blocks = sum(
        1 for k in state if k.startswith(PREFIX + "blocks.") and k.endswith(".norm1.weight")
    )
    return DiTConfig(
        hidden_dim=hidden_dim,
        cond_dim=cond_dim,
        n_blocks=n_blocks,
        n_heads=hidden_dim // head_dim,
        vocab_size=vocab_size,
    )
