"""Training checkpoints that are never half-written.

A checkpoint is a directory `step-NNNNNNNN/` with `model.safetensors`,
`ema.safetensors` and `state.pt` (optimiser, step, data position, RNG
states; loaded with `weights_only=True`). It is written under a temporary
name and renamed into place, then the `latest` pointer is replaced
atomically, so a crash at any moment leaves the previous checkpoint intact
and `latest` pointing at a complete one. A checkpoint is only ever removed
by first renaming it to a temporary name, so every `step-*` directory is
complete: a process killed (SIGKILL) at any moment never leaves a partial
checkpoint that a restart could read.
"""

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from discdiff._io import CorruptFileError, atomic_write

__all__ = ["CheckpointStore"]


class CheckpointStore:
    """Numbered checkpoints in one directory, the newest `keep` of them kept.

    Args:
        directory: Where the checkpoints live.
        keep: How many to keep.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def _numbered(self) -> list[Path]:
        return sorted(self.directory.glob("step-*"), key=lambda p: p.name)

    def save(
        self,
        step: int,
        weights: dict[str, Tensor],
        ema: dict[str, Tensor] | None,
        state: dict[str, Any],
    ) -> Path:
        """Write checkpoint `step` and point `latest` at it.

        Returns:
            The checkpoint's directory.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(".tmp-*"):  # left by a crash mid-save
            shutil.rmtree(stale, ignore_errors=True)
        final = self.directory / f"step-{step:08d}"
        tmp = Path(tempfile.mkdtemp(dir=self.directory, prefix=".tmp-"))
        try:
            save_file(_plain(weights), tmp / "model.safetensors")
            if ema is not None:
                save_file(_plain(ema), tmp / "ema.safetensors")
            torch.save(state, tmp / "state.pt")
            if final.exists():
                self._discard(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write(self.directory / "latest", lambda tmp: Path(tmp).write_text(final.name))
        for old in self._numbered()[: -self.keep]:
            self._discard(old)
        return final

    def _discard(self, checkpoint: Path) -> None:
        """Rename a checkpoint out of `step-*` (atomic), then delete it."""
        doomed = Path(tempfile.mkdtemp(dir=self.directory, prefix=".tmp-old-"))
        os.replace(checkpoint, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or `None`."""
        pointer = self.directory / "latest"
        if pointer.is_file():
            candidate = self.directory / pointer.read_text().strip()
            if candidate.is_dir():
                return candidate
        numbered = self._numbered()
        return numbered[-1] if numbered else None

    def load_latest(self) -> tuple[dict[str, Tensor], dict[str, Tensor] | None, dict] | None:
        """Weights, EMA weights (or `None`) and state of the newest checkpoint.

        Raises:
            CorruptFileError: If a file of it is damaged, naming the file (the
                checkpoint is left as it is).
        """
        path = self.latest()
        if path is None:
            return None
        weights = _read(path / "model.safetensors", "safetensors file", load_file)
        ema = None
        if (path / "ema.safetensors").is_file():
            ema = _read(path / "ema.safetensors", "safetensors file", load_file)
        state = _read(
            path / "state.pt",
            "training state (torch.save)",
            lambda file: torch.load(file, map_location="cpu", weights_only=True),
        )
        return weights, ema, state


def _read(path: Path, what: str, read: Callable[[Path], Any]) -> Any:
    """`read(path)`, with any failure to parse it reported as a `CorruptFileError`."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} is missing")
    try:
        return read(path)
    except Exception as error:  # readers raise many kinds; all mean "damaged file"
        raise CorruptFileError(path, what, error) from None


def _plain(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
