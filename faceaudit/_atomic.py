"""Atomic file writes: a file is either complete or absent, never half written.

Every write goes to a fresh temporary name opened exclusively (a planted link
at the final name is never followed, only replaced), and the reports faceaudit
writes under a fixed name replace only files that faceaudit wrote itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from faceaudit.errors import OutputError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", *, fsync: bool = True, **kwargs: object) -> Iterator[IO]:
    """Open a temporary file beside `path`; rename it over `path` only on success (`fsync=False` skips
    the flush to disk where something written later, such as a manifest, marks completeness)."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a report is a normal file
    except OSError as exc:
        raise OutputError(
            f"Cannot write to {target.parent}: {exc.strerror}. Choose a writable output folder."
        ) from exc
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:  # type: ignore[call-overload]
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb", fsync=fsync) as fh:
        fh.write(data)


# the marks every report faceaudit writes carries in its first bytes (templates' generator tag; JSON key order)
_HTML_MARK = b'<meta name="generator" content="faceaudit'
_JSON_MARK = re.compile(rb'\A\s*\{\s*"schema_version"\s*:\s*"[^"]*"\s*,\s*"kind"\s*:\s*"[^"]*"\s*,\s*"faceaudit_version"\s*:')
_MD_MARK = re.compile(rb"\A<!-- faceaudit ")
_HEAD_BYTES = 4096


def probe_writable(folder: str | os.PathLike[str]) -> None:
    """Create and remove a fresh, exclusively opened file in `folder` (raises OSError if it cannot).

    A fixed probe name could be a link planted by someone else; a new random
    name opened with O_EXCL cannot.
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".faceaudit-write-test.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)


def _kind_of(path: str | os.PathLike[str]) -> str:
    name = os.fspath(path).lower()
    return "json" if name.endswith(".json") else "md" if name.endswith(".md") else "html"


def is_faceaudit_output(path: str | os.PathLike[str], kind: str | None = None) -> bool:
    """True if nothing is at `path`, or a regular file there is a faceaudit report of `kind` ("html", "json"
    or "md"; default: from the suffix), so a JSON report is never replaced by an HTML one or vice versa."""
    kind = kind or _kind_of(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return not os.path.islink(path)  # a dangling link is not ours either
    except OSError:
        return False  # a link (ELOOP), a folder we cannot open, ...
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, _HEAD_BYTES)
    except OSError:
        return False
    finally:
        os.close(fd)
    if kind == "json":
        return _JSON_MARK.match(head) is not None
    if kind == "md":
        return _MD_MARK.match(head) is not None
    return _HTML_MARK in head


def check_replaceable(
    path: str | os.PathLike[str], *, force: bool = False, kind: str | None = None,
    fix: str = "Move it away or choose another output folder.",
) -> None:
    """Raise OutputError if `path` holds something that is not a faceaudit report of `kind` (unless `force`).

    Why: reports have fixed names (report.json, report.html, ...) in a folder the
    user chooses, which may already hold the user's own files. `fix` ends the
    message with what the user can do where they are (a CLI flag or a Python argument).
    """
    kind = kind or _kind_of(path)
    if force or is_faceaudit_output(path, kind):
        return
    what = "a link" if os.path.islink(path) else "a folder" if os.path.isdir(path) else "a file"
    raise OutputError(
        f"{path} is {what} that is not a faceaudit {kind.upper()} report; faceaudit replaces only its own "
        f"reports. {fix}"
    )


def write_report_text(path: str | os.PathLike[str], text: str, *, kind: str, force: bool = False,
                      fix: str = "Move it away or choose another output folder.") -> None:
    """Write a report file (`kind` "html", "json" or "md") atomically, refusing to replace a file that is not a
    faceaudit report of that kind."""
    check_replaceable(path, force=force, kind=kind, fix=fix)
    atomic_write_text(path, text)
