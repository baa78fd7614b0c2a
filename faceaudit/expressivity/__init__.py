"""Expressivity: mutual information (nats) between layer features and an attribute.

Neural estimators (MINE/DV with EMA-corrected gradients by default; SMILE,
InfoNCE, NWJ, and an entropy-difference estimator) with held-out evaluation,
early stopping, several seeds, a permutation null and warnings; many
layer x attribute pairs are trained together as one batched stack.
"""

from faceaudit.expressivity.api import estimate_expressivity, estimate_many, get_estimator, list_estimators
from faceaudit.expressivity.estimators import MINE, NWJ, SMILE, EntropyDifference, InfoNCE, NeuralEstimator
from faceaudit.expressivity.reduction import DEFAULT_MAX_DIM, reduce_features
from faceaudit.expressivity.result import ExpressivityResult

__all__ = [
    "DEFAULT_MAX_DIM",
    "MINE",
    "NWJ",
    "SMILE",
    "EntropyDifference",
    "ExpressivityResult",
    "InfoNCE",
    "NeuralEstimator",
    "estimate_expressivity",
    "estimate_many",
    "get_estimator",
    "list_estimators",
    "reduce_features",
]
