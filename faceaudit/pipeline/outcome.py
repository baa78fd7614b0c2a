"""Where a report went: the outcome every run, trend and compare returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ReportOutcome"]


@dataclass(frozen=True)
class ReportOutcome:
    """Where a report went, the result dictionary and its headline findings."""

    html_path: Path
    json_path: Path
    report: Mapping[str, Any]
    findings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"html_path": str(self.html_path), "json_path": str(self.json_path), "findings": list(self.findings)}

    def expressivity_frame(self) -> Any:
        """Expressivity as a pandas DataFrame: one row per layer x attribute (x checkpoint or model),
        columns named as in the JSON."""
        from faceaudit.report.frames import expressivity_frame

        return expressivity_frame(self.report)

    def fairness_frame(self) -> Any:
        """Verification fairness as a pandas DataFrame: one row per attribute x group, columns as in the JSON."""
        from faceaudit.report.frames import fairness_frame

        return fairness_frame(self.report)

    def _repr_html_(self) -> str:
        """Jupyter shows the findings and the expressivity heatmap inline."""
        from faceaudit.report.frames import notebook_html

        return notebook_html(self.report, where=str(self.html_path))
