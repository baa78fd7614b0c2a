"""Re-render a report (HTML or Markdown) from its JSON without recomputing anything.

The same JSON always gives the same HTML (and Markdown), byte for byte. An
existing file is replaced only if it is a faceaudit report of the same format
(or with `force`), never the input itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from faceaudit.errors import OutputError, option

__all__ = ["report_kind", "rerender"]


def report_kind(path: Path) -> str:
    """The `kind` of a report JSON (audit, trend or compare); the loaders validate the rest."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return "audit"  # let the audit loader raise its precise error
    return data.get("kind", "audit") if isinstance(data, dict) else "audit"


def _render(path: Path, kind: str, fmt: str) -> tuple[str, str]:
    """(text, default file name) of the report at `path` in `fmt`."""
    from faceaudit.report import load_report, render_html
    from faceaudit.report.compare_render import load_compare, render_compare_html
    from faceaudit.report.trend_render import load_trend, render_trend_html

    if fmt == "md":
        from faceaudit.report.markdown import markdown_name, render_markdown

        data = (load_trend(path) if kind == "trend" else load_compare(path) if kind == "compare"
                else load_report(path).to_dict())
        return render_markdown(data), markdown_name(data)
    if kind == "trend":
        return render_trend_html(load_trend(path)), "trend.html"
    if kind == "compare":
        return render_compare_html(load_compare(path)), "compare.html"
    return render_html(load_report(path)), "report.html"


def rerender(path: str | Path, out: str | Path | None = None, fmt: str = "html", force: bool = False) -> Path:
    """Write the HTML (`fmt="html"`) or Markdown (`"md"`) view of the report JSON at `path`; return where.

    `out` is a file, or a folder to write the default name (report.html,
    trend.html, report.md, ...) into; default: beside the JSON. Why a library
    call: `faceaudit report` and a notebook re-render the same way.
    """
    from faceaudit._atomic import write_report_text

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
