"""Attribute kinds (continuous / categorical) and group bins for continuous attributes.

An attribute is one column of a manifest (age, sex, yaw, ...). Expressivity uses its raw values;
verification fairness needs a *group* per image, so continuous attributes are cut into bins.

Default bins (configurable through ``load_manifest(..., bins=...)``):

* ``age`` (years): the adult bands of NIST's demographic study (NISTIR 8280, Grother, Ngan & Hanaoka 2019,
  "Face Recognition Vendor Test Part 3: Demographic Effects", which reports age bins of about 20-35, 35-50,
  50-65 and over 65 years), with the under-20 band split into children (0-12) and adolescents (13-19):
  children's faces change fastest and are the group expected to fare worst (FG-NET holds many child images).
  Labels are inclusive integer years: ``"0-12"`` means 0 <= age < 13, ``"66+"`` means age >= 66.
* ``yaw`` (degrees), by ``|yaw|``: ``frontal`` (< 15), ``semi-profile`` (15-45), ``profile`` (>= 45), the
  conventional cut points of multi-pose benchmarks (e.g. Multi-PIE's +-15 degree near-frontal range).
* ``pitch`` / ``roll`` (degrees), by absolute value: ``<10``, ``10-25``, ``>=25``.
* any other continuous attribute: quartiles of its valid values (4 bins, fewer when values repeat).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from faceaudit.errors import ManifestError

Kind = Literal["continuous", "categorical"]
KINDS: tuple[str, ...] = ("continuous", "categorical")

#: A numeric column with more distinct values than this is inferred continuous.
MAX_CATEGORICAL_LEVELS = 10


@dataclass(frozen=True)
class Binning:
    """Half-open bins ``[edges[i], edges[i+1])`` with one label each; ``absolute`` bins ``|value|``."""

    edges: tuple[float, ...]
    labels: tuple[str, ...]
    absolute: bool = False

    def __post_init__(self) -> None:
        if len(self.edges) < 2 or len(self.labels) != len(self.edges) - 1:
            raise ManifestError(
                f"bins need k+1 edges for k labels (got {len(self.edges)} edges, {len(self.labels)} labels)"
            )
        if any(b <= a for a, b in zip(self.edges[:-1], self.edges[1:])):
            raise ManifestError(f"bin edges must increase strictly: {list(self.edges)}")

    def assign(self, values: np.ndarray) -> np.ndarray:
        """Group label per value (object array); None for NaN or values outside every bin."""
        v = np.asarray(values, dtype=float)
        if self.absolute:
            v = np.abs(v)
        out = np.full(v.shape, None, dtype=object)
        idx = np.searchsorted(np.asarray(self.edges), v, side="right") - 1
        ok = np.isfinite(v) & (idx >= 0) & (idx < len(self.labels))
        labels = np.asarray(self.labels, dtype=object)
        out[ok] = labels[idx[ok]]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": [e if math.isfinite(e) else ("inf" if e > 0 else "-inf") for e in self.edges],
            "labels": list(self.labels),
            "absolute": self.absolute,
        }


def _int_band_labels(edges: Sequence[float]) -> tuple[str, ...]:
    labels = []
    for a, b in zip(edges[:-1], edges[1:]):
        labels.append(f"{int(a)}+" if math.isinf(b) else f"{int(a)}-{int(b) - 1}")
    return tuple(labels)


_AGE_EDGES = (0.0, 13.0, 20.0, 36.0, 51.0, 66.0, math.inf)

DEFAULT_BINS: dict[str, Binning] = {
    "age": Binning(_AGE_EDGES, _int_band_labels(_AGE_EDGES)),
    "yaw": Binning((0.0, 15.0, 45.0, math.inf), ("frontal", "semi-profile", "profile"), absolute=True),
    "pitch": Binning((0.0, 10.0, 25.0, math.inf), ("<10", "10-25", ">=25"), absolute=True),
    "roll": Binning((0.0, 10.0, 25.0, math.inf), ("<10", "10-25", ">=25"), absolute=True),
}


@dataclass(frozen=True)
class Attribute:
    """One attribute of a manifest: raw values, kind, and a group label per row (None = missing).

    ``values`` is float with NaN for continuous attributes, object with None for categorical ones.
    ``groups`` is what verification fairness uses (the bin label for continuous attributes, the value
    itself for categorical ones); ``group_order`` lists the labels in display order.
    """

    name: str
    kind: str
    values: np.ndarray
    groups: np.ndarray
    group_order: list[str]
    n_missing: int
    binning: Binning | None = None
    source: str = "column"
    n_outside_bins: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def n_valid(self) -> int:
        return int(len(self.values) - self.n_missing)

    def group_counts(self) -> list[tuple[str, int]]:
        """(label, count) per group in display order."""
        labels = [g for g in self.groups if g is not None]
        counts: dict[str, int] = {}
        for g in labels:
            counts[g] = counts.get(g, 0) + 1
        return [(g, counts.get(g, 0)) for g in self.group_order]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "n_valid": self.n_valid,
            "n_missing": self.n_missing,
            "n_outside_bins": self.n_outside_bins,
            "groups": [{"label": g, "count": c} for g, c in self.group_counts()],
            "bins": self.binning.to_dict() if self.binning is not None else None,
        }


def parse_attr_spec(attrs: str | Sequence[str] | None) -> list[tuple[str, str | None]]:
    """Parse ``"age:continuous,sex"`` (or a sequence of such items) into (name, kind or None) pairs."""
    if attrs is None:
        return []
    items = [a for a in attrs.split(",")] if isinstance(attrs, str) else list(attrs)
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for raw in items:
        item = str(raw).strip()
        if not item:
            continue
        name, _, kind = item.partition(":")
        name, kind = name.strip(), kind.strip().lower()
        if not name:
            raise ManifestError(f"attribute spec {item!r} has no column name; use e.g. 'age:continuous'")
        if kind and kind not in KINDS:
            raise ManifestError(
                f"attribute {name!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)} (e.g. '{name}:categorical')"
            )
        if name in seen:
            raise ManifestError(f"attribute {name!r} is requested twice in {attrs!r}")
        seen.add(name)
        out.append((name, kind or None))
    return out


#: Cell texts read as a missing value (besides empty cells).
MISSING_TOKENS = frozenset({"na", "n/a", "nan", "null", "none", "?"})


def is_missing(v: object, *, tokens: Collection[str] = MISSING_TOKENS) -> bool:
    """True for a missing value: None, NaN (or pandas NA/NaT), a blank string, or one of ``tokens`` (any case).

    Why one rule: the manifest, the attribute bins and the fairness groups must agree on what "missing"
    is. Manifest cells use the default tokens ("NA", "null", ...); values handed over in Python pass
    ``tokens=()``, so a word is never read as missing there.
    """
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    if isinstance(v, str) and (v.strip() == "" or v.strip().lower() in tokens):
        return True
    try:
        import pandas as pd

        return bool(pd.isna(v)) if not isinstance(v, (list, tuple, np.ndarray)) else False
    except (TypeError, ValueError):
        return False


def infer_kind(column: Any) -> str:
    """Kind of a column: numeric with more than 10 distinct values -> continuous, else categorical.

    Text (or a number column with few levels, such as a 0/1 code) is categorical; a numeric column with
    many levels (age in years, yaw in degrees) is continuous. Override with ``name:kind`` in the spec.
    """
    import pandas as pd

    s = pd.Series(column)
    if pd.api.types.is_bool_dtype(s):
        return "categorical"
    numeric = pd.to_numeric(s, errors="coerce") if not pd.api.types.is_numeric_dtype(s) else s
    present = s.map(lambda v: not is_missing(v))
    if not pd.api.types.is_numeric_dtype(s):
        # text column: continuous only if every present value parses as a number and there are many levels
        if present.sum() == 0 or numeric[present].isna().any():
            return "categorical"
    nunique = numeric[present].nunique()
    return "continuous" if nunique > MAX_CATEGORICAL_LEVELS else "categorical"


def _quantile_binning(values: np.ndarray, name: str) -> Binning:
    v = values[np.isfinite(values)]
    qs = np.unique(np.quantile(v, [0.25, 0.5, 0.75]))
    edges = [-math.inf, *[float(q) for q in qs], math.inf]
    labels = []
    for a, b in zip(edges[:-1], edges[1:]):
        if math.isinf(a):
            labels.append(f"<{b:g}")
        elif math.isinf(b):
            labels.append(f">={a:g}")
        else:
            labels.append(f"{a:g}-{b:g}")
    return Binning(tuple(edges), tuple(labels))


def to_binning(spec: Binning | Sequence[float] | Mapping[str, Any], name: str) -> Binning:
    """Build a Binning from a Binning, a list of edges, or {"edges", "labels", "absolute"}."""
    if isinstance(spec, Binning):
        return spec
    if isinstance(spec, Mapping):
        edges = tuple(float(e) for e in spec["edges"])
        labels = spec.get("labels")
        absolute = bool(spec.get("absolute", False))
    else:
        edges = tuple(float(e) for e in spec)
        labels = None
        absolute = False
    if labels is None:
        labels = []
        for a, b in zip(edges[:-1], edges[1:]):
            labels.append(f">={a:g}" if math.isinf(b) else (f"<{b:g}" if math.isinf(a) else f"{a:g}-{b:g}"))
    try:
        return Binning(edges, tuple(str(x) for x in labels), absolute)
    except ManifestError as exc:
        raise ManifestError(f"bins for attribute {name!r}: {exc}") from None


def _check_text_in_numbers(name: str, s: Any, missing: np.ndarray, where: str) -> None:
    """Refuse a column of numbers with a few text cells ("unknown" in an age column), naming those cells.

    Read as it stands such a column is categorical, every age a category of its
    own, and the complaint would come later and point nowhere ("merge rare
    categories"); the fix is in the text cells.
    """
    import pandas as pd

    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return
    num = pd.to_numeric(s.where(~missing), errors="coerce").to_numpy(dtype=float)
    text = ~missing & np.isnan(num)
    n_num = int((~missing & ~text).sum())
    if not text.any() or n_num < int(text.sum()) or len(np.unique(num[~missing & ~text])) <= MAX_CATEGORICAL_LEVELS:
        return
    rows = np.flatnonzero(text)
    shown = ", ".join(f"row {r + 1} ({str(s.iloc[r])!r})" for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    raise ManifestError(
        f"{where}column {name!r} holds numbers except {len(rows)} text cell(s): {shown}. Leave those cells empty "
        f"(or NA) to mark them missing, or declare the column '{name}:categorical' to treat every value as a label."
    )


def make_attribute(
    name: str,
    column: Any,
    kind: str | None = None,
    binning: Binning | Sequence[float] | Mapping[str, Any] | None = None,
    *,
    source: str = "column",
    where: str = "",
) -> Attribute:
    """Build an Attribute from raw column values: infer or check the kind, mark missing rows, assign groups.

    Missing values (empty, NaN, None, or the texts NA, N/A, NaN, null, None, ?) exclude the row for this
    attribute only (group None) and are counted.
    A continuous attribute whose present values are not numbers raises ManifestError naming the row.
    """
    import pandas as pd

    s = pd.Series(np.asarray(column, dtype=object) if not isinstance(column, pd.Series) else column)
    s = s.reset_index(drop=True)
    missing = s.map(is_missing).to_numpy(dtype=bool)
    if kind is None:
        _check_text_in_numbers(name, s, missing, where)
    kind = kind or infer_kind(s)
    notes: list[str] = []
    if kind == "continuous":
        num = pd.to_numeric(s.where(~missing), errors="coerce").to_numpy(dtype=float)
        bad = ~missing & ~np.isfinite(num)
        if bad.any():
            rows = np.flatnonzero(bad)
            shown = ", ".join(f"row {r + 1} ({s.iloc[r]!r})" for r in rows[:5])
            raise ManifestError(
                f"{where}column {name!r} is continuous but {len(rows)} value(s) are not finite numbers: {shown}. "
                f"Fix the values, or declare it '{name}:categorical'."
            )
        values = num
        n_missing = int(missing.sum())
        if n_missing == len(values):
            raise ManifestError(f"{where}column {name!r} has no values (all {len(values)} rows are empty)")
        if binning is None:
            b = DEFAULT_BINS.get(name.lower()) or _quantile_binning(values, name)
        else:
            b = to_binning(binning, name)
        groups = b.assign(values)
        outside = int(((groups == None) & ~missing).sum())  # noqa: E711
        if outside:
            notes.append(f"{outside} value(s) of {name!r} fall outside every bin and have no group")
        group_order = list(b.labels)
        return Attribute(name, "continuous", values, groups, group_order, n_missing, b, source, outside, tuple(notes))
    if kind != "categorical":
        raise ManifestError(f"attribute {name!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    vals = np.empty(len(s), dtype=object)
    for i, v in enumerate(s.tolist()):
        if missing[i]:
            vals[i] = None
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            vals[i] = str(int(v))
        else:
            vals[i] = str(v).strip()
    n_missing = int(missing.sum())
    if n_missing == len(vals):
        raise ManifestError(f"{where}column {name!r} has no values (all {len(vals)} rows are empty)")
    present = [v for v in vals if v is not None]

    def _key(x: str) -> tuple[int, float, str]:
        try:
            return (0, float(x), x)
        except ValueError:
            return (1, 0.0, x)

    group_order = sorted(set(present), key=_key)
    return Attribute(name, "categorical", vals, vals.copy(), group_order, n_missing, None, source, 0, tuple(notes))

__all__ = [
    "Attribute",
    "Binning",
    "DEFAULT_BINS",
    "KINDS",
    "Kind",
    "MAX_CATEGORICAL_LEVELS",
    "MISSING_TOKENS",
    "infer_kind",
    "is_missing",
    "make_attribute",
    "parse_attr_spec",
    "to_binning",
]
