"""Render a trend (expressivity across training checkpoints) to trend.html and its JSON twin trend.json.

The same conventions as the audit report: one self-contained HTML file (inline
CSS and SVG, no script, a Content-Security-Policy that forbids everything
else), jinja2 with autoescape and StrictUndefined, and HTML that is a pure
function of the JSON, so the same trend.json always gives byte-identical HTML.

The trend.json layout is `TrendResult` (faceaudit/report/multi_schema.py); every view here reads
one, built from the JSON by `TrendResult.from_dict` on re-render.
All MI values are in nats.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jinja2

from faceaudit.jsonsafe import json_safe as jsonable
from faceaudit.report import charts
from faceaudit.report.render import backend_label, template_environment, write_pair
from faceaudit.report.findings import (
    Finding,
    above_null,
    describe_input,
    input_findings,
    null_top,
    strength,
    strength_words,
)
from faceaudit.report.multi_schema import CompareResult, TrendResult, as_trend
from faceaudit.report.schema import ReportError

TREND_TEMPLATE = "trend.html.j2"
TREND_JSON = "trend.json"
TREND_HTML = "trend.html"

#: Okabe-Ito colours (colour-blind safe) for several lines in one chart.
SERIES_COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")

_SHAPE_WORDS = {
    "rise-then-fall": "rises, then falls",
    "rising": "keeps rising",
    "falling": "falls",
    "flat": "shows no change beyond the uncertainty",
}


# --------------------------------------------------------------------------- shared with compare_render


def environment() -> jinja2.Environment:
    """The shared report environment (one place for loaders, autoescape and filters)."""
    return template_environment()


def dumps(report: Mapping[str, Any]) -> str:
    """The JSON twin's text: indented, key order kept, no NaN or Infinity."""
    return json.dumps(jsonable(report), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON number {name}")


_LAYOUT_ERRORS = (TypeError, KeyError, IndexError, AttributeError, ValueError, ArithmeticError, RecursionError,
                  jinja2.TemplateError)


_Result = TypeVar("_Result", TrendResult, CompareResult)


def load_json(path: str | os.PathLike[str], kind: str, default_name: str, parse: Callable[[Mapping[str, Any]], _Result],
              render: Callable[[_Result], str] | None = None) -> _Result:
    """Read a trend.json / compare.json and build its typed result with `parse` (the schema's `from_dict`).

    A file that is not valid JSON, of another kind or schema version, or that breaks the layout is a
    ReportError naming the file and the key, never a traceback. With `render`, the result is also
    rendered once, so anything the schema lets through that the renderer cannot show fails here too.
    """
    p = Path(path)
    if p.is_dir():
        p = p / default_name
    try:
        data = json.loads(p.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except FileNotFoundError as exc:
        raise ReportError(f"{p} does not exist. Pass the {default_name} written by `faceaudit {kind}`.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {p}: {exc}. Check the path and its permissions.") from exc
    except ValueError as exc:
        raise ReportError(f"{p} is not valid JSON ({exc}); regenerate it with `faceaudit {kind}`.") from exc
    except RecursionError:
        raise ReportError(
            f"{p} is nested too deeply to be a faceaudit report (lists or objects inside one another beyond "
            f"Python's recursion limit); regenerate it with `faceaudit {kind}`."
        ) from None
    try:
        result = parse(data)
    except ReportError as exc:
        raise ReportError(f"{p} does not follow the {default_name} layout: {exc}") from None
    if render is not None:
        try:
            render(result)
        except _LAYOUT_ERRORS as exc:
            raise ReportError(
                f"{p} does not follow the {default_name} layout ({type(exc).__name__}: {str(exc)[:200]}); "
                f"regenerate it with `faceaudit {kind}`."
            ) from None
    return result


def ci_text(lo: Any, hi: Any) -> str:
    if lo is None or hi is None:
        return "–"
    return f"{charts.fmt_num(lo)} to {charts.fmt_num(hi)}"


def null_band(entries: Sequence[Mapping[str, Any] | None]) -> tuple[list[float | None], list[float | None]]:
    """Grey reference band per point: from min(0, null) to the top of the permutation null."""
    lo: list[float | None] = []
    hi: list[float | None] = []
    for e in entries:
        top = None if e is None else null_top(e)
        lo.append(None if top is None else min(0.0, top))
        hi.append(None if top is None else max(0.0, top))
    return lo, hi


def normalized_ci(e: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The 95% CI on the normalised scale: / H(Y) for a category, Linfoot's sqrt(1 - exp(-2 I)) for a number."""
    lo, hi = e.get("ci_low"), e.get("ci_high")
    if lo is None or hi is None:
        return None, None
    if e.get("kind") == "categorical":
        h = e.get("entropy_y")
        if not h:
            return None, None
        return min(1.0, max(0.0, lo / h)), min(1.0, max(0.0, hi / h))
    return math.sqrt(1 - math.exp(-2 * max(0.0, lo))), math.sqrt(1 - math.exp(-2 * max(0.0, hi)))


def detail_row(e: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        **extra,
        "attribute": e["attribute"],
        "mi": charts.fmt_num(e.get("mi")),
        "ci": ci_text(e.get("ci_low"), e.get("ci_high")),
        "null": charts.fmt_num(e.get("null_mi")),
        "normalized": charts.fmt_num(e.get("normalized"), 2),
        "n": e.get("n"),
        "estimator": e.get("estimator"),
        "kind": e.get("kind"),
        "strength": strength(e),
        "above_null": above_null(e),
        "warnings": [str(w) for w in e.get("warnings") or ()],
    }


def kv(mapping: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for k, v in mapping.items():
        if isinstance(v, bool) or v is None:
            s = "–" if v is None else str(v)
        elif isinstance(v, float):
            s = charts.fmt_num(v, 4)
        elif isinstance(v, (list, tuple, Mapping)):
            s = json.dumps(jsonable(v), ensure_ascii=False)
        else:
            s = str(v)
        out.append((str(k), s))
    return out


def timings_rows(timings: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(k), f"{v:.1f} s" if isinstance(v, (int, float)) and not isinstance(v, bool) else "–")
            for k, v in timings.items()]


def glossary_words() -> list[tuple[str, str]]:
    return list(strength_words())


def detail_rows(index: Mapping[tuple, Mapping[str, Any]], attrs: Sequence[str], layer_keys: Sequence[str],
                labels: Sequence[str], who: str) -> list[dict[str, Any]]:
    """The detail table: one row per estimate, by attribute, layer, then `who` (checkpoint or model)."""
    rows = []
    for a in attrs:
        for lk in layer_keys:
            for lab in labels:
                e = index.get((lab, lk, a))
                if e is not None:
                    rows.append(detail_row(e, **{who: lab}, layer=lk, layer_name=e.get("layer_name", lk)))
    return rows


def run_warnings(result: TrendResult | CompareResult, who: str) -> list[tuple[str, str]]:
    """The run's warnings, then each estimate's, labelled by `who` (checkpoint or model), layer and attribute."""
    out = [("run", str(w)) for w in result.warnings]
    for e in result.expressivity:
        out += [(f"{e[who]} · {e['layer']} × {e['attribute']}", str(w)) for w in e.get("warnings") or ()]
    return out


def header_view(result: TrendResult | CompareResult) -> dict[str, Any]:
    """The report's header: the synthetic-data statement, creation time and versions."""
    note = result.data.extra
    return {
        "synthetic": note.get("statement") if note.get("synthetic") else None,
        "created": result.created,
        "version": result.faceaudit_version,
        "schema_version": result.schema_version,
    }


def data_view(result: TrendResult | CompareResult) -> dict[str, Any]:
    """The report's closing sections: data, settings, timings, environment and the glossary."""
    data = result.data
    ident = jsonable(data.extra.get("identity"))
    return {
        "data": kv({"manifest": data.manifest, "images": data.n_images, "used": data.n_used,
                    "failed": data.n_failed}),
        "identity": kv(ident) if ident else [],
        "attributes": [a.to_dict() for a in data.attributes],
        "failed": [f.to_dict() for f in data.failed],
        "settings": kv(result.settings),
        "timings": timings_rows(result.timings),
        "environment": kv({"faceaudit": result.faceaudit_version, **dict(result.environment)}),
        "strength_words": glossary_words(),
        "z": charts.fmt_num(result.settings.get("z", 1.96)),
    }


# --------------------------------------------------------------------------- findings


def trend_findings(report: TrendResult | Mapping[str, Any]) -> list[Finding]:
    """The trend's main results in plain words, from the result alone (no new statistics)."""
    result = as_trend(report)
    out: list[Finding] = []
    for c in result.checkpoints:
        out += input_findings(c.get("input_check"), str(c["label"]))
    z = result.settings.get("z", 1.96)
    labels = [c["label"] for c in result.checkpoints]
    for t in result.trend:
        a, peak, mis = t["attribute"], t["peak"], t["mi"]
        first, last = labels[0], labels[-1]
        shape = t["shape"]
        text = f"{a} at layer {t['layer']} {_SHAPE_WORDS.get(shape, shape)}: {charts.fmt_num(mis[0], 2)} nats at {first}"
        if shape == "rise-then-fall":
            text += (f", a peak of {charts.fmt_num(mis[t['peak_index']], 2)} nats at {peak}, then "
                     f"{charts.fmt_num(mis[-1], 2)} nats at {last} (a fall of {charts.fmt_num(t['fall']['delta'], 2)} "
                     f"nats, beyond the combined uncertainty of ±{charts.fmt_num(t['fall']['threshold'], 2)}).")
            sev = "medium" if a != "identity" else "info"
        elif shape in ("rising", "falling"):
            text += f" to {charts.fmt_num(mis[-1], 2)} nats at {last}"
            if t["peak_index"] not in (0, len(mis) - 1):
                text += f" (highest at {peak}: {charts.fmt_num(mis[t['peak_index']], 2)} nats)"
            text += "."
            sev = "low" if a != "identity" else "info"
        else:
            text += f", {charts.fmt_num(mis[-1], 2)} nats at {last}; highest at {peak} ({charts.fmt_num(mis[t['peak_index']], 2)} nats)."
            sev = "info"
        out.append(Finding(sev, "trend", text))
    attrs = [t for t in result.trend if t["attribute"] != "identity"]
    if attrs:
        totals = [sum((t["normalized"][i] or 0.0) for t in attrs) for i in range(len(labels))]
        best = min(range(len(labels)), key=lambda i: (totals[i], -i))
        names = ", ".join(t["attribute"] for t in attrs)
        out.append(Finding(
            "info", "checkpoints",
            f"{labels[best]} has the least attribute expressivity at layer {attrs[0]['layer']} "
            f"(sum of normalised scores of {names}: {charts.fmt_num(totals[best], 2)}"
            + (f"; {labels[-1]}: {charts.fmt_num(totals[-1], 2)}" if best != len(labels) - 1 else "")
            + "). Weigh this against recognition accuracy before choosing a checkpoint.",
        ))
    n_warn = sum(1 for e in result.expressivity if e.get("warnings"))
    if n_warn:
        out.append(Finding("low", "estimation",
                           f"{n_warn} of {len(result.expressivity)} estimates carry warnings (see Warnings)."))
    if not result.trend:
        out.append(Finding("info", "trend", f"No attribute could be followed across all checkpoints (z = {z})."))
    return out


def render_trend_findings(report: TrendResult | Mapping[str, Any]) -> list[str]:
    """Findings as one line each, most important first (for the CLI)."""
    order = {"high": 0, "medium": 1, "low": 2, "info": 3}
    fs = sorted(trend_findings(report), key=lambda f: order.get(f.severity, 4))
    return [f"{f.severity.upper()}: {f.text}" for f in fs]


# --------------------------------------------------------------------------- view


def build_trend_view(report: TrendResult | Mapping[str, Any]) -> dict[str, Any]:
    """Everything trend.html shows, pre-formatted (numbers as strings, charts as SVG markup)."""
    result = as_trend(report)
    labels = result.labels
    focus = result.focus_layer
    layers = sorted(result.layers, key=lambda l: l["depth"])
    layer_keys = [l["key"] for l in layers]
    index = {(e["checkpoint"], e["layer"], e["attribute"]): e for e in result.expressivity}
    attrs = [a for a in result.settings["attrs"] if any(k[2] == a for k in index)]
    return {
        "title": f"faceaudit trend: {len(labels)} checkpoints",
        "demo": result.demo,
        **header_view(result),
        "focus": focus,
        "labels": labels,
        "findings": [f.to_dict() for f in trend_findings(result)],
        "overview": _overview_chart(index, labels, focus, attrs),
        "panels": _attribute_panels(index, labels, focus, attrs),
        "heatmaps": _layer_heatmaps(index, labels, layer_keys, attrs) if len(layer_keys) > 1 else [],
        "trend_rows": [_trend_row(t) for t in result.trend],
        "rows": detail_rows(index, attrs, layer_keys, labels, "checkpoint"),
        "warnings": run_warnings(result, "checkpoint"),
        "matching": result.layer_matching,
        "checkpoints": [
            {"label": str(c["label"]), "path": str(c["path"]), "sha256": str(c.get("sha256") or "–"),
             "backend": backend_label(c), "final_layer": str(c.get("final_layer") or "–"),
             "input": describe_input(c.get("input"))}
            for c in result.checkpoints
        ],
        "layers": [
            {"key": l["key"], "depth": f"{l['depth']:.2f}", "final": bool(l.get("final")),
             "names": [(lab, l["names"].get(lab, "–")) for lab in labels]}
            for l in layers
        ],
        "same_names": all(len(set(l["names"].values())) == 1 for l in layers),
        **data_view(result),
    }


def _overview_chart(index: Mapping[tuple, Mapping[str, Any]], labels: list[str], focus: str,
                    attrs: list[str]) -> str | None:
    """The normalised scores of all attributes at the followed layer, one line each (None: no attribute)."""
    series = []
    for i, a in enumerate(attrs):
        es = [index.get((lab, focus, a)) for lab in labels]
        cis = [normalized_ci(e) if e else (None, None) for e in es]
        series.append(charts.BandSeries(
            name=a, y=[None if e is None else e.get("normalized") for e in es],
            lo=[c[0] for c in cis], hi=[c[1] for c in cis], colour=SERIES_COLOURS[i % len(SERIES_COLOURS)],
        ))
    return charts.line_band_chart(
        labels, series, y_label="normalised score (0–1)", width=max(520.0, 90.0 * len(labels) + 120),
        title=f"Normalised expressivity of every attribute across checkpoints at layer {focus}, with 95% CI",
    ) if series else None


def _attribute_panels(index: Mapping[tuple, Mapping[str, Any]], labels: list[str], focus: str,
                      attrs: list[str]) -> list[dict[str, Any]]:
    """One chart per attribute at the followed layer: MI with its CI and the null band."""
    panels = []
    for a in attrs:
        es = [index.get((lab, focus, a)) for lab in labels]
        s = charts.BandSeries(
            name=f"MI for {a}", y=[None if e is None else e.get("mi") for e in es],
            lo=[None if e is None else e.get("ci_low") for e in es],
            hi=[None if e is None else e.get("ci_high") for e in es],
        )
        panels.append({"attribute": a, "svg": charts.line_band_chart(
            labels, [s], reference=null_band(es), reference_label="null baseline",
            title=f"Expressivity of {a} across checkpoints at layer {focus} (nats), with 95% CI and the null band",
        )})
    return panels


def _layer_heatmaps(index: Mapping[tuple, Mapping[str, Any]], labels: list[str], layer_keys: list[str],
                    attrs: list[str]) -> list[dict[str, Any]]:
    """One heat map per attribute: layers (rows) x checkpoints (columns)."""
    heatmaps = []
    for a in attrs:
        cells = []
        for lk in layer_keys:
            row = []
            for lab in labels:
                e = index.get((lab, lk, a))
                if e is None:
                    row.append(charts.HeatCell(None, "–", f"{lk} at {lab} × {a}: not estimated"))
                    continue
                tip = (f"{a} at {lab}, layer {e.get('layer_name', lk)}: MI {charts.fmt_num(e.get('mi'))} nats "
                       f"(95% CI {ci_text(e.get('ci_low'), e.get('ci_high'))}), null {charts.fmt_num(e.get('null_mi'))}, "
                       f"normalised {charts.fmt_num(e.get('normalized'), 2)}; {strength(e)} encoded")
                row.append(charts.HeatCell(e.get("normalized"), charts.fmt_num(e.get("mi"), 2), tip,
                                           marked=not above_null(e)))
            cells.append(row)
        heatmaps.append({"attribute": a, "svg": charts.heatmap(
            layer_keys, labels, cells,
            title=f"Expressivity of {a}: layers (rows, input to output) × checkpoints (columns); MI in nats, "
                  "colour = normalised score",
        )})
    return heatmaps


def _trend_row(t: Mapping[str, Any]) -> dict[str, Any]:
    """One attribute's line of the trend table."""
    return {
        "attribute": t["attribute"],
        "shape": _SHAPE_WORDS.get(t["shape"], t["shape"]),
        "values": [charts.fmt_num(v, 2) for v in t["mi"]],
        "peak": t["peak"],
        "rise": _delta_text(t["rise"]),
        "fall": _delta_text(t["fall"]),
        "first_to_last": _delta_text(t["first_to_last"]),
    }


def _delta_text(d: Mapping[str, Any]) -> dict[str, Any]:
    return {"delta": charts.fmt_num(d["delta"], 2), "threshold": charts.fmt_num(d["threshold"], 2),
            "significant": bool(d["significant"])}


# --------------------------------------------------------------------------- public API


def write_result(result: _Result, out_dir: str | os.PathLike[str], json_name: str, html_name: str,
                 render: Callable[[_Result], str]) -> tuple[Path, Path]:
    """Write a trend's or comparison's JSON, HTML and Markdown atomically; returns (html, json) paths.

    The HTML is rendered from the JSON text just made (parsed back into its typed result), so the
    written HTML is exactly what re-rendering the written JSON gives.
    """
    text_json = dumps(result.to_dict())
    text_html = render(type(result).from_dict(json.loads(text_json)))
    return write_pair(text_json, text_html, out_dir, json_name, html_name)


def render_trend_html(report: TrendResult | Mapping[str, Any]) -> str:
    """Render trend.html (inline CSS and SVG, no script, no network) from a trend result or trend.json dict.

    Deterministic: the same trend.json always gives the byte-identical HTML.
    """
    return environment().get_template(TREND_TEMPLATE).render(r=build_trend_view(report))


def write_trend(report: TrendResult | Mapping[str, Any], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write trend.json, trend.html and trend.md into `out_dir` atomically; returns (html, json) paths."""
    return write_result(as_trend(report), out_dir, TREND_JSON, TREND_HTML, render_trend_html)


def read_trend(path: str | os.PathLike[str]) -> TrendResult:
    """Read and validate a trend.json (a file or the folder holding it) into its typed result, e.g. to re-render it."""
    return load_json(path, "trend", TREND_JSON, TrendResult.from_dict, render_trend_html)


def load_trend(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a trend.json like `read_trend`, returned as its JSON dictionary."""
    return read_trend(path).to_dict()


__all__ = [
    "TREND_HTML",
    "TREND_JSON",
    "build_trend_view",
    "load_trend",
    "read_trend",
    "render_trend_findings",
    "render_trend_html",
    "trend_findings",
    "write_result",
    "write_trend",
]
