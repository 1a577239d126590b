"""Checkpoint files and where they come from: reading and writing them, without running their code.

A model directory holds `config.json` and `model.safetensors` with the
network's weights under `backbone.*` keys (MDLM's Hugging Face layout;
`write_pretrained` / `read_pretrained`). A Lightning `.ckpt` from MDLM/ReMDM
training is a pickle (`read_lightning`). A Hugging Face Hub repo id is
fetched as a model directory (`download_pretrained`; `config.json` and
safetensors only). `DiT.from_pretrained` and `DiT.save_pretrained` build on
these.

Integrity: `write_pretrained` records the SHA-256 of the tensors (names,
dtypes, shapes and bytes) in the safetensors header's metadata
(`DIGEST_KEY`), and `read_pretrained` recomputes it, so a bit flipped inside
tensor data, which the format itself does not notice, is a `CorruptFileError`
naming the file. Files from elsewhere, without the record, load unchecked.

`torch.load(weights_only=True)` refuses pickles that name classes outside its
allow-list, such as the OmegaConf config that Lightning stores in MDLM's
checkpoints. Rather than unpickling those classes for real (which runs their
code), every such name is bound to `Opaque`, an inert placeholder that records
what it was given. Tensors and plain containers load as usual.
"""

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from discdiff._io import CorruptFileError, atomic_write

__all__ = [
    "CONFIG_NAME",
    "DIGEST_KEY",
    "PREFIX",
    "WEIGHTS_NAME",
    "LightningCheckpoint",
    "Opaque",
    "download_pretrained",
    "lightning_settings",
    "load_torch_checkpoint",
    "looks_like_repo_id",
    "plain",
    "read_lightning",
    "read_pretrained",
    "tensors_digest",
    "write_pretrained",
]

PREFIX = "backbone."
"""Key prefix of the network's weights in MDLM's files (its Lightning module's `backbone`)."""

CONFIG_NAME = "config.json"
"""The config file of a model directory."""

WEIGHTS_NAME = "model.safetensors"
"""The weights file of a model directory."""

DIGEST_KEY = "discdiff.sha256"
"""The safetensors metadata key holding `tensors_digest` of the file's tensors."""


def tensors_digest(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 (hex) of named tensors: each name, dtype, shape and bytes, by sorted name.

    Args:
        tensors: The tensors (any device; contiguous copies are hashed).

    Returns:
        64 hex digits, equal for equal tensors however they are laid out in a file.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class Opaque:
    """Stands in for an object of a class the checkpoint names; runs no code of its.

    `load_torch_checkpoint` maps every class a checkpoint names outside torch's
    safe list (e.g. Lightning's saved OmegaConf config) to this one, which only
    records the pickled arguments and state.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> "Opaque":
        """Record the constructor arguments; nothing else happens."""
        instance = super().__new__(cls)
        instance.args, instance.state = args, None
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"Opaque(args={self.args!r}, state={self.state!r})"


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """`torch.load(path, weights_only=True)`, with unknown classes made `Opaque`.

    Args:
        path: A file written by `torch.save`.

    Returns:
        The unpickled object, on the CPU.

    Raises:
        FileNotFoundError: If `path` does not exist.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {os.fspath(path)!r} not found")
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    with torch.serialization.safe_globals([(Opaque, name) for name in names]):
        return torch.load(path, map_location="cpu", weights_only=True)


def plain(value: Any) -> Any:
    """A config read as `Opaque` placeholders, as plain dicts, lists and values.

    OmegaConf keeps a container's children under `_content` and a leaf's value
    under `_val`; plain containers pass through, anything else is returned as is.

    Args:
        value: What `load_torch_checkpoint` gave for a config (or any part of it).

    Returns:
        The same tree with every OmegaConf node replaced by its content.
    """
    if isinstance(value, Opaque) and isinstance(value.state, dict):
        for key in ("_content", "_val"):
            if key in value.state:
                return plain(value.state[key])
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(item) for item in value)
    return value


def lightning_settings(checkpoint: Any) -> dict[str, Any]:
    """The DiT settings an MDLM/ReMDM Lightning checkpoint records in its hyper-parameters.

    Lightning saves the run's config under `hyper_parameters["config"]`;
    MDLM keeps `time_conditioning` at its top and the length at `model.length`.

    Args:
        checkpoint: A loaded Lightning checkpoint.

    Returns:
        `time_conditioning` and `model_length`, each only when recorded.
    """
    hyper = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    config = plain((hyper or {}).get("config")) if isinstance(hyper, dict) else None
    if not isinstance(config, dict):
        return {}
    found = {}
    if isinstance(config.get("time_conditioning"), bool):
        found["time_conditioning"] = config["time_conditioning"]
    model = config.get("model")
    if isinstance(model, dict) and isinstance(model.get("length"), int):
        found["model_length"] = model["length"]
    return found


# -- model directories -------------------------------------------------------------------


