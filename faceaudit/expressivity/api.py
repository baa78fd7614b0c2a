"""Public entry points: estimate_expressivity, estimate_many, list_estimators.

The procedure behind every number: validate the inputs; standardise the
features (layers wider than ``max_dim`` are projected on as many principal
components as keep a linear probe's information, see :mod:`reduction`);
standardise a continuous attribute (or, when it is heavy-tailed, replace it by
its normal scores, a monotone map that leaves the MI unchanged); cut the
attribute's rows into ``folds`` folds; for each fold hold out a validation part
of the other rows, fit a linear probe on the rest (its regularisation chosen on
the validation rows), start a critic from that probe and train it with early
stopping on the validation bound (the probe itself stays a candidate); score
every fold with its own critic and pool the bound over all rows; form a 95%
interval from the pooled rows and the folds' spread; report the probes' pooled
Barber-Agakov bound beside it (``probe_mi``, a floor); repeat on a permuted
attribute (the null); and attach a warning for every reason not to trust the
number.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from faceaudit.errors import InputError, PluginError
from faceaudit.expressivity.estimators import NeuralEstimator
from faceaudit.expressivity.reduction import (
    DEFAULT_MAX_DIM, MAX_REDUCTION_LOSS, choose_width, reduce_features, scale_attribute,
)
from faceaudit.expressivity.result import ExpressivityResult
from faceaudit.expressivity.training import (
    Fit, Job, _finite, evaluate_ensemble, resolve_device, stack_workers, train_stacks,
)
from faceaudit.expressivity.validation import CleanPair, check_attribute, check_features
from faceaudit.registry import ESTIMATORS, list_plugins, load_plugin

log = logging.getLogger(__name__)

_NULL_TAG = "__null__"
_CPU_STACK = 64  # most critics per stack on CPU (a step's marginal term pairs each row with `marginal_cols` values)
_MIN_SPLIT = 8  # fewest critics per stack when a kind is split across parallel CPU workers


def list_estimators() -> list[str]:
    """Names of the installed MI estimators (entry-point group ``faceaudit.estimators``)."""
    return [p.name for p in list_plugins(ESTIMATORS)]


def get_estimator(name: str, **options: Any) -> NeuralEstimator:
    """Instantiate the estimator registered as `name` with its hyper-parameters."""
    cls = load_plugin(ESTIMATORS, name)
    if not (isinstance(cls, type) and issubclass(cls, NeuralEstimator)):
        raise PluginError(
            f"The estimator plugin {name!r} ({cls!r}) is not a faceaudit.expressivity.estimators.NeuralEstimator "
            "subclass; update or uninstall the package that provides it."
        )
    return cls(**options)


def _job_seed(seed: int, *parts: int) -> int:
    return int(np.random.SeedSequence([int(seed), *map(int, parts)]).generate_state(1)[0])


def _entropy(codes: np.ndarray) -> float:
    p = np.bincount(codes) / len(codes)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def estimate_many(
    features: Mapping[str, Any],
    attributes: Mapping[str, tuple[Any, str]],
    *,
    estimator: str = "mine",
    seeds: int = 1,
    folds: int = 5,
    device: str = "auto",
    seed: int = 0,
    max_dim: int | None = DEFAULT_MAX_DIM,
    null: bool = True,
    batched: bool = True,
    stack_size: int | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    min_class_count: int = 2,
    **estimator_options: Any,
) -> dict[tuple[str, str], ExpressivityResult]:
    """MI between every layer and every attribute, all critics trained together.

    Every estimate is cross-fitted: an attribute's rows are cut into `folds` folds, and for
    each fold `seeds` critics (averaged) are trained on the other folds and score it, so that
    every row is a test row once and the bound is pooled over all of them. The permutation
    null is cross-fitted the same way, and each fold also fits a linear probe on its other
    rows whose pooled Barber-Agakov bound is reported as ``probe_mi``, a floor.
    An audit asks the same question for L layers x A attributes x K folds x S seeds (plus
    K null critics per pair); training those critics as one stack of
    batched networks is much faster than one at a time and gives the same
    numbers for the same seeds (``batched=False`` trains them one by one).
    `stack_size` caps the critics per stack: None means all of them on CUDA and
    64 on CPU (the training marginal term pairs each row with `marginal_cols`
    values, so a critic's step is small and larger stacks are faster).
    `workers` stacks train at once on CPU, each in its own thread with an equal share of
    torch's threads; None means one per torch thread (each kind is then split into up to
    that many stacks of at least 8 critics), 1 trains the stacks one after another with all
    of torch's threads. Results depend on torch's thread count and the worker count (the
    features' PCA runs with the caller's threads, each stack with its share; the order of
    floating-point sums follows), not on which critics share a stack.
    Layers up to `max_dim` wide (default 1,024) are read whole; wider ones are projected on
    principal components, as many as keep 98% of a linear probe's information about each
    attribute (``reduced_dim``, ``reduction_loss``).
    `features` maps layer name -> (n, d_layer) array (rows aligned across layers);
    `attributes` maps name -> (values (n,), "continuous" | "categorical"); rows
    where an attribute is missing are dropped for that attribute only.
    A category with fewer than `min_class_count` rows is an InputError; pass
    ``min_class_count=1`` for identity (hundreds of classes, some with one image).
    """
    seeds, folds = _check_options(features, attributes, seeds, folds, max_dim, stack_size, workers)
    est = get_estimator(estimator, **estimator_options)
    dev = resolve_device(device)
    feats, clean = _clean_inputs(features, attributes, min_class_count)
    jobs, keys, widths = _plan_jobs(feats, clean, folds=folds, seeds=seeds, seed=seed, max_dim=max_dim, null=null)
    n_workers = 1 if dev.type == "cuda" or not batched else int(workers or torch.get_num_threads())
    fits, runtime = _train_in_stacks(jobs, keys, est, dev, batched=batched, stack_size=stack_size,
                                     workers=n_workers, progress=progress)
    job_of = dict(zip(keys, jobs))
    results: dict[tuple[str, str], ExpressivityResult] = {}
    for aname, (cp, kind) in clean.items():
        for lname in feats:
            per_fold: list[list[Fit]] = []
            fold_terms: list[dict[str, np.ndarray]] = []
            for f in range(folds):
                seed_fits = [fits[(lname, aname, f, s)] for s in range(seeds)]
                per_fold.append(seed_fits)
                if est.family == "critic" and seeds > 1:
                    fold_terms.append(evaluate_ensemble(est, seed_fits, job_of[(lname, aname, f, 0)], dev))
                else:
                    fold_terms.append(seed_fits[0].terms)
            null_fits = [fits[(lname, aname, f, _NULL_TAG)] for f in range(folds)] if null else None
            width, loss = widths.get((lname, aname), (None, None))
            results[(lname, aname)] = _assemble(
                est, kind, cp, per_fold, fold_terms, null_fits, width, loss, feats[lname].shape[1], runtime,
            )
    return results


_JobKey = tuple[str, str, int, int | str]  # (layer, attribute, fold, seed index or _NULL_TAG)


def _check_options(features: Any, attributes: Any, seeds: int, folds: int, max_dim: int | None,
                   stack_size: int | None, workers: int | None) -> tuple[int, int]:
    """Reject inputs that are not mappings and options out of range; return (seeds, folds) as ints."""
    if not isinstance(features, Mapping) or not features:
        raise InputError("features must be a non-empty mapping {layer name: (n_samples, n_features) array}.")
    if not isinstance(attributes, Mapping) or not attributes:
        raise InputError("attributes must be a non-empty mapping {name: (values, 'continuous'|'categorical')}.")
    seeds = int(seeds)
    if seeds < 1:
        raise InputError(f"seeds={seeds}: at least one seed is needed.")
    folds = int(folds)
    if folds < 2:
        raise InputError(f"folds={folds}: cross-fitting needs at least 2 folds (5 is the default).")
    if max_dim is not None and int(max_dim) < 1:
        raise InputError(f"max_dim={max_dim} must be a positive integer or None (no reduction).")
    if stack_size is not None and int(stack_size) < 1:
        raise InputError(f"stack_size={stack_size} must be a positive integer or None (automatic).")
    if workers is not None and int(workers) < 1:
        raise InputError(f"workers={workers} must be a positive integer or None (one per torch thread on CPU).")
    return seeds, folds


def _clean_inputs(features: Mapping[str, Any], attributes: Mapping[str, tuple[Any, str]], min_class_count: int
                  ) -> tuple[dict[str, np.ndarray], dict[str, tuple[CleanPair, str]]]:
    """Validate every layer (same rows in all) and every attribute against those rows."""
    feats: dict[str, np.ndarray] = {}
    n_rows = None
    for lname, arr in features.items():
        x = check_features(arr, layer=str(lname))
        if n_rows is not None and x.shape[0] != n_rows:
            raise InputError(
                f"layer {lname!r} has {x.shape[0]} rows but the first layer has {n_rows}; all layers must hold "
                "the features of the same images in the same order."
            )
        n_rows = x.shape[0]
        feats[str(lname)] = x
    assert n_rows is not None
    clean: dict[str, tuple[CleanPair, str]] = {}
    for aname, spec in attributes.items():
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise InputError(
                f"attribute {aname!r}: expected a tuple (values, kind) with kind 'continuous' or 'categorical', "
                f"got {type(spec).__name__}."
            )
        values, kind = spec
        cp = check_attribute(values, n_rows, kind, name=str(aname), min_class_count=min_class_count)
        clean[str(aname)] = (cp, kind)
    return feats, clean


def _plan_jobs(feats: dict[str, np.ndarray], clean: dict[str, tuple[CleanPair, str]], *, folds: int, seeds: int,
               seed: int, max_dim: int | None, null: bool
               ) -> tuple[list[Job], list[_JobKey], dict[tuple[str, str], tuple[int, float]]]:
    """The critics to train: (layer, attribute, fold, seed index) and the null's folds, with their keys, and
    the width kept of each wide layer per attribute (with its measured loss). The folds are drawn per row
    set, so attributes with the same rows share their splits (and the probes' eigendecompositions). A
    continuous attribute is standardised here; a note about that is added to its warnings in `clean`."""
    reduced: dict[str, tuple[np.ndarray, int | None]] = {}
    for lname, x in feats.items():
        reduced[lname] = reduce_features(x, max_dim, seed=seed)
    widths: dict[tuple[str, str], tuple[int, float]] = {}  # (layer, attribute) -> (width kept, measured loss)
    layer_x: dict[tuple[str, int | None], np.ndarray] = {}  # (layer, width) -> the critics' input
    jobs: list[Job] = []
    keys: list[_JobKey] = []
    for ai, (aname, (cp, kind)) in enumerate(clean.items()):
        if kind == "continuous":
            y, note = scale_attribute(cp.y)
            if note:
                clean[aname] = (dataclasses.replace(cp, warnings=(*cp.warnings, note)), kind)
            n_classes = 0
        else:
            y = cp.y
            n_classes = len(cp.classes)
        perm = np.random.default_rng([int(seed), 4242, ai]).permutation(len(y))
        fold_pos = _folds(len(y), folds, seed)
        for lname in feats:
            xr, k = reduced[lname]
            if k is not None:  # a wide layer: keep the width that keeps the attribute's linear information
                w, loss, _ = choose_width(feats[lname], xr, cp.rows, y, n_classes, seed=seed)
                widths[(lname, aname)] = (w, loss)
                if (lname, w) not in layer_x:
                    layer_x[(lname, w)] = np.ascontiguousarray(xr[:, :w])
                xr, key = layer_x[(lname, w)], (lname, w)
            else:
                key = (lname, None)
            std = feats[lname].shape[1] if k is None else None  # feature_views: the standardised view comes first
            for f, test in enumerate(fold_pos):
                for s in range(seeds):  # the seeds of a fold share its test rows, so their critics can be averaged
                    jobs.append(Job(xr, key, cp.rows, y, n_classes, _job_seed(seed, s, f), test=test, std_cols=std))
                    keys.append((lname, aname, f, s))
                if null:
                    jobs.append(Job(xr, key, cp.rows, y[perm], n_classes, _job_seed(seed, 0, f), test=test,
                                    std_cols=std))
                    keys.append((lname, aname, f, _NULL_TAG))
    return jobs, keys, widths


def _train_in_stacks(jobs: list[Job], keys: list[_JobKey], est: NeuralEstimator, dev: torch.device, *,
                     batched: bool, stack_size: int | None, workers: int, progress: bool | None
                     ) -> tuple[dict[_JobKey, Fit], dict[str, Any]]:
    """Train every job in stacks (continuous attributes first: their critics train longest); return the
    fits by key and where they trained."""
    stacks: list[list[int]] = []
    for continuous in (True, False):
        sel = [i for i, j in enumerate(jobs) if (j.n_classes == 0) == continuous]
        stacks += _plan_stacks(sel, dev.type, batched, stack_size, workers)
    out = train_stacks([[jobs[i] for i in grp] for grp in stacks], est, device=dev, workers=workers,
                       progress=progress)
    runtime = runtime_record(dev, stack_workers(workers, len(stacks)))
    fits: dict[_JobKey, Fit] = {}
    for grp, grp_fits in zip(stacks, out):
        for i, f in zip(grp, grp_fits):
            fits[keys[i]] = f
    return fits, runtime


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """`k` cross-fitting folds of positions 0..n-1 (sorted), from `seed` and `n` alone."""
    perm = np.random.default_rng([int(seed), 2718, int(n)]).permutation(n)
    return [np.sort(perm[f::k]) for f in range(k)]


def pooled_bound(est: NeuralEstimator, terms: list[dict[str, np.ndarray]]) -> tuple[float, float, list[float]]:
    """The bound over all rows of several folds, each row scored by its own fold's critic, with its
    standard error, and each fold's own bound. For DV-type bounds the partition term is pooled too:
    the folds' critics form one critic of (x, fold) with the fold independent of (x, y), whose
    bound is a lower bound of I(X; Y)."""
    def bound(ts: list[dict[str, np.ndarray]]) -> tuple[float, float]:
        cat = {k: torch.from_numpy(np.concatenate([t[k] for t in ts]))[None] for k in ts[0]}
        mask = torch.ones_like(next(iter(cat.values())), dtype=torch.bool)
        v, se = est.bound_from_terms(cat, mask)
        return float(v[0]), float(se[0])

    value, se = bound(terms)
    return value, se, [bound([t])[0] for t in terms]
def runtime_record(dev: torch.device, workers: int) -> dict[str, Any]:
    """Where the critics trained, for the result and the report: the device (with the GPU's name),
    torch's thread count (the features' PCA uses it on every device) and the number of stacks trained
    at once, each with an equal share of the threads (on CPU the numbers depend on both counts)."""
    name = f"cuda:{dev.index or 0} ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "cpu"
    return {"device": name, "torch_threads": torch.get_num_threads(), "workers": int(workers)}


def _plan_stacks(sel: list[int], device_type: str, batched: bool, stack_size: int | None, workers: int
                 ) -> list[list[int]]:
    """Split the jobs `sel` (one attribute kind) into stacks: one per job when not `batched`; else
    `stack_size` each, or automatically all of them on CUDA and, on CPU, at most 64 per stack and up to
    `workers` stacks of at least 8 so that the workers share them. Jobs are dealt out in turn, so every
    stack mixes layers, attributes and seeds and the stacks train for about as long."""
    if not sel:
        return []
    if not batched:
        return [[i] for i in sel]
    if stack_size is not None:
        k = math.ceil(len(sel) / int(stack_size))
    elif device_type == "cuda":
        k = 1
    else:
        k = max(math.ceil(len(sel) / _CPU_STACK), min(workers, len(sel) // _MIN_SPLIT))
    k = max(1, k)
    return [sel[s::k] for s in range(k)]


def _assemble(
    est: NeuralEstimator,
    kind: str,
    cp: CleanPair,
    per_fold: list[list[Fit]],
    fold_terms: list[dict[str, np.ndarray]],
    null_fits: list[Fit] | None,
    reduced_dim: int | None,
    reduction_loss: float | None,
    d: int,
    runtime: dict[str, Any] | None = None,
) -> ExpressivityResult:
    K, S = len(per_fold), len(per_fold[0])
    fits = [f for fold in per_fold for f in fold]
    raw, delta_se, fold_vals = pooled_bound(est, fold_terms)
    raw = _finite(raw)
    # the pooled rows' standard error misses how much the critics themselves vary; the folds' spread
    # (each fold's bound on its own rows, its own critic) carries both, so the larger of the two is used
    fold_se = float(np.std(fold_vals, ddof=1)) / math.sqrt(K) if K > 1 else 0.0
    se = max(_finite(delta_se), fold_se)
    seeds_vals = [pooled_bound(est, [per_fold[f][s].terms for f in range(K)])[0] for s in range(S)]
    mi = max(raw, 0.0)
    ci_low = max(0.0, raw - 1.96 * se)
    ci_high = max(0.0, raw + 1.96 * se)
    floor_terms = np.concatenate([fold[0].floor_terms for fold in per_fold])
    probe_mi = _finite(float(floor_terms.mean()))
    probe_se = _finite(float(floor_terms.std(ddof=1) / math.sqrt(len(floor_terms))))
    null_mi = float("nan")
    if null_fits is not None:
        null_mi = _finite(pooled_bound(est, [f.terms for f in null_fits])[0])
    train_mi = float(np.mean([f.train_value for f in fits]))
    entropy_y = _entropy(cp.y) if kind == "categorical" else None
    if kind == "categorical":
        normalized = min(1.0, mi / entropy_y) if entropy_y and entropy_y > 0 else 0.0
    else:
        normalized = math.sqrt(1.0 - math.exp(-2.0 * mi))
    warnings = list(cp.warnings)
    if raw < 0:
        warnings.append(f"raw estimate {raw:.3f} nats is negative (no detectable information); reported as 0.")
    if reduction_loss is not None and reduction_loss > MAX_REDUCTION_LOSS:
        warnings.append(
            f"the features were reduced to {reduced_dim} principal components, which keep only "
            f"{100 * (1 - reduction_loss):.0f}% of a linear probe's information about the attribute; raise "
            f"max_dim (now {reduced_dim}) so that the critics read more of the layer."
        )
    if ci_high < probe_mi:
        warnings.append(
            f"the estimate's interval [{ci_low:.3f}, {ci_high:.3f}] lies below the linear probe's floor "
            f"({probe_mi:.3f} nats), a lower bound the critic should reach: the critics are under-trained; "
            "raise max_steps, or use more rows."
        )
    unconverged = [i for i, f in enumerate(fits) if not f.converged]
    if unconverged:
        warnings.append(
            f"training did not converge for {len(unconverged)} of {len(fits)} critic(s): the held-out bound was still "
            f"improving at max_steps={est.max_steps}; increase max_steps (the estimate is likely too low)."
        )
    gap = train_mi - raw
    if gap > max(0.1, 0.3 * max(raw, 0.0)):
        warnings.append(
            f"held-out estimate ({raw:.3f} nats) is far below the training-set bound ({train_mi:.3f} nats): the "
            "critic overfits; use more samples, or the 'entropy' estimator."
        )
    n_test = min(f.n_test for f in fits)
    if est.family == "critic" and raw > math.log(n_test) - 1.0:
        warnings.append(
            f"estimate ({raw:.2f} nats) is near the log(n) ceiling ({math.log(n_test):.2f} nats for {n_test} rows "
            "per fold) that sample-based lower bounds cannot exceed; the true MI may be higher."
        )
    if kind == "categorical" and entropy_y is not None and raw > entropy_y * 1.02 + 2 * se:
        warnings.append(f"estimate exceeds H(Y) = {entropy_y:.3f} nats, which is impossible; do not trust it.")
    if S > 1:
        sd = float(np.std(seeds_vals, ddof=1))
        if sd > max(0.05, 0.25 * abs(raw)):
            warnings.append(f"seeds disagree (sd {sd:.3f} nats across {S} seeds); the estimate is unstable.")
    if null_fits is not None:
        if abs(null_mi) > max(0.05, 2 * se):
            warnings.append(
                f"the permutation null gives {null_mi:.3f} nats instead of 0: the estimator is biased on this "
                "data; compare the estimate with null_mi."
            )
        if raw > 0.02 and raw - null_mi < 2 * se:
            warnings.append("estimate is not clearly above the permutation null; it may be noise.")
    f0 = fits[0]
    curves = {"step": list(f0.curve_step), "train": list(f0.curve_train), "heldout": list(f0.curve_val)}
    return ExpressivityResult(
        mi=mi, ci_low=ci_low, ci_high=ci_high, null_mi=null_mi if math.isfinite(null_mi) else None,
        normalized=float(min(1.0, max(0.0, normalized))), n=int(len(cp.rows)), estimator=est.name, kind=kind,
        warnings=tuple(warnings), raw_mi=raw, seeds_mi=tuple(float(v) for v in seeds_vals), entropy_y=entropy_y,
        reduced_dim=reduced_dim, curves=curves, train_mi=train_mi, se=se,
        steps=tuple(f.best_step for f in fits), options={**est.options(), "input_dim": d, "folds": K, "seeds": S},
        runtime=dict(runtime or {}), probe_mi=probe_mi, probe_se=probe_se,
        folds_mi=tuple(float(v) for v in fold_vals), reduction_loss=reduction_loss,
        probe_selected=sum(f.probe_selected for f in fits),
    )


def estimate_expressivity(
    features: Any,
    attribute: Any,
    *,
    kind: str = "continuous",
    estimator: str = "mine",
    seeds: int = 1,
    folds: int = 5,
    device: str = "auto",
    seed: int = 0,
    max_dim: int | None = DEFAULT_MAX_DIM,
    null: bool = True,
    progress: bool | None = None,
    min_class_count: int = 2,
    **estimator_options: Any,
) -> ExpressivityResult:
    """Mutual information (nats) between `features` (n, d) and one `attribute` (n,).

    Expressivity says how much a layer "knows" about an attribute such as sex,
    age or yaw (Dhar et al., FG 2020). The number comes with a 95% interval, a
    permutation null, a linear probe's floor (``probe_mi``) and warnings, because a bare
    neural MI estimate can drift, overfit or go negative. See :func:`estimate_many` for the procedure.
    """
    res = estimate_many(
        {"features": features}, {"attribute": (attribute, kind)}, estimator=estimator, seeds=seeds, folds=folds,
        device=device, seed=seed, max_dim=max_dim, null=null, progress=progress,
        min_class_count=min_class_count, **estimator_options,
    )
    return res[("features", "attribute")]

__all__ = [
    "estimate_expressivity",
    "estimate_many",
    "get_estimator",
    "list_estimators",
    "pooled_bound",
    "runtime_record",
]
