"""Expressivity across training checkpoints, to trend.html and trend.json.

`run_trend(config)` is what `faceaudit trend` does: open every checkpoint,
match their layers (by name when the checkpoints share an architecture, else
by relative depth), extract features per checkpoint (cached under
``OUT/cache/<label>``), estimate the expressivity of every checkpoint x layer
x attribute in one batched job (keys ``"<label>/<layer>"``), summarise the
trend of each attribute at one chosen layer (default: the final embedding)
and write the report. As a face network trains, the expressivity of yaw, sex
and age at its final layer first rises and then falls while identity keeps
rising (Dhar et al., FG 2020); the report says where each attribute peaks and
whether the later fall is larger than the combined uncertainty.

The measuring itself is the one pipeline's (`faceaudit.pipeline.measure`); a
trend adds its summary.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.backends.selection import MatchedLayer, match_layers
from faceaudit.errors import InputError, option
from faceaudit.pipeline import (
    CRITIC_CPU_THREADS,
    MIN_MEDIAN_IMAGES_PER_IDENTITY,
    SCHEMA_VERSION,
    Measured,
    Plan,
    ReportOutcome,
    RunSettings,
    identity_attribute,
    layers_spec,
    model_labels,
    open_models,
)
from faceaudit.pipeline.many import many_report, measure_many, measured_attrs, open_many
from faceaudit.report.multi_schema import TrendResult
from faceaudit.stats import Z_95, se_from_ci
from faceaudit.stats import difference as _significance

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- config and outcome


@dataclass(frozen=True, kw_only=True)
class TrendConfig(RunSettings):
    """Everything one trend needs; mirrors the flags of `faceaudit trend`.

    `checkpoints` are model files in training order; `labels` name them (default:
    from the file names). `layer` is the layer followed across checkpoints
    ("final" = the embedding output, or a layer name); `layers` picks the
    layers of the layers x checkpoints view ("auto", names, globs, or "final"
    for the followed layer only).
    """

    checkpoints: Sequence[Path]
    labels: Sequence[str] | None = None
    layer: str = "final"
    identity_estimator: str = "entropy"
    out_dir: Path = Path("faceaudit-trend")
    z: float = Z_95
    demo: bool = False


@dataclass(frozen=True)
class TrendOutcome(ReportOutcome):
    """Where the trend report went, its JSON dictionary, its headline findings and the typed result."""

    result: TrendResult


# --------------------------------------------------------------------------- significance


def entry_se(e: Mapping[str, Any], z: float = Z_95) -> float:
    """Standard error (nats) of one expressivity entry: its `se`, else half its 95% CI width / 1.96."""
    se = e.get("se")
    if isinstance(se, (int, float)) and not isinstance(se, bool) and math.isfinite(se):
        return float(se)
    from_ci = se_from_ci(e.get("ci_low"), e.get("ci_high"))
    return 0.0 if from_ci is None else from_ci


def difference(a: Mapping[str, Any], b: Mapping[str, Any], z: float = Z_95) -> dict[str, Any]:
    """b - a in nats and whether it exceeds the combined uncertainty (the rule of :func:`faceaudit.stats.difference`)."""
    return _significance(float(a.get("mi") or 0.0), float(b.get("mi") or 0.0), entry_se(a), entry_se(b), z)


# --------------------------------------------------------------------------- trend summary


def _shape(values: Sequence[Mapping[str, Any]], z: float) -> dict[str, Any]:
    """Where an attribute peaks across checkpoints and whether the rise and the fall exceed the uncertainty."""
    mis = [float(e.get("mi") or 0.0) for e in values]
    peak = int(np.argmax(mis))
    rise = difference(values[0], values[peak], z)
    fall = difference(values[-1], values[peak], z)  # peak - last
    overall = difference(values[0], values[-1], z)
    up = rise["significant"] and rise["delta"] > 0
    down = fall["significant"] and fall["delta"] > 0
    if up and down:
        shape = "rise-then-fall"
    elif up:
        shape = "rising"
    elif down or (overall["significant"] and overall["delta"] < 0):
        shape = "falling"
    else:
        shape = "flat"
    return {"peak_index": peak, "rise": rise, "fall": fall, "first_to_last": overall, "shape": shape}


def summarize_trend(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per attribute, at the followed layer: values per checkpoint, the peak, the rise and the fall.

    Why: a reader picks a checkpoint, or checks whether mitigation removed an
    attribute, from exactly these numbers. A rise (first checkpoint to peak) or
    a fall (peak to last checkpoint) counts when it exceeds
    z * sqrt(se_1^2 + se_2^2) (z = settings.z, 1.96 by default).
    """
    z = float(report["settings"].get("z", Z_95))
    labels = [c["label"] for c in report["checkpoints"]]
    focus = report["focus_layer"]
    index = {(e["checkpoint"], e["layer"], e["attribute"]): e for e in report["expressivity"]}
    out = []
    for a in report["settings"]["attrs"]:
        vals = [index.get((lab, focus, a)) for lab in labels]
        if any(v is None for v in vals):
            continue
        s = _shape(vals, z)
        out.append({
            "attribute": a,
            "layer": focus,
            "mi": [v["mi"] for v in vals],
            "ci_low": [v["ci_low"] for v in vals],
            "ci_high": [v["ci_high"] for v in vals],
            "normalized": [v["normalized"] for v in vals],
            "peak": labels[s["peak_index"]],
            **s,
        })
    return out


