"""Driving feature extraction over a data set: decode threads, batches, a resumable Parquet cache, progress.

Images are decoded (Pillow) and preprocessed in a thread pool while the model
runs the previous batch, or, with ``executor="ray"``, by actors of a Ray
cluster (see ``faceaudit.ray_executor``). Each batch of ``batch_size``
consecutive images is one *shard*: one model call, written atomically as one
Parquet file ``shard_XXXXXX.parquet`` in a cache folder keyed by everything
that changes the numbers: the model file's SHA-256, the image list (paths,
sizes, modification times), the landmarks, the preprocessing spec, the layers,
the pooling and the batch size. Both executors write the same shards, so a
cache started by one is finished by the other. An interrupted run (Ctrl-C, a
crash, a lost worker) leaves only complete shards; rerunning recomputes just
the missing ones. Unreadable images are skipped, counted and named (or raise
under ``strict=True``).

Cache layout (open, readable with pyarrow, pandas, polars, Spark, DuckDB)::

    <cache_dir>/features-<key[:24]>/
        _cache.json              layout: layers, columns, dims, pooling, preprocessing, key
        shard_000000.parquet     rows 0 .. batch_size-1 of the image list
        shard_000001.parquet     ...

Each shard has the columns ``row_id`` (int64, the image's index in the list),
``path`` (string), ``ok`` (bool), ``error`` (string, null when ok) and one
``fixed_size_list<float32>[dim]`` column per layer, named like the layer
(``layer:<name>`` if the name is one of the four above), null where ``ok`` is
false. The metadata file starts with an underscore so that
``pyarrow.dataset.dataset(folder)`` and ``pandas.read_parquet(folder)`` skip
it, as they skip ``_SUCCESS`` and ``_metadata``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceaudit._atomic import atomic_open, atomic_write_text
from faceaudit._progress import progress as progress_bar
from faceaudit.backends import Backend, check_features, open_model, parse_pooling, select_layers
from faceaudit.data.images import decode_image
from faceaudit.data.preprocess import PreprocessSpec
from faceaudit.errors import InputError, OutputError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

#: Version of the cache layout; part of the key, so caches of another layout are never read.
CACHE_VERSION = 2
#: Name of the layout file beside the shards (underscore: Parquet readers skip it).
CACHE_META = "_cache.json"
#: File name of shard `b`.
SHARD_PATTERN = "shard_{:06d}.parquet"
#: The fixed columns of every shard; layer columns follow.
RESERVED_COLUMNS = ("row_id", "path", "ok", "error")
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class FeatureSet:
    """Pooled features per layer for the images that could be read.

    `features[layer]` is float32 (n_ok, dim), rows in input order of the images
    with `ok` True; `failed` names each skipped image and why.
    """

    features: Mapping[str, np.ndarray]
    ok: np.ndarray
    failed: list[tuple[str, str]]
    layers: list[str]
    paths: list[str]
    pooling: str
    model_sha256: str
    preprocess: dict[str, Any]
    cache_dir: str | None = None
    n_cached_batches: int = 0
    n_computed_batches: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.ok)

    @property
    def n_ok(self) -> int:
        return int(self.ok.sum())

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n,
            "n_ok": self.n_ok,
            "n_failed": len(self.failed),
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "layers": [{"name": l, "dim": int(self.features[l].shape[1])} for l in self.layers],
            "pooling": self.pooling,
            "model_sha256": self.model_sha256,
            "preprocess": self.preprocess,
            "cache_dir": self.cache_dir,
            "n_cached_batches": self.n_cached_batches,
            "n_computed_batches": self.n_computed_batches,
            "seconds": self.seconds,
            "executor": self.extra.get("executor", "local"),
        }


# -- shards ------------------------------------------------------------------------------------------


def layer_columns(layers: Sequence[str]) -> list[str]:
    """Parquet column name of each layer: the layer's own name, or ``layer:<name>`` if it is a reserved column."""
    return [f"layer:{n}" if n in RESERVED_COLUMNS else n for n in layers]


def _cache_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _stat(p: str) -> list[int]:
    try:
        st = os.stat(p)
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return [-1, -1]


