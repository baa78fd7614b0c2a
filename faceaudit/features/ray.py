"""The Ray executor: Ray Data batch inference over shards of the image list.

`extract_features(..., executor=RayExecutor(address=..., actors=...))` (or
``executor="ray"``) hands the shards it still needs to `RayExecutor.run`.
Each shard (``batch_size`` consecutive rows: row_id, path, landmarks) is one
row of a Ray Dataset; ``map_batches`` sends it to an actor (`ShardWorker`)
that opened the model once, decodes and preprocesses the images with the same
`decode_batch` as the local executor, runs the
same single model call on the same batch and returns the shard as an Arrow
table. The driver writes each shard to the cache as it arrives, so the result
is bit-identical to a local run and an interrupted run resumes per shard.

A shard, not an image, is the unit of work on purpose: a model's output for
an image can depend on the batch it is computed in (kernel choice by batch
size), and one shard per model call keeps both executors' numbers identical.

Only the driver writes the cache, so the cache folder need not be shared with
the workers; every worker must reach the model file and the images at the
same paths. Ray is imported only here, and only when this executor runs.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from faceaudit import errors
from faceaudit.backends import open_model
from faceaudit.data.preprocess import PreprocessSpec
from faceaudit.errors import BackendError, FaceAuditError, InputError, ModelError, on_command_line
from faceaudit.features.decode import decode_batch, infer_batch
from faceaudit.features.executor import Executor, ShardPlan, ShardSink
from faceaudit.features.schema import shard_table

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["MAX_BLOCKS", "RayExecutor", "ShardWorker", "import_ray", "plan_actors"]

log = logging.getLogger(__name__)

#: At most this many Ray blocks (shards are grouped beyond it).
MAX_BLOCKS = 20_000


def import_ray() -> Any:
    """Import ray, or explain how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise InputError(
            "executor='ray' needs Ray Data, which is not installed: pip install 'faceaudit[ray]' "
            "(or pip install 'ray[data]'), on the driver and on every worker."
        ) from exc
    return ray


class ShardWorker:
    """Ray Data actor: opens the model once, turns shard rows into shard tables (Arrow IPC bytes)."""

    def __init__(
        self, model_path: str, backend: str, options: Mapping[str, Any], sha256: str, layers: Sequence[str],
        pooling: str, spec: PreprocessSpec, dims: Sequence[int], threads: int,
    ) -> None:
        self.host = socket.gethostname()
        # An error raised here would reach the driver only as text (ActorDiedError); keep it and report it
        # from the first call, as data (see __call__).
        self.init_error: FaceAuditError | None = None
        try:
            self.model = open_model(model_path, backend=backend, **dict(options))
        except ModelError as exc:
            self.init_error = ModelError(
                f"A Ray worker on {self.host} cannot open the model: {exc} Every worker needs faceaudit installed "
                f"and the model file at the same path ({model_path}), e.g. on shared storage."
            )
        except FaceAuditError as exc:
            self.init_error = exc
        else:
            if self.model.sha256 != sha256:
                self.init_error = ModelError(
                    f"The model file {model_path} on the Ray worker {self.host} differs from the driver's "
                    f"(SHA-256 {self.model.sha256[:12]} vs {sha256[:12]}). Copy the same file to every worker."
                )
        self.layers, self.pooling, self.spec, self.dims = list(layers), pooling, spec, list(dims)
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="faceaudit-decode")

    def __call__(self, batch: "pa.Table") -> "pa.Table":
        import pyarrow as pa

        try:
            if self.init_error is not None:
                raise self.init_error
            out = [self._shard(rec) for rec in batch.to_pylist()]
            fatal = ""
        except (FaceAuditError, BackendError) as exc:
            # Ray re-raises a worker's exception as its own type with the original only as text; send the
            # error as data so that the driver raises the same faceaudit error class a local run would.
            out, fatal = [(-1, b"", 0.0, 0.0)], f"{type(exc).__name__}\t{exc}"
        return pa.table({
            "shard": pa.array([o[0] for o in out], pa.int64()),
            "ipc": pa.array([o[1] for o in out], pa.large_binary()),
            "decode_s": pa.array([o[2] for o in out], pa.float64()),
            "model_s": pa.array([o[3] for o in out], pa.float64()),
            "host": pa.array([self.host] * len(out), pa.string()),
            "fatal": pa.array([fatal] * len(out), pa.string()),
        })

    def _shard(self, rec: Mapping[str, Any]) -> tuple[int, bytes, float, float]:
        """Decode, preprocess and run one shard; its table as Arrow IPC bytes, and the seconds spent."""
        import pyarrow as pa

        paths = list(rec["path"])
        lms = None if rec["landmarks"] is None else np.asarray(rec["landmarks"], np.float64).reshape(-1, 5, 2)
        t = time.perf_counter()
        decoded = decode_batch(self.pool, paths, lms, self.spec).result()
        t1 = time.perf_counter()
        feats = infer_batch(self.model, decoded, self.layers, self.pooling)
        t2 = time.perf_counter()
        table = shard_table(rec["row_id"], paths, decoded.ok, decoded.errors, feats, self.layers, self.dims)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return int(rec["shard"]), sink.getvalue().to_pybytes(), t1 - t, t2 - t1


