"""Tokenizers read from a model folder's data files, never from its code.

`transformers` can import Python shipped in a model folder: an `auto_map` in
`tokenizer_config.json`, or a `tokenizer_class` that is one of its `Auto*`
dispatchers, makes it look for checkpoint code and, when `trust_remote_code`
is left unset, ask on stdin whether to run it. `load_tokenizer` never gets
there: it reads `tokenizer.json` with `PreTrainedTokenizerFast`, or else
instantiates a concrete tokenizer class that `transformers` itself defines,
and passes `trust_remote_code=False` explicitly.
"""

import json
import os
from pathlib import Path
from typing import Any

from discdiff._io import CorruptFileError

__all__ = ["TOKENIZER_ALIASES", "RemoteCodeError", "load_tokenizer"]

TOKENIZER_ALIASES = {"DreamTokenizer": "Qwen2Tokenizer"}
"""Tokenizer classes shipped as checkpoint code, and the `transformers` class that
behaves the same (Dream's `tokenization_dream.py` is Qwen2's byte-level BPE)."""


class RemoteCodeError(ValueError):
    """A model folder whose tokenizer (or model) exists only as code in the folder.

    discdiff never runs such code; the folder needs a `tokenizer.json` or a
    `tokenizer_class` that is built into `transformers`.
    """


def _tokenizer_config(directory: Path) -> dict[str, Any]:
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptFileError(path, "tokenizer config", error) from None
    if not isinstance(config, dict):
        raise CorruptFileError(path, "tokenizer config", "not a JSON object")
    return config


def _builtin_class(name: object, path: Path, auto_map: object) -> type:
    """The concrete `transformers` tokenizer class called `name` (after `TOKENIZER_ALIASES`)."""
    import transformers

    cls = getattr(transformers, TOKENIZER_ALIASES.get(str(name), str(name)), None)
    concrete = isinstance(cls, type) and issubclass(cls, transformers.PreTrainedTokenizerBase)
    if not concrete:
        where = " (its auto_map points at the folder's code)" if auto_map else ""
        raise RemoteCodeError(
            f"{path}: tokenizer_class {str(name)[:80]!r} is not a tokenizer class of transformers"
            f"{where}; discdiff runs no code from a model folder: add a tokenizer.json"
        )
    return cls


def load_tokenizer(name_or_path: str | os.PathLike) -> Any:
    """The tokenizer of a model folder (or Hub id), without running any code from it.

    A folder with `tokenizer.json` is read by `PreTrainedTokenizerFast`;
    otherwise `tokenizer_config.json`'s `tokenizer_class` (through
    `TOKENIZER_ALIASES`) must name a concrete tokenizer class of
    `transformers` — never an `Auto*` dispatcher — and `auto_map` is never
    followed. A Hub id goes to `AutoTokenizer` with `trust_remote_code=False`.

    Args:
        name_or_path: A model folder, or a Hub id (which needs a network).

    Returns:
        A `transformers` tokenizer.

    Raises:
        FileNotFoundError: If the folder has no tokenizer files.
        RemoteCodeError: If the tokenizer class exists only as the folder's code.
        CorruptFileError: If `tokenizer_config.json` is not a JSON object.
    """
    import transformers

    directory = Path(name_or_path)
    if not directory.is_dir():
        return transformers.AutoTokenizer.from_pretrained(
            str(name_or_path), trust_remote_code=False
        )
    config = _tokenizer_config(directory)
    if (directory / "tokenizer.json").is_file():
        cls = transformers.PreTrainedTokenizerFast
    elif config:
        named = config.get("tokenizer_class")
        cls = _builtin_class(named, directory / "tokenizer_config.json", config.get("auto_map"))
    else:
        raise FileNotFoundError(f"no tokenizer.json or tokenizer_config.json in {directory}")
    return cls.from_pretrained(directory, trust_remote_code=False)
