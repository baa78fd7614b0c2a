"""The local executor: decode in a thread pool, two shards ahead, while the model runs in this process."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

from faceaudit.errors import InputError
from faceaudit.features.decode import PendingBatch, decode_batch, infer_batch
from faceaudit.features.executor import Executor, ShardPlan, ShardSink
from faceaudit.features.schema import shard_table

__all__ = ["LocalExecutor"]


@dataclass(frozen=True)
class LocalExecutor(Executor):
    """Extraction in this process: `workers` decode threads (default: one per core, at most 8).

    Why: decoding and preprocessing (Pillow, alignment) release the GIL, so a
    thread pool keeps the model fed without a second process or a cluster.
    """

    workers: int | None = None
    name: ClassVar[str] = "local"

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise InputError(f"LocalExecutor(workers={self.workers!r}): workers must be a whole number of at "
                             "least 1, or None for one per core (at most 8).")

    def run(self, plan: ShardPlan, todo: Sequence[int], finish: ShardSink) -> dict[str, Any]:
        """Compute `todo` in order; the shards after the current one decode while the model runs."""
        n_workers = self.workers or min(8, (os.cpu_count() or 2))
        model_s = 0.0

        def submit(b: int) -> PendingBatch:
            return decode_batch(pool, plan.shard_paths(b), plan.shard_landmarks(b), plan.spec)

        pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="faceaudit-decode")
        try:
            queue: deque[tuple[int, PendingBatch]] = deque()
            it = iter(todo)
            for b in it:
                queue.append((b, submit(b)))
                if len(queue) >= 2:
                    break
            while queue:
                b, pending = queue.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    queue.append((nxt, submit(nxt)))
                decoded = pending.result(strict=plan.strict)
                t = time.perf_counter()
                feats = infer_batch(plan.model, decoded, plan.layers, plan.pooling)
                model_s += time.perf_counter() - t
                finish(b, shard_table(plan.rows(b), plan.shard_paths(b), decoded.ok, decoded.errors, feats,
                                      plan.layers, plan.dims))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return {"model_s": model_s, "decode_threads": n_workers}
