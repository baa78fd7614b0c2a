"""Verification fairness: per-group FMR/FNMR at one global threshold, disparities, FDR, Inequity Rate, GARBE."""

from faceaudit.fairness.metrics import fairness_discrepancy_rate, garbe, gini, inequity_rate, threshold_at_fmr
from faceaudit.fairness.pairs import genuine_pairs, impostor_pairs, l2_normalize, score_pairs
from faceaudit.fairness.verification import (
    GroupRates,
    VerificationFairnessResult,
    combine_groups,
    intersect_groups,
    verification_fairness,
)

__all__ = [
    "GroupRates",
    "VerificationFairnessResult",
    "combine_groups",
    "fairness_discrepancy_rate",
    "garbe",
    "genuine_pairs",
    "gini",
    "impostor_pairs",
    "inequity_rate",
    "intersect_groups",
    "l2_normalize",
    "score_pairs",
    "threshold_at_fmr",
    "verification_fairness",
]
