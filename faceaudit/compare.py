"""Models side by side, to compare.html and compare.json.

`run_compare(config)` is what `faceaudit compare` does: open every model,
match their layers (by name when they share an architecture, else by
relative depth), extract features per model on the same images (cached under
``OUT/cache/<label>``), estimate the expressivity of every model x layer x
attribute in one batched job, compute verification fairness per model when
the manifest has identities, and state every difference to the first model
(the reference: "before mitigation", "vendor A") together with whether it
exceeds the combined uncertainty.

The rule, for expressivity and for error rates alike: a difference
delta = b - a counts when |delta| > z * sqrt(se_a^2 + se_b^2), z = 1.96 by
default. For expressivity, se is the estimate's own standard error; for an
error rate, se is half the width of its 95% identity-bootstrap interval
divided by 1.96; for a disparity (worst minus best group), se combines the two
groups' se. Groups flagged `small` by the fairness step (too few identities or
pairs) and rates with a zero-width interval are shown but never called
significant. The models are measured on the same images, so their errors are
partly shared and the rule is conservative (it misses some real differences
rather than inventing them).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceaudit import __version__
from faceaudit.audit import (
    ReportOutcome,
    RunSettings,
    estimator_settings,
    model_provenance,
    prepare_inputs,
    use_default_data,
)
from faceaudit.errors import InputError
from faceaudit.stats import comparable_groups, difference, disparity, extremes, se_from_ci
from faceaudit.trend import (
    SCHEMA_VERSION,
    Z_95,
    attribute_summaries,
    created_now,
    environment,
    expressivity_entries,
    input_checks,
    match_layers,
    measure_models,
    model_labels,
    open_models,
    spec_report,
)
from faceaudit.trend import difference as trend_difference

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CompareConfig(RunSettings):
    """Everything one comparison needs; mirrors the flags of `faceaudit compare`.

    `models` are model files, the first being the reference every other model
    is compared with; `labels` name them (default: from the file names).
    """

    models: Sequence[Path]
    labels: Sequence[str] | None = None
    identity_estimator: str = "entropy"
    target_fmr: float = 1e-3
    fairness_attrs: Sequence[str] | None = None
    out_dir: Path = Path("faceaudit-compare")
    z: float = Z_95


class CompareOutcome(ReportOutcome):
    """Where the comparison went, the result dictionary and its headline findings."""


# --------------------------------------------------------------------------- differences


def _rate_se(ci: Any) -> float | None:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return None
    return se_from_ci(ci[0], ci[1])


def expressivity_differences(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every model's expressivity minus the reference model's, per matched layer and attribute (nats)."""
    z = float(report["settings"].get("z", Z_95))
    labels = [m["label"] for m in report["models"]]
    ref = labels[0]
    index = {(e["model"], e["layer"], e["attribute"]): e for e in report["expressivity"]}
    out = []
    for layer in report["layers"]:
        for a in report["settings"]["attrs"]:
            ea = index.get((ref, layer["key"], a))
            if ea is None:
                continue
            for lab in labels[1:]:
                eb = index.get((lab, layer["key"], a))
                if eb is None:
                    continue
                d = trend_difference(ea, eb, z)
                out.append({"layer": layer["key"], "attribute": a, "model_a": ref, "model_b": lab,
                            "mi_a": ea["mi"], "mi_b": eb["mi"], **d})
    return out


def _group_rates(f: Mapping[str, Any], metric: str) -> dict[str, tuple[float | None, float | None, bool]]:
    return {str(g["group"]): (g.get(metric), _rate_se(g.get(f"{metric}_ci")), bool(g.get("small")))
            for g in f.get("groups") or ()}


def _disparity(f: Mapping[str, Any], metric: str) -> tuple[float | None, float | None, str | None, str | None]:
    """Worst minus best group rate among the groups :func:`faceaudit.stats.comparable_groups` keeps, and its se.

    Worst and best are None when every rate is the same: a gap of 0 names no group.
    """
    rates = _group_rates(f, metric)
    present = {g: r[0] for g, r in rates.items() if r[0] is not None}
    usable = comparable_groups(present, {g for g, r in rates.items() if r[2]})
    if len(usable) < 2:
        return None, None, None, None
    pairs = "n_impostor_pairs" if metric == "fmr" else "n_genuine_pairs"
    counts = {str(g["group"]): g.get(pairs) or 0 for g in f.get("groups") or ()}
    d = disparity(usable, {g: counts.get(g, 0) for g in usable})
    hi, lo = extremes(usable)  # the groups the gap lies between (the first ones on ties), for its se
    sw, sb = rates[hi][1], rates[lo][1]
    se = math.sqrt(sw**2 + sb**2) if sw is not None and sb is not None else None
    return d["difference"], se, d["worst_group"], d["best_group"]


