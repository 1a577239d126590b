r"""Bidirectional transformer LMs (LLaDA, Dream) built natively from their checkpoint files.

The open masked-diffusion LLMs are LLaMA/Qwen2-style transformers without the
causal mask. Each layer is

$$h \leftarrow h + W_o\,\mathrm{Attn}(R(W_q \bar h), R(W_k \bar h), W_v \bar h),
\quad \bar h = \mathrm{RMSNorm}(h),$$

$$h \leftarrow h + W_{down}\big(\mathrm{SiLU}(W_{gate} \bar h) \odot W_{up} \bar h\big),
\quad \bar h = \mathrm{RMSNorm}(h),$$

with $\mathrm{RMSNorm}(x) = w \odot x / \sqrt{\overline{x^2} + \epsilon}$ (computed in float32)
and rotary embeddings $R$ on the two halves of each head (`rotate_half`). The
checkpoint's own modeling code (`auto_map`) is never imported or run: the
weights are read from the safetensors shards by key name (memory-mapped with
`safetensors.safe_open`) and the config from `config.json`. `llada` and `dream`
say how each model's files map onto `TransformerConfig` and this module's
parameter names.
"""

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int, Shaped
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from discdiff._checks import validation_enabled as _checking
from discdiff._io import CorruptFileError
from discdiff.models.attention import AttentionBackend, attention
from discdiff.models.cache import KVCache, splice
from discdiff.models.pretrained import CONFIG_NAME

__all__ = [
    "BidirectionalTransformer",
    "LMOutput",
    "TransformerConfig",
    "key_renamer",
    "read_config",
    "read_safetensors",
]