def write_pretrained(
    directory: str | os.PathLike, config: Mapping[str, Any], weights: Mapping[str, Tensor]
) -> Path:
    """Write `config.json` and `model.safetensors` into `directory`, each atomically.

    Each file is written to a temporary name in `directory` and renamed into
    place, so an interrupted save never leaves a half-written file. The
    weights' header records their `tensors_digest` (`DIGEST_KEY`).

    Args:
        directory: The model directory (created if needed).
        config: The architecture, as JSON-serialisable values.
        weights: The tensors to store, by key (e.g. `backbone.*`).

    Returns:
        The directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    metadata = {DIGEST_KEY: tensors_digest(tensors)}
    atomic_write(directory / WEIGHTS_NAME, lambda path: save_file(tensors, path, metadata))
    text = json.dumps(dict(config), indent=2)
    atomic_write(directory / CONFIG_NAME, lambda path: Path(path).write_text(text))
    return directory


def read_pretrained(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Tensor], Path]:
    """The config values, the weights and the weights' file of a model directory.

    The weights are `model.safetensors`, or a `pytorch_model.bin` (read with
    `load_torch_checkpoint`) when there is none.

    Returns:
        `(config, state, weights_path)`.

    Raises:
        FileNotFoundError: If `config.json` or the weights are missing.
        CorruptFileError: If either file is damaged, naming it, including
            safetensors whose tensors differ from the digest recorded in them.
    """
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as error:  # bad JSON or not UTF-8
        raise CorruptFileError(config_path, "JSON config", error) from None
    if not isinstance(config, dict):
        raise CorruptFileError(config_path, "JSON config", f"a {type(config).__name__}, no mapping")
    weights_path = directory / WEIGHTS_NAME
    if weights_path.is_file():
        try:
            with safe_open(weights_path, framework="pt") as file:
                recorded = (file.metadata() or {}).get(DIGEST_KEY)
            state = load_file(weights_path)
        except SafetensorError as error:
            raise CorruptFileError(weights_path, "safetensors file", error) from None
        if recorded is not None and tensors_digest(state) != recorded:
            raise CorruptFileError(
                weights_path,
                "safetensors file",
                f"its tensors differ from the SHA-256 recorded in it ({DIGEST_KEY}) "
                "when it was written: the file was changed or damaged since",
            )
    elif (directory / "pytorch_model.bin").is_file():
        weights_path = directory / "pytorch_model.bin"
        state = load_torch_checkpoint(weights_path)
    else:
        raise FileNotFoundError(f"no {WEIGHTS_NAME} (or pytorch_model.bin) in {directory}")
    return config, state, weights_path


# -- Lightning checkpoints ---------------------------------------------------------------


class LightningCheckpoint(NamedTuple):
    """What `read_lightning` finds in an MDLM/ReMDM Lightning checkpoint.

    Attributes:
        state: The network's weights (`backbone.*` keys).
        settings: The DiT settings its hyper-parameters record (`lightning_settings`).
        ema: The EMA shadow parameters in `parameters()` order, or `None`.
    """

    state: dict[str, Tensor]
    settings: dict[str, Any]
    ema: list[Tensor] | None


def read_lightning(path: str | os.PathLike) -> LightningCheckpoint:
    """Read a Lightning `.ckpt` (no code from it runs; see `load_torch_checkpoint`).

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If it holds no state dict.
    """
    checkpoint = load_torch_checkpoint(path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict")
    shadow = (checkpoint.get("ema") or {}).get("shadow_params")
    return LightningCheckpoint(
        state={k: v for k, v in state.items() if k.startswith(PREFIX)},
        settings=lightning_settings(checkpoint),
        ema=None if shadow is None else list(shadow),
    )


# -- the Hugging Face Hub ----------------------------------------------------------------


def looks_like_repo_id(source: str) -> bool:
    """Whether `source` reads as a Hub repo id, `owner/name` (not a relative path)."""
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~"))


def download_pretrained(repo_id: str, patterns: list[str] | None = None) -> Path:
    """Fetch a Hub repo's `config.json` and safetensors weights; no remote code.

    Args:
        repo_id: `owner/name`.
        patterns: The files to fetch (default `config.json` and `*.safetensors`).

    Returns:
        The local model directory.

    Raises:
        FileNotFoundError: If `huggingface_hub` is missing or the repo is not reachable.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local path, and loading from the Hugging Face Hub needs "
            "the huggingface_hub package"
        ) from None
    try:
        return Path(
            snapshot_download(repo_id, allow_patterns=patterns or [CONFIG_NAME, "*.safetensors"])
        )
    except Exception as error:  # the hub client raises many kinds; all mean "not reachable"
        raise FileNotFoundError(
            f"could not fetch {repo_id!r} from the Hugging Face Hub ({type(error).__name__}: "
            f"{error}); pass a local directory instead"
        ) from None