def plan_actors(
    resources: Mapping[str, float], n_shards: int, actors: int | None, cpus_per_actor: float | None
) -> dict[str, Any]:
    """Actor count and resources: one actor per GPU when the cluster has GPUs, else one per `cpus_per_actor` CPUs.

    Why: a model replica per GPU keeps every GPU busy; on CPUs, actors x
    threads per actor = cores avoids oversubscription.
    """
    cpus = float(resources.get("CPU", 0.0))
    gpus = int(resources.get("GPU", 0.0))
    if actors is not None and actors < 1:
        raise InputError(f"actors must be at least 1, got {actors}.")
    if cpus_per_actor is not None and cpus_per_actor <= 0:
        raise InputError(f"cpus_per_actor must be positive, got {cpus_per_actor}.")
    if gpus >= 1:
        n = actors or gpus
        cpa = cpus_per_actor or max(1.0, float(min(8, int(cpus // n))))
        gpa = 1.0 if n <= gpus else gpus / n
    else:
        cpa = cpus_per_actor or 1.0
        n = actors or max(1, int(cpus // cpa))
        gpa = 0.0
    n = max(1, min(n, n_shards))
    if n * cpa > cpus + 1e-9:
        raise InputError(
            f"{n} Ray actors x {cpa:g} CPUs need {n * cpa:g} CPUs, but the cluster has {cpus:g}. "
            + ("Lower --ray-actors." if on_command_line() else "Lower RayExecutor's actors or cpus_per_actor.")
        )
    return {"actors": n, "cpus_per_actor": cpa, "gpus_per_actor": gpa, "threads_per_actor": max(1, int(cpa)),
            "cluster_cpus": cpus, "cluster_gpus": gpus}


@dataclass(frozen=True)
class RayExecutor(Executor):
    """Extraction on a Ray cluster: `actors` model replicas of `cpus_per_actor` CPUs each.

    `address` is the cluster to join (e.g. "10.0.0.5:6379" or "auto"); None
    reuses the Ray instance this process already started, or starts a local
    one for the run. `actors` defaults to one per GPU when the cluster has GPUs,
    else one per `cpus_per_actor` CPUs (default 1). It gives the same arrays
    and writes the same cache as `LocalExecutor`.
    """

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float | None = None
    name: ClassVar[str] = "ray"

    def __post_init__(self) -> None:
        if self.actors is not None and (isinstance(self.actors, bool) or not isinstance(self.actors, int)
                                        or self.actors < 1):
            raise InputError(f"RayExecutor(actors={self.actors!r}): actors must be a whole number of at least 1, "
                             "or None for one per GPU (else one per CPU).")
        if self.cpus_per_actor is not None and not (isinstance(self.cpus_per_actor, (int, float))
                                                    and self.cpus_per_actor > 0):
            raise InputError(f"RayExecutor(cpus_per_actor={self.cpus_per_actor!r}): cpus_per_actor must be a "
                             "positive number, or None.")

    def run(self, plan: ShardPlan, todo: Sequence[int], finish: ShardSink) -> dict[str, Any]:
        """Send `todo` to the cluster; hand each shard to `finish` as it comes back (the driver writes the cache)."""
        run = RayShardRun(plan, todo, self)
        shards = iter(run)
        try:
            for b, table in shards:
                if plan.strict and not all(table["ok"].to_pylist()):
                    raise InputError(next(e for e in table["error"].to_pylist() if e))
                finish(b, table)
        finally:
            shards.close()  # stops the Ray job (and a Ray instance it started) also on errors
        return run.summary()


class RayShardRun:
    """Iterate (shard index, shard table) as the cluster finishes them; `summary()` afterwards."""

    def __init__(self, plan: ShardPlan, todo: Sequence[int], executor: RayExecutor) -> None:
        self.shards, self.todo, self.executor = plan, list(todo), executor
        self.layout: dict[str, Any] = {}
        self.decode_s = 0.0
        self.model_s = 0.0
        self.hosts: set[str] = set()
        self.n_done = 0

    def summary(self) -> dict[str, Any]:
        """How the run was laid out and where time went (seconds summed over shards)."""
        return {"ray": {**self.layout, "address": self.executor.address, "hosts": sorted(self.hosts),
                        "shards": self.n_done},
                "decode_s": self.decode_s, "model_s": self.model_s}

    def _connect(self, ray: Any) -> bool:
        """Join the cluster at the executor's address (or start a local Ray); True when this run started it."""
        address = self.executor.address
        if ray.is_initialized():
            if address:
                log.info("Ray is already initialised in this process; using it (address %s not used).", address)
            return False
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or "a new local instance"
            raise InputError(
                f"Cannot start or reach the Ray cluster at {where} ({exc}). Start one with `ray start --head` "
                "and pass its address (e.g. 10.0.0.5:6379, or 'auto' on a cluster node)."
            ) from exc
        return True

    def _dataset(self, ray: Any) -> Any:
        """The shards still to compute as a Ray Dataset mapped by a pool of `ShardWorker` actors."""
        plan = self.shards
        self.layout = plan_actors(ray.cluster_resources(), len(self.todo), self.executor.actors,
                                  self.executor.cpus_per_actor)
        options = dict(plan.model.options)
        if plan.model.backend_name == "onnx" and not self.layout["gpus_per_actor"]:
            options.setdefault("intra_op_threads", self.layout["threads_per_actor"])
        items = []
        for b in self.todo:
            lms = plan.shard_landmarks(b)
            items.append({"shard": int(b), "row_id": [int(i) for i in plan.rows(b)], "path": plan.shard_paths(b),
                          "landmarks": None if lms is None else np.asarray(lms, np.float64).reshape(-1).tolist()})
        log.info("Ray: %d shards on %d actors (%g CPUs, %g GPUs each).", len(items), self.layout["actors"],
                 self.layout["cpus_per_actor"], self.layout["gpus_per_actor"])
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), MAX_BLOCKS))
        remote: dict[str, Any] = {"num_cpus": self.layout["cpus_per_actor"]}
        if self.layout["gpus_per_actor"]:
            remote["num_gpus"] = self.layout["gpus_per_actor"]
        return ds.map_batches(
            ShardWorker, batch_size=1, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=self.layout["actors"]),
            fn_constructor_kwargs={
                "model_path": str(plan.model.path), "backend": plan.model.backend_name, "options": options,
                "sha256": plan.model.sha256, "layers": plan.layers, "pooling": plan.pooling, "spec": plan.spec,
                "dims": plan.dims, "threads": self.layout["threads_per_actor"],
            },
            **remote,
        )

    def _received(self, rec: Mapping[str, Any]) -> tuple[int, "pa.Table"]:
        """One worker result: its shard table, or the worker's error raised here as the same faceaudit class."""
        import pyarrow as pa

        if rec["fatal"]:
            kind, _, message = rec["fatal"].partition("\t")
            cls = getattr(errors, kind, None)
            if not (isinstance(cls, type) and issubclass(cls, (FaceAuditError, BackendError))):
                cls = FaceAuditError
            raise cls(message)
        table = pa.ipc.open_stream(rec["ipc"]).read_all()
        self.decode_s += rec["decode_s"]
        self.model_s += rec["model_s"]
        self.hosts.add(rec["host"])
        self.n_done += 1
        return int(rec["shard"]), table

    def __iter__(self) -> Generator[tuple[int, "pa.Table"], None, None]:
        ray = import_ray()
        started = self._connect(ray)
        ctx = ray.data.DataContext.get_current()
        saved = {k: getattr(ctx, k) for k in ("enable_progress_bars", "print_on_execution_start") if hasattr(ctx, k)}
        batches = None
        try:
            for k in saved:  # faceaudit's own bar (the driver's) is the one progress display
                setattr(ctx, k, False)
            ds = self._dataset(ray)
            # no prefetch thread: an interrupted run (error, Ctrl-C) then stops the executor in this thread,
            # before ray.shutdown(), instead of a background thread touching a shut-down worker
            # an explicit iterator, closed in `finally`: Ray Data releases its executor and prefetch threads
            # only when the iterator is closed, and that must happen before ray.shutdown()
            batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
            for out in batches:
                for rec in out.to_pylist():
                    yield self._received(rec)
        finally:
            if batches is not None:
                batches.close()
            for k, v in saved.items():
                setattr(ctx, k, v)
            if started:
                _join_ray_data_threads()
                ray.shutdown()


# Ray Data threads that call into the Ray worker, with how long to wait for each (s). A "Prefetcher"
# parks until it is handed blocks and its own ray.wait does not block, so it gets a short grace only.
_RAY_DATA_THREADS = {"StreamingExecutor-": 30.0, "ray-data-metadata-prefetch": 30.0, "iter_threaded": 30.0,
                     "Prefetcher": 0.5}


def _join_ray_data_threads() -> None:
    """Wait for Ray Data's background threads before ray.shutdown().

    When a run is cut short, closing the batch iterator only asks these threads
    to stop; one that is still fetching after ray.shutdown() touches the shut-down
    worker, and Ray then ends the whole process. Joining them first keeps an
    interrupted run an ordinary exception.
    """
    for thread in threading.enumerate():
        for prefix, wait_s in _RAY_DATA_THREADS.items():
            if thread is not threading.current_thread() and thread.name.startswith(prefix):
                thread.join(wait_s)
