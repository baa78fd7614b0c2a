"""The batched training loop shared by all neural estimators.

G jobs (layer x attribute x seed, plus permutation nulls) are trained
together as one stack of critics (see :mod:`critics`). Each job has its own
train / validation split, minibatch order, initialisation and learning-rate
schedule, all drawn from its own seed and its own validation curve, so the
stack gives the same numbers as training each job alone. Its test rows come
from `Job.test_seed`, which the seeds of one layer x attribute share so that
:func:`evaluate_ensemble` can average their critics there. Early stopping is
per job on the validation bound; the reported value is the bound of the best
critic on the test rows, which neither training nor early stopping has seen.
Critics start from a closed-form linear head fitted on their training rows (see
:mod:`critics`); for a continuous attribute, validation and test bounds are those
of the critic normalised over reference attribute values outside the test rows.
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from faceaudit._malloc import keep_freed_memory
from faceaudit._progress import progress as _progress_bar
from faceaudit.errors import InputError
from faceaudit.expressivity import critics
from faceaudit.expressivity import probe as probe_mod

if TYPE_CHECKING:  # pragma: no cover
    from faceaudit.expressivity.estimators import NeuralEstimator

log = logging.getLogger(__name__)

_CHUNK_ELEMS = 1 << 18  # G * rows * cols per evaluation chunk: about 1 MB, so a chunk's elementwise passes stay in cache
_TINY = 1e-30  # a sum of sigmoids below this is near float32's floor: such rows are evaluated in log space
# a normalised critic is floored here (nats): a row the critic scores as impossible counts -7, not -80. Any
# fixed function of (x, y) gives a valid bound; the floor raises the marginal term E_Q[exp T'] (about 1)
# by at most e^-7, so it lowers the bound by under 0.001 nats while a few confidently wrong rows of a
# sharp critic no longer dominate the standard error
_T_FLOOR = -7.0
_FLOOR = float(torch.finfo(torch.float32).tiny)  # smallest normal float32: a row sum of 0 becomes log(_FLOOR), not -inf


@dataclass(frozen=True)
class Job:
    """One critic to train: features of a layer, an attribute on some of its rows, a seed."""

    x: np.ndarray  # (n_layer_rows, d) float32, standardised / reduced
    layer: Any  # key: jobs with the same key share `x`
    rows: np.ndarray  # rows of `x` that carry the attribute
    y: np.ndarray  # (len(rows),): standardised float (continuous) or int codes (categorical)
    n_classes: int  # 0 for a continuous attribute
    seed: int
    test_seed: int | None = None  # draws the test rows (shared by the seeds of one layer x attribute); None: `seed`
    test: np.ndarray | None = None  # positions in `rows` of the test rows (a cross-fitting fold); None: drawn
    std_cols: int | None = None  # leading columns of `x` that are the standardised features (None: not known)


@dataclass
class Fit:
    """What training one job produced (values in nats)."""

    value: float  # bound on the test rows (raw, may be negative)
    se: float  # standard error of `value` from the test rows (delta method)
    train_value: float  # same bound on as many training rows (overfitting check)
    val_best: float
    best_step: int
    steps_run: int
    converged: bool
    n_test: int
    curve_step: list[int] = field(default_factory=list)
    curve_train: list[float] = field(default_factory=list)
    curve_val: list[float] = field(default_factory=list)
    test_rows: np.ndarray | None = None  # rows of the layer array the value was computed on
    params: dict[str, Tensor] | None = None  # the best critic (CPU, unpadded), for evaluate_ensemble
    terms: dict[str, np.ndarray] = field(default_factory=dict)  # per-test-row terms of the bound (pooled over folds)
    floor_terms: np.ndarray | None = None  # per-test-row Barber-Agakov terms of the probe fitted on all other rows
    probe_selected: bool = False  # validation chose the probe itself (step 0) over every trained critic


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu', 'cuda' or 'cuda:N' as asked, once torch can use it."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r} for expressivity; use 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device={str(device)!r} was asked for, but torch sees no CUDA GPU (a CPU-only torch build, or no "
                "driver). Use device='cpu', or device='auto' to take a GPU only when there is one."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device={str(device)!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0."
            )
    return dev


def _split(
    n: int, seed: int, heldout: float, test_seed: int | None = None, test: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) positions. The test rows are `test` (a cross-fitting fold) when given,
    else a fifth of the rows drawn from `test_seed` (or `seed`), so that several seeds can share them
    (and their critics be averaged on them); a fraction `heldout` of the other rows validates."""
    if test is None:
        perm = np.random.default_rng([int(seed if test_seed is None else test_seed), 1]).permutation(n)
        n_test = max(10, int(round(n / 5)))
        test, rest = perm[:n_test], perm[n_test:]
        if test_seed is not None and test_seed != seed:
            rest = rest[np.random.default_rng([int(seed), 3]).permutation(len(rest))]
    else:
        test = np.asarray(test, dtype=np.int64)
        rest = np.setdiff1d(np.arange(n), test)
        rest = rest[np.random.default_rng([int(seed), 3]).permutation(len(rest))]
    n_val = max(10, int(round(len(rest) * heldout)))
    return rest[n_val:], rest[:n_val], test


class _Batcher:
    """Per-job epoch shuffling of the training rows (its own Generator)."""

    def __init__(self, train_rows: list[np.ndarray], seeds: list[int], batch: int):
        self.rows = train_rows
        self.rngs = [np.random.default_rng([int(s), 2]) for s in seeds]
        self.batch = batch
        self.order = [r[g.permutation(len(r))] for r, g in zip(train_rows, self.rngs)]
        self.pos = [0] * len(train_rows)

    def next(self, jobs: np.ndarray) -> np.ndarray:
        """The next minibatch of each of `jobs` (indices), (len(jobs), batch); the others do not advance."""
        out = np.empty((len(jobs), self.batch), dtype=np.int64)
        for i, g in enumerate(jobs):
            if self.pos[g] + self.batch > len(self.order[g]):
                self.order[g] = self.rows[g][self.rngs[g].permutation(len(self.rows[g]))]
                self.pos[g] = 0
            out[i] = self.order[g][self.pos[g] : self.pos[g] + self.batch]
            self.pos[g] += self.batch
        return out


