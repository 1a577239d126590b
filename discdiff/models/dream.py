r"""Dream (Dream-org/Dream-v0-Base-7B, -Instruct) from its checkpoint files, without its code.

Dream is Qwen2.5 without the causal mask (biases on the query/key/value
projections), trained as a masked diffusion model with mask token id 151666.
It keeps its autoregressive initialisation's convention: the logits at
position $i$ predict token $i + 1$. Dream's own sampler shifts them right by
one (`logits = cat([logits[:, :1], logits[:, :-1]])`); the module does the
same (`shift_logits`), so position $i$ predicts token $i$ as every discdiff
sampler expects. The config is Qwen2's (`hidden_size`, `num_attention_heads`, …)
and the weights live under `model.*` and `lm_head`.
"""

import os
from typing import Any

import torch

from discdiff.models.attention import AttentionBackend
from discdiff.models.llm import (
    BidirectionalTransformer,
    TransformerConfig,
    key_renamer,
    read_config,
)

__all__ = ["DREAM_KEYS", "DREAM_MASK_ID", "dream_config", "load_dream"]

DREAM_MASK_ID = 151666
"""Dream's mask token id (`<|mask|>`), used when `config.json` names none."""

DREAM_KEYS = {
    r"model\.embed_tokens\.weight": "embed.weight",
    r"model\.norm\.weight": "norm.weight",
    r"lm_head\.weight": "head.weight",
    r"model\.layers\.(\d+)\.input_layernorm\.weight": r"layers.\1.attn_norm.weight",
    r"model\.layers\.(\d+)\.post_attention_layernorm\.weight": r"layers.\1.mlp_norm.weight",
    r"model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)": r"layers.\1.\2.\3",
    r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight": r"layers.\1.o.weight",
    r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight": r"layers.\1.gate.weight",
    r"model\.layers\.(\d+)\.mlp\.up_proj\.weight": r"layers.\1.up.weight",
    r"model\.layers\.(\d+)\.mlp\.down_proj\.weight": r"layers.\1.down.weight",
}
"""Dream's weight names (regular expressions) to `BidirectionalTransformer`'s."""


def dream_config(values: dict[str, Any], attention: AttentionBackend = "auto") -> TransformerConfig:
    """The `TransformerConfig` of a Dream `config.json`.

    Args:
        values: The parsed `config.json`.
        attention: The attention backend to use.

    Raises:
        ValueError: For a variant this module does not implement, naming the key.
    """
    if values.get("hidden_act", "silu") != "silu":
        raise ValueError(f"Dream config: hidden_act={values['hidden_act']!r} is not supported")
    if values.get("rope_scaling"):
        raise ValueError(f"Dream config: rope_scaling={values['rope_scaling']!r} is not supported")
    if values.get("use_sliding_window"):
        raise ValueError("Dream config: use_sliding_window=true is not supported")
    heads = int(values["num_attention_heads"])
    return TransformerConfig(
        vocab_size=int(values["vocab_size"]),
        hidden_size=int(values["hidden_size"]),
        intermediate_size=int(values["intermediate_size"]),
        layers=int(values["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(values.get("num_key_value_heads") or heads),
        mask_token_id=int(values.get("mask_token_id", DREAM_MASK_ID)),
        rope_theta=float(values.get("rope_theta", 10000.0)),
        norm_eps=float(values.get("rms_norm_eps", 1e-6)),
        qkv_bias=True,
        tied=bool(values.get("tie_word_embeddings", False)),
        shift_logits=True,
        attention=attention,
        context_length=values.get("max_position_embeddings"),
    )


def load_dream(
    directory: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    attention: AttentionBackend = "auto",
) -> BidirectionalTransformer:
    """Dream from a local directory (`config.json` + safetensors); runs none of its code.

    Args:
        directory: The model directory.
        dtype: Cast the weights (default: as stored, bf16 for the released models).
        device: Where the weights go.
        attention: The attention backend.

    Returns:
        The model in eval mode.
    """
    config = dream_config(read_config(directory), attention)
    renamer = key_renamer(DREAM_KEYS)
    if config.tied:  # tied checkpoints may still store lm_head; the embedding is the head
        base = renamer

        def renamer(key: str) -> str | None:
            return None if key == "lm_head.weight" else base(key)

    return BidirectionalTransformer.from_files(
        directory, config, renamer, dtype=dtype, device=device
    )
