"""The audit result schema (report.json) and its one-file HTML rendering.

`AuditResult` is the schema shared by the library, report.json and the HTML (`TrendResult` and
`CompareResult` that of trend.json and compare.json);
`render_html`, `write_report` and `load_report` turn it into files and back;
`compute_findings` states the main results in plain words.
"""

from __future__ import annotations

from faceaudit.report.findings import Finding, compute_findings, render_findings
from faceaudit.report.multi_schema import CompareResult, TrendResult
from faceaudit.report.render import load_report, render_html, report_json, write_report
from faceaudit.report.schema import (
    SCHEMA_VERSION,
    AttributeSummary,
    AuditResult,
    DataInfo,
    FailedImage,
    GroupCount,
    LayerSummary,
    ModelInfo,
    ReportError,
)

__all__ = [
    "SCHEMA_VERSION",
    "AttributeSummary",
    "AuditResult",
    "CompareResult",
    "DataInfo",
    "FailedImage",
    "Finding",
    "GroupCount",
    "LayerSummary",
    "ModelInfo",
    "ReportError",
    "TrendResult",
    "compute_findings",
    "load_report",
    "render_findings",
    "render_html",
    "report_json",
    "write_report",
]