class _Stack:
    """The critics being trained: stacked parameters, their Adam optimiser, per-critic learning-rate
    factors and the estimator's per-critic state, for the jobs in `live` (sorted job indices).

    Stopped critics stay in the stack (their gradients zeroed) until :meth:`compact` drops them, when
    half of it has stopped: the optimiser's and the bookkeeping's work then scales with the critics
    still training, not with all of them. Adam is elementwise, so compacting changes no number."""

    def __init__(self, params: dict[str, Tensor], opt: torch.optim.Optimizer):
        self.params = params
        self.opt = opt
        first = next(iter(params.values()))
        self.live = np.arange(first.shape[0])
        self.lr_scale = torch.ones(first.shape[0], device=first.device)
        self.state: dict[Any, Any] = {}  # the estimator's: str keys per critic, tuple keys shared

    def scaled_step(self) -> None:
        """An Adam step with each critic's change scaled by its learning-rate factor: p + s (p' - p).
        foreach operations: a handful of calls for all parameters, not a few per parameter."""
        with torch.no_grad():
            ps = [v for v in self.params.values() if v.requires_grad]
            before = torch._foreach_add(ps, 0.0)  # copies
            self.opt.step()
            delta = torch._foreach_sub(ps, before)
            torch._foreach_mul_(delta, [self.lr_scale.view(-1, *([1] * (v.dim() - 1))) for v in ps])
            torch._foreach_add_(before, delta)
            torch._foreach_copy_(ps, before)

    def compact(self, keep: np.ndarray) -> None:
        """Keep only the critics at positions `keep` (sorted)."""
        idx = torch.from_numpy(keep).to(self.lr_scale.device)

        def cut(v: Any) -> Any:  # per-critic tensors lead with the critic axis; Adam's scalar step is shared
            if torch.is_tensor(v):
                return v.index_select(0, idx) if v.dim() else v.clone()
            return v

        new = {k: v.detach().index_select(0, idx).requires_grad_(v.requires_grad) for k, v in self.params.items()}
        opt = type(self.opt)([v for v in new.values() if v.requires_grad], **self.opt.defaults)
        for old_p, new_p in zip(self.params.values(), new.values()):
            if old_p in self.opt.state:
                opt.state[new_p] = {k: cut(v) for k, v in self.opt.state[old_p].items()}
        self.params, self.opt, self.live = new, opt, self.live[keep]
        self.lr_scale = self.lr_scale.index_select(0, idx)
        self.state = {k: (cut(v) if isinstance(k, str) else v) for k, v in self.state.items()}


