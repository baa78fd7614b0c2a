"""The findings of any report (audit, trend, compare) and the CI gate over their severities.

`faceaudit run/trend/compare --fail-on LEVEL` exits 3 when a finding at or above
LEVEL is present; this module decides which findings trip it, from the report
dictionary alone, with the same findings the HTML shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faceaudit.report.findings import SEVERITIES, Finding

#: Levels `--fail-on` accepts, most severe first (`info` findings never fail a run).
FAIL_LEVELS: tuple[str, ...] = ("high", "medium", "low")


def findings_of(report: Mapping[str, Any]) -> list[Finding]:
    """The findings of a report of any kind, most severe first (stable within a severity)."""
    kind = report.get("kind", "audit")
    if kind == "trend":
        from faceaudit.report.trend_render import trend_findings as compute
    elif kind == "compare":
        from faceaudit.report.compare_render import compare_findings as compute
    else:
        from faceaudit.report.findings import compute_findings as compute
    items = list(compute(report))
    return sorted(items, key=lambda f: SEVERITIES.index(f.severity) if f.severity in SEVERITIES else len(SEVERITIES))


def findings_at_or_above(report: Mapping[str, Any], level: str) -> list[Finding]:
    """The findings whose severity is `level` or more severe (`level`: high, medium or low)."""
    if level not in FAIL_LEVELS:
        raise ValueError(f"level must be one of {', '.join(FAIL_LEVELS)}, got {level!r}")
    cut = SEVERITIES.index(level)
    return [f for f in findings_of(report) if f.severity in SEVERITIES and SEVERITIES.index(f.severity) <= cut]


__all__ = ["FAIL_LEVELS", "findings_at_or_above", "findings_of"]
