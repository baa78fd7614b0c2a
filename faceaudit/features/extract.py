"""The extraction driver: one set of features for a data set, memory-bounded, cached and resumable.

`extract_features` checks its inputs, splits the image list into shards of
``batch_size`` images (one model call each), reads the shards a previous run
already cached, has an executor compute the rest (`LocalExecutor` in this
process, `RayExecutor` on a cluster) and writes each to the cache as it
arrives. Both executors write the same shards, so a cache started by one is
finished by the other; an interrupted run (Ctrl-C, a crash, a lost worker)
leaves only complete shards, and rerunning recomputes just the missing ones.
Unreadable images are skipped, counted and named (or raise under ``strict``).
Backends with `PrecomputedFeatures` look rows up by path instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from faceaudit._progress import progress as progress_bar
from faceaudit.backends import Backend, PrecomputedFeatures, check_features, open_model, parse_pooling, select_layers
from faceaudit.data.preprocess import PreprocessSpec
from faceaudit.errors import InputError
from faceaudit.features.cache import FeatureCache
from faceaudit.features.executor import Executor, ShardPlan
from faceaudit.features.local import LocalExecutor
from faceaudit.features.ray import RayExecutor
from faceaudit.features.schema import FeatureSet, assemble_shards

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["EXECUTORS", "extract_features", "resolve_executor"]

log = logging.getLogger(__name__)

#: The executors that can be named by a string.
EXECUTORS = ("local", "ray")
#: Per named executor: its class, and each keyword shorthand with the executor option it sets.
_SHORTHANDS: dict[str, tuple[type[Executor], dict[str, str]]] = {
    "local": (LocalExecutor, {"workers": "workers"}),
    "ray": (RayExecutor, {"ray_address": "address", "ray_actors": "actors", "ray_cpus_per_actor": "cpus_per_actor"}),
}


def resolve_executor(executor: Executor | str, options: Mapping[str, Any] | None = None) -> Executor:
    """The executor object for `executor`: an `Executor` as given, or "local"/"ray" built from `options`.

    Why: the string forms with keyword shorthands (``executor="ray",
    ray_actors=2``) stay a short way to write ``RayExecutor(actors=2)``; an
    option that does not belong to the chosen executor is an error, not ignored.
    """
    known = {k for _, keys in _SHORTHANDS.values() for k in keys}
    unknown = sorted(set(options or {}) - known)
    if unknown:
        raise InputError(f"extract_features() got unknown keyword argument(s) {', '.join(unknown)}; executor "
                         f"shorthands are {', '.join(sorted(known))}.")
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    if isinstance(executor, Executor):
        if opts:
            raise InputError(
                f"{', '.join(sorted(opts))} given beside executor={executor!r}; an executor object carries its "
                "own options, e.g. RayExecutor(address=..., actors=..., cpus_per_actor=...) or "
                "LocalExecutor(workers=...)."
            )
        return executor
    if not isinstance(executor, str) or executor not in EXECUTORS:
        raise InputError(f"Unknown executor {executor!r}; use 'local' or 'ray' "
                         "(or an executor object: LocalExecutor(), RayExecutor(address=..., actors=...)).")
    cls, shorthands = _SHORTHANDS[executor]
    foreign = sorted(set(opts) - set(shorthands))
    if foreign:
        raise InputError(f"{', '.join(foreign)} does not apply to executor={executor!r}; its options are "
                         f"{', '.join(shorthands)}.")
    return cls(**{shorthands[k]: v for k, v in opts.items()})


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
    on_batch: Callable[[int, int], None] | None = None,
    executor: Executor | str = "local",
    **executor_options: Any,
) -> FeatureSet:
    """Extract pooled features of `layers` for the images at `paths`.

    Why: every analysis downstream (expressivity per layer, verification
    fairness on the final embedding) needs the same features, computed once,
    memory-bounded and resumable. `landmarks` (n, 5, 2) aligns each face to the
    ArcFace template (rows with NaN are resized instead); `preprocess` overrides
    the spec derived from `model.input_spec`; `on_batch(batch_index, n_batches)`
    is called after each computed batch is safely on disk (cached batches are
    not reported).

    `executor` runs the shards: ``LocalExecutor(workers=...)`` (default, also
    "local") or ``RayExecutor(address=..., actors=..., cpus_per_actor=...)``
    (also "ray"), which gives the same arrays and writes the same cache. With a
    string, `executor_options` are its keyword shorthands: ``workers`` for
    "local"; ``ray_address``, ``ray_actors``, ``ray_cpus_per_actor`` for "ray".
    """
    t0 = time.perf_counter()
    runner = resolve_executor(executor, executor_options)
    if not isinstance(model, Backend):
        model = open_model(model)
    names = select_layers(model, layers)
    parse_pooling(pooling)
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}.")
    str_paths = [str(Path(p)) for p in paths]
    lms = _checked_landmarks(landmarks, len(str_paths))
    spec = preprocess or PreprocessSpec.from_input_spec(model.input_spec)
    if isinstance(model, PrecomputedFeatures):
        return lookup_precomputed(model, str_paths, names, pooling, spec, strict, t0)
    plan = ShardPlan(model, str_paths, lms, names, pooling, spec, probe_dims(model, names, pooling, spec),
                     batch_size, strict, progress)
    cache = FeatureCache.open(cache_dir, plan) if cache_dir is not None else None
    tables: list[pa.Table | None] = [cache.cached(b) if cache is not None else None for b in range(plan.n_shards)]
    todo = [b for b, t in enumerate(tables) if t is None]
    extra = {"executor": runner.name, **_compute(plan, runner, todo, tables, cache, on_batch)}
    features, ok_all, failed, _ = assemble_shards([t for t in tables if t is not None], names, plan.dims)
    if failed:
        log.warning("%d of %d images could not be read and were skipped (first: %s).", len(failed),
                    len(str_paths), failed[0][0])
    return FeatureSet(
        features=features, ok=ok_all, failed=failed, layers=names, paths=str_paths, pooling=pooling,
        model_sha256=model.sha256, preprocess=spec.to_dict(),
        cache_dir=str(cache.folder) if cache is not None else None,
        n_cached_batches=plan.n_shards - len(todo), n_computed_batches=len(todo),
        seconds=time.perf_counter() - t0, extra=extra,
    )


def _checked_landmarks(landmarks: np.ndarray | None, n: int) -> np.ndarray | None:
    if landmarks is None:
        return None
    lms = np.asarray(landmarks, dtype=np.float64)
    if lms.shape != (n, 5, 2):
        raise InputError(f"landmarks must have shape ({n}, 5, 2) for {n} images, got {lms.shape}.")
    return lms


def _compute(
    plan: ShardPlan, runner: Executor, todo: list[int], tables: list["pa.Table | None"],
    cache: FeatureCache | None, on_batch: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """Have `runner` compute the shards `todo` into `tables`, writing each to the cache first; its measurements."""
    bar = progress_bar(total=len(plan.paths), desc="features", unit="img", enabled=plan.progress)
    bar.update(sum(t.num_rows for t in tables if t is not None))

    def finish(b: int, table: "pa.Table") -> None:
        if cache is not None:
            cache.write(b, table)
        tables[b] = table
        bar.update(table.num_rows)
        if on_batch is not None:
            on_batch(b, plan.n_shards)

    try:
        return runner.run(plan, todo, finish) if todo else {}
    finally:
        bar.close()


def probe_dims(model: Backend, names: list[str], pooling: str, spec: PreprocessSpec) -> list[int]:
    """Pooled dimension of each layer, from one forward pass on a blank image (shards need it up front)."""
    shape = (3, spec.height, spec.width) if spec.layout == "NCHW" else (spec.height, spec.width, 3)
    out = model.extract(np.zeros((1, *shape), np.float32), names, pooling=pooling)
    check_features(model, out, names, 1)
    return [int(out[n].shape[1]) for n in names]


def lookup_precomputed(
    model: Backend, paths: list[str], names: list[str], pooling: str, spec: PreprocessSpec, strict: bool, t0: float,
) -> FeatureSet:
    """Features of a `PrecomputedFeatures` backend: rows looked up by path instead of running on pixels."""
    feats, ok = cast(PrecomputedFeatures, model).lookup(paths, names)
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
