"""A Markdown summary of any report for a model card's "Bias, Risks, and Limitations" section.

`render_markdown(report)` turns report.json (or trend.json, compare.json) into
GitHub-flavoured Markdown: the findings, the layer x attribute expressivity
table (MI, CI, normalised), the per-group verification table, and the data,
model, settings and environment lines. The template is `templates/report.md.j2`;
every value it prints passes through `md_escape` (the environment's
`finalize`), so text from a manifest (group labels, attribute names, paths)
cannot become Markdown or HTML. Sections render the report's keys generically,
so keys added to `model`, `data`, `settings` or `environment` show up without
template changes. Like the HTML, the Markdown is a pure function of the JSON.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from faceaudit._atomic import atomic_write_text
from faceaudit.report import charts
from faceaudit.report.findings import strength
from faceaudit.report.gate import findings_of
from faceaudit.report.render import template_dirs

TEMPLATE = "report.md.j2"
#: File name of the Markdown summary per report kind (beside report.json, trend.json, compare.json).
MARKDOWN_NAMES = {"audit": "report.md", "trend": "trend.md", "compare": "compare.md"}
_MODEL_KEY = {"trend": "checkpoint", "compare": "model"}
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")
_DATA_SHOWN_APART = ("attributes", "failed", "statement", "synthetic")


def md_escape(value: Any) -> str:
    """Text safe to place anywhere in a GFM line or table cell: no markup, no HTML, no line break.

    Whitespace runs (newlines included) become one space, `&`, `<` and `>`
    become entities, and the characters that start inline Markdown or split a
    table cell (backslash, backtick, `*`, `_`, brackets, `|`, `~`, `$`) are
    backslash-escaped. None prints as an en dash.
    """
    if value is None:
        return "–"
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    text = " ".join(text.split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


@functools.lru_cache(maxsize=1)
def markdown_environment() -> jinja2.Environment:
    """The jinja2 environment of the Markdown template: every printed value escaped by `md_escape`."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in template_dirs()]),
        autoescape=False,  # HTML autoescape is the wrong escape for Markdown; finalize does the right one
        finalize=md_escape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _text(v: Any) -> Any:
    """Nested values (lists, dicts) as compact JSON; scalars unchanged (md_escape formats them)."""
    if isinstance(v, (Mapping, list, tuple)):
        return json.dumps(v, ensure_ascii=False, sort_keys=False)
    return v


def _pairs(mapping: Mapping[str, Any], skip: Sequence[str] = ()) -> list[tuple[str, Any]]:
    return [(str(k), _text(v)) for k, v in mapping.items() if k not in skip]


def _ci(lo: Any, hi: Any, fmt: Any = charts.fmt_num) -> str | None:
    return None if lo is None or hi is None else f"{fmt(lo)} to {fmt(hi)}"


def _attribute_line(a: Mapping[str, Any]) -> str:
    groups = ", ".join(f"{g['label']} {g['count']}" for g in a.get("groups") or ())
    text = f"{a['name']} ({a['kind']}, {a['n_valid']} valid, {a['n_missing']} missing"
    return text + (f"; groups: {groups})" if groups else ")")


def build_markdown_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the Markdown template prints, pre-formatted; values stay plain text (the template escapes them)."""
    kind = str(report.get("kind", "audit"))
    model_key = _MODEL_KEY.get(kind)
    if kind == "audit":
        models = [report["model"]]
    else:
        models = list(report.get("checkpoints") or report.get("models") or ())
    names = [str(m.get("label") or os.path.basename(str(m.get("path", "")).replace("\\", "/"))) for m in models]
    data = report.get("data") or {}
    expressivity = [
        {
            "model": e.get(model_key) if model_key else None,
            "layer": e["layer"],
            "attribute": e["attribute"],
            "mi": charts.fmt_num(e.get("mi")),
            "ci": _ci(e.get("ci_low"), e.get("ci_high")),
            "null": charts.fmt_num(e.get("null_mi")),
            "normalized": charts.fmt_num(e.get("normalized"), 2),
            "n": e.get("n"),
            "strength": strength(e),
        }
        for e in report.get("expressivity") or ()
    ]
    fairness = []
    for f in report.get("fairness") or ():
        fairness.append({
            "attribute": f["attribute"],
            "model": f.get("model"),
            "target_fmr": charts.fmt_sci(f.get("target_fmr")),
            "threshold": charts.fmt_num(f.get("threshold"), 4),
            "rows": [
                {
                    "group": g["group"], "n_identities": g.get("n_identities"), "n_images": g.get("n_images"),
                    "fmr": charts.fmt_rate(g.get("fmr")), "fmr_ci": _ci(*(g.get("fmr_ci") or (None, None))[:2], fmt=charts.fmt_rate),
                    "fnmr": charts.fmt_rate(g.get("fnmr")),
                    "fnmr_ci": _ci(*(g.get("fnmr_ci") or (None, None))[:2], fmt=charts.fmt_rate),
                }
                for g in f.get("groups") or ()
            ],
        })
    return {
        "kind": kind,
        "title": {"audit": "Audit", "trend": "Training trend", "compare": "Comparison"}.get(kind, kind) + " of "
                 + ", ".join(names),
        "version": report.get("faceaudit_version"),
        "schema_version": report.get("schema_version"),
        "created": report.get("created"),
        "demo": bool(report.get("demo")),
        "synthetic": bool(data.get("synthetic")),
        "statement": data.get("statement"),
        "model_key": model_key,
        "findings": [f.to_dict() for f in findings_of(report)],
        "expressivity": expressivity,
        "fairness": fairness,
        "has_fairness": "fairness" in report,  # a trend follows expressivity only
        "fairness_skipped_reason": report.get("fairness_skipped_reason"),
        "models": [(names[i], _pairs(m)) for i, m in enumerate(models)],
        "data": _pairs(data, _DATA_SHOWN_APART),
        "attributes": [_attribute_line(a) for a in data.get("attributes") or ()],
        "settings": _pairs(report.get("settings") or {}),
        "environment": _pairs({"faceaudit": report.get("faceaudit_version"), **dict(report.get("environment") or {})}),
        "warnings": [str(w) for w in report.get("warnings") or ()] + [
            f"{e.get(model_key) + ', ' if model_key and e.get(model_key) else ''}{e['layer']} × {e['attribute']}: {w}"
            for e in report.get("expressivity") or () for w in e.get("warnings") or ()
        ] + [f"fairness {f['attribute']}: {w}" for f in report.get("fairness") or () for w in f.get("warnings") or ()],
    }


def render_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown summary of a report dictionary (any kind); deterministic for the same JSON."""
    if hasattr(report, "to_dict") and not isinstance(report, Mapping):
        report = report.to_dict()
    return markdown_environment().get_template(TEMPLATE).render(r=build_markdown_view(report))


def markdown_name(report: Mapping[str, Any]) -> str:
    """The Markdown file's name for a report: report.md, trend.md or compare.md."""
    return MARKDOWN_NAMES.get(str(report.get("kind", "audit")), "report.md")


def write_markdown(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write the Markdown summary beside the report's JSON, atomically; return its path."""
    path = Path(out_dir) / markdown_name(report)
    atomic_write_text(path, render_markdown(report))
    return path


__all__ = ["MARKDOWN_NAMES", "build_markdown_view", "markdown_name", "md_escape", "render_markdown", "write_markdown"]
