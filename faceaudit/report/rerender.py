"""Re-render a report (HTML or Markdown) from its JSON without recomputing anything.

The same JSON always gives the same HTML (and Markdown), byte for byte. An
existing file is replaced only if it is a faceaudit report of the same format
(or with `force`), never the input itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from faceaudit._atomic import write_report_text
from faceaudit.errors import OutputError, option
from faceaudit.report.compare_render import COMPARE_HTML, read_compare, render_compare_html
from faceaudit.report.markdown import markdown_name, render_markdown
from faceaudit.report.multi_schema import CompareResult, TrendResult
from faceaudit.report.render import REPORT_HTML, load_report, render_html
from faceaudit.report.schema import AuditResult
from faceaudit.report.trend_render import TREND_HTML, read_trend, render_trend_html

__all__ = ["report_kind", "rerender"]


def report_kind(path: Path) -> str:
    """The `kind` of a report JSON (audit, trend or compare); the loaders validate the rest."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return "audit"  # let the audit loader raise its precise error
    return data.get("kind", "audit") if isinstance(data, dict) else "audit"


def _render(path: Path, kind: str, fmt: str) -> tuple[str, str]:
    """(text, default file name) of the report at `path` in `fmt`, rendered from its typed result."""
    result: AuditResult | TrendResult | CompareResult
    if kind == "trend":
        result, render, html_name = read_trend(path), render_trend_html, TREND_HTML
    elif kind == "compare":
        result, render, html_name = read_compare(path), render_compare_html, COMPARE_HTML
    else:
        result, render, html_name = load_report(path), render_html, REPORT_HTML
    if fmt == "md":
        return render_markdown(result), markdown_name(result.to_dict())
    return render(result), html_name  # type: ignore[arg-type]


def rerender(path: str | Path, out: str | Path | None = None, fmt: str = "html", force: bool = False) -> Path:
    """Write the HTML (`fmt="html"`) or Markdown (`"md"`) view of the report JSON at `path`; return where.

    `out` is a file, or a folder to write the default name (report.html,
    trend.html, report.md, ...) into; default: beside the JSON. Why a library
    call: `faceaudit report` and a notebook re-render the same way.
    """
    path = Path(path)
    if fmt not in ("html", "md"):
        raise OutputError(f"{option('--format', 'fmt=')} {fmt!r} is not a report format; use html or md.")
    text, default_name = _render(path, report_kind(path), fmt)
    target = Path(out) if out is not None else path.with_name(default_name)
    if target.is_dir():
        target = target / default_name
    if target.exists() and os.path.samefile(target, path):
        raise OutputError(f"{target} is the input {path}; writing the {fmt.upper()} there would destroy it. "
                          f"Choose another {option('--out', 'out=')}.")
    write_report_text(target, text, kind=fmt, force=force,
                      fix=f"Move it away, choose another {option('--out', 'out=')}, or pass "
                          f"{option('--force', 'force=True')} to replace it.")
    return target
