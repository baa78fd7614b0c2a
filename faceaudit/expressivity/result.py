"""The result of one expressivity estimate (one layer x one attribute)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def _f(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class ExpressivityResult:
    """Mutual information (nats) between a layer's features and an attribute, with its uncertainty.

    ``mi`` is the cross-fitted estimate clipped at 0 (``raw_mi`` keeps the unclipped
    value): every row is scored once, by the critic of its fold (the seeds' averaged
    critic when ``seeds`` > 1), and the bound is pooled over all rows; ``folds_mi`` each
    fold's bound, ``seeds_mi`` each seed's pooled bound; ``ci_low``/``ci_high`` a 95% interval; ``null_mi`` the
    same procedure run on a permuted attribute (what "no information" looks like);
    ``normalized`` is I/H(Y) (categorical) or Linfoot's sqrt(1-exp(-2I)) (continuous);
    ``probe_mi`` (with ``probe_se``) is the floor: a cross-fitted linear probe's Barber-Agakov
    lower bound on the same rows, which the estimate should reach;
    ``runtime`` where the critics trained (``device``, ``torch_threads``, ``workers``).
    """

    mi: float
    ci_low: float
    ci_high: float
    null_mi: float | None  # None when the null was not run (null=False)
    normalized: float
    n: int
    estimator: str
    kind: str
    warnings: tuple[str, ...]
    raw_mi: float
    seeds_mi: tuple[float, ...]
    entropy_y: float | None
    reduced_dim: int | None
    curves: dict[str, list[float]] = field(default_factory=dict)
    train_mi: float | None = None
    se: float | None = None
    steps: tuple[int, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    # where the critics trained: on CPU the numbers are reproducible for a seed given torch's thread
    # count and the worker count (they set the order of floating-point sums), so both are recorded
    runtime: dict[str, Any] = field(default_factory=dict)
    # the floor: the cross-fitted linear probe's Barber-Agakov bound H(Y) + E[log q(y|x)] on the same rows
    probe_mi: float | None = None
    probe_se: float | None = None
    folds_mi: tuple[float, ...] = ()  # each fold's bound on its own rows
    reduction_loss: float | None = None  # share of the probe's information lost by the reduction (None: none made)
    probe_selected: int = 0  # critics for which validation kept the probe itself over the trained critic

    @property
    def trustworthy(self) -> bool:
        """True when no warning was raised."""
        return not self.warnings

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (no NaN/inf: non-finite values become null)."""
        return {
            "mi": _f(self.mi),
            "ci_low": _f(self.ci_low),
            "ci_high": _f(self.ci_high),
            "null_mi": _f(self.null_mi),
            "normalized": _f(self.normalized),
            "n": int(self.n),
            "estimator": self.estimator,
            "kind": self.kind,
            "warnings": list(self.warnings),
            "raw_mi": _f(self.raw_mi),
            "seeds_mi": [_f(v) for v in self.seeds_mi],
            "entropy_y": _f(self.entropy_y),
            "reduced_dim": self.reduced_dim,
            "curves": {k: [_f(v) if not isinstance(v, int) else v for v in vals] for k, vals in self.curves.items()},
            "train_mi": _f(self.train_mi),
            "se": _f(self.se),
            "steps": [int(s) for s in self.steps],
            "options": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                        for k, v in self.options.items()},
            "runtime": dict(self.runtime),
            "probe_mi": _f(self.probe_mi),
            "probe_se": _f(self.probe_se),
            "folds_mi": [_f(v) for v in self.folds_mi],
            "reduction_loss": _f(self.reduction_loss),
            "probe_selected": int(self.probe_selected),
        }


def describe_runtime(runtime: dict[str, Any]) -> str:
    """One line for a report from a result's `runtime`: 'cpu, 2 torch threads, 2 stacks at a time'."""
    t, w = int(runtime["torch_threads"]), int(runtime["workers"])
    return f"{runtime['device']}, {t} torch thread{'s' * (t != 1)}, {w} stack{'s' * (w != 1)} at a time"

__all__ = [
    "ExpressivityResult",
    "describe_runtime",
]