def fairness_differences(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per attribute and metric (FMR, FNMR): each group's rate and the disparity, model minus reference."""
    if not report.get("fairness"):
        return []
    z = float(report["settings"].get("z", Z_95))
    labels = [m["label"] for m in report["models"]]
    ref = labels[0]
    by = {(f["model"], f["attribute"]): f for f in report["fairness"]}
    out = []
    attrs = list(dict.fromkeys(f["attribute"] for f in report["fairness"]))
    for attr in attrs:
        fa = by.get((ref, attr))
        if fa is None:
            continue
        for lab in labels[1:]:
            fb = by.get((lab, attr))
            if fb is None:
                continue
            for metric in ("fmr", "fnmr"):
                da, sa, wa, ba = _disparity(fa, metric)
                db, sb, wb, bb = _disparity(fb, metric)
                out.append({"attribute": attr, "metric": metric, "quantity": "disparity", "group": None,
                            "model_a": ref, "model_b": lab, "value_a": da, "value_b": db,
                            "worst_a": wa, "best_a": ba, "worst_b": wb, "best_b": bb, **difference(da, db, sa, sb, z)})
                ra, rb = _group_rates(fa, metric), _group_rates(fb, metric)
                for g in ra:
                    if g not in rb:
                        continue
                    out.append({"attribute": attr, "metric": metric, "quantity": "group rate", "group": g,
                                "model_a": ref, "model_b": lab, "value_a": ra[g][0], "value_b": rb[g][0],
                                "small": ra[g][2] or rb[g][2],
                                **difference(ra[g][0], rb[g][0], ra[g][1], rb[g][1], z, testable=not (ra[g][2] or rb[g][2]))})
    return out


# --------------------------------------------------------------------------- run_compare


def run_compare(config: CompareConfig) -> CompareOutcome:
    """Compare models on the same faces; write compare.html + compare.json into `config.out_dir`.

    The library twin of `faceaudit compare`. The first model is the reference;
    every difference is "model minus reference" with the significance rule of
    this module's docstring.
    """
    from faceaudit.audit import check_out_dir, fairness_by_attribute
    from faceaudit.report.compare_render import COMPARE_HTML, COMPARE_JSON, render_compare_findings, write_compare
    from faceaudit.report.markdown import MARKDOWN_NAMES
    from faceaudit.report.render import discard_previous, set_aside_previous

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(config.out_dir)
    outputs = (COMPARE_HTML, COMPARE_JSON, MARKDOWN_NAMES["compare"])
    check_out_dir(out_dir, outputs)
    previous = set_aside_previous(out_dir, outputs)
    files = [Path(p) for p in config.models]
    if len(files) < 2:
        raise InputError(f"A comparison needs at least two models; got {len(files)}. The first is the reference.")
    labels = model_labels(files, config.labels, "model")
    models = open_models(files, labels, backend=config.backend, backend_options=config.backend_options,
                         trust_pickle=config.trust_pickle, input_specs=config.input_specs)
    config, data_note = use_default_data(config, models[0].input_spec, out_dir)
    manifest, rows, paths, landmarks, warnings = prepare_inputs(config)
    extra = ["final"] if manifest.identities is not None else []
    layer_rows, method = match_layers(models, labels, config.layers, extra=extra)
    if method == "depth":
        warnings.append(
            "The models differ in architecture, so layers were matched by relative depth (0 = input, 1 = final "
            "embedding); the layer table names the layer used in each model."
        )
    timings["load_s"] = time.perf_counter() - t0

    m = measure_models(config, models, labels, layer_rows, manifest, rows, paths, landmarks, out_dir,
                       what="model", timings=timings, warnings=warnings)
    feats, failed, used = m.features, m.failed, m.used
    identity, id_info, results = m.identity, m.identity_info, m.results
    options, max_dim = estimator_settings(config)

    t = time.perf_counter()
    fairness: list[dict[str, Any]] | None = []
    reason = None
    final_row = next((r for r in layer_rows if r.final), None)
    fair_cfg = _FairnessSettings(
        fairness_attrs=list(config.fairness_attrs or [a for a in manifest.attributes if a != "identity"]),
        target_fmr=config.target_fmr, seed=config.seed,
    )
    if not fair_cfg.fairness_attrs:
        fairness, reason = None, "No attribute other than identity was given to form groups."
    for lab in labels if fairness is not None else []:
        emb = feats[lab][final_row.key] if final_row is not None else None
        got, why = fairness_by_attribute(manifest, used, emb, fair_cfg, warnings)
        if got is None:
            fairness, reason = None, why
            break
        assert fairness is not None
        fairness += [{"model": lab, **f} for f in got]
    timings["fairness_s"] = time.perf_counter() - t
    t = time.perf_counter()
    checks = input_checks(config, models, labels, layer_rows, m, manifest, rows, paths, landmarks, out_dir,
                          which=labels) if config.check_input_spec else {}
    timings["input_check_s"] = time.perf_counter() - t

    attr_names = [a for a in manifest.attributes if a != "identity" or identity is not None]
    expressivity = expressivity_entries(results, attr_names, layer_rows, labels, what="model")
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "compare",
        "faceaudit_version": __version__,
        "created": created_now(),
        "demo": False,
        "models": [
            {"label": lab, "index": i, "reference": i == 0, "path": str(p), "sha256": m.sha256,
             "backend": m.backend_name, **model_provenance(m), "final_layer": m.final_layer, "n_layers": len(m.layers()),
             "input": spec_report(m), "input_check": checks.get(lab)}
            for i, (lab, p, m) in enumerate(zip(labels, files, models))
        ],
        "data": {
            "manifest": str(config.manifest),
            "n_images": len(manifest),
            "n_used": int(len(used)),
            "n_failed": len(failed),
            "failed": [{"path": str(p), "reason": r} for p, r in failed[:20]],
            "attributes": attribute_summaries(manifest, used),
            "identity": id_info,
            **data_note,
        },
        "layer_matching": method,
        "layers": [r.to_dict() for r in sorted(layer_rows, key=lambda r: r.depth)],
        "expressivity": expressivity,
        "expressivity_differences": [],
        "fairness": fairness,
        "fairness_skipped_reason": reason,
        "fairness_differences": [],
        "warnings": warnings + list(getattr(manifest, "warnings", []) or []),
        "timings": timings,
        "settings": {
            "attrs": attr_names,
            "layers_spec": config.layers if isinstance(config.layers, str) else ",".join(config.layers),
            "estimator": config.estimator,
            "identity_estimator": config.identity_estimator if identity is not None else None,
            "estimator_options": dict(options),
            "max_dim": max_dim,
            "seeds": config.n_seeds,
            "device": config.device,
            "target_fmr": config.target_fmr,
            "fairness_attrs": fair_cfg.fairness_attrs,
            "pooling": config.pooling,
            "seed": config.seed,
            "quick": config.quick,
            "align": config.align,
            "z": config.z,
            "rule": "a difference b - a counts when |b - a| > z * sqrt(se_a^2 + se_b^2); se of an expressivity "
                    "estimate is its own, se of an error rate is its 95% bootstrap CI width / (2 * 1.96), se of a "
                    "disparity (worst - best group) combines the two groups'",
        },
        "environment": environment(results.values(), models,
                                   [config.estimator] + ([config.identity_estimator] if identity is not None else [])),
    }
    report["expressivity_differences"] = expressivity_differences(report)
    report["fairness_differences"] = fairness_differences(report)
    timings["total_s"] = time.perf_counter() - t0
    html_path, json_path = write_compare(report, out_dir)
    discard_previous(previous)
    return CompareOutcome(html_path, json_path, report, render_compare_findings(report))


@dataclass(frozen=True)
class _FairnessSettings:
    """The three settings the audit's fairness step reads."""

    fairness_attrs: list[str]
    target_fmr: float
    seed: int


def significant_changes(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The expressivity and fairness differences that exceed the combined uncertainty."""
    return [d for d in list(report.get("expressivity_differences") or ()) + list(report.get("fairness_differences") or ())
            if d.get("significant")]


__all__ = [
    "CompareConfig",
    "CompareOutcome",
    "expressivity_differences",
    "fairness_differences",
    "run_compare",
    "significant_changes",
]
