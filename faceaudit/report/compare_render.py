"""Render a model comparison to compare.html and its JSON twin compare.json.

Same conventions as the audit and trend reports (self-contained HTML, no
script, CSP meta, autoescaped jinja2 with StrictUndefined, HTML a pure
function of the JSON, atomic writes).

The compare.json layout is `CompareResult` (faceaudit/report/multi_schema.py); every view here
reads one, built from the JSON by `CompareResult.from_dict` on re-render.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faceaudit.report import charts
from faceaudit.report.findings import Finding, describe_input, input_findings
from faceaudit.report.multi_schema import CompareResult, as_compare
from faceaudit.report.render import backend_label
from faceaudit.report.trend_render import (
    SERIES_COLOURS,
    data_view,
    detail_rows,
    environment,
    header_view,
    load_json,
    null_band,
    run_warnings,
    write_result,
)

COMPARE_TEMPLATE = "compare.html.j2"
COMPARE_JSON = "compare.json"
COMPARE_HTML = "compare.html"


def _signed(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    s = charts.fmt_num(x, digits)
    return s if s.startswith("-") or s in ("0", "–") else "+" + s


def _rate(x: Any) -> str:
    return charts.fmt_rate(x)


def compare_findings(report: CompareResult | Mapping[str, Any]) -> list[Finding]:
    """The comparison's main results in plain words, from the result alone."""
    result = as_compare(report)
    out: list[Finding] = []
    for m in result.models:
        out += input_findings(m.get("input_check"), str(m["label"]))
    final = next((l["key"] for l in result.layers if l.get("final")), None)
    diffs = result.expressivity_differences
    for d in diffs:
        if not d["significant"] or (final is not None and d["layer"] != final):
            continue
        more = "more" if d["delta"] > 0 else "less"
        out.append(Finding(
            "medium", "expressivity",
            f"{d['model_b']} encodes {more} {d['attribute']} than {d['model_a']} at the final layer: "
            f"{charts.fmt_num(d['mi_b'], 2)} vs {charts.fmt_num(d['mi_a'], 2)} nats "
            f"(difference {_signed(d['delta'])}, beyond the combined uncertainty of ±{charts.fmt_num(d['threshold'], 2)}).",
        ))
    n_sig = sum(1 for d in diffs if d["significant"])
    if diffs:
        out.append(Finding(
            "info", "expressivity",
            f"{n_sig} of {len(diffs)} expressivity differences (all layers and attributes) exceed the combined "
            "uncertainty.",
        ))
    for d in result.fairness_differences:
        if d["quantity"] != "disparity" or d["delta"] is None:
            continue
        metric = d["metric"].upper()
        if d["significant"]:
            word = "larger" if d["delta"] > 0 else "smaller"
            out.append(Finding(
                "high" if d["delta"] > 0 else "low", "fairness",
                f"The {metric} gap between {d['attribute']} groups is {word} for {d['model_b']} than for {d['model_a']}: "
                f"{_rate(d['value_b'])} vs {_rate(d['value_a'])} (worst minus best group; beyond ±{_rate(d['threshold'])}).",
            ))
        else:
            out.append(Finding(
                "info", "fairness",
                f"The {metric} gap between {d['attribute']} groups does not differ beyond the uncertainty between "
                f"{d['model_b']} ({_rate(d['value_b'])}) and {d['model_a']} ({_rate(d['value_a'])}).",
            ))
    if result.fairness is None:
        out.append(Finding("info", "fairness",
                           f"Verification fairness was not compared: {result.fairness_skipped_reason}"))
    return out


def render_compare_findings(report: CompareResult | Mapping[str, Any]) -> list[str]:
    """Findings as one line each, most important first (for the CLI)."""
    order = {"high": 0, "medium": 1, "low": 2, "info": 3}
    fs = sorted(compare_findings(report), key=lambda f: order.get(f.severity, 4))
    return [f"{f.severity.upper()}: {f.text}" for f in fs]


def build_compare_view(report: CompareResult | Mapping[str, Any]) -> dict[str, Any]:
    """Everything compare.html shows, pre-formatted (numbers as strings, charts as SVG markup)."""
    result = as_compare(report)
    labels = result.labels
    layers = sorted(result.layers, key=lambda l: l["depth"])
    keys = [l["key"] for l in layers]
    index = {(e["model"], e["layer"], e["attribute"]): e for e in result.expressivity}
    attrs = [a for a in result.settings["attrs"] if any(k[2] == a for k in index)]
    all_warnings = run_warnings(result, "model")
    for f in result.fairness or ():
        all_warnings += [(f"{f['model']} · fairness: {f['attribute']}", str(w)) for w in f.get("warnings") or ()]
    return {
        "title": "faceaudit comparison: " + " vs ".join(labels),
        **header_view(result),
        "reference": labels[0],
        "labels": labels,
        "findings": [f.to_dict() for f in compare_findings(result)],
        "panels": _expressivity_panels(index, labels, keys, attrs),
        "diff_rows": [_difference_row(d) for d in result.expressivity_differences],
        "rows": detail_rows(index, attrs, keys, labels, "model"),
        "fairness": _fairness_view(result) if result.fairness is not None else None,
        "fairness_skipped_reason": str(result.fairness_skipped_reason or "no reason was recorded"),
        "warnings": all_warnings,
        "matching": result.layer_matching,
        "models": [
            {"label": str(m["label"]), "path": str(m["path"]), "sha256": str(m.get("sha256") or "–"),
             "backend": backend_label(m), "final_layer": str(m.get("final_layer") or "–"),
             "input": describe_input(m.get("input")),
             "n_layers": m.get("n_layers", "–"), "reference": bool(m.get("reference"))}
            for m in result.models
        ],
        "layers": [
            {"key": l["key"], "depth": f"{l['depth']:.2f}",
             "names": [(lab, l["names"].get(lab, "–"), l.get("depths", {}).get(lab)) for lab in labels]}
            for l in layers
        ],
        **data_view(result),
    }


