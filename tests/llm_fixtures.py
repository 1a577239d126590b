"""Tiny random LLaDA / Dream checkpoints in the released models' exact file layouts.

Deterministic (seeded) so that the reference logits in `tests/data/llm_reference.json`,
computed once from each model's own modeling code, stay valid.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

WORDS = "the a cat dog sat ran on under mat log and then big small red blue . ,".split()  # noqa: SIM905
VOCAB = 64
INPUT_IDS = [
    [3, 7, 8, 12, 60, 60, 60, 5, 9, 60, 61, 0],
    [10, 60, 4, 60, 60, 13, 14, 2, 60, 1, 63, 6],
]
"""The input of the reference logits (60: the tiny models' mask id; 61, 63: unused ids)."""

LLADA_CONFIG = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 32,
    "embedding_dropout": 0.0,
    "embedding_size": VOCAB,
    "eos_token_id": 2,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 60,
    "max_sequence_length": 64,
    "mlp_hidden_size": 48,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 4,
    "n_kv_heads": 4,
    "n_layers": 2,
    "pad_token_id": 1,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": VOCAB,
    "weight_tying": False,
}

DREAM_CONFIG = {
    "architectures": ["DreamModel"],
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_dream.DreamConfig",
        "AutoModel": "modeling_dream.DreamModel",
    },
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 48,
    "mask_token_id": 60,
    "max_position_embeddings": 64,
    "max_window_layers": 2,
    "model_type": "Dream",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "pad_token_id": 1,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "transformers_version": "4.46.2",
    "use_cache": False,
    "use_sliding_window": False,
    "vocab_size": VOCAB,
}


def _weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
            out[name] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            out[name] = 0.2 * torch.randn(shape, generator=generator)
    return out


def write_tokenizer(directory: Path, mask_token: str) -> None:
    """A word-level tokenizer over `WORDS` (ids 3..), specials 0-2, the mask at id 60."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2}
    vocab.update({word: 3 + i for i, word in enumerate(WORDS)})
    for i in range(len(vocab), VOCAB):
        vocab[f"<|reserved_{i}|>"] = i
    del vocab["<|reserved_60|>"]
    vocab[mask_token] = 60
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<s>", "<pad>", "</s>", mask_token])
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "pad_token": "<pad>",
                "chat_template": "{% for m in messages %}<s> {{ m['content'] }} {% endfor %}",
            }
        )
    )


def write_tiny_llada(
    directory: Path, seed: int = 0, tokenizer: bool = True, quiet_mask: bool = False
) -> Path:
    """A 2-layer LLaDA in LLaDA-8B's layout: config.json, two shards and their index.

    `quiet_mask` zeroes the output row of the mask token (its logit is 0 everywhere, beside
    random ones for the other tokens), so that, as in the released models, the mask is never
    the most likely token, while its probability still counts in the softmax.
    """
    directory.mkdir(parents=True, exist_ok=True)
    d, h, v = 32, 48, VOCAB
    shapes = {"model.transformer.wte.weight": (v, d)}
    for i in range(2):
        b = f"model.transformer.blocks.{i}."
        shapes.update(
            {
                b + "attn_norm.weight": (d,),
                b + "q_proj.weight": (d, d),
                b + "k_proj.weight": (d, d),
                b + "v_proj.weight": (d, d),
                b + "attn_out.weight": (d, d),
                b + "ff_norm.weight": (d,),
                b + "ff_proj.weight": (h, d),
                b + "up_proj.weight": (h, d),
                b + "ff_out.weight": (d, h),
            }
        )
    shapes.update(
        {"model.transformer.ln_f.weight": (d,), "model.transformer.ff_out.weight": (v, d)}
    )
    weights = _weights(shapes, seed)
    if quiet_mask:
        weights["model.transformer.ff_out.weight"][60] = 0.0
    names = list(weights)
    shards = {
        "model-00001-of-00002.safetensors": names[:8],
        "model-00002-of-00002.safetensors": names[8:],
    }
    for file, keys in shards.items():
        save_file({k: weights[k] for k in keys}, directory / file, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (directory / "config.json").write_text(json.dumps(LLADA_CONFIG, indent=2))
    if tokenizer:
        write_tokenizer(directory, "<|mdm_mask|>")
    return directory


def write_tiny_dream(
    directory: Path, seed: int = 1, tokenizer: bool = True, quiet_mask: bool = False
) -> Path:
    """A 2-layer Dream (grouped-query: 4 heads, 2 key/value heads) in Dream-7B's layout.

    `quiet_mask`: as for `write_tiny_llada`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    d, h, v, kv = 32, 48, VOCAB, 16
    shapes = {"model.embed_tokens.weight": (v, d)}
    for i in range(2):
        b = f"model.layers.{i}."
        shapes.update(
            {
                b + "input_layernorm.weight": (d,),
                b + "self_attn.q_proj.weight": (d, d),
                b + "self_attn.q_proj.bias": (d,),
                b + "self_attn.k_proj.weight": (kv, d),
                b + "self_attn.k_proj.bias": (kv,),
                b + "self_attn.v_proj.weight": (kv, d),
                b + "self_attn.v_proj.bias": (kv,),
                b + "self_attn.o_proj.weight": (d, d),
                b + "post_attention_layernorm.weight": (d,),
                b + "mlp.gate_proj.weight": (h, d),
                b + "mlp.up_proj.weight": (h, d),
                b + "mlp.down_proj.weight": (d, h),
            }
        )
    shapes.update({"model.norm.weight": (d,), "lm_head.weight": (v, d)})
    weights = _weights(shapes, seed)
    if quiet_mask:
        weights["lm_head.weight"][60] = 0.0
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(DREAM_CONFIG, indent=2))
    if tokenizer:
        write_tokenizer(directory, "<|mask|>")
    return directory


