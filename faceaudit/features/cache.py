"""The resumable Parquet feature cache: one folder of shards per key, and reading a finished one back.

Layout (open, readable with pyarrow, pandas, polars, Spark, DuckDB)::

    <cache_dir>/features-<key[:24]>/
        _cache.json              layout: layers, columns, dims, pooling, preprocessing, key
        shard_000000.parquet     rows 0 .. batch_size-1 of the image list
        shard_000001.parquet     ...

The key covers everything that changes the numbers: the model file's SHA-256,
the image list (paths, sizes, modification times), the landmarks, the
preprocessing spec, the layers, the pooling and the batch size. The metadata
file starts with an underscore so that ``pyarrow.dataset.dataset(folder)`` and
``pandas.read_parquet(folder)`` skip it, as they skip ``_SUCCESS`` and ``_metadata``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceaudit._atomic import atomic_write_text
from faceaudit.errors import InputError, OutputError
from faceaudit.features.executor import ShardPlan
from faceaudit.features.schema import (
    CACHE_META, CACHE_VERSION, RESERVED_COLUMNS, SHARD_PATTERN, FeatureSet, assemble_shards, layer_columns,
    read_shard, write_shard,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FeatureCache", "cache_key", "read_feature_cache"]


def cache_key(payload: dict[str, Any]) -> str:
    """SHA-256 of the key payload (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _stat(p: str) -> list[int]:
    try:
        st = os.stat(p)
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return [-1, -1]


def _payload(plan: ShardPlan) -> dict[str, Any]:
    """Everything that changes the numbers of `plan` (the key's input; most of it is kept in _cache.json)."""
    lms = plan.landmarks
    return {
        "version": CACHE_VERSION,
        "model_sha256": plan.model.sha256,
        "backend": plan.model.backend_name,
        "paths": plan.paths,
        "stat": [_stat(p) for p in plan.paths],
        "landmarks": hashlib.sha256(lms.tobytes()).hexdigest() if lms is not None else None,
        "preprocess": plan.spec.to_dict(),
        "layers": plan.layers,
        "pooling": plan.pooling,
        "batch_size": plan.batch_size,
    }


class FeatureCache:
    """The cache folder of one extraction: finished shards are read back, new ones written atomically."""

    def __init__(self, folder: Path, plan: ShardPlan) -> None:
        self.folder = folder
        self.plan = plan

    @classmethod
    def open(cls, cache_dir: str | os.PathLike[str], plan: ShardPlan) -> "FeatureCache":
        """The folder for `plan` under `cache_dir`, created with its _cache.json when new."""
        payload = _payload(plan)
        key = cache_key(payload)
        folder = Path(cache_dir) / f"features-{key[:24]}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"Cannot create the feature cache {folder}: {exc.strerror}. Pick a writable cache_dir."
            ) from exc
        meta = folder / CACHE_META
        if not meta.exists():
            info = {k: v for k, v in payload.items() if k not in ("paths", "stat", "layers")}
            names = plan.layers
            info.update(
                format="faceaudit-features", key=key, n_images=len(plan.paths), n_shards=plan.n_shards,
                shard_pattern=SHARD_PATTERN, columns=list(RESERVED_COLUMNS),
                layers=[{"name": l, "column": c, "dim": d} for l, c, d in zip(names, layer_columns(names), plan.dims)],
            )
            atomic_write_text(meta, json.dumps(info, indent=1))
        return cls(folder, plan)

    def shard_path(self, b: int) -> Path:
        return self.folder / SHARD_PATTERN.format(b)

    def cached(self, b: int) -> "pa.Table | None":
        """Shard `b` if a complete, matching copy is on disk; None (compute it) otherwise."""
        path = self.shard_path(b)
        if not path.exists():
            return None
        return read_shard(path, self.plan.rows(b), self.plan.layers, self.plan.dims)

    def write(self, b: int, table: "pa.Table") -> None:
        write_shard(self.shard_path(b), table)


def _find_cache_folder(cache_dir: str | os.PathLike[str]) -> Path:
    root = Path(cache_dir)
    if (root / CACHE_META).is_file():
        return root
    found = sorted(p for p in root.glob("features-*") if (p / CACHE_META).is_file()) if root.is_dir() else []
    if len(found) != 1:
        listing = ", ".join(p.name for p in found) or "none"
        raise InputError(
            f"{root} is not a feature cache folder (no {CACHE_META}; feature folders inside: {listing}). "
            "Pass one features-<key> folder."
        )
    return found[0]


def read_feature_cache(cache_dir: str | os.PathLike[str]) -> FeatureSet:
    """Read a finished feature cache folder back as a FeatureSet, without the model or the images.

    Why: the cache is the hand-off between extraction (possibly on a cluster)
    and analysis; this reads it anywhere. `cache_dir` is a ``features-<key>``
    folder, or the cache root when it holds exactly one such folder.
    """
    import pyarrow.parquet as pq

    root = _find_cache_folder(cache_dir)
    try:
        info = json.loads((root / CACHE_META).read_text(encoding="utf-8"))
        layers = [l["name"] for l in info["layers"]]
        dims = [int(l["dim"]) for l in info["layers"]]
        n_shards = int(info["n_shards"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{root / CACHE_META} is unreadable ({exc}); delete the folder and extract again.") from exc
    if info.get("version") != CACHE_VERSION:
        raise InputError(f"{root} holds cache version {info.get('version')}, this faceaudit reads {CACHE_VERSION}; "
                         "extract again.")
    missing = [b for b in range(n_shards) if not (root / SHARD_PATTERN.format(b)).is_file()]
    if missing:
        raise InputError(
            f"The feature cache {root} is incomplete: {len(missing)} of {n_shards} shards are missing "
            f"(first: {SHARD_PATTERN.format(missing[0])}). Rerun the extraction to finish it."
        )
    tables = [pq.read_table(root / SHARD_PATTERN.format(b)) for b in range(n_shards)]
    features, ok, failed, paths = assemble_shards(tables, layers, dims)
    if len(ok) != int(info["n_images"]):
        raise InputError(f"The feature cache {root} has {len(ok)} rows, its {CACHE_META} says {info['n_images']}.")
    return FeatureSet(
        features=features, ok=ok, failed=failed, layers=layers, paths=paths, pooling=str(info["pooling"]),
        model_sha256=str(info["model_sha256"]), preprocess=dict(info["preprocess"]), cache_dir=str(root),
        n_cached_batches=n_shards, extra={"executor": "cache"},
    )