# --------------------------------------------------------------------------- run_trend


def run_trend(config: TrendConfig) -> TrendOutcome:
    """Estimate expressivity across training checkpoints; write trend.html + trend.json into `config.out_dir`.

    The library twin of `faceaudit trend`; raises `FaceAuditError` subclasses
    for problems with the inputs before any long work where it can.
    """
    from faceaudit.backends import select_layers
    from faceaudit.report.markdown import MARKDOWN_NAMES
    from faceaudit.report.render import discard_previous
    from faceaudit.report.trend_render import TREND_HTML, TREND_JSON, render_trend_findings, write_trend

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(config.out_dir)
    config, ckpts, labels, models, inputs, previous = open_many(
        config, config.checkpoints, "checkpoint", (TREND_HTML, TREND_JSON, MARKDOWN_NAMES["trend"]),
        "A trend needs at least two checkpoints; got {n}. Pass them in training order.")
    focus_names = select_layers(models[0], config.layer)
    if len(focus_names) != 1:
        raise InputError(
            f"{option('--layer', 'layer=')} {config.layer!r} names {len(focus_names)} layers of {ckpts[0].name}; name exactly one "
            "(or use 'final' for the embedding)."
        )
    layer_rows, method = match_layers(models, labels, config.layers, extra=[focus_names[0]])
    focus = next(r.key for r in layer_rows if r.names[labels[0]] == focus_names[0])
    if method == "depth":
        inputs.warnings.append(
            "The checkpoints do not share one architecture (layer names or shapes differ), so layers were matched "
            "by relative depth; the layer rows name the layer used in each checkpoint."
        )
    timings["load_s"] = time.perf_counter() - t0

    plan, m = measure_many(config, models, labels, layer_rows, inputs, "checkpoint", timings,
                           identity_estimator=config.identity_estimator, check_inputs_of=labels[-1:])
    report = _trend_report(config, ckpts, plan, method, focus, m, timings)
    report["trend"] = summarize_trend(report)
    timings["total_s"] = time.perf_counter() - t0
    result = TrendResult.from_dict(report)
    html_path, json_path = write_trend(result, out_dir)
    discard_previous(previous)
    return TrendOutcome(html_path, json_path, result.to_dict(), render_trend_findings(result), result)


def _trend_report(config: TrendConfig, ckpts: Sequence[Path], plan: Plan, method: str, focus: str, m: Measured,
                  timings: dict[str, float]) -> dict[str, Any]:
    """The trend's report dictionary (the JSON schema) from what the pipeline measured; `trend` filled after."""
    identity = m.identity
    return {
        **many_report(config, ckpts, plan, method, m, timings, kind="trend", demo=config.demo),
        "focus_layer": focus,
        "trend": [],
        "settings": {
            "attrs": measured_attrs(plan.inputs, m),
            "layer": config.layer,
            "layers_spec": layers_spec(config),
            "estimator": config.estimator,
            "identity_estimator": config.identity_estimator if identity is not None else None,
            "estimator_options": {k: v for k, v in m.options.items()},
            "max_dim": m.max_dim,
            "seeds": config.n_seeds,
            "device": config.device,
            "pooling": config.pooling,
            "seed": config.seed,
            "quick": config.quick,
            "align": config.align,
            "z": config.z,
            "rule": "a rise or fall counts when |difference| > z * sqrt(se_1^2 + se_2^2) (se from each estimate)",
        },
    }


def run_demo_trend(out_dir: Path, assets: Any, *, seed: int = 0, progress: bool | None = None) -> TrendOutcome:
    """Audit the demo's training checkpoints: the paper's experiment in miniature, kept cheap.

    Follows age, sex, yaw and identity at the final embedding across `assets.checkpoints`
    (from random initialisation to the trained network) with one seed and the
    quick estimator settings; writes trend.html + trend.json into `out_dir`.
    """
    config = TrendConfig(
        checkpoints=[p for _, p in assets.checkpoints], labels=[lab for lab, _ in assets.checkpoints],
        manifest=assets.manifest, attrs="age,sex,yaw,identity", layer="final", layers="final",
        estimator="entropy", seeds=1, quick=True, out_dir=Path(out_dir), seed=seed, demo=True,
        progress=progress, estimator_options={"max_steps": 200},
        check_input_spec=False,  # the demo's audit already checks the final model's spec
    )
    return run_trend(config)


__all__ = [
    "CRITIC_CPU_THREADS",
    "MIN_MEDIAN_IMAGES_PER_IDENTITY",
    "SCHEMA_VERSION",
    "Z_95",
    "MatchedLayer",
    "TrendConfig",
    "TrendOutcome",
    "TrendResult",
    "difference",
    "entry_se",
    "identity_attribute",
    "match_layers",
    "model_labels",
    "open_models",
    "run_demo_trend",
    "run_trend",
    "summarize_trend",
]
