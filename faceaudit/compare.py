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

from faceaudit.backends.selection import match_layers
from faceaudit.pipeline import FairnessRequest, Measured, Plan, ReportOutcome, RunSettings, layers_spec
from faceaudit.pipeline.many import many_report, measure_many, measured_attrs, open_many
from faceaudit.report.multi_schema import CompareResult
from faceaudit.stats import Z_95, comparable_groups, difference, disparity, extremes, se_from_ci
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


@dataclass(frozen=True)
class CompareOutcome(ReportOutcome):
    """Where the comparison went, its JSON dictionary, its headline findings and the typed result."""

    result: CompareResult


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
    from faceaudit.report.compare_render import COMPARE_HTML, COMPARE_JSON, render_compare_findings, write_compare
    from faceaudit.report.markdown import MARKDOWN_NAMES
    from faceaudit.report.render import discard_previous

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(config.out_dir)
    config, files, labels, models, inputs, previous = open_many(
        config, config.models, "model", (COMPARE_HTML, COMPARE_JSON, MARKDOWN_NAMES["compare"]),
        "A comparison needs at least two models; got {n}. The first is the reference.")
    extra = ["final"] if inputs.manifest.identities is not None else []
    layer_rows, method = match_layers(models, labels, config.layers, extra=extra)
    if method == "depth":
        inputs.warnings.append(
            "The models differ in architecture, so layers were matched by relative depth (0 = input, 1 = final "
            "embedding); the layer table names the layer used in each model."
        )
    timings["load_s"] = time.perf_counter() - t0

    fairness_attrs = list(config.fairness_attrs or [a for a in inputs.manifest.attributes if a != "identity"])
    request = FairnessRequest(fairness_attrs, config.target_fmr, config.seed) if fairness_attrs else None
    plan, m = measure_many(config, models, labels, layer_rows, inputs, "model", timings,
                           identity_estimator=config.identity_estimator, fairness=request, check_inputs_of=labels)
    report = _compare_report(config, files, plan, method, fairness_attrs, m, timings)
    report["expressivity_differences"] = expressivity_differences(report)
    report["fairness_differences"] = fairness_differences(report)
    timings["total_s"] = time.perf_counter() - t0
    result = CompareResult.from_dict(report)
    html_path, json_path = write_compare(result, out_dir)
    discard_previous(previous)
    return CompareOutcome(html_path, json_path, result.to_dict(), render_compare_findings(result), result)


def _fairness_entries(labels: Sequence[str], m: Measured, asked: bool
                      ) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Every model's fairness rows (tagged with the model), or None and the reason of the first model without."""
    if not asked:
        return None, "No attribute other than identity was given to form groups."
    out: list[dict[str, Any]] = []
    for lab in labels:
        got, why = m.fairness[lab]
        if got is None:
            return None, why
        out += [{"model": lab, **f} for f in got]
    return out, None


def _compare_report(config: CompareConfig, files: Sequence[Path], plan: Plan, method: str,
                    fairness_attrs: list[str], m: Measured, timings: dict[str, float]) -> dict[str, Any]:
    """The comparison's report dictionary (the JSON schema) from what the pipeline measured; differences after."""
    fairness, reason = _fairness_entries(plan.labels, m, bool(fairness_attrs))
    identity = m.identity
    return {
        **many_report(config, files, plan, method, m, timings, kind="compare", demo=False),
        "expressivity_differences": [],
        "fairness": fairness,
        "fairness_skipped_reason": reason,
        "fairness_differences": [],
        "settings": {
            "attrs": measured_attrs(plan.inputs, m),
            "layers_spec": layers_spec(config),
            "estimator": config.estimator,
            "identity_estimator": config.identity_estimator if identity is not None else None,
            "estimator_options": dict(m.options),
            "max_dim": m.max_dim,
            "seeds": config.n_seeds,
            "device": config.device,
            "target_fmr": config.target_fmr,
            "fairness_attrs": fairness_attrs,
            "pooling": config.pooling,
            "seed": config.seed,
            "quick": config.quick,
            "align": config.align,
            "z": config.z,
            "rule": "a difference b - a counts when |b - a| > z * sqrt(se_a^2 + se_b^2); se of an expressivity "
                    "estimate is its own, se of an error rate is its 95% bootstrap CI width / (2 * 1.96), se of a "
                    "disparity (worst - best group) combines the two groups'",
        },
    }


def significant_changes(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The expressivity and fairness differences that exceed the combined uncertainty."""
    return [d for d in list(report.get("expressivity_differences") or ()) + list(report.get("fairness_differences") or ())
            if d.get("significant")]


__all__ = [
    "CompareConfig",
    "CompareOutcome",
    "CompareResult",
    "expressivity_differences",
    "fairness_differences",
    "run_compare",
    "significant_changes",
]