@dataclass(frozen=True)
class TransformerConfig:
    r"""The shape of a bidirectional LLaMA/Qwen2-style transformer.

    Attributes:
        vocab_size: Rows of the embedding and width of the logits (the model's vocabulary).
        hidden_size: Model width $d$.
        intermediate_size: Width of the SwiGLU MLP.
        layers: Number of layers.
        heads: Query heads $H$ ($d$ divisible by $H$).
        kv_heads: Key/value heads ($H$ divisible by it; fewer than $H$ is grouped-query attention).
        mask_token_id: The model's mask token id.
        rope_theta: Base of the rotary frequencies.
        norm_eps: $\\epsilon$ of RMSNorm.
        qkv_bias: Whether the query/key/value projections have biases (Qwen2, Dream).
        tied: Whether the output head reuses the embedding.
        shift_logits: Whether logits at position $i$ predict token $i + 1$ (Dream's
            convention, inherited from its autoregressive initialisation); they are
            shifted back so that position $i$ predicts token $i$.
        attention: The attention backend (`"auto"`: xformers on CUDA when installed, else SDPA).
        context_length: The longest sequence the model was trained on (`None`: unknown).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    kv_heads: int
    mask_token_id: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    qkv_bias: bool = False
    tied: bool = False
    shift_logits: bool = False
    attention: AttentionBackend = "auto"
    context_length: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "layers",
            "heads",
            "kv_heads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1; got {getattr(self, name)}")
        if self.hidden_size % self.heads or self.heads % self.kv_heads:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `heads` ({self.heads}) "
                f"and `heads` by `kv_heads` ({self.kv_heads})"
            )
        if (self.hidden_size // self.heads) % 2:
            raise ValueError(f"the head size {self.hidden_size // self.heads} must be even (RoPE)")
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise ValueError(
                f"`mask_token_id` must lie in 0..{self.vocab_size - 1}; got {self.mask_token_id}"
            )

    @property
    def head_dim(self) -> int:
        """Size of one head, $d / H$."""
        return self.hidden_size // self.heads


class LMOutput(NamedTuple):
    """What `BidirectionalTransformer` returns (`.logits`, as a `transformers` model does)."""

    logits: Float[Tensor, "batch length vocab"]


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class _Norm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return _rms_norm(x, self.weight, self.eps)


class _Layer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d, kv = config.hidden_size, config.kv_heads * config.head_dim
        self.config = config
        self.attn_norm = _Norm(d, config.norm_eps)
        self.q = nn.Linear(d, d, bias=config.qkv_bias)
        self.k = nn.Linear(d, kv, bias=config.qkv_bias)
        self.v = nn.Linear(d, kv, bias=config.qkv_bias)
        self.o = nn.Linear(d, d, bias=False)
        self.mlp_norm = _Norm(d, config.norm_eps)
        self.gate = nn.Linear(d, config.intermediate_size, bias=False)
        self.up = nn.Linear(d, config.intermediate_size, bias=False)
        self.down = nn.Linear(config.intermediate_size, d, bias=False)

    def forward(
        self,
        h: Tensor,
        cos: Tensor,
        sin: Tensor,
        padding_mask: Tensor | None,
        past: tuple[Tensor, Tensor, int] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The layer's output and the keys and values it attended to (`kv_heads` heads).

        `past = (keys, values, offset)`: the other positions' keys and values;
        this call's replace positions `offset ..` of them.
        """
        c = self.config
        batch, length, _ = h.shape
        x = self.attn_norm(h)
        q = self.q(x).view(batch, length, c.heads, c.head_dim)
        k = self.k(x).view(batch, length, c.kv_heads, c.head_dim)
        v = self.v(x).view(batch, length, c.kv_heads, c.head_dim)
        q = (q.float() * cos + _rotate_half(q.float()) * sin).to(q.dtype)
        k = (k.float() * cos + _rotate_half(k.float()) * sin).to(k.dtype)
        if past is not None:
            k, v = splice(past[0], k, past[2]), splice(past[1], v, past[2])
        keys, values = k, v
        if c.kv_heads != c.heads:
            k = k.repeat_interleave(c.heads // c.kv_heads, dim=2)
            v = v.repeat_interleave(c.heads // c.kv_heads, dim=2)
        att = attention(q, k, v, backend=c.attention, padding_mask=padding_mask)
        h = h + self.o(att.reshape(batch, length, c.hidden_size))
        x = self.mlp_norm(h)
        return h + self.down(F.silu(self.gate(x)) * self.up(x)), keys, values


class BidirectionalTransformer(nn.Module):
    """A LLaMA/Qwen2-style transformer without the causal mask: ids to logits.

    Called like a `transformers` model, `model(input_ids=, attention_mask=).logits`,
    so `HuggingFaceDenoiser` wraps it unchanged.

    Args:
        config: Its shape.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.layers))
        self.norm = _Norm(config.hidden_size, config.norm_eps)
        self.head = (
            None if config.tied else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        )
        self.gradient_checkpointing = False
        """Recompute each layer in the backward pass instead of storing its activations."""

    def _rotary(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        dim = self.config.head_dim
        inv_freq = 1.0 / (
            self.config.rope_theta
            ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
        )
        freqs = positions.float()[..., None] * inv_freq  # (B or 1, L, D/2)
        angles = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]  # (B or 1, L, 1, D)
        return angles.cos(), angles.sin()

    def forward(
        self,
        input_ids: Int[Tensor, "batch length"],
        attention_mask: Shaped[Tensor, "batch length"] | None = None,
        position_ids: Int[Tensor, "batch length"] | None = None,
    ) -> LMOutput:
        r"""Logits for every position (position $i$ predicting token $i$).

        Args:
            input_ids: Token ids `(B, L)` in the model's vocabulary.
            attention_mask: `(B, L)`, true/1 at real tokens; padded keys get no weight.
            position_ids: `(B, L)` rotary positions (default `0 .. L - 1`); left-padded
                rows start at 0 on their first real token, as when run alone.

        Returns:
            `LMOutput` with logits `(B, L, vocab_size)` in the weights' dtype.
        """
        padding_mask = None if attention_mask is None else attention_mask.bool()
        if padding_mask is not None and bool(padding_mask.all()):
            padding_mask = None
        logits, _ = self._run(input_ids, padding_mask, position_ids, None, 0, keep=False)
        if self.config.shift_logits:
            logits = torch.cat((logits[:, :1], logits[:, :-1]), dim=1)
        return LMOutput(logits)

    def step(
        self,
        input_ids: Int[Tensor, "batch length"],
        padding_mask: Bool[Tensor, "batch length"] | None = None,
        *,
        cache: KVCache | None = None,
        offset: int = 0,
        position_ids: Int[Tensor, "batch length"] | None = None,
    ) -> tuple[Float[Tensor, "batch length vocab"], KVCache]:
        r"""Logits of `input_ids` at positions `offset ..`, the other positions read from `cache`.

        The cache interface of `DiT.step`: the keys and values of positions
        `offset .. offset + n - 1` are computed from `input_ids` and replace the
        cache's there; every other cached position is read as stored. With
        full attention the cached positions did not see these tokens, so
        this is Fast-dLLM's approximation (prefix cache: a cache of the
        positions before `offset`; dual cache: of every position).

        Args:
            input_ids: Ids `(B, n)` of the positions to run.
            padding_mask: `(B, n)`, `True` at real tokens.
            cache: Keys and values of positions `0 .. C - 1` (`offset <= C`);
                `None` runs `input_ids` alone (then `offset` must be 0).
            offset: Position of the first id.
            position_ids: `(B, n)` rotary positions (default `offset .. offset + n - 1`).

        Returns:
            Each position's own logits `(B, n, vocab_size)` (not shifted by
            `shift_logits`: the caller shifts), and the cache of positions
            `0 .. max(C, offset + n) - 1` with this call's keys and values spliced in.

        Raises:
            ValueError: For an `offset` outside `[0, C]`, or ids outside the vocabulary.
        """
        cached = 0 if cache is None else cache.length
        if not 0 <= offset <= cached:
            raise ValueError(
                f"`offset` must lie in [0, {cached}] (the cached length); got {offset}"
            )
        if position_ids is None:
            length = input_ids.shape[1]
            position_ids = torch.arange(offset, offset + length, device=input_ids.device)[None]
        if cache is not None and (padding_mask is not None or cache.padding_mask is not None):
            batch = input_ids.shape[0]
            real = torch.ones(batch, cached, dtype=torch.bool, device=input_ids.device)
            fresh = torch.ones(batch, input_ids.shape[1], dtype=torch.bool, device=input_ids.device)
            padding_mask = splice(
                real if cache.padding_mask is None else cache.padding_mask,
                fresh if padding_mask is None else padding_mask,
                offset,
            )
        return self._run(input_ids, padding_mask, position_ids, cache, offset, keep=True)

    def _run(
        self,
        input_ids: Tensor,
        padding_mask: Tensor | None,
        position_ids: Tensor | None,
        cache: KVCache | None,
        offset: int,
        *,
        keep: bool,
    ) -> tuple[Tensor, KVCache | None]:
        """Unshifted logits, and the keys/values of every attended position when `keep`."""
        if _checking() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(
                f"`input_ids` must lie in 0..{self.config.vocab_size - 1}; got "
                f"{int(input_ids.min())}..{int(input_ids.max())}"
            )
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        cos, sin = self._rotary(position_ids)
        h = self.embed(input_ids)
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            past = None if cache is None else (cache.keys[i], cache.values[i], offset)
            if recompute:
                h, k, v = checkpoint(layer, h, cos, sin, padding_mask, past, use_reentrant=False)
            else:
                h, k, v = layer(h, cos, sin, padding_mask, past)
            if keep:
                keys.append(k)
                values.append(v)
        h = self.norm(h)
        weight = self.embed.weight if self.head is None else self.head.weight
        logits = F.linear(h, weight)
        return logits, (KVCache(tuple(keys), tuple(values), padding_mask) if keep else None)

    @classmethod
    def from_files(
        cls,
        directory: str | os.PathLike,
        config: TransformerConfig,
        rename: Callable[[str], str | None],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
    ) -> "BidirectionalTransformer":
        """Build the model and fill it from a directory's safetensors shards.

        Args:
            directory: Holds `model.safetensors`, or shards listed in
                `model.safetensors.index.json` (or `*.safetensors`).
            config: The model's shape (from `config.json`).
            rename: A checkpoint key to this module's parameter name (`None`: ignore the key).
            dtype: Cast the weights to this dtype (default: keep the checkpoint's, e.g. bf16).
            device: Where the weights go.

        Returns:
            The model in eval mode.

        Raises:
            ValueError: If the files lack weights the model needs, or hold
                unknown ones, or a shape differs (naming the key and file).
        """
        state = read_safetensors(directory, rename, device=device, dtype=dtype)
        with torch.device("meta"):
            model = cls(config)
        expected = dict(model.state_dict())
        missing = sorted(set(expected) - set(state))
        unknown = sorted(set(state) - set(expected))
        if missing or unknown:
            raise ValueError(
                f"the weights in {directory} do not match the config: missing {missing[:5]}, "
                f"unknown {unknown[:5]}"
            )
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise ValueError(
                    f"weight {name!r} in {directory} has shape {tuple(tensor.shape)}; the config "
                    f"implies {tuple(expected[name].shape)}"
                )
        model.load_state_dict(state, assign=True)
        return model.eval()


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The `config.json` of a model directory, as a mapping.

    Raises:
        FileNotFoundError: If there is none.
        CorruptFileError: If it is not a JSON object.
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        values = json.loads(path.read_text())
    except ValueError as error:
        raise CorruptFileError(path, "JSON config", error) from None
    if not isinstance(values, dict):
        raise CorruptFileError(path, "JSON config", f"a {type(values).__name__}, no mapping")
    return values


def _shards(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as error:
            raise CorruptFileError(index, "safetensors index", error) from None
        return [directory / name for name in sorted(set(weight_map.values()))]
    shards = sorted(directory.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"no *.safetensors weights in {directory}")
    return shards


def read_safetensors(
    directory: str | os.PathLike,
    rename: Callable[[str], str | None] = lambda key: key,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> dict[str, Tensor]:
    """Every tensor in a directory's safetensors shards, under new names.

    The shards are memory-mapped and read one tensor at a time, each put on
    `device` (and cast) as it is read, so a GPU load never holds the whole
    model in host memory and a cast never holds two copies of it.

    Args:
        directory: The model directory.
        rename: A stored key to the name to keep it under (`None`: skip it).
        device: Where the tensors go.
        dtype: Cast each tensor to this dtype (default: keep the stored one).

    Returns:
        `{name: tensor}`.

    Raises:
        CorruptFileError: If a shard is damaged, naming it.
        ValueError: If two stored keys get the same name.
    """
    state: dict[str, Tensor] = {}
    for shard in _shards(Path(directory)):
        try:
            with safe_open(shard, framework="pt", device=str(device)) as file:
                for key in file.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    name = rename(key)
                    if name is None:
                        continue
                    if name in state:
                        raise ValueError(f"{shard}: key {key!r} names {name!r} twice")
                    tensor = file.get_tensor(key)
                    state[name] = tensor if dtype is None else tensor.to(dtype)
        except SafetensorError as error:
            raise CorruptFileError(shard, "safetensors file", error) from None
    return state


def key_renamer(rules: Mapping[str, str]) -> Callable[[str], str | None]:
    r"""A `rename` from regular expressions: the first full match wins.

    A key no rule matches keeps its name, so loading reports it as unknown.

    Args:
        rules: `{pattern: replacement}` (`re.fullmatch`, `\1`-style groups).
    """
    compiled = [(re.compile(pattern), target) for pattern, target in rules.items()]

    def rename(key: str) -> str | None:
        for pattern, target in compiled:
            match = pattern.fullmatch(key)
            if match:
                return match.expand(target)
        return key

    return rename
