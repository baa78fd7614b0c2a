"""Threshold at a target FMR, disparity views and summary fairness measures (FDR, Inequity Rate, GARBE).

Zero rates: a group with zero observed errors has rate 0. Ratios (worst/best, ratio to best, Inequity Rate)
replace a zero rate by half an error, ``0.5 / n_pairs`` of that group (a continuity correction), so they
stay finite and grow with the evidence; differences, FDR and GARBE use the raw rates. Worst and best group
are ranked on the raw rates, and the ratio is the worst group's floored rate over the best group's, at
least 1 (a zero-error group with few pairs is no evidence of a gap). When every group's rate is the same
there is no worst group; when every rate is zero no ratio is formed at all (two floors would only compare
pair counts), and what zero errors bound is given instead: ``3 / n_pairs``, the rule of three's 95% upper
limit. A rate that cannot be computed (no pairs) is None and the group is left out of disparities and
summaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from faceaudit.errors import InputError


def threshold_at_fmr(impostor_scores: np.ndarray, target_fmr: float) -> float:
    """Smallest score threshold whose FMR on these impostor scores is at most ``target_fmr`` (match = score >= t).

    With N impostor scores sorted in descending order s_(1) >= s_(2) >= ..., k = floor(target_fmr * N) and
    t = the next float above s_(k+1): at most k impostors score >= t, so FMR(t) <= target_fmr, as in NIST's
    verification reports (one global threshold for all groups).
    """
    s = np.asarray(impostor_scores, dtype=np.float64)
    if s.size == 0:
        raise InputError("no impostor pairs: a threshold at a target FMR needs images of at least two identities")
    if not 0.0 < target_fmr < 1.0:
        raise InputError(f"target_fmr must be in (0, 1), got {target_fmr}")
    k = int(np.floor(target_fmr * s.size + 1e-9))
    kth = np.partition(-s, k)[k] if k < s.size else -s.min()
    return float(np.nextafter(-kth, np.inf))


def gini(values: Sequence[float]) -> float | None:
    """Gini coefficient with the small-sample correction used by GARBE: n/(n-1) * sum|xi-xj| / (2 n^2 mean).

    Returns 0.0 when every value is zero (perfect equality) and None for fewer than two values.
    """
    x = np.asarray(list(values), dtype=float)
    n = x.size
    if n < 2:
        return None
    mean = x.mean()
    if mean == 0:
        return 0.0
    g = np.abs(x[:, None] - x[None, :]).sum() / (2.0 * n * n * mean)
    return float(g * n / (n - 1))


def floored(rate: float, n_pairs: int) -> float:
    """A rate with zero replaced by half an error (0.5 / n_pairs), for ratios only."""
    return rate if rate > 0 else 0.5 / max(n_pairs, 1)


def rule_of_three(n_pairs: int) -> float:
    """95% upper limit of a rate with zero errors observed in ``n_pairs`` trials (rule of three, 3/n)."""
    return 3.0 / max(n_pairs, 1)


def _floored_ratio(rates: Sequence[float], n_pairs: Sequence[int]) -> tuple[float | None, int | None, int | None]:
    """(worst/best floored ratio, worst index, best index); (None, None, None) when every rate is zero."""
    vals = np.asarray(list(rates), dtype=float)
    if vals.size == 0 or vals.max() == 0:
        return None, None, None
    worst, best = int(np.argmax(vals)), int(np.argmin(vals))
    if vals[worst] == vals[best]:
        return 1.0, None, None
    ns = list(n_pairs)
    return float(max(1.0, floored(vals[worst], ns[worst]) / floored(vals[best], ns[best]))), worst, best


def disparity(rates: dict[str, float], n_pairs: dict[str, int]) -> dict[str, Any]:
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
    ratio, wi, bi = _floored_ratio(vals, [n_pairs[g] for g in names])
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


def fairness_discrepancy_rate(fmr: Sequence[float], fnmr: Sequence[float], alpha: float = 0.5) -> float | None:
    """FDR (de Freitas Pereira & Marcel, 2021, "Fairness in Biometrics: a figure of merit to assess biometric
    verification systems", IEEE T-BIOM): FDR(t) = 1 - (alpha * A(t) + (1 - alpha) * B(t)) with
    A = max_{i,j} |FMR_i - FMR_j| and B = max_{i,j} |FNMR_i - FNMR_j|; 1 = perfectly fair. Raw rates.
    """
    if len(fmr) < 2 or len(fnmr) < 2:
        return None
    a = float(np.max(fmr) - np.min(fmr))
    b = float(np.max(fnmr) - np.min(fnmr))
    return 1.0 - (alpha * a + (1.0 - alpha) * b)


def inequity_rate(
    fmr: Sequence[float], fmr_n: Sequence[int], fnmr: Sequence[float], fnmr_n: Sequence[int],
    alpha: float = 0.5, beta: float = 0.5,
) -> float | None:
    """Inequity Rate (NIST's proposal, as analysed by Howard et al. 2022, "Evaluating Proposed Fairness Models
    for Face Recognition Algorithms", arXiv:2203.05051): IR(t) = (max FMR / min FMR)^alpha *
    (max FNMR / min FNMR)^beta; 1 = perfectly fair. Zero rates are floored at 0.5 / n_pairs, and a metric
    with no errors in any group contributes 1 (see module doc).
    Defaults alpha = beta = 0.5 weight the two ratios equally (geometric mean).
    """
    if len(fmr) < 2 or len(fnmr) < 2:
        return None
    f = _floored_ratio(fmr, fmr_n)[0] or 1.0  # no errors in any group: no observed inequity
    g = _floored_ratio(fnmr, fnmr_n)[0] or 1.0
    return float(f**alpha * g**beta)


def garbe(fmr: Sequence[float], fnmr: Sequence[float], alpha: float = 0.5) -> dict[str, float | None]:
    """GARBE, Gini Aggregation Rate for Biometric Equitability (Howard et al. 2022, arXiv:2203.05051):
    G_x = n/(n-1) * sum_{i,j} |x_i - x_j| / (2 n^2 mean(x)) for x = FMR or FNMR over the n groups, and
    GARBE(t) = alpha * G_FMR + (1 - alpha) * G_FNMR; 0 = perfectly fair. All-zero rates give G = 0.
    """
    gf, gn = gini(fmr), gini(fnmr)
    both = None if gf is None or gn is None else alpha * gf + (1.0 - alpha) * gn
    return {"garbe_fmr": gf, "garbe_fnmr": gn, "garbe": both}
