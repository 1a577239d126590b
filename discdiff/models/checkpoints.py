"""Reading foreign PyTorch checkpoints without running their code.

`torch.load(weights_only=True)` refuses pickles that name classes outside its
allow-list, such as the OmegaConf config that Lightning stores in MDLM's
checkpoints. Rather than unpickling those classes for real (which runs their
code), every such name is bound to `Opaque`, an inert placeholder that records
what it was given. Tensors and plain containers load as usual.
"""

import os
from typing import Any

import torch

__all__ = ["Opaque", "lightning_settings", "load_torch_checkpoint", "plain"]


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
