"""Render an audit result to one self-contained HTML file and write its JSON twin.

The HTML is a pure function of the JSON: no clock, no randomness and no
environment is read at render time (the created time comes from the result),
so the same report.json always gives byte-identical HTML. Templates are jinja2
with autoescape on and StrictUndefined, so data text can never become markup
and a missing value fails loudly instead of rendering blank.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from faceaudit._atomic import atomic_write_text, check_replaceable, is_faceaudit_output
from faceaudit.errors import OutputError, option
from faceaudit.jsonsafe import json_safe
from faceaudit.report import charts
from faceaudit.report.findings import (
    above_null,
    compute_findings,
    disparity,
    null_top,
    strength,
    strength_words,
    tolerance_ratio,
)
from faceaudit.report.schema import AuditResult, ReportError, as_result

log = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"


def template_dirs() -> list[Path]:
    """Where templates are looked up: the installed package's `templates/` first, then the repository's."""
    pkg = Path(__file__).resolve().parents[1]
    candidates = [pkg / "templates", pkg.parent / "templates"]
    return [p for p in candidates if (p / TEMPLATE).is_file()]


@functools.lru_cache(maxsize=1)
def template_environment() -> jinja2.Environment:
    """The one jinja2 environment of every report template: autoescape on, StrictUndefined."""
    dirs = template_dirs()
    if not dirs:
        raise ReportError(
            f"the report template {TEMPLATE} is missing from this faceaudit installation "
            "(looked in faceaudit/templates and the repository's templates/). Reinstall faceaudit."
        )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = charts.fmt_num
    env.filters["sci"] = charts.fmt_sci
    return env


# --------------------------------------------------------------------------- view model


def _ci(lo: Any, hi: Any) -> str:
    if lo is None or hi is None:
        return "–"
    return f"{charts.fmt_num(lo)} to {charts.fmt_num(hi)}"


def _null_low(e: Mapping[str, Any]) -> float:
    ci = e.get("null_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and ci[0] is not None:
        return min(float(ci[0]), 0.0)
    return 0.0


def _expressivity_view(result: AuditResult) -> dict[str, Any]:
    layer_order = [layer.name for layer in sorted(result.layers, key=lambda x: x.depth)]
    attr_order = [a.name for a in result.data.attributes]
    for e in result.expressivity:
        if e["layer"] not in layer_order:
            layer_order.append(e["layer"])
        if e["attribute"] not in attr_order:
            attr_order.append(e["attribute"])
    index = {(e["layer"], e["attribute"]): e for e in result.expressivity}
    layers = [name for name in layer_order if any((name, a) in index for a in attr_order)]
    attrs = [a for a in attr_order if any((name, a) in index for name in layers)]
    if not index:
        return {"heatmap": None, "depth_charts": [], "rows": []}

    def tip(name: str, a: str, e: Mapping[str, Any]) -> str:
        return (
            f"{name} × {a}: MI {charts.fmt_num(e['mi'])} nats (95% CI {_ci(e['ci_low'], e['ci_high'])}), "
            f"probe floor {charts.fmt_num(e.get('probe_mi'))}, null {charts.fmt_num(e['null_mi'])}, normalised {charts.fmt_num(e['normalized'], 2)}, n = {e['n']}; "
            f"{strength(e)} encoded"
        )

    heat = charts.heatmap(
        layers,
        attrs,
        charts.heat_cells(layers, attrs, index, tip, marked=lambda e: not above_null(e)),
        title="Expressivity: mutual information (nats) per layer and attribute; colour = normalised score",
    )

    depth_charts = []
    for a in attrs:
        es = [index.get((name, a)) for name in layers]
        series = charts.BandSeries(
            name=f"MI for {a}",
            y=[None if e is None else e["mi"] for e in es],
            lo=[None if e is None else e["ci_low"] for e in es],
            hi=[None if e is None else e["ci_high"] for e in es],
        )
        tops = [None if e is None else null_top(e) for e in es]
        ref_lo = [None if t is None else min(_null_low(e), t) for e, t in zip(es, tops)]  # type: ignore[arg-type]
        ref_hi = [None if t is None else max(t, 0.0) for t in tops]
        depth_charts.append(
            {
                "attribute": a,
                "svg": charts.line_band_chart(
                    layers,
                    [series],
                    title=f"Expressivity of {a} across depth (nats), with 95% CI and the permutation-null band",
                    reference=(ref_lo, ref_hi),
                    reference_label="null baseline",
                ),
            }
        )

    rows = []
    for a in attrs:
        for name in layers:
            e = index.get((name, a))
            if e is None:
                continue
            rows.append(
                {
                    "attribute": a,
                    "layer": name,
                    "mi": charts.fmt_num(e["mi"]),
                    "ci": _ci(e["ci_low"], e["ci_high"]),
                    "null": charts.fmt_num(e["null_mi"]),
                    "floor": charts.fmt_num(e.get("probe_mi")),
                    "normalized": charts.fmt_num(e["normalized"], 2),
                    "n": e["n"],
                    "estimator": e["estimator"],
                    "kind": e["kind"],
                    "strength": strength(e),
                    "above_null": above_null(e),
                    "warnings": list(e["warnings"]),
                }
            )
    return {"heatmap": heat, "depth_charts": depth_charts, "rows": rows}


def _fairness_view(result: AuditResult) -> list[dict[str, Any]]:
    views = []
    for f in result.fairness or ():
        tol = tolerance_ratio(result, f)
        groups = list(f["groups"])
        labels = [str(g["group"]) for g in groups]
        metric_views = []
        flags: dict[str, list[bool]] = {}
        for metric in ("fmr", "fnmr"):
            d = disparity(f, metric)
            best = d["best_value"] if d else None
            given = ((f.get("disparities") or {}).get(metric) or {}).get("ratio_to_best") or {}
            ratios = []
            fl = []
            for g in groups:
                v = g.get(metric)
                r = given.get(str(g["group"]))  # the fairness room's own ratio (it may floor zero rates)
                if r is None:
                    r = None if v is None or not best else v / best
                    if v is not None and best == 0 and v > 0:
                        r = float("inf")
                ratios.append(r)
                fl.append(r is not None and r > tol)
            flags[metric] = fl
            cis = [g.get(f"{metric}_ci") or (None, None) for g in groups]
            band = (best, best * tol) if best else None
            metric_views.append(
                {
                    "name": metric.upper(),
                    "svg": charts.dot_ci_chart(
                        labels,
                        [g.get(metric) for g in groups],
                        [c[0] for c in cis],
                        [c[1] for c in cis],
                        title=f"{metric.upper()} per {f['attribute']} group with 95% CI at the global threshold",
                        x_label=f"{metric.upper()} (share of {'impostor' if metric == 'fmr' else 'genuine'} pairs)",
                        band=band,
                        band_label=f"best group up to {tol:g}× best",
                        flagged=fl,
                    ),
                    "ratios": ratios,
                    "disparity": d,
                }
            )
        rows = []
        for i, g in enumerate(groups):
            rows.append(
                {
                    "group": labels[i],
                    "n_identities": g.get("n_identities"),
                    "n_images": g.get("n_images"),
                    "n_genuine_pairs": g.get("n_genuine_pairs"),
                    "n_impostor_pairs": g.get("n_impostor_pairs"),
                    "fmr": charts.fmt_rate(g.get("fmr")),
                    "fmr_ci": _rate_ci(*(g.get("fmr_ci") or (None, None))),
                    "fnmr": charts.fmt_rate(g.get("fnmr")),
                    "fnmr_ci": _rate_ci(*(g.get("fnmr_ci") or (None, None))),
                    "fmr_ratio": _ratio(metric_views[0]["ratios"][i]),
                    "fnmr_ratio": _ratio(metric_views[1]["ratios"][i]),
                    "fmr_flag": flags["fmr"][i],
                    "fnmr_flag": flags["fnmr"][i],
                    "small": bool(g.get("small")),
                }
            )
        summary = f.get("summary") or {}
        summary_rows = [
            (label, charts.fmt_num(summary.get(key)))
            for key, label in (
                ("fdr", "FDR (fairness discrepancy rate, 1 = fair)"),
                ("inequity_rate", "Inequity rate (max/min product, 1 = fair)"),
                ("garbe_fmr", "GARBE on FMR (0 = fair)"),
                ("garbe_fnmr", "GARBE on FNMR (0 = fair)"),
            )
            if key in summary
        ]
        cg = f.get("cross_group_fmr")
        cross = None
        if cg and cg.get("groups"):
            cross = charts.log_heatmap(
                [str(x) for x in cg["groups"]],
                cg["matrix"],
                title=f"Cross-group FMR for {f['attribute']}: impostor pairs between groups (log colour scale)",
            )
        views.append(
            {
                "attribute": f["attribute"],
                "target_fmr": charts.fmt_sci(f["target_fmr"]),
                "threshold": charts.fmt_num(f["threshold"], 4),
                "tolerance": f"{tol:g}",
                "counts": [
                    (label, f.get(key))
                    for key, label in (
                        ("n_identities", "identities"),
                        ("n_images", "images"),
                        ("n_genuine_pairs", "genuine pairs"),
                        ("n_impostor_pairs", "impostor pairs"),
                    )
                    if f.get(key) is not None
                ],
                "rows": rows,
                "metrics": metric_views,
                "summary": summary_rows,
                "cross": cross,
                "warnings": list(f.get("warnings") or ()),
            }
        )
    return views


def _rate_ci(lo: Any = None, hi: Any = None, *_: Any) -> str:
    if lo is None or hi is None:
        return "–"
    return f"{charts.fmt_rate(lo)} to {charts.fmt_rate(hi)}"


def _ratio(r: float | None) -> str:
    if r is None:
        return "–"
    if r == float("inf"):
        return "∞"
    return f"{r:.2f}×"


def backend_label(model: Mapping[str, Any]) -> str:
    """"name (package version)" of a report's model entry; the bare name for reports that lack the package."""
    name = str(model.get("backend") or "–")
    package = model.get("backend_package")
    return f"{name} ({package} {model.get('backend_version') or ''})".replace(" )", ")") if package else name


