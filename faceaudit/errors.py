"""Errors a user can cause.

Every message names the file, row, column or layer at fault and says what
would fix it. The CLI prints these as one line and exits with code 2; anything
else is a bug and exits with code 1 (`BackendError`: a bug in a backend plugin,
named with its package and version).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
