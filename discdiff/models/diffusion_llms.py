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
from discdiff.models.dream import DREAM_KEYS, load_dream
from discdiff.models.hf import HuggingFaceDenoiser
from discdiff.models.llada import LLADA_KEYS, load_llada
from discdiff.models.llm import _shards, key_renamer, read_config
from discdiff.models.pretrained import download_pretrained, looks_like_repo_id
from discdiff.tokenizer_loader import TOKENIZER_ALIASES, RemoteCodeError, load_tokenizer

__all__ = [
    "DIFFUSION_LLMS",
    "HUB_FILES",
    "TOKENIZER_ALIASES",
    "RemoteCodeError",
    "load_diffusion_llm",
    "load_tokenizer",
    "resolve_model",
    "save_diffusion_llm",
]

DIFFUSION_LLMS = {"llada": load_llada, "dream": load_dream}
"""`config.json` `model_type` (lower case) to the loader of its native module."""

_KEYS = {"llada": LLADA_KEYS, "dream": DREAM_KEYS}

_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
"""safetensors dtype names of the floating-point weights a model directory may store."""

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
        The denoiser: process ids in, log-probabilities over $V$ data tokens out
        (normalised over the whole vocabulary, `mask_mass=True`, so that
        confidences are scored as LLaDA's and Dream's own code scores them);
        `encode` / `decode` map tokenizer ids to process ids and back, and
        `denoiser.kind` is the `model_type` (`"llada"` or `"dream"`).

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
        mask_mass=True,
    )
    denoiser.kind = kind
    if tokenizer:
        denoiser.tokenizer = load_tokenizer(directory)
    return denoiser


def save_diffusion_llm(
    model: torch.nn.Module, base: str | os.PathLike, out: str | os.PathLike
) -> Path:
    """Write a native LLaDA / Dream module as a model directory in its base's file layout.

    The weights go to `out/model.safetensors` under the base checkpoint's own
    key names and dtypes (so `load_diffusion_llm`, and the model's original
    code, read them); `config.json` and the tokenizer files are copied from `base`.

    Args:
        model: The `BidirectionalTransformer` (e.g. fine-tuned, adapters merged).
        base: The model directory it was loaded from.
        out: The new model directory (created).

    Returns:
        `out`.

    Raises:
        ValueError: If the model's parameters do not match the base's keys.
    """
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    from discdiff._io import atomic_write

    base, out = Path(base), Path(out)
    kind = str(read_config(base).get("model_type", "")).lower()
    rename = key_renamer(_KEYS[kind])
    names: dict[str, str] = {}
    dtypes: dict[str, torch.dtype] = {}
    for shard in _shards(base):
        with safe_open(shard, framework="pt") as file:
            for key in file.keys():  # noqa: SIM118 (safe_open has no __iter__)
                target = rename(key)
                if target is not None:
                    names[target] = key
                    dtypes[target] = file.get_slice(key).get_dtype()
    state = model.state_dict()
    if set(state) != set(names):
        raise ValueError(
            f"the model's weights do not match {base}: missing "
            f"{sorted(set(names) - set(state))[:5]}, unknown {sorted(set(state) - set(names))[:5]}"
        )
    out.mkdir(parents=True, exist_ok=True)
    weights = {
        names[name]: value.detach().to("cpu", _DTYPES.get(dtypes[name], value.dtype)).contiguous()
        for name, value in state.items()
    }
    atomic_write(
        out / "model.safetensors",
        lambda tmp: save_file(weights, str(tmp), metadata={"format": "pt"}),
    )
    for pattern in HUB_FILES:
        if "safetensors" in pattern:
            continue
        for path in base.glob(pattern):
            shutil.copyfile(path, out / path.name)
    return out
