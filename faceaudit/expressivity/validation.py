"""Input checks for expressivity estimation.

Bad arrays are the commonest way to get a meaningless MI number, so every
public entry point goes through these checks and fails loudly with an
:class:`~faceaudit.errors.InputError` that says what is wrong and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.errors import InputError, on_command_line

KINDS = ("continuous", "categorical")
MIN_CATEGORY_SIZE = 2  # a category with fewer rows is an error
SMALL_CATEGORY_SIZE = 10  # fewer rows than this gives a warning
MANY_CLASS_MEDIAN = 5  # a median class size below this gives a warning (identity-like attributes)
MIN_ROWS = 20


@dataclass(frozen=True)
class CleanPair:
    """Validated features and attribute, restricted to the rows where the attribute is present."""

    rows: np.ndarray  # indices into the original rows that are used
    y: np.ndarray  # float64 (continuous) or int64 codes (categorical)
    classes: tuple  # category labels in code order (categorical) or ()
    warnings: tuple


def _label(layer: str | None, attribute: str | None) -> str:
    parts = []
    if layer is not None:
        parts.append(f"layer {layer!r}")
    if attribute is not None:
        parts.append(f"attribute {attribute!r}")
    return (" (" + ", ".join(parts) + ")") if parts else ""


def check_features(features: object, *, layer: str | None = None) -> np.ndarray:
    """Return `features` as a finite float32 (n, d) array or raise InputError."""
    where = _label(layer, None)
    if hasattr(features, "detach"):  # a torch tensor
        features = features.detach().cpu().numpy()  # type: ignore[union-attr]
    arr = np.asarray(features)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(
            f"features{where} have dtype {arr.dtype}; expected a numeric (float) array of shape (n_samples, n_features). "
            "Convert them with np.asarray(features, dtype=np.float32)."
        )
    if arr.ndim == 1:
        raise InputError(
            f"features{where} are 1-D with shape {arr.shape}; expected (n_samples, n_features). "
            "For a single feature pass features.reshape(-1, 1)."
        )
    if arr.ndim != 2:
        raise InputError(
            f"features{where} have shape {arr.shape}; expected 2-D (n_samples, n_features). "
            "Flatten or pool feature maps first, e.g. features.reshape(len(features), -1)."
        )
    if arr.shape[1] == 0:
        raise InputError(f"features{where} have 0 columns; pass at least one feature per sample.")
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise InputError(
            f"features{where} contain NaN or infinite values in {len(bad_rows)} row(s) (first rows: "
            f"{bad_rows[:5].tolist()}). Drop or impute those rows before estimating expressivity."
        )
    return arr


def _missing_mask(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        out = np.zeros(len(values), dtype=bool)
        for i, v in enumerate(values):
            if v is None or (isinstance(v, str) and v == ""):
                out[i] = True
            elif isinstance(v, float) and np.isnan(v):
                out[i] = True
        return out
    if np.issubdtype(values.dtype, np.floating):
        return np.isnan(values)
    return np.zeros(len(values), dtype=bool)


def check_attribute(
    attribute: object,
    n_rows: int,
    kind: str,
    *,
    layer: str | None = None,
    name: str | None = None,
    min_class_count: int = MIN_CATEGORY_SIZE,
) -> CleanPair:
    """Validate an attribute against `n_rows` feature rows; drop missing rows; encode categories.

    Missing values (NaN, None, "") are dropped for this attribute only, because
    an audit usually has an attribute annotated on a subset of the images.
    A category with fewer than `min_class_count` rows raises InputError (right
    for sex or race); identity-like attributes with many rare classes pass
    ``min_class_count=1`` and get a warning when classes are small.
    """
    where = _label(layer, name)
    if kind not in KINDS:
        raise InputError(f"kind={kind!r}{where} is not supported; use 'continuous' or 'categorical'.")
    if hasattr(attribute, "detach"):
        attribute = attribute.detach().cpu().numpy()  # type: ignore[union-attr]
    values = np.asarray(attribute)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise InputError(
            f"attribute{where} has shape {values.shape}; expected 1-D (n_samples,). Pass one attribute at a time."
        )
    if len(values) != n_rows:
        raise InputError(
            f"attribute{where} has {len(values)} values but the features have {n_rows} rows; "
            "pass one attribute value per feature row, in the same order."
        )
    missing = _missing_mask(values)
    rows = np.flatnonzero(~missing)
    warnings: list[str] = []
    if missing.any():
        warnings.append(f"{int(missing.sum())} row(s) with a missing attribute value were dropped.")
    if len(rows) < MIN_ROWS:
        raise InputError(
            f"attribute{where} has only {len(rows)} non-missing values; at least {MIN_ROWS} are needed "
            "(a few hundred for a trustworthy estimate)."
        )
    kept = values[rows]
    if kind == "continuous":
        try:
            y = kept.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"attribute{where} is declared continuous but its values are not numbers ({exc}). "
                "Use kind='categorical' for labels, or convert the values to floats."
            ) from exc
        if not np.isfinite(y).all():
            raise InputError(f"attribute{where} contains infinite values; drop those rows or replace them by NaN.")
        if np.ptp(y) == 0:
            raise InputError(
                f"attribute{where} is constant ({y[0]!r}) on all {len(y)} rows, so it carries no information; "
                "drop it from the audit."
            )
        _, counts = np.unique(y, return_counts=True)
        if counts.max() > 0.95 * len(y):
            warnings.append(
                f"attribute is nearly constant: one value covers {counts.max() / len(y):.1%} of rows; "
                "the estimate rests on few informative samples."
            )
        return CleanPair(rows=rows, y=y, classes=(), warnings=tuple(warnings))
    # categorical
    if np.issubdtype(kept.dtype, np.floating) and kept.dtype != object:
        if not np.all(np.isfinite(kept)):
            raise InputError(f"attribute{where} contains infinite values; drop those rows.")
    labels = np.array([str(v) for v in kept], dtype=object) if kept.dtype == object else kept
    classes, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise InputError(
            f"attribute{where} is constant ({classes[0]!r}) on all {len(kept)} rows, so it carries no information; "
            "drop it from the audit."
        )
    min_class_count = int(min_class_count)
    if min_class_count < 1:
        raise InputError(f"min_class_count={min_class_count}{where} must be a positive integer.")
    tiny = [str(c) for c, k in zip(classes, counts) if k < min_class_count]
    if tiny:
        raise InputError(
            f"attribute{where} has categor{'y' if len(tiny) == 1 else 'ies'} {', '.join(map(repr, tiny[:5]))} "
            f"with fewer than {min_class_count} samples; merge rare categories (e.g. into 'other') or drop those "
            + (
                "rows (or leave those cells empty in the manifest: empty cells are left out)."
                if on_command_line()
                else "rows (for an identity-like attribute with many rare classes pass min_class_count=1)."
            )
        )
    small = [f"{c!s} ({k})" for c, k in zip(classes, counts) if k < SMALL_CATEGORY_SIZE]
    median = float(np.median(counts))
    if median < MANY_CLASS_MEDIAN:
        warnings.append(
            f"{len(classes)} categories with a median of {median:g} samples each (fewer than "
            f"{MANY_CLASS_MEDIAN}): many classes are absent from a seed's training rows, so the estimate is "
            "biased low; use more images per class."
        )
    elif small and len(classes) > 20:
        warnings.append(
            f"{len(small)} of {len(classes)} categories have fewer than {SMALL_CATEGORY_SIZE} samples; "
            "their contribution to the estimate is unreliable."
        )
    elif small:
        warnings.append(
            f"small categories (fewer than {SMALL_CATEGORY_SIZE} samples): {', '.join(small[:5])}; "
            "their contribution to the estimate is unreliable."
        )
    if counts.max() > 0.95 * len(kept):
        warnings.append(
            f"attribute is nearly constant: the largest category covers {counts.max() / len(kept):.1%} of rows."
        )
    return CleanPair(
        rows=rows, y=codes.astype(np.int64), classes=tuple(c.item() if hasattr(c, "item") else c for c in classes),
        warnings=tuple(warnings),
    )

__all__ = [
    "CleanPair",
    "KINDS",
    "MANY_CLASS_MEDIAN",
    "MIN_CATEGORY_SIZE",
    "MIN_ROWS",
    "SMALL_CATEGORY_SIZE",
    "check_attribute",
    "check_features",
]