def _load_one(path: str, lm: np.ndarray | None, spec: PreprocessSpec) -> np.ndarray:
    img = decode_image(path)
    try:
        return spec(img, lm)
    except InputError as exc:
        raise InputError(f"Image {path}: {exc}") from exc


def _row_landmarks(lms: np.ndarray | None, i: int) -> np.ndarray | None:
    """Landmarks of row i, or None (resize instead) when absent or not finite."""
    if lms is None or not np.isfinite(lms[i]).all():
        return None
    return lms[i]


def _probe_dims(model: Backend, names: list[str], pooling: str, spec: PreprocessSpec) -> list[int]:
    """Pooled dimension of each layer, from one forward pass on a blank image (shards need it up front)."""
    shape = (3, spec.height, spec.width) if spec.layout == "NCHW" else (spec.height, spec.width, 3)
    out = model.extract(np.zeros((1, *shape), np.float32), names, pooling=pooling)
    check_features(model, out, names, 1)
    return [int(out[n].shape[1]) for n in names]


def shard_table(
    row_ids: Sequence[int],
    paths: Sequence[str],
    ok: np.ndarray,
    errors: Sequence[str],
    feats: Mapping[str, np.ndarray] | None,
    layers: Sequence[str],
    dims: Sequence[int],
) -> "pa.Table":
    """One shard as an Arrow table (the cache's row layout); `feats[layer]` holds the rows with `ok` only.

    Why: both executors build shards here, so the local and the Ray cache are byte-for-byte the same layout.
    """
    import pyarrow as pa

    ok = np.asarray(ok, dtype=bool)
    n = len(ok)
    validity = None if ok.all() else pa.array(ok).buffers()[1]
    cols: dict[str, pa.Array] = {
        "row_id": pa.array(np.asarray(row_ids, dtype=np.int64)),
        "path": pa.array(list(paths), pa.string()),
        "ok": pa.array(ok),
        "error": pa.array([None if good else str(e) for good, e in zip(ok, errors)], pa.string()),
    }
    fields = [pa.field(k, v.type) for k, v in cols.items()]
    for name, col, dim in zip(layers, layer_columns(layers), dims):
        full = np.zeros((n, dim), np.float32)
        if feats is not None and ok.any():
            got = np.asarray(feats[name], dtype=np.float32)
            if got.shape != (int(ok.sum()), dim):
                raise InputError(
                    f"Layer {name!r} gave features of shape {got.shape}, expected ({int(ok.sum())}, {dim})."
                )
            full[ok] = got
        typ = pa.list_(pa.float32(), dim)
        cols[col] = pa.Array.from_buffers(typ, n, [validity], children=[pa.array(full.reshape(-1))])
        fields.append(pa.field(col, typ, metadata={"faceaudit.layer": name}))
    return pa.Table.from_arrays(list(cols.values()), schema=pa.schema(fields))


def write_shard(path: Path, table: "pa.Table") -> None:
    """Write one shard atomically (temporary file beside it, then rename): complete or absent."""
    import pyarrow.parquet as pq

    with atomic_open(path, "wb") as fh:
        pq.write_table(table, fh, compression="snappy", use_dictionary=["path", "error"], write_statistics=["row_id"])


