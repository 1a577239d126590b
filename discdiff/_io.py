"""Writing files so that a crash never leaves a half-written one, and one writer per folder.

`atomic_write` puts a file down under a temporary name and renames it into
place; a full disk is a `DiskFullError` naming the file and what was kept.
`writing` makes a command the only writer of its output folder (an OS lock
whose holder's pid is named to anyone else who tries), and `locked` makes
writers of one folder take turns. Both use `flock` on `FOLDER/.lock` (a
byte lock on Windows), which the operating system releases when the holder
exits, however it exits.
"""

import contextlib
import errno
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

CHECKSUMS_NAME = "checksums.json"
"""The file of a weights folder that records the SHA-256 of its other files."""

LOCK_NAME = ".lock"
"""The file in a folder that its writer locks (and writes its pid to)."""

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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


class DiskFullError(OSError):
    """The disk filled up while a file was written; the file was left as it was.

    Args:
        path: The file being written.
        kept: What is still there, e.g. `"the previous version of the file"`.
    """

    def __init__(self, path: str | os.PathLike, kept: str) -> None:
        super().__init__(errno.ENOSPC, f"no space left on the device writing {os.fspath(path)}")
        self.path, self.kept = Path(path), kept

    def __str__(self) -> str:
        return f"{self.strerror}; kept: {self.kept}"


class FolderBusyError(RuntimeError):
    """Another process is writing the folder a command wants to write.

    Args:
        folder: The folder.
        holder: The holder's pid and command, as it recorded them (may be empty).
    """

    def __init__(self, folder: str | os.PathLike, holder: str) -> None:
        who = f"process {holder}" if holder else "another process"
        super().__init__(
            f"{os.fspath(folder)} is being written by {who}; wait for it to finish or "
            "write elsewhere (nothing was changed)"
        )
        self.folder, self.holder = Path(folder), holder


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` says the disk is full (an `OSError`, or safetensors' `os error 28`)."""
    if isinstance(error, OSError):
        return error.errno in _DISK_FULL
    return f"os error {errno.ENOSPC}" in str(error)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file made by `tempfile` (mode 0600 / 0700) the mode `open` would give it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(directory: str | os.PathLike, names: list[str]) -> dict[str, str]:
    """Record the SHA-256 of `directory`'s files `names` in its `checksums.json` (atomically).

    Returns:
        The digests by file name.
    """
    directory = Path(directory)
    digests = {name: sha256(directory / name) for name in names}
    text = json.dumps(digests, indent=1)
    atomic_write(directory / CHECKSUMS_NAME, lambda tmp: Path(tmp).write_text(text))
    return digests


def verify_checksums(directory: str | os.PathLike, names: list[str]) -> None:
    """Check `directory`'s files `names` against its `checksums.json`, if it has one.

    Folders written before checksums were recorded (or by other tools) have
    none and pass unchecked; a name the record lacks is not checked.

    Raises:
        CorruptFileError: Naming the first file whose SHA-256 differs from the
            one recorded when it was written (or a damaged `checksums.json`).
    """
    directory = Path(directory)
    record = directory / CHECKSUMS_NAME
    if not record.is_file():
        return
    try:
        digests = json.loads(record.read_text())
        if not isinstance(digests, dict):
            raise ValueError(f"a {type(digests).__name__}, no mapping")
    except ValueError as error:
        raise CorruptFileError(record, "checksum record (JSON)", error) from None
    for name in names:
        path = directory / name
        if name in digests and path.is_file() and sha256(path) != digests[name]:
            raise CorruptFileError(
                path,
                "weights file",
                f"its SHA-256 differs from the one recorded in {CHECKSUMS_NAME} when it was "
                "written: the file was changed or damaged since",
            )


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, flush it, then rename it over `path`.

    On any failure the temporary file is removed and `path` is left as it was.
    The file gets the mode the process's umask gives new files.

    Raises:
        DiskFullError: If the disk fills up, naming `path` and what was kept.
    """
    path = Path(path)
    existed = path.exists()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        public_mode(tmp)  # after the writer, which may have made the file anew
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except Exception as error:
        if is_disk_full(error):
            kept = "the previous version of the file" if existed else "nothing (it was not there)"
            raise DiskFullError(path, kept) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _lock(fd: int, wait: bool) -> bool:
    """Take an exclusive lock on the open lock file `fd`; `False` if held and not `wait`."""
    if sys.platform == "win32":
        import msvcrt

        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return True
            except OSError:  # held by another process
                if not wait:
                    return False
                time.sleep(0.05)
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _holding(directory: Path, wait: bool) -> Iterator[Path]:
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not _lock(fd, wait):
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 200).decode(errors="replace").strip()
            raise FolderBusyError(directory, holder)
        command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:2]))
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} ({command})\n".encode())
        try:
            yield directory
        finally:
            os.ftruncate(fd, 0)  # still held: nobody reads a stale pid
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def writing(folder: str | os.PathLike) -> Iterator[Path]:
    """Be the only writer of `folder` (created if needed) for the block.

    Every command that writes an output folder runs inside this. A second
    process that asks for the same folder gets a `FolderBusyError` naming the
    holder's pid at once, before any work. If the block fails and the folder
    did not exist before, it is removed again as long as nothing but the lock
    is in it, so an early error leaves no empty folder behind.

    Raises:
        FolderBusyError: If another process holds the folder.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _holding(folder, wait=False):
            yield folder
    except BaseException:
        if created and {p.name for p in folder.iterdir()} <= {LOCK_NAME}:
            with contextlib.suppress(OSError):
                (folder / LOCK_NAME).unlink(missing_ok=True)
                folder.rmdir()
        raise


@contextlib.contextmanager
def locked(directory: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of `directory` (created if needed) for the block, waiting for it.

    Processes that lock the same directory take turns, so a set of files
    written under the lock always comes from one writer. The lock goes with
    the process: a killed writer never leaves it held.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _holding(directory, wait=True):
        yield directory
