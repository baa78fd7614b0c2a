"""faceaudit: audit face-recognition networks for bias.

Expressivity (mutual information between a layer's features and a protected
attribute, estimated with MINE and related bounds) per layer, beside classical
verification-fairness metrics, rendered as one self-contained HTML report with
a JSON twin.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "run_audit"]


def __getattr__(name: str) -> Any:
    # Lazy: importing faceaudit must stay cheap (no torch/onnxruntime import).
    if name == "run_audit":
        from faceaudit.audit import run_audit

        return run_audit
    raise AttributeError(name)
