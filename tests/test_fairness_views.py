"""The fairness result read like fairlearn's MetricFrame (by_group, difference, ratio, worst) on injected disparities."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from test_fairness import _two_image_identities as _pairs_with_cosine
from test_fairness import _unit

from faceaudit.fairness import verification_fairness
from faceaudit.fairness.verification import METRICS


SIGMA = 0.1
MU = {"a": 0.55, "b": 0.45, "c": 0.20}  # b: injected FNMR gap; c: a small group far worse still
N_IDS = {"a": 600, "b": 600, "c": 5}


@pytest.fixture(scope="module")
def injected():
    rng = np.random.default_rng(3)
    emb = np.concatenate([_pairs_with_cosine(rng, N_IDS[g], 48, MU[g], SIGMA) for g in MU])
    groups = np.concatenate([np.full(2 * N_IDS[g], g, dtype=object) for g in MU])
    ids = np.repeat(np.arange(sum(N_IDS.values())), 2)
    return verification_fairness(emb, ids, groups, target_fmr=1e-2, seed=0, n_bootstrap=30, attribute="synthetic")


def test_by_group_is_the_per_group_table(injected) -> None:
    bg = injected.by_group
    assert list(bg.index) == ["a", "b", "c"] and bg.index.name == "group"
    for g in injected.groups:
        row = bg.loc[g.group]
        assert (row["fmr"], row["fnmr"]) == (g.fmr, g.fnmr)
        assert (row["fnmr_ci_low"], row["fnmr_ci_high"]) == g.fnmr_ci
        assert (row["n_genuine_pairs"], row["n_impostor_pairs"], row["small"]) == (g.n_genuine_pairs, g.n_impostor_pairs, g.small)
    assert bg["small"].tolist() == [False, False, True]
    # the injected FNMR per group, from the generating normals at the measured threshold (4 binomial SE)
    for g in ("a", "b"):
        p = norm.cdf((injected.threshold - MU[g]) / SIGMA)
        assert abs(bg.loc[g, "fnmr"] - p) < 4 * math.sqrt(p * (1 - p) / N_IDS[g]) + 1e-9


def test_difference_ratio_and_worst_leave_out_the_small_group(injected) -> None:
    bg = injected.by_group
    fa, fb, fc = (bg.loc[g, "fnmr"] for g in "abc")
    assert fa < fb < fc  # the injected order
    assert injected.worst()["fnmr"] == "b"  # c is worse but small
    assert injected.difference()["fnmr"] == pytest.approx(fb - fa)
    assert injected.ratio()["fnmr"] == pytest.approx(fb / fa)
    assert injected.worst(include_small=True)["fnmr"] == "c"
    assert injected.difference(include_small=True)["fnmr"] == pytest.approx(fc - fa)
    # the gap is the injected one: Phi((t - mu_b)/sigma) - Phi((t - mu_a)/sigma), within 4 SE
    t = injected.threshold
    expect = norm.cdf((t - MU["b"]) / SIGMA) - norm.cdf((t - MU["a"]) / SIGMA)
    se = math.sqrt(sum(p * (1 - p) / N_IDS[g] for g, p in ((g, norm.cdf((t - MU[g]) / SIGMA)) for g in "ab")))
    assert abs(injected.difference()["fnmr"] - expect) < 4 * se


def test_views_agree_with_the_json_disparities(injected) -> None:
    d = injected.to_dict()["disparities"]
    for m in METRICS:
        assert injected.difference()[m] == d[m]["difference"]
        assert injected.worst()[m] == d[m]["worst_group"]
        ratio = injected.ratio()[m]
        assert (math.isnan(ratio) and d[m]["max_min_ratio"] is None) or ratio == d[m]["max_min_ratio"]
    assert list(injected.difference().index) == list(METRICS)


def test_a_zero_rate_is_floored_in_the_ratio_not_in_the_difference() -> None:
    # group z: impostors far apart (no false match); group y: impostors close together (many false matches)
    rng = np.random.default_rng(5)
    base = rng.normal(size=(1, 256))
    y = _unit(base + 0.6 * rng.normal(size=(200, 256)))
    z = _unit(rng.normal(size=(200, 256)))
    emb = np.r_[y, z]
    ids = np.arange(400)
    groups = np.r_[np.full(200, "y", dtype=object), np.full(200, "z", dtype=object)]
    r = verification_fairness(emb, ids, groups, threshold=0.5, n_bootstrap=0, min_identities=1, min_genuine_pairs=0)
    bg = r.by_group
    assert bg.loc["z", "fmr"] == 0.0 and bg.loc["y", "fmr"] > 0.01
    assert r.difference()["fmr"] == bg.loc["y", "fmr"]
    assert r.ratio()["fmr"] == pytest.approx(bg.loc["y", "fmr"] / (0.5 / bg.loc["z", "n_impostor_pairs"]))
    assert r.worst()["fmr"] == "y"
    # one image per identity: no genuine pairs, so FNMR cannot be measured anywhere
    assert bg["fnmr"].isna().all() and math.isnan(r.difference()["fnmr"]) and r.worst()["fnmr"] is None


def test_no_errors_anywhere_gives_no_ratio_and_no_worst_group() -> None:
    rng = np.random.default_rng(0)
    groups = np.where(rng.random(200) < 0.3, "female", "male").astype(object)
    r = verification_fairness(rng.normal(size=(200, 32)), np.arange(200), groups, target_fmr=1e-9, n_bootstrap=5)
    assert r.difference()["fmr"] == 0.0 and math.isnan(r.ratio()["fmr"]) and r.worst()["fmr"] is None
