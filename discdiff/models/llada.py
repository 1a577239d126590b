r"""LLaDA (GSAI-ML/LLaDA-8B-Base, -Instruct) from its checkpoint files, without its code.

LLaDA is a LLaMA-style transformer without the causal mask, trained as a
masked diffusion model with mask token id 126336. Its `config.json` uses
OLMo's keys (`d_model`, `n_heads`, `n_layers`, `mlp_hidden_size`, …) and its
weights live under `model.transformer.*`; `llada_config` and `LLADA_KEYS`
map both onto `BidirectionalTransformer`. Options the released models do not
use (ALiBi, learnt positions, QK-norm, logit scaling, biases) are refused
with an error rather than silently ignored.
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

__all__ = ["LLADA_KEYS", "LLADA_MASK_ID", "llada_config", "load_llada"]

LLADA_MASK_ID = 126336
"""LLaDA's mask token id (`<|mdm_mask|>`), used when `config.json` names none."""

LLADA_KEYS = {
    r"model\.transformer\.wte\.weight": "embed.weight",
    r"model\.transformer\.ln_f\.weight": "norm.weight",
    r"model\.transformer\.ff_out\.weight": "head.weight",
    r"model\.transformer\.blocks\.(\d+)\.attn_norm\.weight": r"layers.\1.attn_norm.weight",
    r"model\.transformer\.blocks\.(\d+)\.ff_norm\.weight": r"layers.\1.mlp_norm.weight",
    r"model\.transformer\.blocks\.(\d+)\.q_proj\.(weight|bias)": r"layers.\1.q.\2",
    r"model\.transformer\.blocks\.(\d+)\.k_proj\.(weight|bias)": r"layers.\1.k.\2",
    r"model\.transformer\.blocks\.(\d+)\.v_proj\.(weight|bias)": r"layers.\1.v.\2",
    r"model\.transformer\.blocks\.(\d+)\.attn_out\.weight": r"layers.\1.o.weight",
    r"model\.transformer\.blocks\.(\d+)\.ff_proj\.weight": r"layers.\1.gate.weight",
    r"model\.transformer\.blocks\.(\d+)\.up_proj\.weight": r"layers.\1.up.weight",
    r"model\.transformer\.blocks\.(\d+)\.ff_out\.weight": r"layers.\1.down.weight",
}
"""LLaDA's weight names (regular expressions) to `BidirectionalTransformer`'s."""

# config key: the value discdiff's module implements (others are refused)
_REQUIRED = {
    "alibi": False,
    "rope": True,
    "block_type": "llama",
    "attention_layer_norm": False,
    "include_bias": False,
    "input_emb_norm": False,
    "scale_logits": False,
    "layer_norm_type": "rms",
    "block_group_size": 1,
}


def llada_config(values: dict[str, Any], attention: AttentionBackend = "auto") -> TransformerConfig:
    """The `TransformerConfig` of a LLaDA `config.json`.

    Args:
        values: The parsed `config.json`.
        attention: The attention backend to use.

    Raises:
        ValueError: If the config asks for a variant this module does not implement,
            naming the key.
    """
    for key, wanted in _REQUIRED.items():
        if key in values and values[key] != wanted:
            raise ValueError(
                f"LLaDA config: {key}={values[key]!r} is not supported (only {wanted!r})"
            )
    if values.get("activation_type", "silu") != "silu":
        raise ValueError(
            f"LLaDA config: activation_type={values['activation_type']!r} is not supported "
            "(only 'silu')"
        )
    d_model = int(values["d_model"])
    heads = int(values["n_heads"])
    kv_heads = values.get("n_kv_heads")
    if values.get("multi_query_attention"):
        kv_heads = 1
    hidden = values.get("mlp_hidden_size") or values.get("mlp_ratio", 4) * d_model
    return TransformerConfig(
        vocab_size=int(values.get("embedding_size") or values["vocab_size"]),
        hidden_size=d_model,
        intermediate_size=int(hidden),
        layers=int(values["n_layers"]),
        heads=heads,
        kv_heads=int(kv_heads or heads),
        mask_token_id=int(values.get("mask_token_id", LLADA_MASK_ID)),
        rope_theta=float(values.get("rope_theta", 10000.0)),
        norm_eps=float(values.get("rms_norm_eps", 1e-5)),
        qkv_bias=bool(values.get("include_qkv_bias", False)),
        tied=bool(values.get("weight_tying", False)),
        attention=attention,
        context_length=values.get("max_sequence_length"),
    )


def load_llada(
    directory: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    attention: AttentionBackend = "auto",
) -> BidirectionalTransformer:
    """LLaDA from a local directory (`config.json` + safetensors); runs none of its code.

    Args:
        directory: The model directory.
        dtype: Cast the weights (default: as stored, bf16 for the released models).
        device: Where the weights go.
        attention: The attention backend.

    Returns:
        The model in eval mode.
    """
    config = llada_config(read_config(directory), attention)
    return BidirectionalTransformer.from_files(
        directory, config, key_renamer(LLADA_KEYS), dtype=dtype, device=device
    )
