"""The findings of any report (audit, trend, compare) and the CI gate over their severities.

`faceaudit run/trend/compare --fail-on LEVEL` exits 3 when a finding at or above
LEVEL is present; this module decides which findings trip it, from the report
dictionary alone, with the same findings the HTML shows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from faceaudit.report.compare_render import compare_findings
from faceaudit.report.findings import SEVERITIES, Finding, compute_findings
from faceaudit.report.trend_render import trend_findings

#: The findings of each report kind (an unknown kind is read as an audit, whose loader names the problem).
_FINDINGS: dict[str, Callable[[Any], list[Finding]]] = {"trend": trend_findings, "compare": compare_findings}

#: Levels `--fail-on` accepts, most severe first (`info` findings never fail a run).
FAIL_LEVELS: tuple[str, ...] = ("high", "medium", "low")


def findings_of(report: Mapping[str, Any]) -> list[Finding]:
    """The findings of a report of any kind, most severe first (stable within a severity)."""
    compute = _FINDINGS.get(str(report.get("kind", "audit")), compute_findings)
    items = list(compute(report))
    return sorted(items, key=lambda f: SEVERITIES.index(f.severity) if f.severity in SEVERITIES else len(SEVERITIES))


def findings_at_or_above(report: Mapping[str, Any], level: str) -> list[Finding]:
    """The findings whose severity is `level` or more severe (`level`: high, medium or low)."""
    if level not in FAIL_LEVELS:
        raise ValueError(f"level must be one of {', '.join(FAIL_LEVELS)}, got {level!r}")
    cut = SEVERITIES.index(level)
    return [f for f in findings_of(report) if f.severity in SEVERITIES and SEVERITIES.index(f.severity) <= cut]


__all__ = ["FAIL_LEVELS", "findings_at_or_above", "findings_of"]
