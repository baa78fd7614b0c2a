"""Data manifests: a CSV or Parquet table listing face images and their attributes.

Columns: ``path`` (relative to the manifest's folder, or absolute), optional ``identity``, any attribute
columns, optional 5-point landmarks ``lm_x1, lm_y1, ..., lm_x5, lm_y5`` (pixel coordinates; order: eye on
the image's left, eye on the image's right, nose tip, mouth corner left, mouth corner right).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.data.attributes import Attribute, Binning, is_missing, make_attribute, parse_attr_spec
from faceaudit.data.yaw import yaw_from_landmarks
from faceaudit.errors import ManifestError, on_command_line

log = logging.getLogger(__name__)

LANDMARK_COLUMNS: tuple[str, ...] = tuple(f"lm_{a}{k}" for k in range(1, 6) for a in ("x", "y"))
_SHOW = 5  # how many offending rows/files a message lists
_ALIASES = {
    "path": ("file", "filename", "file_name", "filepath", "image", "image_path", "img", "img_path"),
    "identity": ("id", "person", "subject", "name", "label", "identity_id", "subject_id"),
}


@dataclass(frozen=True)
class Manifest:
    """A loaded, validated manifest: absolute image paths, identities, landmarks and requested attributes."""

    path: Path
    root: Path
    paths: list[Path]
    identities: np.ndarray | None
    landmarks: np.ndarray | None
    attributes: dict[str, Attribute]
    columns: list[str]
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": str(self.path),
            "n_images": len(self),
            "n_identities": None if self.identities is None else int(len(set(self.identities.tolist()) - {None})),
            "has_landmarks": self.landmarks is not None,
            "columns": list(self.columns),
            "attributes": [a.to_dict() for a in self.attributes.values()],
            "warnings": list(self.warnings),
        }


def _read_table(path: Path) -> Any:
    import pandas as pd

    if not path.exists():
        raise ManifestError(f"manifest {path} does not exist; pass the path of a .csv or .parquet file")
    if not path.is_file():
        raise ManifestError(f"manifest {path} is not a file; pass the path of a .csv or .parquet file")
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise ManifestError(f"manifest {path} is empty; it needs a header line (with a `path` column) and one row per image")
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".tsv"):
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=object, keep_default_na=False,
                             skipinitialspace=True)
        else:
            raise ManifestError(f"manifest {path}: unsupported file type {suffix!r}; use .csv or .parquet")
    except ManifestError:
        raise
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {path} is not UTF-8 text ({exc.reason}); save it as UTF-8 CSV") from None
    except Exception as exc:  # pandas/pyarrow raise many types for corrupt files
        if suffix not in (".parquet", ".pq"):
            _check_delimiter(path, suffix)
        raise ManifestError(
            f"manifest {path} could not be read as {'Parquet' if suffix in ('.parquet', '.pq') else 'CSV'} "
            f"({type(exc).__name__}: {exc}); check the file is not truncated or of another format"
        ) from None
    if suffix not in (".parquet", ".pq") and len(df.columns) == 1:
        _check_delimiter(path, suffix)
    df.columns = [str(c).strip() for c in df.columns]
    # CSV is read as text; blank strings mean missing.
    return df


_DELIMITERS = {";": "semicolon-separated", "\t": "tab-separated", "|": "separated by '|'"}


def _check_delimiter(path: Path, suffix: str) -> None:
    """Name another delimiter as the cause when the header line splits on it and not on the expected one.

    A spreadsheet saved with a European locale writes semicolons; read as CSV its
    whole header becomes one column, and every later message would be misleading.
    """
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
            header = fh.readline(65536).rstrip("\r\n")
    except OSError:
        return
    expected = "\t" if suffix == ".tsv" else ","
    for sep, words in _DELIMITERS.items():
        if sep != expected and header.count(sep) > header.count(expected):
            shown = header if len(header) <= 80 else header[:77] + "..."
            fix = (
                "save it as comma-separated CSV, or give it the .tsv suffix"
                if sep == "\t"
                else "save it as comma-separated CSV (in a spreadsheet: CSV with a comma as the field separator)"
            )
            raise ManifestError(
                f"manifest {path} looks {words}: its header line {shown!r} holds {header.count(sep)} "
                f"{sep!r} and {header.count(expected)} {'comma' if expected == ',' else 'tab'}(s), but faceaudit "
                f"reads {'comma-separated .csv' if expected == ',' else 'tab-separated .tsv'} files; {fix}"
            )


def _missing_column(name: str, columns: Sequence[str], path: Path, what: str = "attribute") -> ManifestError:
    close = difflib.get_close_matches(name, list(columns), n=1, cutoff=0.0)
    lower = [c for c in columns if c.lower() == name.lower()]
    alias = [c for c in columns if c.lower() in _ALIASES.get(name, ())]
    hint = lower[0] if lower else (alias[0] if alias else (close[0] if close else None))
    return ManifestError(
        f"manifest {path}: {what} column {name!r} not found; columns are: {', '.join(columns)}."
        + (f" Closest match: {hint!r}." if hint else "")
    )


def _parse_landmarks(df: Any, path: Path) -> np.ndarray | None:
    import pandas as pd

    present = [c for c in LANDMARK_COLUMNS if c in df.columns]
    if not present:
        return None
    if len(present) != len(LANDMARK_COLUMNS):
        missing = [c for c in LANDMARK_COLUMNS if c not in df.columns]
        raise ManifestError(
            f"manifest {path}: landmark columns incomplete, missing {', '.join(missing)}; "
            "give all ten lm_x1, lm_y1, ..., lm_x5, lm_y5 or none"
        )
    out = np.empty((len(df), 10), dtype=float)
    for j, c in enumerate(LANDMARK_COLUMNS):
        col = df[c]
        text = col.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
        blank = text.map(is_missing)
        num = pd.to_numeric(text.where(~blank), errors="coerce").to_numpy(dtype=float)
        bad = ~blank.to_numpy() & ~np.isfinite(num)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise ManifestError(
                f"manifest {path}: bad landmark value {col.iloc[r]!r} at row {r + 1}, column {c!r} "
                f"({int(bad.sum())} bad value(s) in that column); landmarks must be finite pixel coordinates"
            )
        out[:, j] = num
    nan = np.isnan(out)
    partial = nan.any(1) & ~nan.all(1)
    if partial.any():
        r = int(np.flatnonzero(partial)[0])
        cols = [LANDMARK_COLUMNS[j] for j in np.flatnonzero(nan[r])]
        raise ManifestError(
            f"manifest {path}: row {r + 1} has some landmarks but not all (empty: {', '.join(cols)}); "
            "fill them or leave all ten empty"
        )
    return out.reshape(len(df), 5, 2)


def _resolve_paths(df: Any, root: Path, manifest: Path, check_files: bool) -> list[Path]:
    raw = df["path"].tolist()
    empty = [i for i, p in enumerate(raw) if is_missing(p, tokens=())]
    if empty:
        rows = ", ".join(str(i + 1) for i in empty[:_SHOW])
        raise ManifestError(f"manifest {manifest}: {len(empty)} row(s) have an empty 'path' (rows {rows}); every row needs an image path")
    paths = []
    for p in raw:
        q = Path(str(p).strip())
        paths.append(q if q.is_absolute() else (root / q))
    seen: dict[str, int] = {}
    dups: list[tuple[int, int, str]] = []
    for i, p in enumerate(paths):
        key = str(p)
        if key in seen:
            dups.append((seen[key], i, str(raw[i]).strip()))
        else:
            seen[key] = i
    if dups:
        shown = "; ".join(f"{p!r} at rows {a + 1} and {b + 1}" for a, b, p in dups[:_SHOW])
        raise ManifestError(
            f"manifest {manifest}: {len(dups)} duplicate path(s): {shown}; each image must be listed once"
        )
    if check_files:
        missing = [(i, p) for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            shown = ", ".join(f"row {i + 1}: {raw[i]}" for i, _ in missing[:_SHOW])
            raise ManifestError(
                f"manifest {manifest}: {len(missing)} of {len(paths)} image file(s) not found (relative paths are "
                f"resolved against {root}); first: {shown}. Fix the paths"
                + ("" if on_command_line() else " or pass check_files=False")
            )
    return paths


def _parse_identities(df: Any, manifest: Path, require_identity: bool) -> np.ndarray | None:
    if "identity" not in df.columns:
        if require_identity:
            raise _missing_column("identity", list(df.columns), manifest, what="identity")
        return None
    ids = np.empty(len(df), dtype=object)
    for i, v in enumerate(df["identity"].tolist()):
        ids[i] = None if is_missing(v) else str(v).strip()
    if require_identity:
        present = [v for v in ids if v is not None]
        if not present:
            raise ManifestError(f"manifest {manifest}: column 'identity' is empty; genuine pairs need identity labels")
        _, counts = np.unique(np.asarray(present, dtype=str), return_counts=True)
        if counts.max() < 2:
            raise ManifestError(
                f"manifest {manifest}: every identity in column 'identity' has a single image ({len(counts)} identities), "
                "so no genuine (same-person) pairs exist; verification fairness needs at least two images for some identities"
            )
    return ids


def load_manifest(
    path: str | Path,
    attrs: str | Sequence[str] | None = "age,sex,yaw",
    *,
    check_files: bool = True,
    bins: Mapping[str, Binning | Sequence[float] | Mapping[str, Any]] | None = None,
    require_identity: bool = False,
) -> Manifest:
    """Load and validate a CSV/Parquet manifest, so every later stage can trust paths, identities and attributes.

    ``attrs`` names the attribute columns (``"age,sex,yaw"`` or a list); append ``:continuous`` or
    ``:categorical`` to override the inferred kind. ``identity`` may itself be requested (categorical).
    ``yaw`` is derived from the landmarks with :func:`yaw_from_landmarks` (a proxy) when the manifest has
    landmarks but no yaw column. ``attrs=None`` loads no attributes. ``bins`` overrides group bins of
    continuous attributes by name (a :class:`Binning`, a list of edges, or ``{"edges", "labels",
    "absolute"}``). Raises ManifestError for any inconsistency, naming the file, row and column.
    """
    import pandas as pd

    mpath = Path(path).expanduser()
    df = _read_table(mpath)
    root = mpath.resolve().parent
    columns = list(df.columns)
    dup_cols = sorted({c for c in columns if columns.count(c) > 1})
    if dup_cols:
        raise ManifestError(f"manifest {mpath}: duplicate column name(s) {', '.join(dup_cols)}; rename them")
    if "path" not in df.columns:
        raise _missing_column("path", columns, mpath, what="required")
    if len(df) == 0:
        raise ManifestError(f"manifest {mpath} has a header but no rows; list at least one image")
    df = df.reset_index(drop=True)
    paths = _resolve_paths(df, root, mpath, check_files)
    identities = _parse_identities(df, mpath, require_identity)
    landmarks = _parse_landmarks(df, mpath)
    spec = parse_attr_spec(attrs)
    bins = dict(bins or {})
    unknown_bins = [b for b in bins if b not in {n for n, _ in spec}]
    if unknown_bins:
        log.debug("bins given for attributes not requested: %s", unknown_bins)
    attributes: dict[str, Attribute] = {}
    warnings: list[str] = []
    where = f"manifest {mpath}: "
    for name, kind in spec:
        if name == "path" or name in LANDMARK_COLUMNS:
            raise ManifestError(f"{where}{name!r} is not an attribute column; choose attribute columns such as age, sex, yaw")
        if name == "identity":
            if identities is None:
                raise _missing_column("identity", columns, mpath)
            if kind == "continuous":
                raise ManifestError(f"{where}attribute 'identity' can only be categorical")
            attr = make_attribute("identity", identities, "categorical", where=where)
        elif name in df.columns:
            col = df[name]
            if col.dtype == object:
                col = col.map(lambda v: v.strip() if isinstance(v, str) else v)
            attr = make_attribute(name, col, kind, bins.get(name), where=where)
        elif name == "yaw" and landmarks is not None:
            if kind == "categorical":
                raise ManifestError(f"{where}yaw derived from landmarks is continuous; drop ':categorical' or add a yaw column")
            yaw = yaw_from_landmarks(landmarks)
            attr = make_attribute("yaw", pd.Series(yaw), "continuous", bins.get("yaw"), source="landmarks", where=where)
            warnings.append(
                "yaw was estimated from the 5 landmarks (a geometric proxy, about 3-5 degrees mean absolute error); "
                "add a 'yaw' column from a pose estimator for exact pose groups"
            )
        else:
            extra = " (yaw can be derived only when all ten landmark columns lm_x1..lm_y5 exist)" if name == "yaw" else ""
            err = _missing_column(name, columns, mpath)
            raise ManifestError(str(err) + extra)
        if attr.n_missing:
            log.info("attribute %r: %d of %d rows missing (excluded for this attribute only)", name, attr.n_missing, len(df))
        warnings.extend(attr.notes)
        attributes[name] = attr
    return Manifest(mpath, root, paths, identities, landmarks, attributes, columns, warnings)

__all__ = [
    "LANDMARK_COLUMNS",
    "Manifest",
    "load_manifest",
]
