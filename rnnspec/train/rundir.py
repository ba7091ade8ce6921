"""The run directory OUT: the names of its files, its lock, and atomic writes.

Every file of a run is written whole or not at all (`write_atomic`), and one run at a
time writes into OUT (`RunLock`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None  # type: ignore[assignment]

from rnnspec.train.errors import TrainError

#: Files of every run in OUT; `force=True` removes exactly these.
CHECKPOINT = "checkpoint.pt"
VOCAB = "vocab.json"
SPEC = "spec.rnn"
METRICS = "metrics.json"
PLOT = "loss.png"
RUN_FILES = (CHECKPOINT, VOCAB, SPEC, METRICS, PLOT)
#: Held (flock) by the run writing OUT, removed when it ends; see RunLock.
LOCK = ".lock"


class RunLock:
    """An exclusive lock on a run directory OUT, held by one run from start to end.

    Two runs writing one OUT would interleave their files, so the second is refused.
    `fcntl.flock` on OUT/.lock: the kernel releases it when the holder exits, however
    it exits, so a killed run never leaves OUT locked. The holder writes its pid
    into the file, for the refusal message. On release the file is removed (under the
    lock; `acquire` retries when the file it locked was removed meanwhile), and so
    are the directories the lock created, when the run left them empty.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / LOCK
        self._fd: int | None = None
        self._created: list[Path] = []  # directories made for the lock, deepest first

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Lock OUT (creating it), or raise TrainError naming the run that holds it."""
        if self.out.exists() and not self.out.is_dir():
            raise TrainError(f"--out {self.out} is a file, not a directory")
        if fcntl is None:
            return
        missing = [d for d in (self.out, *self.out.parents) if not d.exists()]
        while True:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # OUT removed by a run ending just now: again
                continue
            except OSError as exc:
                reason = exc.strerror or exc
                raise TrainError(f"cannot lock {self.out}: {reason}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                by = f" (pid {holder})" if holder else ""
                raise TrainError(
                    f"{self.out} is in use by another training run{by}; wait for "
                    "it to end, or pass another --out"
                ) from None
            except OSError as exc:  # a file system without locks (some NFS, FUSE)
                os.close(fd)
                print(
                    f"note: cannot lock {self.out} ({exc.strerror}); nothing stops "
                    "another run from writing into it meanwhile",
                    file=sys.stderr,
                )
                return
            if _same_file(fd, self.path):
                break
            os.close(fd)  # locked a file its holder removed on release: again
        self._fd, self._created = fd, missing
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None
        for directory in self._created:  # only while the run left them empty
            try:
                directory.rmdir()
            except OSError:
                break
        self._created = []


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` by `write(file)` into a temporary file beside it and a rename.

    The temporary name is unique and the data reaches the disk (fsync) before the
    rename, and the rename before return (fsync of the directory, where the system
    allows it): a reader, or a crash, sees the old file or the new one, never half
    of one. The file gets the usual permissions (a temporary one is owner-only).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows opens no directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_run_file(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """`write_atomic`, an OS error (disk full, no permission) a TrainError."""
    try:
        write_atomic(path, write)
    except OSError as exc:
        raise TrainError(f"cannot write {path}: {exc.strerror or exc}") from None


def text_writer(text: str) -> Callable[[IO[bytes]], None]:
    return lambda handle: handle.write(text.encode("utf-8"))


def remove_temporaries(out: Path) -> None:
    """Temporary files of runs killed mid-write (call only holding OUT's lock)."""
    for name in RUN_FILES:
        for path in out.glob(f".{name}.*.tmp"):
            path.unlink(missing_ok=True)
