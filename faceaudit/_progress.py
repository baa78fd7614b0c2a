"""The one progress-bar helper of the library (tqdm, to stderr)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled(requested: bool | None = None) -> bool:
    """Progress bars are on unless disabled explicitly or by FACEAUDIT_NO_PROGRESS=1."""
    if requested is not None:
        return requested
    return os.environ.get("FACEAUDIT_NO_PROGRESS", "") not in ("1", "true", "yes")


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool | None = None,
) -> "tqdm[T]":
    """Wrap `iterable` (or a manual counter when None) in a progress bar on stderr."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not progress_enabled(enabled),
        leave=False,
        dynamic_ncols=True,
    )


def iter_progress(iterable: Iterable[T], **kwargs: object) -> Iterator[T]:
    """Iterate with a progress bar; a convenience over `progress`."""
    yield from progress(iterable, **kwargs)  # type: ignore[arg-type]
