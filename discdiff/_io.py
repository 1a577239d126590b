"""Writing files so that a crash never leaves a half-written one, and reading them back."""

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path


class CorruptFileError(ValueError):
    """A file that exists but cannot be read as what it should be (truncated, damaged).

    Args:
        path: The file.
        what: What it should have been, e.g. `"a safetensors file"`.
        detail: What the reader reported.
    """

    def __init__(self, path: str | os.PathLike, what: str, detail: object) -> None:
        # One line: the reader's first sentence (torch's next ones suggest unsafe loading).
        reason = " ".join(str(detail).split()).split(". ")[0][:160]
        super().__init__(f"{os.fspath(path)}: not a readable {what} ({reason})")
        self.path = Path(path)


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, flush it, then rename it over `path`.

    On any failure the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


@contextlib.contextmanager
def locked(directory: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive advisory lock on `directory` (created if needed) for the block.

    Processes that lock the same directory take turns, so a set of files
    written under the lock always comes from one writer. The lock goes with
    the process: a killed writer never leaves it held. (POSIX: `flock` on the
    directory; Windows: a byte lock on `directory/.lock`.)
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":
        import msvcrt

        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT)
        try:
            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                    break
                except OSError:  # held by another process
                    time.sleep(0.05)
            yield directory
        finally:
            os.close(fd)  # closing releases the lock
        return
    import fcntl

    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        os.close(fd)  # closing releases the lock
