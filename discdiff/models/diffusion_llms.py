r"""Open diffusion LLMs (LLaDA, Dream) as discdiff `Denoiser`s, with their tokenizers.

`load_diffusion_llm` reads a model directory (or fetches a Hub repo's
`config.json`, safetensors shards and tokenizer files, never its `*.py`),
picks the native module from `config.json`'s `model_type`, and wraps it in
`HuggingFaceDenoiser`, which relabels the model's mask id $m$ as the process's
mask id $V$ (vocabulary − 1) and applies SUBS. The tokenizer is read from
`tokenizer.json` by `transformers.PreTrainedTokenizerFast`, or else by the
concrete `transformers` class `tokenizer_config.json` names (Dream's
`DreamTokenizer` is Qwen2's); `auto_map` is never followed, `Auto*` classes
are refused and `trust_remote_code=False` is passed to every loader.
"""

import os
from pathlib import Path

import torch

from discdiff.models.attention import AttentionBackend
from discdiff.models.checkpoints import download_pretrained, looks_like_repo_id
from discdiff.models.dream import load_dream
from discdiff.models.hf import HuggingFaceDenoiser
from discdiff.models.llada import load_llada
from discdiff.models.llm import read_config
from discdiff.tokenizer_loader import TOKENIZER_ALIASES, RemoteCodeError, load_tokenizer

__all__ = [
    "DIFFUSION_LLMS",
    "HUB_FILES",
    "TOKENIZER_ALIASES",
    "RemoteCodeError",
    "load_diffusion_llm",
    "load_tokenizer",
    "resolve_model",
]

DIFFUSION_LLMS = {"llada": load_llada, "dream": load_dream}
"""`config.json` `model_type` (lower case) to the loader of its native module."""

HUB_FILES = [
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
]
"""What is fetched of a Hub repo: config, weights and tokenizer files; never code."""


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A local model directory: the path itself, or a Hub repo's files fetched.

    A path that exists is always used as is; only otherwise is an `owner/name`
    id fetched (with `huggingface_hub`, the `HUB_FILES` only).

    Raises:
        FileNotFoundError: If it is neither a directory nor a reachable repo id.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if looks_like_repo_id(str(name_or_path)):
        return download_pretrained(str(name_or_path), patterns=HUB_FILES)
    raise FileNotFoundError(f"`model`: {str(name_or_path)!r} is no directory and no Hub repo id")


def load_diffusion_llm(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    attention: AttentionBackend = "auto",
    tokenizer: bool = True,
) -> HuggingFaceDenoiser:
    """LLaDA or Dream as a `Denoiser`, its tokenizer as `.tokenizer`; runs no checkpoint code.

    Args:
        name_or_path: A model directory, or a Hub id such as `GSAI-ML/LLaDA-8B-Instruct`
            (fetched only when no such path exists).
        dtype: Cast the weights (default: as stored; bf16 for the released models).
        device: Where the weights go.
        attention: The attention backend (`"auto"`: xformers on CUDA when installed, else SDPA).
        tokenizer: Load the tokenizer too (`denoiser.tokenizer`).

    Returns:
        The denoiser: process ids in, SUBS log-probabilities over $V$ data tokens out;
        `encode` / `decode` map tokenizer ids to process ids and back.

    Raises:
        ValueError: If `config.json`'s `model_type` is not one of `DIFFUSION_LLMS`.
    """
    directory = resolve_model(name_or_path)
    kind = str(read_config(directory).get("model_type", "")).lower()
    if kind not in DIFFUSION_LLMS:
        raise ValueError(
            f"{directory}/config.json: model_type {kind!r} is not supported; expected one of "
            f"{sorted(DIFFUSION_LLMS)} (DiT.from_pretrained reads MDLM checkpoints)"
        )
    model = DIFFUSION_LLMS[kind](directory, dtype=dtype, device=device, attention=attention)
    denoiser = HuggingFaceDenoiser(
        model,
        mask_token_id=model.config.mask_token_id,
        model_vocab_size=model.config.vocab_size,
    )
    if tokenizer:
        denoiser.tokenizer = load_tokenizer(directory)
    return denoiser
