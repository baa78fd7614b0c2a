"""One way to turn results into values JSON can hold: NaN/inf -> None, numpy -> Python, tuples -> lists.

Every ``to_dict`` and every JSON twin goes through :func:`json_safe`, so the fairness room, the report
schema and the renderers agree on what a number looks like in report.json. It imports nothing else of
faceaudit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePath
from types import MappingProxyType
from typing import Any

__all__ = ["NotJSONError", "json_safe"]


class NotJSONError(TypeError):
    """A value JSON cannot hold, found by :func:`json_safe` in strict mode; ``where`` names its place."""

    def __init__(self, where: str, value: Any) -> None:
        super().__init__(f"value at '{where}' has type {type(value).__name__}, which JSON cannot hold")
        self.where = where
        self.type_name = type(value).__name__


def json_safe(value: Any, *, frozen: bool = False, strict: bool = False, where: str = "") -> Any:
    """Deep-convert ``value`` to JSON values: non-finite floats -> None, numpy scalars and arrays -> Python,
    mappings -> dicts with string keys, lists and tuples -> lists, paths -> strings.

    ``frozen`` returns read-only containers instead (mappings as ``MappingProxyType``, sequences as
    tuples), for frozen result classes. ``strict`` raises :class:`NotJSONError` (naming the place, as
    ``where.key[i]``) for any other type instead of passing it through.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out = {str(k): json_safe(v, frozen=frozen, strict=strict, where=f"{where}.{k}") for k, v in value.items()}
        return MappingProxyType(out) if frozen else out
    if isinstance(value, (list, tuple)):
        items = [json_safe(v, frozen=frozen, strict=strict, where=f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if frozen else items
    if isinstance(value, PurePath):
        return str(value)
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return json_safe(tolist(), frozen=frozen, strict=strict, where=where)
    if strict:
        raise NotJSONError(where, value)
    return value
