"""Threshold at a target FMR and summary fairness measures (FDR, Inequity Rate, GARBE).

Disparity views (worst/best ratio, difference, ratio to best) are computed by :mod:`faceaudit.stats`, which
also states the zero-rate rule: ratios (and the Inequity Rate) floor a zero rate at ``0.5 / n_pairs``;
differences, FDR and GARBE use the raw rates. A rate that cannot be computed (no pairs) is None and the
group is left out of disparities and summaries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceaudit.errors import InputError
from faceaudit.stats import disparity, floored, floored_ratio, rule_of_three

__all__ = [
    "disparity",
    "fairness_discrepancy_rate",
    "floored",
    "garbe",
    "gini",
    "inequity_rate",
    "rule_of_three",
    "threshold_at_fmr",
]


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
    f = floored_ratio(fmr, fmr_n)[0] or 1.0  # no errors in any group: no observed inequity
    g = floored_ratio(fnmr, fnmr_n)[0] or 1.0
    return float(f**alpha * g**beta)


def garbe(fmr: Sequence[float], fnmr: Sequence[float], alpha: float = 0.5) -> dict[str, float | None]:
    """GARBE, Gini Aggregation Rate for Biometric Equitability (Howard et al. 2022, arXiv:2203.05051):
    G_x = n/(n-1) * sum_{i,j} |x_i - x_j| / (2 n^2 mean(x)) for x = FMR or FNMR over the n groups, and
    GARBE(t) = alpha * G_FMR + (1 - alpha) * G_FNMR; 0 = perfectly fair. All-zero rates give G = 0.
    """
    gf, gn = gini(fmr), gini(fnmr)
    both = None if gf is None or gn is None else alpha * gf + (1.0 - alpha) * gn
    return {"garbe_fmr": gf, "garbe_fnmr": gn, "garbe": both}