def _read_shard(path: Path, row_ids: range, layers: Sequence[str], dims: Sequence[int]) -> "pa.Table | None":
    """A cached shard if it is complete and has the expected rows and columns; None (recompute) otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        want = list(RESERVED_COLUMNS) + layer_columns(layers)
        if table.column_names != want:
            raise ValueError(f"columns {table.column_names} instead of {want}")
        if table.num_rows != len(row_ids) or table["row_id"].to_pylist() != list(row_ids):
            raise ValueError("its row_id column does not match the image list")
        for col, dim in zip(layer_columns(layers), dims):
            if table.schema.field(col).type != pa.list_(pa.float32(), dim):
                raise ValueError(f"column {col!r} is {table.schema.field(col).type}, not {dim} float32 values")
        return table
    except Exception as exc:  # a damaged or foreign file: recompute it
        log.warning("Recomputing cache shard %s (%s).", path, exc)
        return None


def _assemble(
    tables: Sequence["pa.Table"], layers: Sequence[str], dims: Sequence[int]
) -> tuple[dict[str, np.ndarray], np.ndarray, list[tuple[str, str]], list[str]]:
    """Features of ok rows per layer, the ok flags, the failures and the paths, in row order."""
    oks = [np.asarray(t["ok"].to_numpy(zero_copy_only=False), dtype=bool) for t in tables]
    ok_all = np.concatenate(oks) if oks else np.zeros(0, dtype=bool)
    paths: list[str] = []
    failed: list[tuple[str, str]] = []
    for t, ok in zip(tables, oks):
        p = t["path"].to_pylist()
        paths.extend(p)
        if not ok.all():
            errs = t["error"].to_pylist()
            failed.extend((p[j], str(errs[j])) for j in np.flatnonzero(~ok))
    features: dict[str, np.ndarray] = {}
    for name, col, dim in zip(layers, layer_columns(layers), dims):
        parts = []
        for t, ok in zip(tables, oks):
            if not ok.any():
                continue
            arr = t[col].combine_chunks()
            if not ok.all():
                arr = arr.filter(ok)
            parts.append(np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim))
        features[name] = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    return features, ok_all, failed, paths


# -- the driver --------------------------------------------------------------------------------------


def extract_features(
    model: Backend | str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]],
    layers: str | Sequence[str] = "auto",
    *,
    landmarks: np.ndarray | None = None,
    pooling: str = "avg",
    batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    strict: bool = False,
    progress: bool | None = None,
    preprocess: PreprocessSpec | None = None,
    workers: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    ray_actors: int | None = None,
    ray_cpus_per_actor: float | None = None,
) -> FeatureSet:
    """Extract pooled features of `layers` for the images at `paths`.

    Why: every analysis downstream (expressivity per layer, verification
    fairness on the final embedding) needs the same features, computed once,
    memory-bounded and resumable. `landmarks` (n, 5, 2) aligns each face to the
    ArcFace template (rows with NaN are resized instead); `preprocess` overrides
    the spec derived from `model.input_spec`; `on_batch(batch_index, n_batches)`
    is called after each computed batch is safely on disk (cached batches are
    not reported).

    `executor="ray"` runs decoding, preprocessing and inference on a Ray
    cluster (`ray_address`, e.g. "10.0.0.5:6379" or "auto"; None connects to
    the Ray instance this process already started, or starts a local one),
    with `ray_actors` model replicas of `ray_cpus_per_actor` CPUs each (default:
    one actor per GPU when the cluster has GPUs, else one per CPU). It gives
    the same arrays and writes the same cache as the local executor.
    """
    t0 = time.perf_counter()
    if executor not in EXECUTORS:
        raise InputError(f"Unknown executor {executor!r}; use 'local' or 'ray'.")
    if not isinstance(model, Backend):
        model = open_model(model)
    names = select_layers(model, layers)
    parse_pooling(pooling)
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}.")
    str_paths = [str(Path(p)) for p in paths]
    n = len(str_paths)
    lms: np.ndarray | None = None
    if landmarks is not None:
        lms = np.asarray(landmarks, dtype=np.float64)
        if lms.shape != (n, 5, 2):
            raise InputError(f"landmarks must have shape ({n}, 5, 2) for {n} images, got {lms.shape}.")
    spec = preprocess or PreprocessSpec.from_input_spec(model.input_spec)
    if getattr(model, "precomputed", False):
        return _lookup_precomputed(model, str_paths, names, pooling, spec, strict, t0)
    n_batches = (n + batch_size - 1) // batch_size
    dims = _probe_dims(model, names, pooling, spec)

    shard_dir: Path | None = None
    if cache_dir is not None:
        payload = {
            "version": CACHE_VERSION,
            "model_sha256": model.sha256,
            "backend": model.backend_name,
            "paths": str_paths,
            "stat": [_stat(p) for p in str_paths],
            "landmarks": hashlib.sha256(lms.tobytes()).hexdigest() if lms is not None else None,
            "preprocess": spec.to_dict(),
            "layers": names,
            "pooling": pooling,
            "batch_size": batch_size,
        }
        key = _cache_key(payload)
        shard_dir = Path(cache_dir) / f"features-{key[:24]}"
        try:
            shard_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"Cannot create the feature cache {shard_dir}: {exc.strerror}. Pick a writable cache_dir.") from exc
        meta = shard_dir / CACHE_META
        if not meta.exists():
            info = {k: v for k, v in payload.items() if k not in ("paths", "stat", "layers")}
            info.update(
                format="faceaudit-features", key=key, n_images=n, n_shards=n_batches, shard_pattern=SHARD_PATTERN,
                columns=list(RESERVED_COLUMNS),
                layers=[{"name": l, "column": c, "dim": d} for l, c, d in zip(names, layer_columns(names), dims)],
            )
            atomic_write_text(meta, json.dumps(info, indent=1))

    def shard_path(b: int) -> Path:
        assert shard_dir is not None
        return shard_dir / SHARD_PATTERN.format(b)

    def rows_of(b: int) -> range:
        return range(b * batch_size, min(n, (b + 1) * batch_size))

    per_batch: list[pa.Table | None] = [None] * n_batches
    todo: list[int] = []
    n_cached = 0
    for b in range(n_batches):
        if shard_dir is not None and shard_path(b).exists():
            table = _read_shard(shard_path(b), rows_of(b), names, dims)
            if table is not None:
                per_batch[b] = table
                n_cached += 1
                continue
        todo.append(b)

    bar = progress_bar(total=n, desc="features", unit="img", enabled=progress)
    bar.update(sum(len(rows_of(b)) for b in range(n_batches) if per_batch[b] is not None))

    def finish(b: int, table: pa.Table) -> None:
        if shard_dir is not None:
            write_shard(shard_path(b), table)
        per_batch[b] = table
        bar.update(table.num_rows)
        if on_batch is not None:
            on_batch(b, n_batches)

    extra: dict[str, Any] = {"executor": executor}
    try:
        if executor == "ray" and todo:
            from faceaudit.ray_executor import run_shards

            jobs = [(b, list(rows_of(b)), [str_paths[i] for i in rows_of(b)],
                     None if lms is None else lms[b * batch_size: b * batch_size + len(rows_of(b))]) for b in todo]
            stats = run_shards(
                model, jobs, names, pooling, spec, dims, address=ray_address, actors=ray_actors,
                cpus_per_actor=ray_cpus_per_actor, progress=progress,
            )
            shards = iter(stats)
            try:
                for b, table in shards:
                    if strict and not all(table["ok"].to_pylist()):
                        raise InputError(next(e for e in table["error"].to_pylist() if e))
                    finish(b, table)
            finally:
                shards.close()  # stops the Ray job (and a Ray instance it started) also on errors
            extra.update(stats.summary())
        elif todo:
            extra.update(_run_local(model, str_paths, lms, names, pooling, spec, dims, todo, rows_of, strict,
                                    workers, finish))
    finally:
        bar.close()

    features, ok_all, failed, _ = _assemble([t for t in per_batch if t is not None], names, dims)
    if failed:
        log.warning("%d of %d images could not be read and were skipped (first: %s).", len(failed), n, failed[0][0])
    return FeatureSet(
        features=features, ok=ok_all, failed=failed, layers=names, paths=str_paths, pooling=pooling,
        model_sha256=model.sha256, preprocess=spec.to_dict(),
        cache_dir=str(shard_dir) if shard_dir is not None else None,
        n_cached_batches=n_cached, n_computed_batches=len(todo), seconds=time.perf_counter() - t0, extra=extra,
    )


def _run_local(
    model: Backend, str_paths: list[str], lms: np.ndarray | None, names: list[str], pooling: str,
    spec: PreprocessSpec, dims: list[int], todo: list[int], rows_of: Callable[[int], range], strict: bool,
    workers: int | None, finish: Callable[[int, "pa.Table"], None],
) -> dict[str, Any]:
    """Decode in a thread pool (two batches ahead) while the model runs; hand each shard to `finish`."""
    n_workers = workers or min(8, (os.cpu_count() or 2))
    model_s = 0.0

    def submit(pool: ThreadPoolExecutor, b: int) -> list[Future[np.ndarray]]:
        return [pool.submit(_load_one, str_paths[i], _row_landmarks(lms, i), spec) for i in rows_of(b)]

    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="faceaudit-decode")
    try:
        queue: deque[tuple[int, list[Future[np.ndarray]]]] = deque()
        it = iter(todo)
        for b in it:
            queue.append((b, submit(pool, b)))
            if len(queue) >= 2:
                break
        while queue:
            b, futs = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, submit(pool, nxt)))
            arrays: list[np.ndarray] = []
            ok = np.zeros(len(futs), dtype=bool)
            reasons: list[str] = []
            for j, f in enumerate(futs):
                try:
                    arrays.append(f.result())
                    ok[j] = True
                    reasons.append("")
                except InputError as exc:
                    if strict:
                        raise
                    reasons.append(str(exc))
            feats = None
            if arrays:
                t = time.perf_counter()
                feats = model.extract(np.stack(arrays), names, pooling=pooling)
                check_features(model, feats, names, len(arrays))
                model_s += time.perf_counter() - t
            rows = rows_of(b)
            finish(b, shard_table(rows, [str_paths[i] for i in rows], ok, reasons, feats, names, dims))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return {"model_s": model_s, "decode_threads": n_workers}


def read_feature_cache(cache_dir: str | os.PathLike[str]) -> FeatureSet:
    """Read a finished feature cache folder back as a FeatureSet, without the model or the images.

    Why: the cache is the hand-off between extraction (possibly on a cluster)
    and analysis; this reads it anywhere. `cache_dir` is a ``features-<key>``
    folder, or the cache root when it holds exactly one such folder.
    """
    import pyarrow.parquet as pq

    root = Path(cache_dir)
    if not (root / CACHE_META).is_file():
        found = sorted(p for p in root.glob("features-*") if (p / CACHE_META).is_file()) if root.is_dir() else []
        if len(found) != 1:
            listing = ", ".join(p.name for p in found) or "none"
            raise InputError(
                f"{root} is not a feature cache folder (no {CACHE_META}; feature folders inside: {listing}). "
                "Pass one features-<key> folder."
            )
        root = found[0]
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
    features, ok, failed, paths = _assemble(tables, layers, dims)
    if len(ok) != int(info["n_images"]):
        raise InputError(f"The feature cache {root} has {len(ok)} rows, its {CACHE_META} says {info['n_images']}.")
    return FeatureSet(
        features=features, ok=ok, failed=failed, layers=layers, paths=paths, pooling=str(info["pooling"]),
        model_sha256=str(info["model_sha256"]), preprocess=dict(info["preprocess"]), cache_dir=str(root),
        n_cached_batches=n_shards, extra={"executor": "cache"},
    )


def subsample_rows(n_total: int, n_max: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `n_max` of `n_total` rows, drawn uniformly without replacement.

    Why: the expressivity estimators need a few thousand rows, not the 470k of
    a large benchmark; a seeded uniform subsample keeps the estimate unbiased
    and reproducible, and sorting keeps rows in manifest order. Returns all
    rows when `n_max` is None or at least `n_total`.
    """
    if n_total < 0:
        raise InputError(f"n_total must be non-negative, got {n_total}.")
    if n_max is None or n_max >= n_total:
        return np.arange(n_total, dtype=np.int64)
    if n_max < 1:
        raise InputError(f"n_max must be at least 1 row, got {n_max}.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n_max, replace=False)).astype(np.int64)


def _lookup_precomputed(
    model: Any, paths: list[str], names: list[str], pooling: str, spec: PreprocessSpec, strict: bool, t0: float
) -> FeatureSet:
    """Precomputed-features backends look rows up by path instead of running on pixels."""
    feats, ok = model.lookup(paths, names)
    ok = np.asarray(ok)
    if ok.shape != (len(paths),) or ok.dtype != bool:
        raise model.contract_error(
            f"returned a found-mask of shape {list(ok.shape)} and dtype {ok.dtype} from lookup() for "
            f"{len(paths)} paths (one bool per path)"
        )
    check_features(model, feats, names, int(ok.sum()))
    failed = [(p, f"no row for this image in {model.path.name}") for p, found in zip(paths, ok) if not found]
    if failed and strict:
        raise InputError(f"{failed[0][1]}: {failed[0][0]} ({len(failed)} images missing). Add their features.")
    return FeatureSet(
        features=feats, ok=np.asarray(ok, dtype=bool), failed=failed, layers=names, paths=paths, pooling=pooling,
        model_sha256=model.sha256, preprocess=spec.to_dict(), seconds=time.perf_counter() - t0,
    )
