"""`faceaudit demo`: audit the demo CNN on the phantom faces, then follow it across its training.

Above the audit and the trend (it runs both); nothing below imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEMO_ATTRS", "DEMO_FAIRNESS_ATTRS", "DemoOutcome", "run_demo"]

DEMO_ATTRS = "age,sex,yaw,skin_tone"
DEMO_FAIRNESS_ATTRS = ("skin_tone", "sex")


@dataclass(frozen=True)
class DemoOutcome:
    """The demo's audit report and its trend-across-training report."""

    audit: Any  # faceaudit.audit.AuditOutcome
    trend: Any

    @property
    def html_path(self) -> Path:
        return self.audit.html_path

    @property
    def json_path(self) -> Path:
        return self.audit.json_path

    @property
    def findings(self) -> list[str]:
        return self.audit.findings


def run_demo(out_dir: Path, *, seed: int = 0, progress: bool | None = None, trend: bool = True) -> DemoOutcome:
    """Generate the phantom faces and the small demo CNN, audit it like any model, then follow its training.

    Everything a newcomer needs to see a finished audit without bringing files:
    the audit goes through `run_audit` exactly as `faceaudit run` does, and the
    trend report follows the final layer across the CNN's training checkpoints.
    """
    from faceaudit.audit import AuditConfig, run_audit
    from faceaudit.demo import prepare_demo
    from faceaudit.pipeline import check_out_dir
    from faceaudit.trend import run_demo_trend

    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    assets = prepare_demo(out_dir / "assets", seed=seed, progress=progress)
    config = AuditConfig(
        model=assets.model, manifest=assets.manifest, attrs=DEMO_ATTRS, fairness_attrs=DEMO_FAIRNESS_ATTRS,
        out_dir=out_dir, seed=seed, demo=True, progress=progress,
    )
    audit = run_audit(config)
    trend_outcome = run_demo_trend(out_dir / "trend", assets, seed=seed, progress=progress) if trend else None
    return DemoOutcome(audit, trend_outcome)