MDLM_HUB_CONFIG = {
    "architectures": ["MDLM"],
    "auto_map": {
        "AutoConfig": "configuration_mdlm.MDLMConfig",
        "AutoModelForMaskedLM": "modeling_mdlm.MDLM",
    },
    "cond_dim": 16,
    "dropout": 0.1,
    "hidden_dim": 32,
    "model_length": 64,
    "model_type": "mdlm",
    "n_blocks": 2,
    "n_heads": 4,
    "return_dict": False,
    "time_conditioning": False,
    "torch_dtype": "float32",
    "transformers_version": "4.38.2",
    "vocab_size": 21,
}
"""kuleshov-group/mdlm-owt's config.json keys, at a tiny size."""

MDLM_INPUT_IDS = [[0, 4, 20, 20, 7, 19, 3, 20, 11, 2], [20, 20, 5, 9, 1, 20, 14, 16, 20, 8]]
MDLM_SIGMAS = [0.0, 0.7]


def write_tiny_mdlm(directory: Path, seed: int = 2) -> Path:
    """A 2-block MDLM DiT in the Hub layout: config.json + model.safetensors (`backbone.*`)."""
    from test_models import mdlm_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    c = MDLM_HUB_CONFIG
    state = mdlm_state_dict(
        c["hidden_dim"],
        c["cond_dim"],
        c["n_blocks"],
        c["n_heads"],
        c["vocab_size"],
        torch.Generator().manual_seed(seed),
    )
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(c, indent=2))
    return directory


def write_bpe_tokenizer(directory: Path) -> None:
    """Dream's tokenizer files without tokenizer.json: vocab.json, merges.txt and a
    tokenizer_config.json naming `DreamTokenizer` through `auto_map`, mask `<|mask|>`."""
    chars = [*"abcdefghijklmnopqrstuvwxyz.,", "\u0120"]  # "\u0120": byte-level BPE's space
    merges = ["t h", "th e", "\u0120 c", "\u0120c a", "\u0120ca t"]
    vocab = {c: i for i, c in enumerate(chars)}
    for merge in merges:
        vocab[merge.replace(" ", "")] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    mask = {"content": "<|mask|>", "special": True, "lstrip": False, "rstrip": False}
    config = {
        "tokenizer_class": "DreamTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "added_tokens_decoder": {
            str(len(vocab)): {**mask, "normalized": False, "single_word": False}
        },
        "eos_token": "<|endoftext|>",
        "mask_token": "<|mask|>",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
