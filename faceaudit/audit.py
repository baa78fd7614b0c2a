"""One audit, from a model file and a manifest to report.html and report.json.

`run_audit(config)` is what `faceaudit run` does: open the model, load and
validate the manifest (or generate the built-in phantom faces when none is
given), then measure it with the one pipeline (`faceaudit.pipeline.measure`:
the chosen layers extracted in one pass (cached), the expressivity of every
layer x attribute in one batched job, verification fairness per group when
identities are known) and write the report. An audit is the pipeline's view of
one model; the statistics live in the lower rooms.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit import __version__
from faceaudit.backends.selection import MatchedLayer
from faceaudit.pipeline import (
    EXPRESSIVITY_MAX_ROWS,
    MAX_FAILED_LISTED,
    QUICK_ESTIMATOR_OPTIONS,
    QUICK_MAX_DIM,
    QUICK_MAX_IMAGES,
    SCHEMA_VERSION,
    FairnessRequest,
    Plan,
    ReportOutcome,
    RunSettings,
    attribute_summary,
    cache_root,
    check_out_dir,
    choose_rows,
    created_now,
    data_section,
    environment_versions,
    estimator_settings,
    fairness_by_attribute,
    layers_spec,
    load_inputs,
    measure,
    model_provenance,
    plugins_used,
    prepare_inputs,
    spec_report,
    use_default_data,
)


@dataclass(frozen=True, kw_only=True)
class AuditConfig(RunSettings):
    """Everything one audit needs; mirrors the flags of `faceaudit run`."""

    model: Path
    target_fmr: float = 1e-3
    out_dir: Path = Path("faceaudit-report")
    fairness_attrs: Sequence[str] | None = None
    demo: bool = False


class AuditOutcome(ReportOutcome):
    """The outcome of `run_audit`: report.html, report.json and the findings."""


def run_audit(config: AuditConfig) -> AuditOutcome:
    """Run one complete audit and write report.html + report.json into `config.out_dir`.

    The library twin of `faceaudit run`; raises `FaceAuditError` subclasses for
    problems with the inputs, before any long work where it can.
    """
    from faceaudit._progress import stage_line
    from faceaudit.backends import open_model, select_layers
    from faceaudit.report import render_findings, render_html, write_report
    from faceaudit.report.markdown import MARKDOWN_NAMES
    from faceaudit.report.render import REPORT_HTML, REPORT_JSON, discard_previous, set_aside_previous

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(config.out_dir)
    outputs = (REPORT_HTML, REPORT_JSON, MARKDOWN_NAMES["audit"])
    check_out_dir(out_dir, outputs)
    previous = set_aside_previous(out_dir, outputs)  # an unfinished run must not leave the last report looking like its own

    options = dict(config.backend_options)
    if config.trust_pickle:
        options["trust_pickle"] = True
    model = open_model(config.model, backend=config.backend, **options)
    config, inputs = load_inputs(config, model.input_spec, out_dir)
    layer_names = select_layers(model, config.layers)
    if model.final_layer not in layer_names and inputs.manifest.identities is not None:
        layer_names = [*layer_names, model.final_layer]
    timings["load_s"] = time.perf_counter() - t0
    stage_line("model and manifest", len(inputs.rows), "images", timings["load_s"], enabled=config.progress)

    plan = Plan([model], ["model"], _single_model_rows(model, "model", layer_names), inputs,
                [cache_root(config, out_dir)])
    m = measure(plan, config, fairness=FairnessRequest(config.fairness_attrs, config.target_fmr, config.seed),
                check_inputs_of=["model"], timings=timings)
    report = _audit_report(config, model, layer_names, inputs, m, timings)
    t = time.perf_counter()
    render_html(report)  # timed once so report.json can state it; the written file is rendered the same way
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    html_path, json_path = write_report(report, out_dir)
    discard_previous(previous)
    return AuditOutcome(html_path, json_path, report, render_findings(report))


def _single_model_rows(model: Any, label: str, names: Sequence[str]) -> list[MatchedLayer]:
    """The audit's layers as the pipeline's layer rows: one model, each layer its own row, in the given order."""
    ordered = [layer.name for layer in model.layers()]
    last = max(len(ordered) - 1, 1)
    rows = []
    for n in names:
        depth = round((ordered.index(n) if n in ordered else len(ordered) - 1) / last, 4)
        rows.append(MatchedLayer(n, depth, {label: n}, {label: depth}, final=n == model.final_layer))
    return rows


def _audit_report(config: AuditConfig, model: Any, layer_names: Sequence[str], inputs: Any, m: Any,
                  timings: dict[str, float]) -> dict[str, Any]:
    """The audit's report dictionary (the JSON schema) from what the pipeline measured."""
    fairness, fairness_reason = m.fairness["model"]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "audit",
        "faceaudit_version": __version__,
        "created": created_now(),
        "demo": config.demo,
        "model": {
            "path": str(config.model),
            "sha256": model.sha256,
            "backend": model.backend_name,
            **model_provenance(model),
            "input": spec_report(model),
        },
        "input_check": m.input_checks.get("model"),
        "data": data_section(config, inputs, m, identity=False),
        "layers": _layer_rows(model, layer_names, m.features["model"]),
        "expressivity": [
            {"layer": layer, "attribute": attr, **res.to_dict()} for (_, layer, attr), res in m.results.items()
        ],
        "fairness": fairness,
        "fairness_skipped_reason": fairness_reason,
        "warnings": inputs.warnings + list(getattr(inputs.manifest, "warnings", []) or []),
        "timings": timings,
        "settings": {
            "attrs": list(inputs.manifest.attributes),
            "layers_spec": layers_spec(config),
            "estimator": config.estimator,
            "seeds": config.n_seeds,
            "device": config.device,
            "target_fmr": config.target_fmr,
            "pooling": config.pooling,
            "max_dim": m.max_dim,
            "expressivity_max_rows": config.expressivity_max_rows,
            "expressivity_n_rows": int(len(m.expressivity_rows)),
            "executor": config.executor_options.get("executor", "local"),
            "seed": config.seed,
            "quick": config.quick,
            "align": config.align,
        },
        "environment": environment_versions(m.results.values(), [model], [config.estimator]),
    }


def _layer_rows(model: Any, names: Sequence[str], features: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    info = {layer.name: layer for layer in model.layers()}
    ordered = [layer.name for layer in model.layers()]
    rows = []
    for name in names:
        layer = info.get(name)
        pos = ordered.index(name) if name in ordered else len(ordered) - 1
        rows.append({
            "name": name,
            "dim": int(features[name].shape[1]),
            "kind": getattr(layer, "kind", None),
            "shape": list(getattr(layer, "shape", None) or []) or None,
            "depth": round(pos / max(len(ordered) - 1, 1), 4),
        })
    return rows


__all__ = [
    "EXPRESSIVITY_MAX_ROWS",
    "MAX_FAILED_LISTED",
    "QUICK_ESTIMATOR_OPTIONS",
    "QUICK_MAX_DIM",
    "QUICK_MAX_IMAGES",
    "AuditConfig",
    "AuditOutcome",
    "ReportOutcome",
    "RunSettings",
    "attribute_summary",
    "check_out_dir",
    "choose_rows",
    "environment_versions",
    "estimator_settings",
    "fairness_by_attribute",
    "model_provenance",
    "plugins_used",
    "prepare_inputs",
    "run_audit",
    "use_default_data",
]