def _expressivity_panels(index: Mapping[tuple, Mapping[str, Any]], labels: list[str], keys: list[str],
                         attrs: list[str]) -> list[dict[str, Any]]:
    """One chart per attribute: MI per matched layer, one line per model, the reference model's null band."""
    panels = []
    for a in attrs:
        series = []
        for i, lab in enumerate(labels):
            es = [index.get((lab, k, a)) for k in keys]
            series.append(charts.BandSeries(
                name=lab, y=[None if e is None else e.get("mi") for e in es],
                lo=[None if e is None else e.get("ci_low") for e in es],
                hi=[None if e is None else e.get("ci_high") for e in es],
                colour=SERIES_COLOURS[i % len(SERIES_COLOURS)],
            ))
        ref_es = [index.get((labels[0], k, a)) for k in keys]
        panels.append({"attribute": a, "svg": charts.line_band_chart(
            keys, series, reference=null_band(ref_es), reference_label=f"null baseline ({labels[0]})",
            width=max(480.0, 70.0 * len(keys) + 200),
            title=f"Expressivity of {a} per matched layer (nats), one line per model, with 95% CI",
        )})
    return panels


def _difference_row(d: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the expressivity-differences table."""
    return {"layer": d["layer"], "attribute": d["attribute"], "a": d["model_a"], "b": d["model_b"],
            "mi_a": charts.fmt_num(d["mi_a"]), "mi_b": charts.fmt_num(d["mi_b"]), "delta": _signed(d["delta"], 3),
            "threshold": charts.fmt_num(d["threshold"], 2), "significant": bool(d["significant"])}


def _fairness_view(result: CompareResult) -> list[dict[str, Any]]:
    """Per fairness attribute: an FMR and an FNMR chart over every model's groups with their differences
    table, and each model's summary line."""
    by_attr: dict[str, list[Mapping[str, Any]]] = {}
    for f in result.fairness or ():
        by_attr.setdefault(str(f["attribute"]), []).append(f)
    fd = list(result.fairness_differences)
    fairness = []
    for attr, fs in by_attr.items():
        metrics = [_fairness_metric(attr, metric, fs, fd) for metric in ("fmr", "fnmr")]
        summary = [
            {"model": str(f["model"]), "threshold": charts.fmt_num(f.get("threshold"), 4),
             "fdr": charts.fmt_num((f.get("summary") or {}).get("fdr")),
             "garbe_fmr": charts.fmt_num((f.get("summary") or {}).get("garbe_fmr")),
             "garbe_fnmr": charts.fmt_num((f.get("summary") or {}).get("garbe_fnmr")),
             "target_fmr": charts.fmt_sci(f.get("target_fmr"))}
            for f in fs
        ]
        fairness.append({"attribute": attr, "metrics": metrics, "summary": summary})
    return fairness


def _fairness_metric(attr: str, metric: str, fs: list[Mapping[str, Any]],
                     fd: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One error rate of one attribute: its per-group chart over the models and its differences table."""
    dot_labels, vals, los, his = [], [], [], []
    for f in fs:
        for g in f.get("groups") or ():
            ci = g.get(f"{metric}_ci") or (None, None)
            dot_labels.append(f"{f['model']} · {g['group']}")
            vals.append(g.get(metric))
            los.append(ci[0])
            his.append(ci[1])
    svg = charts.dot_ci_chart(
        dot_labels, vals, los, his, x_label=f"{metric.upper()} at each model's global threshold",
        title=f"{metric.upper()} per {attr} group and model, with 95% CI",
    )
    table = [
        {"quantity": "worst − best group" if d["quantity"] == "disparity" else str(d["group"]),
         "disparity": d["quantity"] == "disparity", "a": d["model_a"], "b": d["model_b"],
         "value_a": _rate(d["value_a"]), "value_b": _rate(d["value_b"]), "delta": _signed(d["delta"], 3),
         "threshold": charts.fmt_rate(d["threshold"]), "significant": bool(d["significant"]),
         "small": bool(d.get("small"))}
        for d in fd if d["attribute"] == attr and d["metric"] == metric
    ]
    return {"name": metric.upper(), "svg": svg, "rows": table}


def render_compare_html(report: CompareResult | Mapping[str, Any]) -> str:
    """Render compare.html (inline CSS and SVG, no script, no network) from a comparison result or compare.json dict.

    Deterministic: the same compare.json always gives the byte-identical HTML.
    """
    return environment().get_template(COMPARE_TEMPLATE).render(r=build_compare_view(report))


def write_compare(report: CompareResult | Mapping[str, Any], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write compare.json, compare.html and compare.md into `out_dir` atomically; returns (html, json) paths."""
    return write_result(as_compare(report), out_dir, COMPARE_JSON, COMPARE_HTML, render_compare_html)


def read_compare(path: str | os.PathLike[str]) -> CompareResult:
    """Read and validate a compare.json (a file or the folder holding it) into its typed result, e.g. to re-render it."""
    return load_json(path, "compare", COMPARE_JSON, CompareResult.from_dict, render_compare_html)


def load_compare(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a compare.json like `read_compare`, returned as its JSON dictionary."""
    return read_compare(path).to_dict()


__all__ = [
    "COMPARE_HTML",
    "COMPARE_JSON",
    "build_compare_view",
    "compare_findings",
    "load_compare",
    "read_compare",
    "render_compare_findings",
    "render_compare_html",
    "write_compare",
]
