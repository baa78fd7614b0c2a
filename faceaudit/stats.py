"""The statistics every room shares: one significance rule for differences and one disparity computation.

Significance: a difference delta = b - a counts when |delta| > z * sqrt(se_a^2 + se_b^2) (z = 1.96 by
default); a difference without a positive standard error, or one marked untestable (a small group), is
never called significant. A standard error read from a 95% interval is half its width over 1.96.

Disparity: per-group error rates are compared among the groups that are not flagged small, when at least
two such groups remain (else among all). Zero rates: a group with zero observed errors has rate 0; ratios
(worst/best, ratio to best, Inequity Rate) replace a zero rate by half an error, ``0.5 / n_pairs`` of that
group (a continuity correction), so they stay finite and grow with the evidence; differences use the raw
rates. Worst and best group are ranked on the raw rates, and the ratio is the worst group's floored rate
over the best group's, at least 1 (a zero-error group with few pairs is no evidence of a gap). When every
group's rate is the same there is no worst group; when every rate is zero no ratio is formed at all (two
floors would only compare pair counts), and what zero errors bound is given instead: ``3 / n_pairs``, the
rule of three's 95% upper limit.

This module imports nothing else of faceaudit: fairness, the pipeline (trend, compare) and the report
all read their statistics from here.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Z_95",
    "comparable_groups",
    "difference",
    "disparity",
    "extremes",
    "floored",
    "floored_ratio",
    "rule_of_three",
    "se_from_ci",
]

#: Two-sided 95% normal quantile used by the significance rule.
Z_95 = 1.96


# --------------------------------------------------------------------------- significance


def se_from_ci(low: float | None, high: float | None) -> float | None:
    """Standard error implied by a 95% interval: half its width over 1.96 (None when a bound is missing)."""
    if low is None or high is None:
        return None
    return max(float(high) - float(low), 0.0) / (2 * Z_95)


def difference(
    value_a: float | None, value_b: float | None, se_a: float | None, se_b: float | None,
    z: float = Z_95, *, testable: bool = True,
) -> dict[str, Any]:
    """b - a and whether it exceeds the combined uncertainty: |delta| > z * sqrt(se_a^2 + se_b^2).

    Why one rule: trend (checkpoint to checkpoint) and compare (model to reference) must call the same
    difference significant. Returns ``delta``, ``se``, ``threshold`` (z * se) and ``significant``; delta is
    None when a value is missing, se None when a standard error is; the difference is never significant
    without a positive se or when ``testable`` is False (e.g. a small group).
    """
    if value_a is None or value_b is None:
        return {"delta": None, "se": None, "threshold": None, "significant": False}
    se = math.sqrt((se_a or 0.0) ** 2 + (se_b or 0.0) ** 2) if se_a is not None and se_b is not None else None
    delta = float(value_b) - float(value_a)
    ok = testable and se is not None and se > 0
    return {"delta": delta, "se": se, "threshold": None if se is None else z * se,
            "significant": bool(ok and abs(delta) > z * se)}  # fmt: skip


# --------------------------------------------------------------------------- disparity


def comparable_groups(rates: Mapping[str, float], small: Collection[str]) -> dict[str, float]:
    """The groups a disparity compares: those not flagged small when at least two remain, else all of them.

    Why: a zero rate in a group of eight pairs says nothing, but with fewer than two large groups there is
    nothing else to compare.
    """
    big = {g: v for g, v in rates.items() if g not in small}
    return big if len(big) >= 2 else dict(rates)


def extremes(rates: Mapping[str, float]) -> tuple[str, str]:
    """(highest, lowest) group by rate; ties go to the group listed first. ``rates`` must not be empty."""
    names = list(rates)
    vals = np.asarray([rates[g] for g in names], dtype=float)
    return names[int(np.argmax(vals))], names[int(np.argmin(vals))]


def floored(rate: float, n_pairs: int) -> float:
    """A rate with zero replaced by half an error (0.5 / n_pairs), for ratios only."""
    return rate if rate > 0 else 0.5 / max(n_pairs, 1)


def rule_of_three(n_pairs: int) -> float:
    """95% upper limit of a rate with zero errors observed in ``n_pairs`` trials (rule of three, 3/n)."""
    return 3.0 / max(n_pairs, 1)


def floored_ratio(rates: Sequence[float], n_pairs: Sequence[int]) -> tuple[float | None, int | None, int | None]:
    """(worst/best floored ratio, worst index, best index); (None, None, None) when every rate is zero."""
    vals = np.asarray(list(rates), dtype=float)
    if vals.size == 0 or vals.max() == 0:
        return None, None, None
    worst, best = int(np.argmax(vals)), int(np.argmin(vals))
    if vals[worst] == vals[best]:
        return 1.0, None, None
    ns = list(n_pairs)
    return float(max(1.0, floored(vals[worst], ns[worst]) / floored(vals[best], ns[best]))), worst, best


def disparity(rates: Mapping[str, float], n_pairs: Mapping[str, int]) -> dict[str, Any]:
    """Disparity views of per-group rates: worst/best ratio, difference, worst/best group, ratio to the best group.

    Worst and best are different groups or both None (all rates equal); ``max_min_ratio`` is None when
    every rate is zero, and ``upper_limit_95`` gives each zero-rate group's rule-of-three bound.
    """
    if len(rates) < 1:
        return {"max_min_ratio": None, "difference": None, "worst_group": None, "best_group": None, "ratio_to_best": {}}
    names = list(rates)
    vals = np.array([rates[g] for g in names])
    zero = [g for g in names if rates[g] == 0]
    bounds = {g: rule_of_three(n_pairs[g]) for g in zero}
    if len(names) == 1:
        return {"max_min_ratio": None, "difference": None, "worst_group": None, "best_group": None,
                "ratio_to_best": {}, "zero_rate_groups": zero, "upper_limit_95": bounds}  # fmt: skip
    ratio, wi, bi = floored_ratio(vals, [n_pairs[g] for g in names])
    worst = None if wi is None else names[wi]
    best = None if bi is None else names[bi]
    if ratio is None:  # no errors anywhere: nothing to rank, no ratio of floors
        to_best: dict[str, float] = {}
    elif best is None:  # every group has the same non-zero rate
        to_best = {g: 1.0 for g in names}
    else:
        fl = {g: floored(rates[g], n_pairs[g]) for g in names}
        to_best = {g: float(fl[g] / fl[best]) for g in names}
    return {
        "max_min_ratio": ratio,
        "difference": float(vals.max() - vals.min()),
        "worst_group": worst,
        "best_group": best,
        "ratio_to_best": to_best,
        "zero_rate_groups": zero,
        "no_errors_observed": ratio is None,
        "upper_limit_95": bounds,
    }
