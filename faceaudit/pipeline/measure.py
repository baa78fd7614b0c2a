"""The one measuring step behind run, trend and compare: `measure(plan, settings)`.

Extract the chosen layers of every model on the same images (the rows every
model could read), estimate the expressivity of every model x layer x
attribute in one batched `estimate_many` call (per estimator), then
verification fairness and the input-spec check per model. An audit is a plan
with one model; a trend or a comparison is a plan with several, matched layer
by layer (see `faceaudit.backends.selection.match_layers`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.backends.selection import MatchedLayer
from faceaudit.errors import FaceAuditError, InputError, option
from faceaudit.pipeline.inputs import Inputs, attribute_inputs, attribute_summary
from faceaudit.pipeline.settings import MAX_FAILED_LISTED, MIN_READABLE_IMAGES, RunSettings, estimator_settings

__all__ = [
    "CRITIC_CPU_THREADS",
    "FairnessRequest",
    "Measured",
    "Plan",
    "data_section",
    "expressivity_entries",
    "fairness_by_attribute",
    "measure",
    "model_cache_dir",
]

log = logging.getLogger(__name__)

#: torch threads for critic training on CPU in trend and compare: the critics are tiny, so intra-op threads add only
#: overhead, and on a busy machine they spin (measured 45 s with 2 threads vs 1.5 s with 1 for the same 12 critics on
#: 2 shared cores).
CRITIC_CPU_THREADS: int | None = 1


@dataclass(frozen=True)
class Plan:
    """What to measure: the opened models, their labels, the matched layers, the rows and where to cache.

    `what` ("checkpoint", "model") names the models in messages when there are
    several; None for a single model (an audit).
    """

    models: Sequence[Any]
    labels: Sequence[str]
    layer_rows: Sequence[MatchedLayer]
    inputs: Inputs
    cache_dirs: Sequence[Path]
    what: str | None = None


@dataclass(frozen=True)
class FairnessRequest:
    """Verification fairness per model: the attributes (or `a*b` intersections; None: all), the FMR, the seed."""

    attrs: Sequence[str] | None
    target_fmr: float
    seed: int


@dataclass(frozen=True)
class Measured:
    """Features, expressivity, fairness and input checks of every model on the rows every model could read."""

    features: dict[str, dict[str, np.ndarray]]  # label -> layer key -> (n_used, dim)
    failed: list[tuple[str, str]]
    used: np.ndarray  # manifest rows every model could read
    expressivity_rows: np.ndarray  # positions in `used` the estimators saw
    identity: np.ndarray | None
    identity_info: dict[str, Any] | None
    results: dict[tuple[str, str, str], Any]  # (label, layer key, attribute) -> ExpressivityResult
    fairness: dict[str, tuple[list[dict[str, Any]] | None, str | None]]  # label -> (results, reason)
    input_checks: dict[str, dict[str, Any]]
    options: dict[str, Any]
    max_dim: int | None


def model_cache_dir(root: Path, i: int, label: str) -> Path:
    """The feature cache of the i-th of several models: its own folder under `root`, named after its label."""
    return Path(root) / (f"{i:02d}_" + (re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "model")[:60])


def measure(plan: Plan, settings: RunSettings, *, identity_estimator: str | None = None,
            fairness: FairnessRequest | None = None, check_inputs_of: Sequence[str] = (),
            cpu_threads: int | None = None, timings: dict[str, float]) -> Measured:
    """Extract, estimate, then fairness and the input-spec check, for every model of `plan`.

    `identity_estimator` None treats an `identity` attribute like any other;
    otherwise identity is prepared by `identity_attribute` and estimated with
    it. `check_inputs_of` names the models whose input spec is checked.
    `cpu_threads` caps torch's threads during critic training on CPU. Fills
    `timings`; warnings go to `plan.inputs.warnings`.
    """
    from faceaudit._progress import stage_line

    inputs, warnings = plan.inputs, plan.inputs.warnings
    t = time.perf_counter()
    feats, ok, failed = _extract(plan, settings)
    timings["features_s"] = time.perf_counter() - t
    used = _readable_rows(plan, settings, ok, failed)

    t = time.perf_counter()
    sub = _expressivity_rows(len(used), settings, warnings, with_fairness=fairness is not None)
    if identity_estimator is None:
        attrs = {name: (a.values[used[sub]], a.kind) for name, a in inputs.manifest.attributes.items()}
        identity, id_info = None, None
    else:
        attrs, identity, id_info = attribute_inputs(inputs.manifest, used[sub], warnings)
    options, max_dim = estimator_settings(settings)
    est_feats = feats if len(sub) == len(used) else {
        lab: {k: arr[sub] for k, arr in layers.items()} for lab, layers in feats.items()}
    results = _estimate(est_feats, attrs, identity, settings, identity_estimator=identity_estimator,
                        options=options, max_dim=max_dim, cpu_threads=cpu_threads)
    timings["expressivity_s"] = time.perf_counter() - t
    stage_line("expressivity", len(results), "estimates", timings["expressivity_s"], enabled=settings.progress)

    fair: dict[str, tuple[list[dict[str, Any]] | None, str | None]] = {}
    if fairness is not None:
        t = time.perf_counter()
        fair = _fairness(plan, feats, used, fairness, warnings)
        timings["fairness_s"] = time.perf_counter() - t
        n_attrs = len(next(iter(fair.values()))[0] or ()) if fair else 0
        stage_line("verification fairness", n_attrs, "attributes", timings["fairness_s"], enabled=settings.progress)

    checks: dict[str, dict[str, Any]] = {}
    if settings.check_input_spec and check_inputs_of:
        t = time.perf_counter()
        checks = _input_checks(plan, settings, feats, ok, used, which=check_inputs_of)
        timings["input_check_s"] = time.perf_counter() - t
    return Measured(feats, failed, used, sub, identity, id_info, results, fair, checks, options, max_dim)


def _extract(plan: Plan, settings: RunSettings
             ) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray, list[tuple[str, str]]]:
    """Features of the matched layers for every model, on the rows every model could read.

    Why: critics of different models are compared on the same images, so rows
    are the intersection of each model's readable images. The one place that
    calls `extract_features`. Returns ({label: {layer key: (n_used, dim)}}, ok
    mask over the plan's paths, failures in the order first met).
    """
    from faceaudit.features import extract_features

    inputs = plan.inputs
    sets = []
    for lab, m, cache in zip(plan.labels, plan.models, plan.cache_dirs):
        names = list(dict.fromkeys(row.names[lab] for row in plan.layer_rows))
        log.info("extracting %d layer(s) of %s", len(names), lab)
        sets.append(extract_features(
            m, inputs.paths, names, landmarks=inputs.landmarks, pooling=settings.pooling,
            batch_size=settings.batch_size, cache_dir=cache, strict=settings.strict, progress=settings.progress,
            **dict(settings.executor_options),
        ))
    ok = np.ones(len(inputs.paths), dtype=bool)
    for fs in sets:
        ok &= np.asarray(fs.ok, dtype=bool)
    failed: dict[str, str] = {}
    for fs in sets:
        for p, reason in fs.failed:
            failed.setdefault(p, reason)
    out: dict[str, dict[str, np.ndarray]] = {}
    for lab, fs in zip(plan.labels, sets):
        keep = ok[np.asarray(fs.ok, dtype=bool)]
        out[lab] = {row.key: np.asarray(fs.features[row.names[lab]])[keep] for row in plan.layer_rows}
    return out, ok, list(failed.items())


def _readable_rows(plan: Plan, settings: RunSettings, ok: np.ndarray, failed: Sequence[tuple[str, str]]) -> np.ndarray:
    """The manifest rows every model could read; stops the run below MIN_READABLE_IMAGES."""
    rows, warnings = plan.inputs.rows, plan.inputs.warnings
    used = rows[ok]
    by_every = f" by every {plan.what}" if plan.what else ""
    if len(used) < MIN_READABLE_IMAGES:
        raise InputError(
            f"Only {len(used)} of {len(rows)} images in {settings.manifest} could be read{by_every}; "
            "check the `path` column and the image files."
        )
    if failed:
        listed = "" if plan.what else " (listed under data.failed)"
        warnings.append(f"{len(failed)} images could not be read{by_every} and were skipped{listed}.")
    return used


def _expressivity_rows(n_used: int, settings: RunSettings, warnings: list[str], *, with_fairness: bool) -> np.ndarray:
    """Positions (in the readable rows) the estimators see: all, or a seeded subset of expressivity_max_rows."""
    from faceaudit.features import subsample_rows

    sub = subsample_rows(n_used, settings.expressivity_max_rows, seed=settings.seed)
    if len(sub) < n_used:
        rest = "; verification fairness uses all of them" if with_fairness else ""
        warnings.append(
            f"Expressivity was estimated on a random subset of {len(sub)} of {n_used} images "
            f"(expressivity_max_rows, seed {settings.seed}){rest}."
        )
    return sub


def _estimate(features: Mapping[str, Mapping[str, np.ndarray]], attributes: Mapping[str, tuple[np.ndarray, str]],
              identity: np.ndarray | None, settings: RunSettings, *, identity_estimator: str | None,
              options: Mapping[str, Any], max_dim: int | None, cpu_threads: int | None,
              ) -> dict[tuple[str, str, str], Any]:
    """Expressivity of every model x layer x attribute: one batched `estimate_many` call per estimator.

    Why: all critics train together as one stack (keys "<label>/<layer>" when
    there are several models, the layer alone for one); identity, a
    categorical attribute with many classes, is estimated with
    `identity_estimator` (e.g. "entropy": H(Y) - H(Y|X) from a classifier), in
    the same call when the estimators agree.
    """
    from faceaudit.expressivity import estimate_many

    keys: dict[str, tuple[str, str]] = {}
    flat: dict[str, np.ndarray] = {}
    for lab, layers in features.items():
        for lkey, arr in layers.items():
            k = lkey if len(features) == 1 else f"{lab}/{lkey}"
            keys[k] = (lab, lkey)
            flat[k] = arr
    kw: dict[str, Any] = {"seeds": settings.n_seeds, "device": settings.device, "seed": settings.seed,
                          "progress": settings.progress, **options}
    if max_dim is not None:
        kw["max_dim"] = max_dim
    calls: list[tuple[str, dict[str, tuple[np.ndarray, str]]]] = []
    main = dict(attributes)
    if identity is not None and identity_estimator is not None:
        if identity_estimator == settings.estimator:
            main["identity"] = (identity, "categorical")
        else:
            calls.append((identity_estimator, {"identity": (identity, "categorical")}))
    if main:
        calls.insert(0, (settings.estimator, main))
    out: dict[tuple[str, str, str], Any] = {}
    for est, attrs in calls:
        with _cpu_threads(settings.device, cpu_threads):
            res = estimate_many(flat, attrs, estimator=est, **kw)
        for (k, a), r in res.items():
            lab, lkey = keys[k]
            out[(lab, lkey, a)] = r
    return out


@contextlib.contextmanager
def _cpu_threads(device: str, n: int | None) -> Iterator[None]:
    """Run critic training on CPU with `n` torch threads, restoring the previous setting afterwards."""
    if n is None:
        yield
        return
    import torch

    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    before = torch.get_num_threads()
    if not on_cpu or n >= before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _final_embeddings(plan: Plan, feats: Mapping[str, Mapping[str, np.ndarray]], lab: str) -> np.ndarray | None:
    final = next((r for r in plan.layer_rows if r.final), None)
    return feats[lab][final.key] if final is not None else None


def _fairness(plan: Plan, feats: Mapping[str, Mapping[str, np.ndarray]], used: np.ndarray,
              request: FairnessRequest, warnings: list[str]
              ) -> dict[str, tuple[list[dict[str, Any]] | None, str | None]]:
    """Verification fairness of each model in turn, stopping at the first that has none (with its reason)."""
    out: dict[str, tuple[list[dict[str, Any]] | None, str | None]] = {}
    for lab in plan.labels:
        got, why = fairness_by_attribute(plan.inputs.manifest, used, _final_embeddings(plan, feats, lab),
                                         attrs=request.attrs, target_fmr=request.target_fmr, seed=request.seed,
                                         warnings=warnings)
        out[lab] = (got, why)
        if got is None:
            break
    return out


def fairness_by_attribute(manifest: Any, used: np.ndarray, embeddings: np.ndarray | None, *,
                          attrs: Sequence[str] | None, target_fmr: float, seed: int, warnings: list[str],
                          ) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Verification fairness per requested attribute (or intersection); (results, None) or (None, reason)."""
    from faceaudit.fairness import combine_groups, verification_fairness

    if manifest.identities is None:
        return None, "The manifest has no `identity` column, so genuine and impostor pairs cannot be formed."
    if embeddings is None:
        return None, "The final embedding layer was not extracted."
    identities = manifest.identities[used]
    out = []
    for spec in list(attrs or manifest.attributes):
        parts = spec.split("*")
        missing = [p for p in parts if p not in manifest.attributes]
        if missing:
            raise InputError(
                f"{option('--fairness-attrs', 'fairness_attrs')} names {', '.join(missing)}, which is not among "
                f"the audited attributes ({', '.join(manifest.attributes)}); add it to {option('--attrs', 'attrs')}."
            )
        groups = [manifest.attributes[p].groups[used] for p in parts]
        orders = [manifest.attributes[p].group_order for p in parts]
        if len(groups) == 1:
            group, order = groups[0], orders[0]
        else:
            group = combine_groups(*groups)
            order = [" & ".join(combo) for combo in itertools.product(*orders)]
        try:
            res = verification_fairness(
                embeddings, identities, group, target_fmr=target_fmr, seed=seed, attribute=spec, group_order=order,
            )
        except FaceAuditError as exc:
            warnings.append(f"Verification fairness for {spec!r} skipped: {exc}")
            continue
        out.append(res.to_dict())
    if not out:
        return None, "No attribute had enough identities with several images to form genuine pairs."
    return out, None


def _input_checks(plan: Plan, settings: RunSettings, feats: Mapping[str, Mapping[str, np.ndarray]], ok: np.ndarray,
                  used: np.ndarray, *, which: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The input-spec check (see spec_check) of the models labelled `which`, on the rows every model read."""
    from faceaudit.spec_check import check_input_spec

    inputs = plan.inputs
    keep = np.flatnonzero(ok)
    ids = None if inputs.manifest.identities is None else inputs.manifest.identities[used]
    out = {}
    for lab, m, cache in zip(plan.labels, plan.models, plan.cache_dirs):
        if lab not in which:
            continue
        out[lab] = check_input_spec(
            m, [inputs.paths[k] for k in keep], ids, _final_embeddings(plan, feats, lab),
            landmarks=None if inputs.landmarks is None else inputs.landmarks[keep], cache_dir=cache,
            target_fmr=getattr(settings, "target_fmr", 1e-3), seed=settings.seed, batch_size=settings.batch_size)
    return out


def data_section(settings: RunSettings, inputs: Inputs, measured: Measured, *, identity: bool) -> dict[str, Any]:
    """The report's `data` section: the manifest, the rows used, the failed images, the attribute groups."""
    manifest, used = inputs.manifest, measured.used
    out: dict[str, Any] = {
        "manifest": str(settings.manifest),
        "n_images": len(manifest),
        "n_used": int(len(used)),
        "n_failed": len(measured.failed),
        "failed": [{"path": str(p), "reason": r} for p, r in measured.failed[:MAX_FAILED_LISTED]],
        "attributes": [attribute_summary(a, used) for a in manifest.attributes.values()],
    }
    if identity:
        out["identity"] = measured.identity_info
    return {**out, **inputs.data_note}


def expressivity_entries(results: Mapping[tuple[str, str, str], Any], attr_names: Sequence[str],
                         layer_rows: Sequence[MatchedLayer], labels: Sequence[str], *, what: str) -> list[dict[str, Any]]:
    """The report's expressivity rows, ordered by attribute, layer depth, then model; `what` names the model key."""
    row_by_key = {r.key: r for r in layer_rows}
    return [
        {what: lab, "layer": lkey, "layer_name": row_by_key[lkey].names[lab], "attribute": a, **r.to_dict()}
        for (lab, lkey, a), r in sorted(
            results.items(),
            key=lambda kv: (attr_names.index(kv[0][2]), row_by_key[kv[0][1]].depth, labels.index(kv[0][0])),
        )
    ]
