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

Temporary names carry the writer's pid (`.tmp-PID-...`); a save clears
only the ones it owns or whose process is gone, never one another live
process is writing. Each checkpoint records the SHA-256 of its files in
`checksums.json`, checked on loading: a file changed after it was written
(a flipped bit in tensor data, which safetensors itself does not notice) is a
`CorruptFileError` naming it. A full disk is a `DiskFullError` naming the
file and the checkpoint kept.
"""

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from discdiff._io import (
    CHECKSUMS_NAME,
    CorruptFileError,
    DiskFullError,
    atomic_write,
    is_disk_full,
    public_mode,
    verify_checksums,
    write_checksums,
)

__all__ = ["CheckpointStore"]


def _tmp_prefix(kind: str = "") -> str:
    return f".tmp-{os.getpid()}-{kind}"


def _abandoned(path: Path) -> bool:
    """Whether a `.tmp-PID-*` folder is this process's or a finished process's."""
    pid = path.name.removeprefix(".tmp-").split("-")[0]
    if not pid.isdigit():
        return True  # named before pids were recorded: no live writer uses such names
    if int(pid) == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill there would end the process: leave it be
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        return False
    return False


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
            if _abandoned(stale):
                shutil.rmtree(stale, ignore_errors=True)
        final = self.directory / f"step-{step:08d}"
        tmp = Path(tempfile.mkdtemp(dir=self.directory, prefix=_tmp_prefix()))
        names = ["model.safetensors", *(["ema.safetensors"] if ema is not None else []), "state.pt"]
        writing = tmp / names[0]
        try:
            public_mode(tmp, directory=True)
            save_file(_plain(weights), writing)
            if ema is not None:
                writing = tmp / "ema.safetensors"
                save_file(_plain(ema), writing)
            writing = tmp / "state.pt"
            torch.save(state, writing)
            for name in names:  # safetensors makes its files 0600
                public_mode(tmp / name)
            writing = tmp / CHECKSUMS_NAME
            write_checksums(tmp, names)
            if final.exists():
                self._discard(final)
            os.replace(tmp, final)
        except BaseException as error:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(error, Exception) and is_disk_full(error):
                raise DiskFullError(final / writing.name, self._kept()) from None
            raise
        try:
            atomic_write(self.directory / "latest", lambda tmp: Path(tmp).write_text(final.name))
        except DiskFullError as error:
            kept = f"{self._kept()} (`latest` still names it; {final.name} is complete)"
            raise DiskFullError(error.path, kept) from None
        for old in self._numbered()[: -self.keep]:
            self._discard(old)
        return final

    def _kept(self) -> str:
        """What a failed save leaves to resume from."""
        with contextlib.suppress(OSError):
            latest = self.latest()
            if latest is not None:
                return f"the previous checkpoint {latest}"
        return "no checkpoint (none was written before)"

    def _discard(self, checkpoint: Path) -> None:
        """Rename a checkpoint out of `step-*` (atomic), then delete it."""
        doomed = Path(tempfile.mkdtemp(dir=self.directory, prefix=_tmp_prefix("old-")))
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
            CorruptFileError: If a file of it is damaged or differs from its
                recorded SHA-256, naming the file (the checkpoint is left as it is).
        """
        path = self.latest()
        if path is None:
            return None
        verify_checksums(path, ["model.safetensors", "ema.safetensors", "state.pt"])
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