def _kv(mapping: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for k, v in mapping.items():
        if isinstance(v, float):
            s = charts.fmt_num(v, 4)
        elif v is None:
            s = "–"
        elif isinstance(v, (list, tuple, Mapping)):
            s = json.dumps(json_safe(v), ensure_ascii=False, sort_keys=False)
        else:
            s = str(v)
        out.append((str(k), s))
    return out


def build_view(report: AuditResult | Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template shows, pre-formatted (numbers as strings, charts as SVG markup)."""
    result = as_result(report)
    model_name = os.path.basename(result.model.path.replace("\\", "/")) or result.model.path
    all_warnings = [("run", w) for w in result.warnings]
    for e in result.expressivity:
        all_warnings += [(f"{e['layer']} × {e['attribute']}", w) for w in e["warnings"]]
    for f in result.fairness or ():
        all_warnings += [(f"fairness: {f['attribute']}", str(w)) for w in f.get("warnings") or ()]
    timings = {k: (f"{v:.1f} s" if isinstance(v, (int, float)) and not isinstance(v, bool) else "–")
               for k, v in result.timings.items()}  # fmt: skip
    return {
        "title": f"faceaudit report: {model_name}",
        "model_name": model_name,
        "demo": result.demo,
        "synthetic": result.data.extra.get("statement") if result.data.extra.get("synthetic") else None,
        "created": result.created,
        "version": result.faceaudit_version,
        "schema_version": result.schema_version,
        "findings": [f.to_dict() for f in compute_findings(result)],
        "expressivity": _expressivity_view(result),
        "fairness": None if result.fairness is None else _fairness_view(result),
        "fairness_skipped_reason": result.fairness_skipped_reason or "no reason was recorded",
        "warnings": all_warnings,
        "model": _kv({"path": result.model.path, "sha256": result.model.sha256, "backend": result.model.backend,
                      **({"backend package": f"{result.model.backend_package} {result.model.backend_version or ''}"
                          .strip()} if result.model.backend_package else {})}),
        "model_input": _kv(result.model.input),
        "data": _kv(
            {
                "manifest": result.data.manifest,
                "images": result.data.n_images,
                "used": result.data.n_used,
                "failed": result.data.n_failed,
            }
        ),
        "attributes": [a.to_dict() for a in result.data.attributes],
        "failed": [f.to_dict() for f in result.data.failed],
        "layers": [
            {"name": x.name, "kind": x.kind, "dim": "–" if x.dim is None else x.dim,
             "shape": "–" if x.shape is None else "×".join(str(s) for s in x.shape), "depth": f"{x.depth:.2f}"}
            for x in sorted(result.layers, key=lambda x: x.depth)
        ],  # fmt: skip
        "settings": _kv(result.settings),
        "timings": list(timings.items()),
        "environment": _kv({"faceaudit": result.faceaudit_version, **dict(result.environment)}),
        "strength_words": list(strength_words()),
    }


# --------------------------------------------------------------------------- public API


def render_html(report: AuditResult | Mapping[str, Any]) -> str:
    """Render the one-file HTML report (inline CSS and SVG, no script, no network).

    Deterministic: the same result (or the same report.json) always gives the
    byte-identical HTML, so reports can be diffed and checked into records.
    """
    view = build_view(report)
    return template_environment().get_template(TEMPLATE).render(r=view)


def report_json(report: AuditResult | Mapping[str, Any]) -> str:
    """The report.json text: schema key order, indent 2, UTF-8, no NaN (non-finite numbers are null)."""
    result = as_result(report)
    return json.dumps(result.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_report(report: AuditResult | Mapping[str, Any], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write report.html, report.json and report.md into `out_dir`; return (html_path, json_path)."""
    text_json = report_json(report)
    return write_pair(text_json, render_html(json.loads(text_json)), out_dir, REPORT_JSON, REPORT_HTML)


def write_pair(text_json: str, text_html: str, out_dir: str | os.PathLike[str], json_name: str,
               html_name: str) -> tuple[Path, Path]:
    """Write a report's JSON, HTML and Markdown summary into `out_dir`; return (html_path, json_path).

    All three texts are built before anything is written, none of the names may
    hold a file that is not a faceaudit report, and each file is written
    atomically; if the HTML cannot be written, the JSON just written is removed
    again, so a failure never leaves a half report behind.
    """
    from faceaudit.report.markdown import markdown_name, render_markdown  # not at the top: markdown -> gate -> trend_render -> render

    out = Path(out_dir)
    report = json.loads(text_json)
    text_md = render_markdown(report)
    json_path, html_path, md_path = out / json_name, out / html_name, out / markdown_name(report)
    fix = f"Choose a writable output folder ({option('--out', 'out_dir=')})."
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the report folder {out}: {exc.strerror or exc}. {fix}") from exc
    check_replaceable(json_path, kind="json")
    check_replaceable(html_path, kind="html")
    check_replaceable(md_path, kind="md")
    _write_or_explain(json_path, text_json, fix)
    try:
        _write_or_explain(html_path, text_html, fix)
    except OutputError:
        try:
            json_path.unlink()
        except OSError:
            log.warning("could not remove %s after a failed write", json_path)
        raise
    _write_or_explain(md_path, text_md, fix)
    log.info("wrote %s, %s and %s", html_path, json_path, md_path)
    return html_path, json_path


def _write_or_explain(path: Path, text: str, fix: str) -> None:
    try:
        atomic_write_text(path, text)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}. {fix}") from exc


PREVIOUS = "previous"
"""Infix of a set-aside earlier report: report.html -> report.previous.html."""


def _previous_name(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{PREVIOUS}.{ext}" if dot else f"{name}.{PREVIOUS}"


def _is_own_report(path: Path) -> bool:
    """True for a regular file (not a link) that faceaudit wrote (see `_atomic.is_faceaudit_output`)."""
    return path.is_file() and not path.is_symlink() and is_faceaudit_output(path)


def set_aside_previous(out_dir: str | os.PathLike[str], names: Sequence[str] = (REPORT_HTML, REPORT_JSON)) -> list[Path]:
    """Rename the report an earlier run left in `out_dir` (report.html -> report.previous.html, and the JSON).

    Why: a new run that is interrupted or fails must not leave the earlier,
    complete report in place as if it were its own result. Only faceaudit's own
    files move (see `_is_own_report`); a file of someone else's, or a link, is
    left alone. Returns the set-aside paths, for `discard_previous` once the new
    report is written.
    """
    out = Path(out_dir)
    moved = []
    for name in names:
        src, dst = out / name, out / _previous_name(name)
        if not _is_own_report(src):
            continue
        if (dst.exists() or dst.is_symlink()) and not _is_own_report(dst):
            continue  # never replace a file that is not ours; the earlier report stays, as before
        try:
            os.replace(src, dst)
        except OSError as exc:
            log.warning("could not set aside the earlier report %s: %s", src, exc)
            continue
        moved.append(dst)
    if moved:
        log.info("the earlier report in %s was renamed to %s until this run finishes", out, ", ".join(p.name for p in moved))
    return moved


def discard_previous(paths: Sequence[Path]) -> None:
    """Remove the earlier report set aside by `set_aside_previous`, now that the new one is written."""
    for p in paths:
        if _is_own_report(p):
            with contextlib.suppress(OSError):
                p.unlink()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON number {name}")


def load_report(path: str | os.PathLike[str]) -> AuditResult:
    """Read and validate a report.json written by `write_report` (or by hand), e.g. to re-render it."""
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_JSON
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ReportError(f"report file {p} does not exist. Pass the report.json written by `faceaudit run`.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read report file {p}: {exc}. Check the path and its permissions.") from exc
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"report file {p} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
            "Regenerate it with `faceaudit run`."
        ) from exc
    except ValueError as exc:
        raise ReportError(f"report file {p} holds {exc}; report.json must not contain NaN or Infinity. Regenerate it.") from exc
    except RecursionError:
        raise ReportError(_too_deep(p, "run")) from None
    try:
        return AuditResult.from_dict(data)
    except ReportError as exc:
        raise ReportError(f"{p}: {exc}") from exc
    except RecursionError:
        raise ReportError(_too_deep(p, "run")) from None


def _too_deep(path: Path, command: str) -> str:
    return (
        f"report file {path} is nested too deeply to be a faceaudit report (lists or objects inside one another "
        f"beyond Python's recursion limit); regenerate it with `faceaudit {command}`."
    )

__all__ = [
    "write_pair",
    "PREVIOUS",
    "REPORT_HTML",
    "REPORT_JSON",
    "TEMPLATE",
    "backend_label",
    "build_view",
    "discard_previous",
    "load_report",
    "render_html",
    "report_json",
    "set_aside_previous",
    "template_dirs",
    "template_environment",
    "write_report",
]
