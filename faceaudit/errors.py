"""Errors a user can cause.

Every message names the file, row, column or layer at fault and says what
would fix it. The CLI prints these as one line and exits with code 2; anything
else is a bug and exits with code 1 (`BackendError`: a bug in a backend plugin,
named with its package and version).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ON_COMMAND_LINE: ContextVar[bool] = ContextVar("faceaudit_on_command_line", default=False)


class FaceAuditError(Exception):
    """Base class for errors caused by user input (exit code 2 in the CLI)."""


class InputError(FaceAuditError, ValueError):
    """Arrays passed to a library function have the wrong shape, dtype or values."""


class ManifestError(FaceAuditError):
    """The data manifest (CSV/Parquet) is unreadable or inconsistent."""


class ModelError(FaceAuditError):
    """A model file cannot be opened, or a layer/input does not fit."""


class PluginError(FaceAuditError):
    """A backend or estimator name is unknown, or a plugin fails to load."""


class OutputError(FaceAuditError):
    """The output folder or a cache location cannot be written."""


class BackendError(RuntimeError):
    """A backend (built-in or plugin) broke its contract: a bug in that backend, not the user's input.

    Not a FaceAuditError on purpose: the CLI reports it as a failure (exit code 1)
    naming the backend, its package and version, so the user reports it to the
    backend's maintainers instead of hunting for a mistake in their own files.
    """


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for close matches of `name`, or ''."""
    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""


@contextmanager
def command_line() -> Iterator[None]:
    """Mark the code inside as running for a `faceaudit` command, so hints name its flags.

    A message must name what the user can type where they are: ``--out DIR`` on
    the command line, ``out_dir=`` in Python. The CLI wraps every command in
    this; library code asks :func:`on_command_line` or :func:`option`.
    """
    token = _ON_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _ON_COMMAND_LINE.reset(token)


def on_command_line() -> bool:
    """True while a `faceaudit` command runs (see :func:`command_line`)."""
    return _ON_COMMAND_LINE.get()


def option(flag: str, argument: str) -> str:
    """The way to set one option where the user is: `flag` (``"--out DIR"``) on the command line, else
    the Python `argument` (``"out_dir=..."``). For an option the command line lacks, test
    :func:`on_command_line` and phrase the alternative instead."""
    return flag if on_command_line() else argument

__all__ = [
    "BackendError",
    "FaceAuditError",
    "InputError",
    "ManifestError",
    "ModelError",
    "OutputError",
    "PluginError",
    "command_line",
    "did_you_mean",
    "on_command_line",
    "option",
]