def _pad_sets(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    m = max(len(s) for s in sets)
    idx = np.zeros((len(sets), m), dtype=np.int64)
    mask = np.zeros((len(sets), m), dtype=bool)
    for g, s in enumerate(sets):
        idx[g, : len(s)] = s
        mask[g, : len(s)] = True
    return idx, mask


class _Cancelled(Exception):
    """A stack stopped because another one failed or the run was interrupted."""


def stack_workers(workers: int, n_stacks: int) -> int:
    """How many stacks :func:`train_stacks` trains at once: `workers`, but no more than there are stacks."""
    return max(1, min(int(workers), n_stacks))


def train_stacks(
    stacks: list[list[Job]],
    est: "NeuralEstimator",
    *,
    device: str | torch.device = "cpu",
    workers: int = 1,
    progress: bool | None = None,
) -> list[list[Fit]]:
    """Train each stack with :func:`train_jobs`, `workers` stacks at a time, and return their fits in order.

    With one worker the stacks run one after another in the calling thread, with torch's thread
    count. With several, each runs in its own thread with torch's threads shared out among them
    (one each on 2 cores). A step is about a thousand small tensor operations: threads inside
    each one meet at its end a thousand times a step, while stacks on their own cores never
    wait for each other, and one stack's last critics overlap another's full steps. torch
    releases the GIL inside its operations, so the stacks run in parallel.
    A failure or an interrupt stops the other stacks within one step.
    """
    def desc(jobs: list[Job]) -> str:
        return f"expressivity ({len(jobs)} critic{'s' if len(jobs) > 1 else ''})"

    workers = stack_workers(workers, len(stacks))
    if workers == 1:
        return [train_jobs(jobs, est, device=device, progress=progress, desc=desc(jobs)) for jobs in stacks]
    threads = torch.get_num_threads()
    per_worker = max(1, threads // workers)
    stop = threading.Event()

    def run(jobs: list[Job]) -> list[Fit]:
        torch.set_num_threads(per_worker)  # this thread's own OpenMP team (the calling thread keeps its own)
        return train_jobs(jobs, est, device=device, progress=progress, desc=desc(jobs), stop=stop)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="faceaudit-stack")
    # the probes' and heads' numpy and scikit-learn fits run BLAS in every worker at once: its threads are
    # shared out too (the limit is process-wide), or 2 workers x 2 BLAS threads fight over 2 cores
    blas = threadpool_limits(limits=per_worker)
    try:
        futures = [pool.submit(run, jobs) for jobs in stacks]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in done:  # the first failure, before result() would wait for the stacks still training
            if f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
        return [f.result() for f in futures]
    finally:
        stop.set()  # no-op after success; after a failure or Ctrl-C the other stacks end within a step
        pool.shutdown(wait=True, cancel_futures=True)
        blas.restore_original_limits()
        torch.set_num_threads(threads)  # the default for threads started later, which the workers changed


def train_jobs(
    jobs: list[Job],
    est: "NeuralEstimator",
    *,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    desc: str = "expressivity",
    stop: threading.Event | None = None,
) -> list[Fit]:
    """Train all `jobs` as one stack and return one :class:`Fit` per job, in order.

    All jobs must share the attribute kind (all continuous or all categorical).
    When `stop` is set (by :func:`train_stacks`) training ends at the next step with :class:`_Cancelled`.
    """
    if not jobs:
        return []
    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_freed_memory()  # each step's freed tensors are reused, not faulted back in (see faceaudit._malloc)
    continuous = jobs[0].n_classes == 0
    if any((j.n_classes == 0) != continuous for j in jobs):
        raise ValueError("train_jobs needs jobs of one attribute kind")
    data = _stack_data(jobs, continuous, dev)
    splits = [_split(len(j.rows), j.seed, est.heldout, j.test_seed, j.test) for j in jobs]
    train_rows = [j.rows[s[0]] for j, s in zip(jobs, splits)]
    val_rows = [j.rows[s[1]] for j, s in zip(jobs, splits)]
    test_rows = [j.rows[s[2]] for j, s in zip(jobs, splits)]
    batch = int(min(est.batch_size, min(len(r) for r in train_rows)))
    start = _initial_critics(est, jobs, splits, train_rows, data.d_max, data.c_max, continuous, dev)
    # foreach: one multi-tensor kernel per Adam operation instead of one per parameter (same numbers)
    opt = torch.optim.Adam([v for v in start.params.values() if v.requires_grad], lr=est.lr,
                           weight_decay=est.weight_decay, foreach=True)
    stack = _Stack(start.params, opt)
    aux = {} if continuous else _class_priors(jobs, splits, data.c_max, dev)
    est.prepare(jobs, splits, aux, data.Y, dev)

    watch = _EarlyStopping(est, {k: v.detach().clone() for k, v in start.params.items()}, len(jobs), dev)
    batcher = _Batcher(train_rows, [j.seed for j in jobs], batch)
    val_idx, val_mask = _pad_sets(val_rows)
    if continuous and est.family == "critic":
        _add_references(aux, est, list(zip(jobs, test_rows)), dev)
    val = (torch.from_numpy(val_idx).to(dev), torch.from_numpy(val_mask).to(dev))
    gen_rank = watch.start(est, start, data, val, aux, continuous)
    gen_chosen = gen_rank >= 0
    bar = _progress_bar(total=est.max_steps, desc=desc, unit="step", enabled=progress)
    try:
        _run_steps(est, stack, watch, data, aux, batcher, val, continuous=continuous, dev=dev, stop=stop, bar=bar)
    finally:
        bar.close()
    selected = (watch.best_step == 0) & start.linear & ~gen_chosen
    _take_probe_refits(watch.best, selected, jobs, start.probes, data.d_max, data.c_max, dev)
    _take_generative_refits(watch.best, np.where(watch.best_step == 0, gen_rank, -1), jobs, splits, data.d_max, dev)
    return _final_fits(est, jobs, watch, data, aux, train_rows, test_rows, start.probes, selected, continuous, dev)


@dataclass(frozen=True)
class _StackData:
    """A stack's inputs on the device: the layers padded to a common row count and width `X` (L, n, d_max),
    the layer each critic reads `layer_of` (G,), and each critic's attribute placed at its rows `Y` (G, n)."""

    X: Tensor
    layer_of: Tensor
    Y: Tensor
    d_max: int
    c_max: int


def _stack_data(jobs: list[Job], continuous: bool, dev: torch.device) -> _StackData:
    layer_keys: list[Any] = []
    for j in jobs:
        if j.layer not in layer_keys:
            layer_keys.append(j.layer)
    lx = {k: next(j.x for j in jobs if j.layer == k) for k in layer_keys}
    d_max = max(a.shape[1] for a in lx.values())
    n_max = max(a.shape[0] for a in lx.values())
    X = torch.zeros((len(layer_keys), n_max, d_max), dtype=torch.float32)
    for i, k in enumerate(layer_keys):
        X[i, : lx[k].shape[0], : lx[k].shape[1]] = torch.from_numpy(lx[k])
    X = X.to(dev)
    layer_of = torch.tensor([layer_keys.index(j.layer) for j in jobs], dtype=torch.long, device=dev)
    c_max = max(j.n_classes for j in jobs)
    Y = torch.zeros((len(jobs), n_max), dtype=torch.float32 if continuous else torch.long)
    for g, j in enumerate(jobs):
        Y[g, torch.from_numpy(j.rows.astype(np.int64))] = torch.from_numpy(
            j.y.astype(np.float32 if continuous else np.int64)
        )
    return _StackData(X, layer_of, Y.to(dev), d_max, c_max)


@dataclass(frozen=True)
class _Start:
    """The critics' starting point: parameters on the device, each job's probes, whether they start from
    the linear head, and the generative heads validation may switch on (None: none)."""

    params: dict[str, Tensor]
    probes: list[_JobProbes]
    linear: bool
    generative: list[list[dict[str, np.ndarray]]] | None


def _initial_critics(est: "NeuralEstimator", jobs: list[Job], splits: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                     train_rows: list[np.ndarray], d_max: int, c_max: int, continuous: bool, dev: torch.device
                     ) -> _Start:
    """Fit each job's probes and initialise the stacked critics from them (the linear head), with the
    generative heads, if any, fitted but switched off."""
    head_out = est.head_out(c_max) if est.family == "conditional" else est.embed
    shape = critics.CriticShape(d_max, est.hidden, est.embed, est.y_hidden, c_max, head_out)
    bases: dict[Any, probe_mod.RidgeBasis] = {}
    probes = [_probes(j, sp, est.family == "critic" and bool(est.linear_head), bases) for j, sp in zip(jobs, splits)]
    del bases
    linear = None
    if est.family == "critic" and est.linear_head:
        linear = [critics.linear_head_init(None, j.y[sp[0]], j.n_classes, d_max, c_max, probe=pr.head)
                  for j, sp, pr in zip(jobs, splits, probes)]
    init = critics.init_params(
        [j.seed for j in jobs], [j.x.shape[1] for j in jobs], shape,
        continuous=continuous, conditional=est.family == "conditional", linear=linear,
    )
    generative = None
    if linear is not None and continuous and est.generative_head:
        generative = [critics.generative_head_init(j.x[tr], j.y[sp[0]], d_max, std_cols=j.std_cols)
                      for j, tr, sp in zip(jobs, train_rows, splits)]
        for k in generative[0][0]:  # the generative head starts switched off (zero); validation may switch it on
            init[k] = np.zeros((len(jobs), *generative[0][0][k].shape), np.float32)
    # the generative head stays as fitted (Adam's fixed-size steps would wreck its calibrated quadratic
    # form); the MLP learns what it misses
    params = {k: torch.from_numpy(v).to(dev).requires_grad_(k not in _FROZEN) for k, v in init.items()}
    return _Start(params, probes, linear is not None, generative)


def _class_priors(jobs: list[Job], splits: list[tuple[np.ndarray, np.ndarray, np.ndarray]], c_max: int,
                  dev: torch.device) -> dict[str, Tensor]:
    """A categorical stack's class log-frequencies on the training rows and its padded-class mask."""
    logp = torch.full((len(jobs), 1, c_max), -math.inf)
    for g, (j, tr) in enumerate(zip(jobs, splits)):
        counts = np.bincount(j.y[tr[0]], minlength=j.n_classes).astype(np.float64) + 0.5
        logp[g, 0, : j.n_classes] = torch.from_numpy(np.log(counts / counts.sum())).float()
    return {"train_logp": logp.to(dev), "class_valid": torch.isfinite(logp).to(dev)}


class _EarlyStopping:
    """Per-critic early stopping on the validation bound: each critic's best parameters, bound and step,
    which critics still train, and a per-critic learning-rate decay on a plateau (Adam's step is linear
    in lr, so scaling each critic's parameter change by its factor is Adam with a per-critic lr)."""

    def __init__(self, est: "NeuralEstimator", best: dict[str, Tensor], G: int, dev: torch.device):
        self.est, self.best, self.G, self.dev = est, best, G, dev
        self.best_step = np.zeros(G, dtype=np.int64)
        self.best_val = torch.zeros(G, device=dev)
        self.active = np.ones(G, dtype=bool)
        self.stale = np.zeros(G, dtype=np.int64)
        self.scaled = False  # kept on the host: testing lr_scale itself every step would sync a GPU
        self.decays_left = np.full(G, int(est.lr_decays), dtype=np.int64)
        self.decay_after = max(1, int(est.patience) // 2)
        self.curves: list[tuple[list[int], list[float], list[float]]] = [([], [], []) for _ in range(G)]
        self.steps_run = np.zeros(G, dtype=np.int64)

    def start(self, est: "NeuralEstimator", start: _Start, data: _StackData, val: tuple[Tensor, Tensor],
              aux: dict[str, Tensor], continuous: bool) -> np.ndarray:
        """Score the untrained critics, candidates too (with the linear head, the linear fit), and with
        generative heads start each critic from the better head; return the generative head each took
        (its index among the candidate heads, -1 for none)."""
        with torch.no_grad():
            v0, se0 = evaluate(est, start.params, data.X, data.layer_of, data.Y, val[0], val[1], continuous, aux,
                               max_cols=est.val_cols, which="val")
        gen_rank = np.full(self.G, -1, dtype=np.int64)
        if start.generative is not None:
            v0, gen_rank = _choose_head(est, start.params, start.generative, (v0, se0),
                                          (data.X, data.layer_of, data.Y, val[0], val[1], aux))
            self.best = {k: v.detach().clone() for k, v in start.params.items()}
        self.best_val = torch.where(torch.isfinite(v0), v0, torch.full_like(v0, -math.inf))
        return gen_rank

    def update(self, step: int, v: Tensor, tr: np.ndarray, act_np: np.ndarray, stack: _Stack) -> None:
        """Record a validation (`v` (G,), -inf for stopped critics; `tr` the mean training bound since the
        last), keep the improved critics, decay the learning rate of stale ones, stop those out of
        patience, and compact the stack once half of it has stopped."""
        cfg, dev = self.est, self.dev
        vv = v.cpu().numpy()
        improved = (vv > self.best_val.cpu().numpy() + cfg.min_delta) & self.active
        for g in act_np:
            self.curves[g][0].append(step)
            self.curves[g][1].append(float(tr[g]))
            self.curves[g][2].append(float(vv[g]))
        if improved.any():
            imp = np.flatnonzero(improved)
            imp_t = torch.from_numpy(imp).to(dev)
            imp_pos = torch.from_numpy(np.searchsorted(stack.live, imp)).to(dev)
            for k in stack.params:
                self.best[k].index_copy_(0, imp_t, stack.params[k].detach().index_select(0, imp_pos))
            self.best_val = torch.where(torch.from_numpy(improved).to(dev), v, self.best_val)
            self.best_step[improved] = step
        stale, active = self.stale, self.active
        stale[improved] = 0
        stale[~improved & active] += 1
        decay = active & (stale >= self.decay_after) & (self.decays_left > 0)
        if decay.any():
            d_live = torch.from_numpy(decay[stack.live]).to(dev)
            stack.lr_scale = torch.where(d_live, stack.lr_scale * float(cfg.lr_decay), stack.lr_scale)
            self.decays_left[decay] -= 1
            self.scaled = self.scaled or float(cfg.lr_decay) != 1.0
            stale[decay] = 0
        done = active & (stale >= cfg.patience) & (step >= cfg.min_steps)
        active &= ~done
        if 0 < active.sum() <= len(stack.live) // 2:
            stack.compact(np.flatnonzero(active[stack.live]))


class _Live:
    """The critics still training: `act_np` indexes the jobs, `pos` their places in the stack (which still
    holds stopped critics until half of it has stopped); `jobs` and `stack` select them from a tensor
    indexed by job or by place."""

    def __init__(self, active: np.ndarray, stack: _Stack, dev: torch.device):
        self.act_np = np.flatnonzero(active)
        self.pos_np = np.searchsorted(stack.live, self.act_np)
        self.all_jobs, self.all_live = len(self.act_np) == len(active), len(self.act_np) == len(stack.live)
        self.act = torch.from_numpy(self.act_np).to(dev)
        self.pos = torch.from_numpy(self.pos_np).to(dev)

    def jobs(self, t: Tensor) -> Tensor:
        return t if self.all_jobs else t.index_select(0, self.act)

    def stack(self, t: Tensor) -> Tensor:
        return t if self.all_live else t.index_select(0, self.pos)


def _run_steps(est: "NeuralEstimator", stack: _Stack, watch: _EarlyStopping, data: _StackData, aux: dict[str, Tensor],
               batcher: _Batcher, val: tuple[Tensor, Tensor], *, continuous: bool, dev: torch.device,
               stop: threading.Event | None, bar: Any) -> None:
    """Train until every critic has stopped or `max_steps`, validating every `eval_every` steps."""
    cfg, G = est, watch.G
    train_acc = torch.zeros(G, device=dev)
    n_acc = 0
    step = 0
    while step < cfg.max_steps and watch.active.any():
        if stop is not None and stop.is_set():
            raise _Cancelled()
        live = _Live(watch.active, stack, dev)
        aux_use = aux if live.all_jobs else {k: live.jobs(v) for k, v in aux.items()}
        value = _train_step(est, stack, data, aux_use, batcher, live, continuous, watch.scaled, dev)
        step += 1
        watch.steps_run[watch.active] = step
        train_acc[live.act] += value.detach()
        n_acc += 1
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            with torch.no_grad():
                v_sub, _ = evaluate(est, {k: live.stack(v) for k, v in stack.params.items()}, data.X,
                                    live.jobs(data.layer_of), live.jobs(data.Y), live.jobs(val[0]),
                                    live.jobs(val[1]), continuous, aux_use, max_cols=cfg.val_cols, which="val")
            v = torch.full((G,), -math.inf, device=dev).index_copy(0, live.act, v_sub)
            tr = (train_acc / max(n_acc, 1)).cpu().numpy()
            train_acc.zero_()
            n_acc = 0
            watch.update(step, v, tr, live.act_np, stack)


def _train_step(est: "NeuralEstimator", stack: _Stack, data: _StackData, aux_use: dict[str, Tensor],
                batcher: _Batcher, live: _Live, continuous: bool, scaled: bool, dev: torch.device) -> Tensor:
    """One optimiser step of the critics still training, on their next minibatches; returns their training
    bound (only they are computed: stopped critics are not selected, so their gradients are 0)."""
    params, state = stack.params, stack.state
    p_use = params if live.all_live else {k: live.stack(v) for k, v in params.items()}
    st_use = state if live.all_live else {k: (live.stack(v) if isinstance(k, str) else v) for k, v in state.items()}
    idx = torch.from_numpy(batcher.next(live.act_np)).to(dev)
    xb = _gather_rows(data.X, live.jobs(data.layer_of), idx)
    yb = live.jobs(data.Y).gather(1, idx)
    loss, value = est.train_step(p_use, xb, yb, continuous, aux_use, st_use, idx)
    if not live.all_live:
        for k, v in st_use.items():
            if isinstance(k, str):
                if k in state:
                    state[k] = state[k].index_copy(0, live.pos, v)
                else:  # first use: full-size holder
                    holder = torch.zeros((len(stack.live), *v.shape[1:]), dtype=v.dtype, device=dev)
                    state[k] = holder.index_copy(0, live.pos, v)
    else:
        state.update(st_use)
    stack.opt.zero_grad(set_to_none=False)
    loss.sum().backward()
    if scaled:
        stack.scaled_step()
    else:
        stack.opt.step()
    return value


def _take_probe_refits(best: dict[str, Tensor], selected: np.ndarray, jobs: list[Job], probes: list[_JobProbes],
                       d_max: int, c_max: int, dev: torch.device) -> None:
    """Where validation kept the probe itself (`selected`), put its fit on all the fold's other rows in `best`."""
    for g in np.flatnonzero(selected):
        refit = critics.linear_head_init(None, None, jobs[g].n_classes, d_max, c_max, probe=probes[g].refit)
        for k, v in refit.items():
            if k != "eb":
                best[k][g] = torch.from_numpy(np.asarray(v, dtype=np.float32)).to(dev)


def _take_generative_refits(best: dict[str, Tensor], rank: np.ndarray, jobs: list[Job],
                            splits: list[tuple[np.ndarray, np.ndarray, np.ndarray]], d_max: int, dev: torch.device
                            ) -> None:
    """Where validation kept a generative head untouched by training (`rank` >= 0, its index among the heads),
    put the same head fitted on all the fold's other rows (training and validation) in `best`, as the
    probe's refit does: the choice was made on the validation rows, the test rows never enter."""
    for g in np.flatnonzero(rank >= 0):
        tr, va, _ = splits[g]
        fit_rows = np.concatenate([tr, va])
        job = jobs[g]
        head = critics.generative_head(job.x[job.rows[fit_rows]], job.y[fit_rows], d_max, int(rank[g]),
                                       std_cols=job.std_cols, choice_rows=len(tr))
        for k, v in head.items():
            best[k][g] = torch.from_numpy(np.asarray(v, dtype=np.float32)).to(dev)


def _final_fits(est: "NeuralEstimator", jobs: list[Job], watch: _EarlyStopping, data: _StackData,
                aux: dict[str, Tensor], train_rows: list[np.ndarray], test_rows: list[np.ndarray],
                probes: list[_JobProbes], selected: np.ndarray, continuous: bool, dev: torch.device) -> list[Fit]:
    """The best critics' bound on the test rows and on as many training rows, one :class:`Fit` per job."""
    best, X, layer_of, Y = watch.best, data.X, data.layer_of, data.Y
    converged = watch.stale >= est.patience
    with torch.no_grad():
        test_idx, test_mask = _pad_sets(test_rows)
        terms = evaluate(est, best, X, layer_of, Y, torch.from_numpy(test_idx).to(dev),
                         torch.from_numpy(test_mask).to(dev), continuous, aux, max_cols=None, which="test", raw=True)
        tv, tse = est.bound_from_terms(terms, torch.from_numpy(test_mask).to(dev))
        tr_sets = [tr[: len(te)] for tr, te in zip(train_rows, test_rows)]
        tr_idx, tr_mask = _pad_sets(tr_sets)
        trv, _ = evaluate(est, best, X, layer_of, Y, torch.from_numpy(tr_idx).to(dev),
                          torch.from_numpy(tr_mask).to(dev), continuous, aux, max_cols=None, which="train")
    terms_np = {k: v.cpu().numpy().astype(np.float64) for k, v in terms.items()}
    tv, tse, trv, bv = (a.cpu().numpy().astype(np.float64) for a in (tv, tse, trv, watch.best_val))
    curves, best_step, steps_run = watch.curves, watch.best_step, watch.steps_run
    out = []
    for g in range(len(jobs)):
        out.append(
            Fit(
                value=_finite(tv[g]), se=_finite(tse[g]), train_value=_finite(trv[g]), val_best=_finite(bv[g]),
                best_step=int(best_step[g]), steps_run=int(steps_run[g]), converged=bool(converged[g]),
                n_test=len(test_rows[g]), curve_step=curves[g][0], curve_train=curves[g][1], curve_val=curves[g][2],
                test_rows=test_rows[g], params=_unpad(best, g, jobs[g]),
                terms={k: v[g, : len(test_rows[g])].copy() for k, v in terms_np.items()},
                floor_terms=probes[g].floor_terms, probe_selected=bool(selected[g]),
            )
        )
    return out


_RIDGE_KEYS = ("Lw", "Lb", "Ls", "Lq")
_FROZEN = ("Gw", "Gc", "GQ", "GP")  # parameters that are not trained


def _choose_head(est: "NeuralEstimator", params: dict[str, Tensor], generative: list[list[dict[str, np.ndarray]]],
                 ridge: tuple[Tensor, Tensor], data: tuple) -> tuple[Tensor, np.ndarray]:
    """Start each continuous critic from whichever linear head has the best validation score: the ridge
    probe (already in `params`, validation bound and standard error `ridge`) or one of its generative heads
    (one per rank). The score is the bound less one standard error: with few rows a generative head
    can win on the bound by a little while scoring some rows wildly, which the reported interval pays
    for. Sets `params` in place; returns the starting validation bounds and the generative head each
    critic took (its index in the list of candidates; -1: the ridge probe)."""
    X, layer_of, Y, idx, mask, aux = data
    dev = ridge[0].device
    best_v = ridge[0].clone()
    best_s = torch.where(torch.isfinite(ridge[0]), ridge[0] - ridge[1], torch.full_like(ridge[0], -math.inf))
    take = torch.full_like(best_v, -1, dtype=torch.long)
    with torch.no_grad():
        for r in range(len(generative[0])):
            if all(any(g[r] is g[q] for q in range(r)) for g in generative):
                continue  # every critic's candidate r repeats an earlier one (see critics.generative_head_init)
            gen = {k: torch.from_numpy(np.stack([g[r][k] for g in generative]).astype(np.float32)).to(dev)
                   for k in generative[0][r]}
            alt = {k: (gen[k] if k in gen else torch.zeros_like(v) if k in _RIDGE_KEYS else v)
                   for k, v in params.items()}
            v_gen, se_gen = evaluate(est, alt, X, layer_of, Y, idx, mask, True, aux, max_cols=est.val_cols,
                                     which="val")
            score = v_gen - se_gen
            better = torch.isfinite(score) & (score > best_s)
            for k, v in params.items():
                if k in gen or k in _RIDGE_KEYS:
                    v.copy_(torch.where(better.view(-1, *([1] * (v.dim() - 1))), alt[k], v))
            best_v = torch.where(better, v_gen, best_v)
            best_s = torch.where(better, score, best_s)
            take = torch.where(better, torch.full_like(take, r), take)
    return best_v, take.cpu().numpy()


@dataclass(frozen=True)
class _JobProbes:
    """A job's linear probes: `head` fitted on its training rows (regularisation chosen on its validation
    rows), the critic's starting point; `refit`, the same regularisation fitted on training and validation
    rows; `floor_terms`, the floor's Barber-Agakov terms on the test rows (from `refit` for a category,
    from a probe of the normal scores for a number; see :func:`probe.floor_target`)."""

    head: probe_mod.Probe | None
    refit: probe_mod.Probe
    floor_terms: np.ndarray


def _probes(job: Job, split: tuple[np.ndarray, np.ndarray, np.ndarray], use_head: bool,
            bases: dict[Any, probe_mod.RidgeBasis]) -> _JobProbes:
    """Fit a job's probes; a continuous attribute's ridge fits take their eigendecomposition from `bases`
    (keyed by layer and rows), which the attributes and nulls of one layer and split share."""
    tr, va, te = split
    C, seed = job.n_classes, int(job.seed)
    y = job.y
    fit_rows = np.concatenate([tr, va])

    def basis(pos: np.ndarray) -> probe_mod.RidgeBasis | None:
        if C:
            return None
        rows = job.rows[pos]
        key = (job.layer, hash(rows.tobytes()), len(rows))
        if key not in bases:
            bases[key] = probe_mod.ridge_basis(job.x[rows])
        return bases[key]

    head, reg = None, None
    if use_head or C:
        xv = job.x[job.rows[va]]
        head = probe_mod.fit_probe(job.x[job.rows[tr]] if C else None, y[tr], C, seed=seed, val=(xv, y[va]),
                                   basis=basis(tr))
        reg = head.reg
    refit = probe_mod.fit_probe(job.x[job.rows[fit_rows]] if C else None, y[fit_rows], C, seed=seed, reg=reg,
                                basis=basis(fit_rows))
    # the floor: for a category the refit probe itself; for a number a ridge probe of its normal scores
    # (see floor_target), with the ridge chosen afresh by leave-one-out error
    y_floor, neg_log_p = probe_mod.floor_target(y, C, seed=0)
    floor = refit if C else probe_mod.fit_probe(None, y_floor[fit_rows], 0, basis=basis(fit_rows))
    return _JobProbes(head if use_head else None, refit,
                      probe_mod.probe_terms(floor, job.x[job.rows[te]], y_floor[te], neg_log_p[te]))


def _unpad(params: dict[str, Tensor], g: int, job: Job) -> dict[str, Tensor]:
    """Critic `g` of a stack, cut back to its own input width and class count."""
    out = {}
    for k, v in params.items():
        v = v[g].detach().cpu()
        if k in ("W1", "Lw", "Gw"):
            v = v[: job.x.shape[1]]
        elif k == "V":
            v = v[: job.x.shape[1], : job.n_classes]
        elif k == "E" and job.n_classes:
            v = v[: job.n_classes]
        elif k in ("eb", "v0") and job.n_classes:
            v = v[:, : job.n_classes]
        out[k] = v.clone()
    return out


def evaluate_ensemble(est: "NeuralEstimator", fits: list[Fit], job: Job, device: str | torch.device = "cpu",
                      raw: bool = True) -> Any:
    """Bound and standard error of the averaged critic T = mean_s T_s on the test rows the `fits` share.

    The Donsker-Varadhan, NWJ and InfoNCE bounds are concave in the critic, so on
    the same rows the averaged critic's bound is at least the mean of the seeds'
    bounds: averaging seeds at the critic level gives a tighter lower bound than
    averaging their numbers. With reference normalisation (continuous attribute) the
    normalised critics are averaged, so the same holds. `job` supplies the features
    and attribute. Returns the averaged critic's per-row terms (numpy), or with ``raw=False``
    its (bound, standard error).
    """
    dev = resolve_device(device)
    rows = fits[0].test_rows
    if rows is None or any(f.test_rows is None or not np.array_equal(f.test_rows, rows) for f in fits):
        raise ValueError("evaluate_ensemble needs fits that share their test rows")
    S = len(fits)
    continuous = job.n_classes == 0
    params = {k: torch.stack([f.params[k] for f in fits]).to(dev) for k in fits[0].params}  # type: ignore[index]
    X = torch.from_numpy(np.ascontiguousarray(job.x, dtype=np.float32)).to(dev)[None]
    n_rows = job.x.shape[0]
    yv = np.zeros(n_rows, dtype=np.float32 if continuous else np.int64)
    yv[job.rows] = job.y
    Y = torch.from_numpy(yv).to(dev)[None].expand(S, -1)
    idx = torch.from_numpy(rows.astype(np.int64)).to(dev)[None].expand(S, -1)
    mask = torch.ones_like(idx, dtype=torch.bool)
    aux = {} if continuous else {"class_valid": torch.ones((S, 1, job.n_classes), dtype=torch.bool, device=dev)}
    if continuous:
        _add_references(aux, est, [(job, rows)], dev)
    with torch.no_grad():
        terms = evaluate(est, params, X, torch.zeros(S, dtype=torch.long, device=dev), Y, idx, mask, continuous,
                         aux, max_cols=None, which="test", ensemble=True, raw=True)
        if not raw:
            v, se = est.bound_from_terms(terms, mask[:1])
            return _finite(float(v[0])), _finite(float(se[0]))
    return {k: v[0].cpu().numpy().astype(np.float64) for k, v in terms.items()}


def _add_references(aux: dict[str, Tensor], est: "NeuralEstimator", jobs: list[tuple[Job, np.ndarray]],
                    dev: torch.device) -> None:
    """Put the reference rows of each (job, its test rows) in `aux["ref_idx"]` when the estimator
    normalises its held-out critic (continuous attributes, `norm_refs` > 0)."""
    k = int(est.norm_refs)
    if k > 0 and est.norm_shift is not None:
        aux["ref_idx"] = torch.from_numpy(np.stack([_references(j, te, k) for j, te in jobs])).to(dev)


def _references(job: Job, test_rows: np.ndarray, k: int) -> np.ndarray:
    """`k` rows (of the layer array) whose attribute values normalise the critic: drawn from the job's rows
    outside its test rows, from the test seed, so the seeds that share test rows share references too."""
    others = np.setdiff1d(job.rows, test_rows)
    seed = job.seed if job.test_seed is None else job.test_seed
    others = others[np.random.default_rng([int(seed), 5]).permutation(len(others))]
    return np.resize(others, k).astype(np.int64)


def _gather_rows(X: Tensor, layer_of: Tensor, idx: Tensor) -> Tensor:
    """X[layer_of[g], idx[g]] for every critic g, (G, m, d): one index_select on the flattened layers,
    a few times faster on CPU than the equivalent advanced indexing."""
    L, n, d = X.shape
    flat = (layer_of[:, None] * n + idx).reshape(-1)
    return X.reshape(L * n, d).index_select(0, flat).view(idx.shape[0], idx.shape[1], d)


def _finite(v: float) -> float:
    return float(v) if math.isfinite(v) else 0.0


def _log_partition(params: dict[str, Tensor], f: Tensor, Y: Tensor, ref_idx: Tensor, cap: float
                   ) -> tuple[Tensor, Tensor]:
    """log mean_j exp T(x_i, y_j) over the reference attribute values `ref_idx` (rows not evaluated on), (G, m),
    and the same partition as S_i = sum_j sigmoid(T(x_i, y_j) - cap) = K exp(logz_i - cap), (G, m).

    Subtracting it from T gives the critic's best correction by a function of x alone (the
    DV bound of T + h(x) is largest at h = -log E_y[exp T(x, y)]). The references are not
    evaluation rows, so the corrected critic is still a fixed function and its held-out
    DV value still a lower bound. exp(soft_cap(t)) = e^cap sigmoid(t - cap), so a sigmoid and a
    sum give the partition; rows where every reference is so far below the cap that the sum of
    sigmoids nears float32's floor (S < _TINY) get the log-sum-exp instead."""
    ref = ref_idx.expand(f.shape[0], -1)
    grt = critics.embed_y(params, Y.gather(1, ref)).transpose(1, 2)
    K = ref.shape[1]
    m = f.shape[1]
    r = max(1, _CHUNK_ELEMS // max(1, f.shape[0] * K))
    S = torch.cat([torch.bmm(f[:, s:s + r], grt).sub_(cap).sigmoid_().sum(-1) for s in range(0, m, r)], 1)
    logz = torch.log(S) + (cap - math.log(K))
    tiny = S < _TINY
    for s in _chunks_with(tiny, r):
        exact = torch.logsumexp(critics.soft_cap(torch.bmm(f[:, s:s + r], grt), cap), -1) - math.log(K)
        logz[:, s:s + r] = torch.where(tiny[:, s:s + r], exact, logz[:, s:s + r])
    return logz, S


def _chunks_with(rows: Tensor, r: int) -> list[int]:
    """Starts of the chunks of `r` rows where `rows` (G, m) is true for some critic."""
    hit = rows.any(0).cpu().numpy()
    return [s for s in range(0, len(hit), r) if hit[s:s + r].any()]


def _normalized(t: Tensor, logz: Tensor, k: int) -> Tensor:
    """T'(x, y) = max(log[(K + 1) e^T(x, y) / (K Z(x) + e^T(x, y))], -7): T normalised over the K references
    and the pair's own y, floored at ``_T_FLOOR``. A fixed function of (x, y), bounded by log(K + 1) above,
    so a y far outside the references cannot blow up the partition term, and by -7 below."""
    return (math.log(k + 1) + t - torch.logaddexp(logz + math.log(k), t)).clamp_min_(_T_FLOOR)


def evaluate(
    est: "NeuralEstimator",
    params: dict[str, Tensor],
    X: Tensor,
    layer_of: Tensor,
    Y: Tensor,
    idx: Tensor,
    mask: Tensor,
    continuous: bool,
    aux: dict[str, Tensor],
    *,
    max_cols: int | None,
    which: str,
    ensemble: bool = False,
    raw: bool = False,
) -> Any:
    """The estimator's bound (G,) and its standard error on the rows `idx` (padded, `mask`); with `raw`,
    the per-row terms they are computed from (:meth:`NeuralEstimator.bound_from_terms`), so that the
    rows of several folds can be pooled.

    The whole set is used, not a minibatch: for a continuous attribute the
    marginal term averages over all pairs (x_i, y_j), i != j (or over the first
    `max_cols` y_j), evaluated in row chunks to bound memory. With `ensemble`
    the G critics (which must share `idx`) are averaged into one and (1,) is returned.
    """
    xs = _gather_rows(X, layer_of, idx)
    ys = Y.gather(1, idx)
    f = critics.encode(params, xs)
    if est.family == "conditional":
        if ensemble:
            raise ValueError(f"the {est.name!r} estimator has no critic to average")
        terms = est.heldout_conditional(f, ys, mask, continuous, aux, idx, which)
        return terms if raw else est.bound_from_terms(terms, mask)
    ref_idx = aux.get("ref_idx")
    if ref_idx is not None and max_cols is not None:  # validation: as many references as marginal columns
        ref_idx = ref_idx[:, :max_cols]
    if ensemble:
        mask, aux = mask[:1], {k: v[:1] for k, v in aux.items()}
    if not continuous:
        terms = _categorical_terms(est, params, f, ys, mask, aux, ensemble)
    else:
        terms = _continuous_terms(est, params, f, Y, ys, mask, ref_idx, max_cols=max_cols, which=which,
                                  ensemble=ensemble)
    return terms if raw else est.bound_from_terms(terms, mask)


def _pool(ensemble: bool) -> Any:
    """With `ensemble`, the mean over the critics (kept as one); else the critics as they are."""
    return (lambda t: t.mean(0, keepdim=True)) if ensemble else (lambda t: t)  # noqa: E731


def _categorical_terms(est: "NeuralEstimator", params: dict[str, Tensor], f: Tensor, ys: Tensor, mask: Tensor,
                       aux: dict[str, Tensor], ensemble: bool) -> dict[str, Tensor]:
    """The bound's per-row terms for a category: the marginal averages over the empirical class distribution."""
    G = mask.shape[0]
    maskf = mask.float()
    logits = _pool(ensemble)(critics.soft_cap(critics.class_logits(params, f), est.cap))
    ys = ys[:G]
    t_pos = logits.gather(-1, ys.unsqueeze(-1)).squeeze(-1)
    counts = torch.zeros((G, logits.shape[-1]), device=f.device)
    counts.scatter_add_(1, ys, maskf)
    logw = torch.log(counts / counts.sum(1, keepdim=True)).unsqueeze(1)  # empirical class distribution
    logw = torch.where(aux["class_valid"], logw, torch.full_like(logw, -math.inf))
    tm = est.transform_marginal(logits)
    row = torch.logsumexp(tm + logw, -1)
    row_nce = torch.logsumexp(logits + logw, -1)
    neg = torch.full_like(tm, -math.inf)
    colc = torch.logsumexp(torch.where(mask[..., None], tm, neg), 1) - torch.log(maskf.sum(1))[:, None]
    return {"t_pos": t_pos, "row": row, "row_nce": row_nce, "col": colc.gather(1, ys)}


def _continuous_terms(est: "NeuralEstimator", params: dict[str, Tensor], f: Tensor, Y: Tensor, ys: Tensor,
                      mask: Tensor, ref_idx: Tensor | None, *, max_cols: int | None, which: str, ensemble: bool
                      ) -> dict[str, Tensor]:
    """The bound's per-row terms for a number: the marginal term over the pairs (x_i, y_j), i != j, of the
    first `max_cols` columns, in row chunks. With `ensemble`, `mask` is the first critic's (1, m)."""
    G, m = mask.shape
    dev = f.device
    pool = _pool(ensemble)
    g = critics.embed_y(params, ys)
    # with references, each critic is normalised first and the normalised critics are averaged
    # (the bound is concave in the critic, so the average is at least the mean of the seeds)
    logz, S = _log_partition(params, f, Y, ref_idx, est.cap) if ref_idx is not None else (None, None)
    norm = (lambda t, lz: t) if logz is None else (  # noqa: E731
        lambda t, lz: _normalized(t, lz, ref_idx.shape[1]) + float(est.norm_shift or 0.0))
    t_pos = pool(norm(critics.soft_cap((f * g).sum(-1), est.cap), logz))
    maskf = mask.float()
    n_valid = mask.sum(1)
    ncols = n_valid if max_cols is None else torch.clamp(n_valid, max=max_cols)
    c = int(ncols.max())
    gct = g[:, :c].transpose(1, 2)
    cols_valid = torch.arange(c, device=dev)[None, :] < ncols[:, None]  # (G, c)
    # masks enter as additive biases (0 or -inf) broadcast from (G, 1, c) and (r, c): an add is a
    # cheap pass, where a where() over the (G, r, c) chunk costs as much as the exp in logsumexp
    col_bias = torch.zeros((G, 1, c), device=dev).masked_fill_(~cols_valid[:, None, :], -math.inf)
    need_col = which != "val"  # the column terms enter the standard error only, unused for early stopping
    # ratio space: for a normalised critic, exp T' = (K + 1) s / (S + s) with s = sigmoid(T - cap), so the
    # marginal sums need a sigmoid and a division per pair instead of three transcendental functions;
    # rows with a tiny S, seed averages (a mean of logs) and clipped marginals stay in log space
    ratio = S is not None and not ensemble and not est.contrastive and est.identity_marginal()
    r = max(1, _CHUNK_ELEMS // max(1, f.shape[0] * c))
    if ratio:
        log_scale = math.log(ref_idx.shape[1] + 1) + float(est.norm_shift or 0.0)
        q_floor = math.exp(_T_FLOOR) / (ref_idx.shape[1] + 1)
        log_chunks = set(_chunks_with(S < _TINY, r))
        col_keep = None if bool(cols_valid.all()) else cols_valid[:, None, :].float()
        maskf_t = maskf[:, None, :]
    rows_l, nce_l = [], []
    col_acc = torch.full((G, c), -math.inf, device=dev)
    jj = torch.arange(c, device=dev)[None, :]
    for s in range(0, m, r):
        e = min(m, s + r)
        ii = torch.arange(s, e, device=dev)[:, None]
        # valid columns of row i: the first ncols, less the pair's own column when i < ncols
        n_off = (ncols[:, None] - (ii.T < ncols[:, None]).long()).clamp(min=1).float()  # (G, r)
        if ratio and s not in log_chunks:
            q = torch.bmm(f[:, s:e], gct).sub_(est.cap).sigmoid_()
            q = q.div_(q + S[:, s:e, None]).clamp_min_(q_floor)  # exp(T') / (K + 1), floored
            if col_keep is not None:
                q.mul_(col_keep)
            q.diagonal(offset=s, dim1=1, dim2=2).zero_()  # the pair's own column
            rows_l.append(torch.log(q.sum(-1).clamp_min(_FLOOR)) + log_scale - torch.log(n_off))
            if need_col:
                colsum = torch.bmm(maskf_t[:, :, s:e], q).squeeze(1)
                col_acc = torch.logaddexp(col_acc, torch.log(colsum.clamp_min(_FLOOR)) + log_scale)
            continue
        mm = critics.soft_cap(torch.bmm(f[:, s:e], gct), est.cap)  # (G, r, c)
        mm = pool(norm(mm, None if logz is None else logz[:, s:e, None]))
        diag_bias = torch.zeros((e - s, c), device=dev).masked_fill_(ii == jj, -math.inf)
        tm = est.transform_marginal(mm)
        tv = (tm + col_bias).add_(diag_bias)
        rows_l.append(torch.logsumexp(tv, -1) - torch.log(n_off))
        if est.contrastive:  # the InfoNCE term: each row against all columns, its own pair included
            nce_l.append(torch.logsumexp(mm + col_bias, -1) - torch.log(ncols.float())[:, None])
        if need_col:
            row_bias = torch.zeros((G, e - s, 1), device=dev).masked_fill_(~mask[:, s:e, None], -math.inf)
            col_acc = torch.logaddexp(col_acc, torch.logsumexp(tv.add_(row_bias), 1))
    row = torch.cat(rows_l, 1)
    row_nce = torch.cat(nce_l, 1) if est.contrastive else row
    if need_col:
        col_full = torch.full((G, m), -math.inf, device=dev)
        col_full[:, :c] = col_acc - torch.log((n_valid.float() - 1).clamp(min=1))[:, None]
        col = torch.where(torch.arange(m, device=dev)[None, :] < c, col_full, row)
    else:
        col = row
    return {"t_pos": t_pos, "row": row, "row_nce": row_nce, "col": col}

__all__ = [
    "Fit",
    "Job",
    "evaluate",
    "evaluate_ensemble",
    "resolve_device",
    "stack_workers",
    "train_jobs",
    "train_stacks",
]
