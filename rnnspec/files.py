"""Writing files so that a reader never sees half of one, and a failure writes nothing.

A file is written to a temporary file beside it, flushed to disk, then renamed over
the target. Temporary names are unique (`mkstemp`), hidden, and end in `.rnnspec-tmp`;
a process killed between write and rename leaves one behind, and the next write into
that directory removes such leftovers once they are `STALE_SECONDS` old (a live
writer holds one for milliseconds; the age keeps concurrent writers safe). This works
on every OS and filesystem, unlike Linux's anonymous `O_TMPFILE`.

Targets are written through symbolic links (the link stays a link), keep their
permissions, and a file with several hard links is rewritten in place, so that every
name still sees the same file (see `_rewrite_in_place`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

TMP_SUFFIX = ".rnnspec-tmp"
BACKUP_SUFFIX = ".rnnspec-backup"
STALE_SECONDS = 600
# `.NAME.<8 random characters>.rnnspec-tmp`, as mkstemp names them.
_TMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(TMP_SUFFIX))


def shown(path: Path | str) -> str:
    """A path for messages and comments: as is when printable, else its repr.

    `tagger-ü.rnn` stays readable; a name with a newline, a terminal escape or a byte
    that is not UTF-8 becomes `'tag\\nger.rnn'`, which can end no line (nor comment)
    and drives no terminal.
    """
    name = str(path)
    return name if name.isprintable() else repr(name)


class WriteError(Exception):
    """An OS error while writing, as the one-line diagnostic `PATH: error: ...`."""


def problem(target: Path) -> str | None:
    """Why `target` cannot be written as a file, or None: checked before writing."""
    if target.is_symlink() and not target.exists():
        return "is a broken symbolic link; remove it or point it at a file"
    resolved = Path(os.path.realpath(target))
    if resolved.is_dir():
        return "is a directory"
    if resolved.exists() and not resolved.is_file():
        return "is not a regular file"
    return directory_problem(resolved.parent)


def directory_problem(directory: Path) -> str | None:
    """Why files cannot be created in `directory` (made if missing), or None."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():
            return f"cannot create directory: {shown(existing)} is a broken symlink"
        existing = existing.parent
    if not existing.is_dir():
        if existing == directory:
            return "is not a directory"
        return f"cannot create directory: {shown(existing)} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write in directory {shown(existing)}: permission denied"
    return None


def write_atomic(target: Path, text: str) -> None:
    """Replace `target` with `text`, never leaving half a file; raises WriteError."""
    write_all({target: text})


def write_all(texts: Mapping[Path, str]) -> None:
    """Write every file or, when any cannot be written, none: all are staged first.

    Raises WriteError. Only a failure while renaming the staged files into place (after
    every one was written and flushed) can leave some replaced; the message says which.
    """
    staged: list[tuple[Path, Path, Path]] = []  # (target as given, resolved, temp)
    created: list[Path] = []
    try:
        for target, text in texts.items():
            resolved = Path(os.path.realpath(target))
            created.extend(_make_directory(resolved.parent, target))
            staged.append((target, resolved, _stage(resolved, text, target)))
    except BaseException:
        for _, _, tmp in staged:
            _remove(tmp)
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    done: list[Path] = []
    for index, (target, resolved, tmp) in enumerate(staged):
        try:
            _commit(resolved, tmp)
        except OSError as exc:
            for _, _, rest in staged[index:]:
                _remove(rest)
            written = ", ".join(map(shown, done))
            written = f"; replaced before it: {written}" if done else ""
            reason = exc.strerror or exc
            message = f"{shown(target)}: error: cannot replace: {reason}{written}"
            raise WriteError(message) from exc
        done.append(target)
    for directory in {resolved.parent for _, resolved, _ in staged}:
        _fsync_directory(directory)


def _make_directory(directory: Path, target: Path) -> list[Path]:
    """Create `directory` and missing parents; returns those made, outermost first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    created = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            created.append(directory)
    except OSError as exc:
        for made in reversed(created):
            with contextlib.suppress(OSError):
                made.rmdir()
        raise WriteError(
            f"{shown(target)}: error: cannot create directory "
            f"{shown(exc.filename or directory)}: "
            f"{exc.strerror or exc}"
        ) from exc
    return created


def _stage(resolved: Path, text: str, target: Path) -> Path:
    """Write `text` to a new temporary file beside `resolved`, flushed to disk."""
    _sweep(resolved.parent)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(
            dir=resolved.parent, prefix=f".{resolved.name}.", suffix=TMP_SUFFIX
        )
        tmp = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if resolved.exists():
            shutil.copymode(resolved, tmp)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
    except OSError as exc:
        if tmp is not None:
            _remove(tmp)
        message = f"{shown(target)}: error: cannot write: {exc.strerror or exc}"
        raise WriteError(message) from exc
    except BaseException:
        if tmp is not None:
            _remove(tmp)
        raise
    return tmp


def _commit(resolved: Path, tmp: Path) -> None:
    """Move the staged file into place: a rename, or in place for hard-linked files."""
    try:
        links = resolved.stat().st_nlink
    except FileNotFoundError:
        links = 1
    if links > 1:
        _rewrite_in_place(resolved, tmp.read_bytes())
        _remove(tmp)
    else:
        os.replace(tmp, resolved)


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite a hard-linked file's contents, keeping its inode (and so its links).

    A rename would give `path` a new inode and leave the other names on the old text.
    The old text is first saved beside it, to a visible
    `NAME.<8 random characters>.rnnspec-backup`, flushed to disk: a process killed
    mid-write leaves that copy for the user, and an error restores it. The backup is
    removed once the new text is on disk.
    """
    old = path.read_bytes()
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f"{path.name}.", suffix=BACKUP_SUFFIX
    )
    backup = Path(name)
    with os.fdopen(fd, "wb") as handle:
        handle.write(old)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        _overwrite(path, data)
    except BaseException:
        try:
            _overwrite(path, old)
        except OSError as exc:
            message = f"{shown(path)} may be incomplete; its old text is in {backup}"
            raise OSError(message) from exc
        _remove(backup)
        raise
    _remove(backup)


def _overwrite(path: Path, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.write(data)
        handle.truncate()
        handle.flush()
        os.fsync(handle.fileno())


def _sweep(directory: Path) -> None:
    """Remove temporary files that killed writers left in `directory` (best effort)."""
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if not _TMP_NAME.fullmatch(entry.name):
            continue
        with contextlib.suppress(OSError):
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > STALE_SECONDS:
                os.unlink(entry.path)


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
