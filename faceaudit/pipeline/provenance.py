"""What every report records so that its numbers can be reproduced: versions, plugins, input specs."""

from __future__ import annotations

import datetime as _dt
import platform
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["created_now", "environment_versions", "model_provenance", "plugins_used", "spec_report"]


def plugins_used(models: Iterable[Any] = (), estimators: Iterable[str] = ()) -> str:
    """The installed plugin packages (not faceaudit itself) whose backends or estimators made this report.

    Why: an audit made with a plugin can only be reproduced with the same plugin
    version, so every report names them, e.g. "faceaudit-features 0.1.0 (backend
    features)"; "none" when only faceaudit's own backends and estimators ran.
    """
    from faceaudit.registry import ESTIMATORS, list_plugins

    used: dict[str, list[str]] = {}
    for m in models:
        p = m.provenance
        if p["package"] != "faceaudit":
            used.setdefault(f"{p['package']} {p['version']}", []).append(f"backend {p['backend']}")
    installed = {p.name: p for p in list_plugins(ESTIMATORS)}
    for name in dict.fromkeys(estimators):
        info = installed.get(name)
        if info is not None and info.distribution != "faceaudit":
            used.setdefault(f"{info.distribution} {info.version}", []).append(f"estimator {name}")
    parts = [f"{pkg} ({', '.join(dict.fromkeys(what))})" for pkg, what in sorted(used.items())]
    return "; ".join(parts) or "none"


def model_provenance(model: Any) -> dict[str, str]:
    """`backend_package` and `backend_version` of an opened model, for the report's model entry."""
    p = model.provenance
    return {"backend_package": p["package"], "backend_version": p["version"]}


def environment_versions(
    results: Iterable[Any] = (), models: Iterable[Any] = (), estimators: Iterable[str] = ()
) -> dict[str, str]:
    """Versions that change the numbers, recorded in every report for reproducibility, and where the
    expressivity critics of `results` trained (on CPU their numbers also depend on torch's thread
    count and the number of stacks trained at once); `plugins` names the plugin packages of the
    `models`' backends and of the `estimators` (see `plugins_used`)."""
    import fairlearn
    import onnxruntime
    import torch

    from faceaudit.expressivity.result import describe_runtime

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "fairlearn": fairlearn.__version__,
    }
    env["plugins"] = plugins_used(models, estimators)
    runs = sorted({describe_runtime(r.runtime) for r in results if getattr(r, "runtime", None)})
    if runs:
        env["expressivity_runtime"] = "; ".join(runs)
    return env


def created_now() -> str:
    """The report's `created` stamp: UTC, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def spec_report(model: Any) -> dict[str, Any]:
    """The model's input spec with its source, for a model or checkpoint entry of the report."""
    from faceaudit.backends.spec import spec_report as _report

    return _report(model)
