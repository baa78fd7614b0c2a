"""The one progress helper of the library: bars on a terminal, plain lines in a log.

On a terminal, `progress` is a tqdm bar on stderr. When stderr is not a
terminal (CI, `nohup`, a file), redrawn bars would fill the log with carriage
returns, so each bar is replaced by one plain line written when it closes
(what, how many, how long), and `stage_line` states each finished stage the
same way. `enabled=False` (the CLI's `--quiet`) or FACEAUDIT_NO_PROGRESS=1
silences both.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_WRITE_LOCK = threading.Lock()


def progress_enabled(requested: bool | None = None) -> bool:
    """Progress output is on unless disabled explicitly or by FACEAUDIT_NO_PROGRESS=1."""
    if requested is not None:
        return requested
    return os.environ.get("FACEAUDIT_NO_PROGRESS", "") not in ("1", "true", "yes")


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal (where redrawn bars belong)."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _write_line(text: str) -> None:
    with _WRITE_LOCK:  # critic stacks finish in parallel threads: one whole line each
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 600 else f"{s / 60:.1f} min"


def stage_line(what: str, count: int | None, unit: str, seconds: float, *, enabled: bool | None = None) -> None:
    """State one finished stage as a plain stderr line ("what: N unit in T s") when stderr is not a terminal."""
    if not progress_enabled(enabled) or stderr_is_terminal():
        return
    amount = "" if count is None else f"{count} {unit} "
    _write_line(f"faceaudit: {what}: {amount}in {_seconds(seconds)}")


class PlainProgress:
    """A bar's stand-in for logs: counts silently and writes one line when closed."""

    def __init__(self, iterable: Iterable[Any] | None, total: int | None, desc: str, unit: str) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = 0
        self._t0 = time.perf_counter()
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += int(n)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        of = f" of {self.total}" if self.total is not None and self.total != self.n else ""
        _write_line(f"faceaudit: {self.desc or 'progress'}: {self.n}{of} {self.unit} in "
                    f"{_seconds(time.perf_counter() - self._t0)}")

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable or ():
                yield item
                self.n += 1
        finally:
            self.close()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool | None = None,
) -> Any:
    """Wrap `iterable` (or a manual counter when None): a bar on a terminal, one closing line otherwise."""
    on = progress_enabled(enabled)
    if on and not stderr_is_terminal():
        return PlainProgress(iterable, total, desc, unit)
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not on,
        leave=False,
        dynamic_ncols=True,
    )


def iter_progress(iterable: Iterable[T], **kwargs: object) -> Iterator[T]:
    """Iterate with a progress bar; a convenience over `progress`."""
    yield from progress(iterable, **kwargs)  # type: ignore[arg-type]
