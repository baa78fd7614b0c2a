"""Notebook views of a report: pandas DataFrames and a compact inline HTML summary.

A notebook user wants the numbers as tables to filter, plot and join, not a
file to open. `expressivity_frame` gives one row per layer x attribute (x
checkpoint or model, for trend and compare reports) and `fairness_frame` one
row per attribute x group; their columns are report.json's own field names,
so code written against the JSON reads the frames too. `notebook_html` is what
`_repr_html_` shows in Jupyter: the findings and the expressivity heatmap.
Works on any report dictionary (audit, trend, compare).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

from faceaudit.report import charts
from faceaudit.report.findings import above_null
from faceaudit.report.gate import findings_of

#: Fields of a fairness entry repeated on each of its group rows (the rest are nested summaries).
FAIRNESS_ENTRY_FIELDS: tuple[str, ...] = ("model", "attribute", "target_fmr", "threshold")


def _columns(rows: Sequence[Mapping[str, Any]], first: Sequence[str] = ()) -> list[str]:
    cols = [c for c in first if any(c in r for r in rows)]
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def expressivity_frame(report: Mapping[str, Any]) -> Any:
    """One row per expressivity entry of the report; columns are the entries' report.json fields."""
    import pandas as pd

    rows = [dict(e) for e in report.get("expressivity") or ()]
    return pd.DataFrame(rows, columns=_columns(rows))


def fairness_frame(report: Mapping[str, Any]) -> Any:
    """One row per attribute x group (x model); columns: the entry's scalar fields, then the group's fields."""
    import pandas as pd

    rows = []
    for f in report.get("fairness") or ():
        head = {k: f[k] for k in FAIRNESS_ENTRY_FIELDS if k in f}
        for g in f.get("groups") or ():
            rows.append({**head, **dict(g)})
    return pd.DataFrame(rows, columns=_columns(rows, FAIRNESS_ENTRY_FIELDS))


def _heatmap_entries(report: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], str]:
    entries = list(report.get("expressivity") or ())
    kind = report.get("kind", "audit")
    if kind == "trend" and entries:  # the last checkpoint: the trained network
        last = entries[-1].get("checkpoint")
        labels = [c.get("label") for c in report.get("checkpoints") or ()]
        last = labels[-1] if labels else last
        return [e for e in entries if e.get("checkpoint") == last], f" (checkpoint {last})"
    if kind == "compare" and entries:  # the reference model
        ref = (report.get("models") or [{}])[0].get("label", entries[0].get("model"))
        return [e for e in entries if e.get("model") == ref], f" (reference model {ref})"
    return entries, ""


def expressivity_heatmap(report: Mapping[str, Any]) -> Markup | None:
    """The layers x attributes heatmap (colour = normalised score, text = MI in nats), as inline SVG."""
    entries, where = _heatmap_entries(report)
    if not entries:
        return None
    layers: list[str] = []
    attrs: list[str] = []
    for e in entries:
        layers += [e["layer"]] if e["layer"] not in layers else []
        attrs += [e["attribute"]] if e["attribute"] not in attrs else []
    index = {(e["layer"], e["attribute"]): e for e in entries}

    def tip(name: str, a: str, e: Mapping[str, Any]) -> str:
        return f"{name} × {a}: MI {charts.fmt_num(e.get('mi'))} nats, normalised {charts.fmt_num(e.get('normalized'), 2)}"

    cells = charts.heat_cells(layers, attrs, index, tip, marked=lambda e: not above_null(e))
    return charts.heatmap(layers, attrs, cells, title=f"Expressivity (nats) per layer and attribute{where}")


def notebook_html(report: Mapping[str, Any], where: str | None = None) -> str:
    """The findings and the expressivity heatmap as an HTML fragment for Jupyter (text escaped)."""
    data = report.get("data") or {}
    parts = [f"<div class=\"faceaudit-summary\"><p><strong>faceaudit {escape(report.get('kind', 'audit'))}</strong>"
             + (f" · <code>{escape(where)}</code>" if where else "") + "</p>"]
    if data.get("synthetic"):
        parts.append(f"<p><strong>Synthetic data.</strong> {escape(data.get('statement', ''))}</p>")
    items = "".join(f"<li><strong>{escape(f.severity.upper())}</strong> ({escape(f.topic)}): {escape(f.text)}</li>"
                    for f in findings_of(report))
    parts.append(f"<ul>{items}</ul>" if items else "<p>No findings.</p>")
    svg = expressivity_heatmap(report)
    if svg is not None:
        parts.append(str(svg))
    parts.append("</div>")
    return "".join(parts)


__all__ = ["expressivity_frame", "expressivity_heatmap", "fairness_frame", "notebook_html"]
