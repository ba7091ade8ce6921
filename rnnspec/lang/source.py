"""Stage 1: a spec file's bytes → text, the one way every command reads a spec.

A spec is UTF-8, with or without a byte-order mark; LF, CRLF and a lone CR
each end a line. `read_spec_file` raises `SpecError` (file:line:col of the first bad
byte) for bytes that are not UTF-8 and for files too large to be a spec, and `OSError`
when the file cannot be read. It returns `spec_text`, what the parser sees: the mark
dropped and every line ending in LF, so that `check`, `fmt`, the diagnostics and
the spec hash of generated files all count lines alike.
"""

from __future__ import annotations

import errno
import os
import stat

from rnnspec.lang.diagnostics import Diagnostic, SpecError

#: A spec larger than this is not a spec (`/dev/zero`, a data file given by mistake).
MAX_SPEC_BYTES = 1 << 20

BOM = "\ufeff"


def read_spec_file(
    path: str | os.PathLike[str], filename: str | None = None, *, raw: bool = False
) -> str:
    """The text of the spec file at `path`, as `spec_text` (BOM dropped, LF lines).

    `raw=True` keeps the BOM and the line endings as written (for `fmt`, which
    rewrites them). Diagnostics name the file as `filename` (default: `path`).
    """
    data = read_spec_bytes(path)
    text = decode_spec(data, os.fspath(path) if filename is None else filename)
    return text if raw else spec_text(text)


def read_spec_bytes(
    path: str | os.PathLike[str], *, regular_only: bool = False
) -> bytes:
    """At most `MAX_SPEC_BYTES + 1` bytes of `path` (one more tells "too large").

    `regular_only` refuses FIFOs and devices without blocking on them: for paths that
    come from a config rather than from the user's command line, where a named pipe
    (`<(...)`) is a legitimate spec. `OSError` when it cannot be read.
    """
    flags = os.O_RDONLY | (getattr(os, "O_NONBLOCK", 0) if regular_only else 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as stream:
        if regular_only and not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        return stream.read(MAX_SPEC_BYTES + 1)


def decode_spec(data: bytes, filename: str = "<spec>") -> str:
    """Spec bytes → text as written; `SpecError` at the first byte not UTF-8."""
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(
            [Diagnostic(f"larger than {MAX_SPEC_BYTES:,} bytes; not a spec file")],
            filename=filename,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = spec_text(data[: error.start].decode("utf-8"))
        line = before.count("\n") + 1
        column = len(before) - before.rfind("\n")
        shown = " ".join(f"0x{b:02x}" for b in data[error.start : error.end])
        message = f"not UTF-8 text: cannot decode byte {shown}; save the file as UTF-8"
        raise SpecError(
            [Diagnostic(message, line, column)],
            source=spec_text(data.decode("utf-8", errors="replace")),
            filename=filename,
        ) from None


def spec_text(source: str) -> str:
    """The text the parser reads: no byte-order mark, every line ending in LF."""
    return source.removeprefix(BOM).replace("\r\n", "\n").replace("\r", "\n")
