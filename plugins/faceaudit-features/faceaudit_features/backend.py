"""Precomputed features as a faceaudit backend: .npz or .parquet files.

For teams whose model lives in another framework: compute the features there,
save them, and audit them with faceaudit.

* ``.npz``: one 2-D float array (n, dim) per layer, named by the layer, plus an
  optional ``paths`` string array (n,) naming the image of each row.
* ``.parquet``: a ``path`` column and one column per layer, each a (fixed-size)
  list of floats, or one plain float column per layer (dim 1).

Rows are matched to the images asked for by path: exactly, then by normalised
path, then by path relative to a common suffix (file name), so features saved
with relative paths match a manifest's absolute ones. Without paths, rows must
come in the manifest's order and number.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.backends import Backend, LayerInfo, PrecomputedFeatures
from faceaudit.errors import InputError, ModelError, did_you_mean

# device and trust_pickle are accepted for a uniform CLI and ignored (no model runs, nothing is unpickled)
_OPTIONS = {"final_layer", "height", "width", "layout", "channel_order", "mean", "std", "device", "trust_pickle"}
_FINAL_NAMES = ("embedding", "embeddings", "final", "output")


class PrecomputedFeaturesBackend(Backend, PrecomputedFeatures):
    """Features already computed elsewhere; `lookup(paths, layers)` replaces running a model."""

    name = "features"
    suffixes = (".npz", ".parquet")

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(path, **options)
        unknown = set(options) - _OPTIONS
        if unknown:
            raise InputError(f"Unknown option(s) {sorted(unknown)} for the features backend; known: {sorted(_OPTIONS)}.")
        suffix = self.path.suffix.lower()
        if suffix == ".npz":
            arrays, paths = self._read_npz()
        elif suffix == ".parquet":
            arrays, paths = self._read_parquet()
        else:
            raise ModelError(f"{self.path}: the features backend reads .npz or .parquet files.")
        if not arrays:
            raise ModelError(f"{self.path} holds no feature arrays; save one 2-D array per layer.")
        n_rows = {len(a) for a in arrays.values()}
        if len(n_rows) != 1:
            sizes = ", ".join(f"{k}: {len(v)}" for k, v in arrays.items())
            raise ModelError(f"{self.path}: layers have different numbers of rows ({sizes}); each row is one image.")
        self._n = n_rows.pop()
        if paths is not None and len(paths) != self._n:
            raise ModelError(f"{self.path}: 'paths' has {len(paths)} entries but the layers have {self._n} rows.")
        self._arrays = arrays
        self._paths = paths
        self._layers = [LayerInfo(k, "Precomputed", (None, int(v.shape[1])), i) for i, (k, v) in enumerate(arrays.items())]
        declared = options.get("final_layer")
        if declared is None:
            declared = next((k for k in _FINAL_NAMES if k in arrays), list(arrays)[-1])
        self._final = declared
        self._check_final(declared)
        self._input_spec = self._input_spec.with_overrides(
            source=f"options for {self.path.name}",
            **{k: options.get(k) for k in ("height", "width", "layout", "channel_order", "mean", "std")},
        )

    # ------------------------------------------------------------------ readers
    def _as_2d(self, name: str, arr: Any) -> np.ndarray:
        a = np.asarray(arr)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or not np.issubdtype(a.dtype, np.number):
            raise ModelError(
                f"{self.path}: layer {name!r} has shape {list(a.shape)} and dtype {a.dtype}; save each layer "
                "as a 2-D numeric array (n_images, dim)."
            )
        return a.astype(np.float32, copy=False)

    def _read_npz(self) -> tuple[dict[str, np.ndarray], list[str] | None]:
        try:
            with np.load(self.path, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        except Exception as exc:
            raise ModelError(
                f"{self.path} is not a readable .npz of plain arrays ({type(exc).__name__}: {exc}). Save it "
                "with numpy.savez(path, layer=array, paths=np.array(list_of_paths, dtype=str))."
            ) from exc
        paths = raw.pop("paths", None)
        arrays = {k: self._as_2d(k, v) for k, v in raw.items()}
        return arrays, [str(p) for p in paths] if paths is not None else None

    def _read_parquet(self) -> tuple[dict[str, np.ndarray], list[str] | None]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(self.path)
        except Exception as exc:
            raise ModelError(f"{self.path} is not a readable Parquet file ({type(exc).__name__}: {exc}).") from exc
        paths = table.column("path").to_pylist() if "path" in table.column_names else None
        arrays: dict[str, np.ndarray] = {}
        for name in table.column_names:
            if name == "path":
                continue
            col = table.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                if col.null_count:
                    raise ModelError(f"{self.path}: column {name!r} has {col.null_count} empty rows; fill or drop them.")
                lengths = set(np.asarray(col.value_lengths()).tolist()) if not pa.types.is_fixed_size_list(col.type) else None
                if lengths is not None and len(lengths) > 1:
                    raise ModelError(f"{self.path}: column {name!r} has lists of different lengths {sorted(lengths)[:5]}.")
                flat = np.asarray(col.flatten())
                arrays[name] = self._as_2d(name, flat.reshape(len(col), -1))
            elif pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
                arrays[name] = self._as_2d(name, np.asarray(col))
            else:
                raise ModelError(
                    f"{self.path}: column {name!r} has type {col.type}; use a list of floats per row, a float, or "
                    "'path'."
                )
        return arrays, [str(p) for p in paths] if paths is not None else None

    # ------------------------------------------------------------------ lookup
    def _row_index(self, paths: Sequence[str]) -> np.ndarray:
        """Row of each requested image, -1 where the file has none."""
        if self._paths is None:
            if len(paths) != self._n:
                raise ModelError(
                    f"{self.path} has {self._n} rows and no 'paths' to match them, but {len(paths)} images were "
                    "asked for. Save a 'paths' array (npz) or 'path' column (parquet)."
                )
            return np.arange(self._n)
        exact = {p: i for i, p in enumerate(self._paths)}
        norm = {os.path.normpath(p): i for i, p in enumerate(self._paths)}
        stored = [Path(p).parts for p in self._paths]
        out = np.full(len(paths), -1, dtype=np.int64)
        by_suffix: dict[tuple[str, ...], list[int]] = {}
        for i, parts in enumerate(stored):
            by_suffix.setdefault(parts[-1:], []).append(i)
        for j, p in enumerate(paths):
            if p in exact:
                out[j] = exact[p]
            elif os.path.normpath(p) in norm:
                out[j] = norm[os.path.normpath(p)]
            else:
                want = Path(p).parts
                cands = [i for i in by_suffix.get(want[-1:], []) if want[-len(stored[i]):] == stored[i]
                         or stored[i][-len(want):] == want]
                if len(cands) == 1:
                    out[j] = cands[0]
        return out

    def lookup(self, paths: Sequence[str], layers: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Features of `layers` for `paths` and a mask of the images that were found."""
        for n in layers:
            self.layer(n)
        idx = self._row_index([str(p) for p in paths])
        ok = idx >= 0
        return {n: self._arrays[n][idx[ok]] for n in layers}, ok

    def extract(self, batch: np.ndarray, layers: Sequence[str], pooling: str = "avg") -> dict[str, np.ndarray]:
        """Not available: precomputed features cannot run on pixels."""
        raise ModelError(
            f"{self.path} holds precomputed features and cannot run on image batches; use "
            "faceaudit.features.extract_features(model, paths, layers), which looks rows up by path."
        )

    def layer(self, name: str) -> LayerInfo:
        for info in self._layers:
            if info.name == name:
                return info
        raise ModelError(
            f"{self.path.name} has no layer {name!r}.{did_you_mean(name, list(self._arrays))} "
            f"Layers in the file: {', '.join(self._arrays)}."
        )
