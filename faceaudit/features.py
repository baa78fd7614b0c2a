"""Driving feature extraction over a data set: decode threads, batches, a resumable cache, progress.

Images are decoded (Pillow) and preprocessed in a thread pool while the model
runs the previous batch. Each batch's pooled features are written atomically as
one shard (``shard_XXXXXX.npz``) in a cache folder keyed by everything that
changes the numbers: the model file's SHA-256, the image list (paths, sizes,
modification times), the landmarks, the preprocessing spec, the layers, the
pooling and the batch size. An interrupted run (Ctrl-C, a crash) leaves only
complete shards; rerunning recomputes just the missing batches. Unreadable
images are skipped, counted and named (or raise under ``strict=True``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit._atomic import atomic_open, atomic_write_text
from faceaudit._progress import progress as progress_bar
from faceaudit.backends import Backend, open_model, parse_pooling, select_layers
from faceaudit.data.images import decode_image
from faceaudit.data.preprocess import PreprocessSpec
from faceaudit.errors import InputError, OutputError

log = logging.getLogger(__name__)

CACHE_VERSION = 1


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
        }


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
) -> FeatureSet:
    """Extract pooled features of `layers` for the images at `paths`.

    Why: every analysis downstream (expressivity per layer, verification
    fairness on the final embedding) needs the same features, computed once,
    memory-bounded and resumable. `landmarks` (n, 5, 2) aligns each face to the
    ArcFace template (rows with NaN are resized instead); `preprocess` overrides
    the spec derived from `model.input_spec`; `on_batch(batch_index, n_batches)`
    is called after each computed batch is safely on disk (cached batches are
    not reported).
    """
    import time

    t0 = time.perf_counter()
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
        meta = shard_dir / "manifest.json"
        if not meta.exists():
            info = {k: v for k, v in payload.items() if k not in ("paths", "stat")}
            info.update(n_images=n, n_batches=n_batches, key=key)
            atomic_write_text(meta, json.dumps(info, indent=1))

    def shard_path(b: int) -> Path:
        assert shard_dir is not None
        return shard_dir / f"shard_{b:06d}.npz"

    per_batch: list[dict[str, Any] | None] = [None] * n_batches
    todo: list[int] = []
    n_cached = 0
    for b in range(n_batches):
        if shard_dir is not None and shard_path(b).exists():
            try:
                with np.load(shard_path(b), allow_pickle=False) as z:
                    per_batch[b] = {k: z[k] for k in z.files}
                n_cached += 1
                continue
            except Exception as exc:  # unreadable shard: recompute it
                log.warning("Recomputing unreadable cache shard %s (%s).", shard_path(b), exc)
        todo.append(b)

    n_workers = workers or min(8, (os.cpu_count() or 2))
    bar = progress_bar(total=n, desc="features", unit="img", enabled=progress)
    bar.update(sum(batch_size if b < n_batches - 1 else n - b * batch_size for b in range(n_batches) if per_batch[b] is not None))

    def submit(pool: ThreadPoolExecutor, b: int) -> list[Future[np.ndarray]]:
        lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
        return [pool.submit(_load_one, str_paths[i], None if lms is None or not np.isfinite(lms[i]).all() else lms[i], spec)
                for i in range(lo, hi)]

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
            lo = b * batch_size
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
            rec: dict[str, Any] = {"ok": ok, "reasons": np.asarray(reasons, dtype=str)}
            if arrays:
                feats = model.extract(np.stack(arrays), names, pooling=pooling)
                for i, name in enumerate(names):
                    rec[f"layer{i}"] = feats[name]
            else:
                rec.update({f"layer{i}": None for i in range(len(names))})
            if shard_dir is not None:
                with atomic_open(shard_path(b), "wb") as fh:
                    np.savez(fh, **{k: v for k, v in rec.items() if v is not None})
            per_batch[b] = rec
            bar.update(len(futs))
            if on_batch is not None:
                on_batch(b, n_batches)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()

    ok_all = np.concatenate([r["ok"] for r in per_batch]) if per_batch else np.zeros(0, dtype=bool)  # type: ignore[index]
    failed: list[tuple[str, str]] = []
    for b, r in enumerate(per_batch):
        assert r is not None
        for j, reason in enumerate(r["reasons"]):
            if not r["ok"][j]:
                failed.append((str_paths[b * batch_size + j], str(reason)))
    features: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        parts = [r[f"layer{i}"] for r in per_batch if r is not None and r.get(f"layer{i}") is not None]
        features[name] = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    if failed:
        log.warning("%d of %d images could not be read and were skipped (first: %s).", len(failed), n, failed[0][0])
    return FeatureSet(
        features=features, ok=ok_all, failed=failed, layers=names, paths=str_paths, pooling=pooling,
        model_sha256=model.sha256, preprocess=spec.to_dict(),
        cache_dir=str(shard_dir) if shard_dir is not None else None,
        n_cached_batches=n_cached, n_computed_batches=len(todo), seconds=time.perf_counter() - t0,
    )


def _lookup_precomputed(
    model: Any, paths: list[str], names: list[str], pooling: str, spec: PreprocessSpec, strict: bool, t0: float
) -> FeatureSet:
    """Precomputed-features backends look rows up by path instead of running on pixels."""
    import time

    feats, ok = model.lookup(paths, names)
    failed = [(p, f"no row for this image in {model.path.name}") for p, found in zip(paths, ok) if not found]
    if failed and strict:
        raise InputError(f"{failed[0][1]}: {failed[0][0]} ({len(failed)} images missing). Add their features.")
    return FeatureSet(
        features=feats, ok=np.asarray(ok, dtype=bool), failed=failed, layers=names, paths=paths, pooling=pooling,
        model_sha256=model.sha256, preprocess=spec.to_dict(), seconds=time.perf_counter() - t0,
    )
