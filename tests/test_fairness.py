"""Verification fairness on synthetic embeddings with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from faceaudit.errors import InputError
from faceaudit.fairness.metrics import disparity
from faceaudit.fairness import (
    combine_groups,
    fairness_discrepancy_rate,
    garbe,
    genuine_pairs,
    gini,
    impostor_pairs,
    inequity_rate,
    score_pairs,
    threshold_at_fmr,
    verification_fairness,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _two_image_identities(rng: np.random.Generator, n_ids: int, d: int, mu: float, sigma: float) -> np.ndarray:
    """Two unit embeddings per identity with cosine exactly c ~ N(mu, sigma); each embedding is uniform on the sphere."""
    u = _unit(rng.normal(size=(n_ids, d)))
    v = rng.normal(size=(n_ids, d))
    v = _unit(v - (v * u).sum(1, keepdims=True) * u)
    c = np.clip(rng.normal(mu, sigma, n_ids), -1, 1)
    w = c[:, None] * u + np.sqrt(1 - c[:, None] ** 2) * v
    return np.stack([u, w], 1).reshape(2 * n_ids, d)


def test_injected_fnmr_disparity_matches_analytic() -> None:
    rng = np.random.default_rng(7)
    d, n_ids, sigma, mu_a, delta = 64, 2000, 0.1, 0.55, 0.1
    emb = np.r_[_two_image_identities(rng, n_ids, d, mu_a, sigma), _two_image_identities(rng, n_ids, d, mu_a - delta, sigma)]
    ids = np.repeat(np.arange(2 * n_ids), 2)
    groups = np.where(ids < n_ids, "a", "b").astype(object)
    r = verification_fairness(emb, ids, groups, target_fmr=1e-3, seed=0, n_bootstrap=50, attribute="synthetic")
    t = r.threshold
    # impostor cosines of independent uniform unit vectors: (s + 1) / 2 ~ Beta((d-1)/2, (d-1)/2)
    beta = stats.beta((d - 1) / 2, (d - 1) / 2)
    fmr_at_t = beta.sf((t + 1) / 2)
    n_thr = r.to_dict()["n_threshold_impostor_pairs"]
    assert abs(fmr_at_t - 1e-3) < 4 * math.sqrt(1e-3 / n_thr), (fmr_at_t, n_thr)
    # expected FNMR at the measured threshold from the generating normal distributions
    exp_a = stats.norm.cdf((t - mu_a) / sigma)
    exp_b = stats.norm.cdf((t - mu_a + delta) / sigma)
    ga, gb = r.group("a"), r.group("b")
    assert ga.n_genuine_pairs == gb.n_genuine_pairs == n_ids  # exhaustive: one genuine pair per identity
    # binomial standard errors with n_ids genuine pairs each; 4 SE (two-sided p ~ 6e-5)
    se_a, se_b = math.sqrt(exp_a * (1 - exp_a) / n_ids), math.sqrt(exp_b * (1 - exp_b) / n_ids)
    assert abs(ga.fnmr - exp_a) < 4 * se_a
    assert abs(gb.fnmr - exp_b) < 4 * se_b
    ratio_exp = exp_b / exp_a
    se_ratio = ratio_exp * math.sqrt((se_a / exp_a) ** 2 + (se_b / exp_b) ** 2)  # delta method
    got = r.disparities["fnmr"]["max_min_ratio"]
    detail = (f"threshold {t:.4f}; FNMR a {ga.fnmr:.4f} (exp {exp_a:.4f}) b {gb.fnmr:.4f} (exp {exp_b:.4f}); "
              f"ratio {got:.3f} (exp {ratio_exp:.3f} +- {se_ratio:.3f})")
    assert abs(got - ratio_exp) < 4 * se_ratio, detail
    assert r.disparities["fnmr"]["worst_group"] == "b" and r.disparities["fnmr"]["best_group"] == "a"
    assert r.disparities["fnmr"]["ratio_to_best"]["b"] == pytest.approx(got)
    # FMR: both groups' impostors follow the same distribution, so no FMR disparity beyond noise
    assert 0.5 < r.group("a").fmr / r.group("b").fmr < 2.0
    # identity-bootstrap CI covers the estimate
    lo, hi = gb.fnmr_ci
    assert lo <= gb.fnmr <= hi and hi - lo < 0.1


def test_pair_enumeration_exhaustive_counts() -> None:
    ident = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    rng = np.random.default_rng(0)
    i, j, tot = genuine_pairs(np.arange(10), ident, 1000, rng)
    assert tot == 3 + 1 + 0 + 6 == len(i) and np.all(ident[i] == ident[j]) and np.all(i < j)
    assert len(set(zip(i.tolist(), j.tolist()))) == tot
    i, j, tot = impostor_pairs(np.arange(10), np.arange(10), ident, 1000, rng, same=True)
    assert tot == 45 - 10 == len(i) and np.all(ident[i] != ident[j])
    # sampled: distinct, correct count, deterministic
    big = np.repeat(np.arange(500), 4)
    a = impostor_pairs(np.arange(2000), np.arange(2000), big, 5000, np.random.default_rng(1), same=True)
    b = impostor_pairs(np.arange(2000), np.arange(2000), big, 5000, np.random.default_rng(1), same=True)
    assert len(a[0]) == 5000 and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert len(set(zip(a[0].tolist(), a[1].tolist()))) == 5000 and np.all(big[a[0]] != big[a[1]])
    g = genuine_pairs(np.arange(2000), big, 700, np.random.default_rng(2))
    assert len(g[0]) == 700 and g[2] == 500 * 6 and np.all(big[g[0]] == big[g[1]]) and np.all(g[0] < g[1])


def test_score_pairs_chunked_equals_direct() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(50, 16))
    i, j = rng.integers(0, 50, 1000), rng.integers(0, 50, 1000)
    en = _unit(e)
    np.testing.assert_allclose(score_pairs(e, i, j, chunk_size=7), (en[i] * en[j]).sum(1), atol=1e-6)
    with pytest.raises(InputError):
        score_pairs(np.zeros((3, 4)), [0], [1])


def test_threshold_rule() -> None:
    s = np.arange(10_000) / 10_000.0
    t = threshold_at_fmr(s, 1e-3)
    assert (s >= t).sum() == 10 and (s >= np.nextafter(t, -np.inf) - 1e-4).sum() > 10
    assert (np.array([0.1, 0.2]) >= threshold_at_fmr(np.array([0.1, 0.2]), 1e-3)).sum() == 0


def test_summary_measures_known_values() -> None:
    assert gini([1, 1, 1]) == 0.0 and gini([0, 0]) == 0.0 and gini([5]) is None
    assert gini([0, 1]) == pytest.approx(1.0)  # n/(n-1) * |0-1|*2 / (2*4*0.5) = 2 * 0.5
    assert gini([1, 2, 3]) == pytest.approx(1.5 * 8 / (2 * 9 * 2))
    assert fairness_discrepancy_rate([0.001, 0.003], [0.1, 0.2]) == pytest.approx(1 - (0.5 * 0.002 + 0.5 * 0.1))
    assert inequity_rate([0.001, 0.004], [1000, 1000], [0.1, 0.4], [100, 100]) == pytest.approx(4.0)
    # zero rate: floored at 0.5 / n -> finite
    assert inequity_rate([0.0, 0.001], [1000, 1000], [0.1, 0.1], [10, 10]) == pytest.approx(math.sqrt(0.001 / 0.0005))
    g = garbe([0.001, 0.003], [0.2, 0.2])
    assert g["garbe_fnmr"] == 0.0 and g["garbe"] == pytest.approx(0.5 * gini([0.001, 0.003]))


def test_zero_rates_no_nan_and_deterministic() -> None:
    rng = np.random.default_rng(3)
    n_ids = 60
    centers = _unit(rng.normal(size=(n_ids, 32)))
    ids = np.repeat(np.arange(n_ids), 3)
    emb = centers[ids] + 0.01 * rng.normal(size=(len(ids), 32))  # perfect genuine matches
    emb[ids >= 30] = centers[ids[ids >= 30]] + 0.6 * rng.normal(size=(int((ids >= 30).sum()), 32))
    groups = np.where(ids < 30, "easy", "hard").astype(object)
    groups[5] = None
    r1 = verification_fairness(emb, ids, groups, seed=4, n_bootstrap=30)
    r2 = verification_fairness(emb, ids, groups, seed=4, n_bootstrap=30)
    d = r1.to_dict()
    assert json.dumps(d, allow_nan=False) == json.dumps(r2.to_dict(), allow_nan=False)
    assert r1.group("easy").fnmr == 0.0 and r1.group("hard").fnmr > 0
    assert d["disparities"]["fnmr"]["max_min_ratio"] is not None and math.isfinite(d["disparities"]["fnmr"]["max_min_ratio"])
    assert any("FNMR is zero" in w for w in d["warnings"]) and any("missing group" in w for w in d["warnings"])
    assert [g["small"] for g in d["groups"]] == [False, False]  # 30 ids, 90 genuine, > 3000 impostor pairs each
    assert set(d) >= {"attribute", "target_fmr", "threshold", "n_identities", "n_images", "n_genuine_pairs",
                      "n_impostor_pairs", "groups", "disparities", "summary", "cross_group_fmr", "warnings", "settings"}
    assert set(d["summary"]) >= {"fdr", "inequity_rate", "garbe_fmr", "garbe_fnmr"}
    m = d["cross_group_fmr"]
    assert m["groups"] == ["easy", "hard"] and m["pairs"][0][1] == m["pairs"][1][0] > 0


def test_group_counts_and_cross_group_genuine_excluded() -> None:
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(40), 4)
    emb = rng.normal(size=(160, 8))
    # each identity has 2 images in "young" and 2 in "old": 1 + 1 same-group genuine pairs, 4 cross-group
    groups = np.tile(np.array(["young", "young", "old", "old"], dtype=object), 40)
    r = verification_fairness(emb, ids, groups, n_bootstrap=5, group_order=["young", "old"])
    assert [g.group for g in r.groups] == ["young", "old"]
    assert r.group("young").n_genuine_pairs == 40 and r.n_genuine_pairs == 80
    assert r.group("old").n_impostor_pairs == 80 * 79 // 2 - 40
    assert r.cross_group_fmr["pairs"][0][1] == 80 * 80 - 40 * 4


def test_combine_groups_and_input_errors() -> None:
    g = combine_groups(np.array(["f", "m", None], dtype=object), np.array(["0-12", "20-35", "0-12"], dtype=object))
    assert list(g) == ["f & 0-12", "m & 20-35", None]
    from faceaudit.fairness import intersect_groups

    assert list(intersect_groups(["a", "b"], ["x", "y"])) == ["a & x", "b & y"]
    rng0 = np.random.default_rng(0)
    labs = np.array(["10-14", "5-9", "<5", "adult"] * 10, dtype=object)
    r0 = verification_fairness(rng0.normal(size=(40, 4)), np.arange(40) // 2, labs, n_bootstrap=2)
    assert [x.group for x in r0.groups] == ["<5", "5-9", "10-14", "adult"]
    rng = np.random.default_rng(1)
    ids = np.repeat(np.arange(25), 2)
    r = verification_fairness(rng.normal(size=(50, 8)), ids, np.where(ids < 5, "tiny", "big"), n_bootstrap=5)
    assert r.group("tiny").small and r.group("tiny").n_identities == 5
    assert any("'tiny' is small" in w and "5 identities (< 10)" in w for w in r.warnings)
    with pytest.raises(InputError):
        verification_fairness(np.ones((3, 4)), [0, 1], ["a", "b", "c"])
    with pytest.raises(InputError, match="two identities"):
        verification_fairness(np.random.default_rng(0).normal(size=(3, 4)), [0, 0, 0], ["a", "a", "a"])


def test_small_groups_left_out_of_disparities() -> None:
    rng = np.random.default_rng(5)
    ids = np.repeat(np.arange(130), 2)
    centers = _unit(rng.normal(size=(130, 16)))
    emb = centers[ids] + 0.3 * rng.normal(size=(260, 16))
    groups = np.select([ids < 60, ids < 120], ["a", "b"], "tiny").astype(object)
    r = verification_fairness(emb, ids, groups, n_bootstrap=5)
    assert r.group("tiny").small and not r.group("a").small and not r.group("b").small
    d = r.to_dict()
    assert d["disparities"]["fnmr"]["groups_used"] == ["a", "b"] and "tiny" not in d["disparities"]["fmr"]["ratio_to_best"]
    assert d["summary"]["groups_used"] == ["a", "b"]
    assert any("leave out small group(s) 'tiny'" in w for w in d["warnings"])
    expect = max(r.group("a").fnmr, r.group("b").fnmr) - min(r.group("a").fnmr, r.group("b").fnmr)
    assert d["disparities"]["fnmr"]["difference"] == pytest.approx(expect)


def test_genuine_pairs_per_identity_cap() -> None:
    ident = np.r_[np.zeros(40, int), np.repeat(np.arange(1, 21), 3)]  # one person with 40 images (780 pairs)
    i, j, tot = genuine_pairs(np.arange(len(ident)), ident, 10_000, np.random.default_rng(0), per_identity=10)
    assert tot == 780 + 20 * 3 and len(i) == 10 + 20 * 3 and (ident[i] == 0).sum() == 10
    assert np.all(ident[i] == ident[j]) and len(set(zip(i.tolist(), j.tolist()))) == len(i)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(ident), 8))
    grp = np.array(["g"] * len(ident), dtype=object)
    r = verification_fairness(emb, ident, grp, n_bootstrap=5)
    assert r.group("g").n_genuine_pairs == 840 and any("one identity supplies" in w for w in r.warnings)
    r2 = verification_fairness(emb, ident, grp, n_bootstrap=5, max_genuine_pairs_per_identity=10)
    assert r2.group("g").n_genuine_pairs == 70 and not any("one identity supplies" in w for w in r2.warnings)


def _one_image_per_identity(target_fmr: float):
    """200 faces of 200 people in two groups: no genuine pairs; at FMR 1e-9 no false match either."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, 32))
    groups = np.where(rng.random(200) < 0.3, "female", "male").astype(object)
    return verification_fairness(emb, np.arange(200), groups, target_fmr=target_fmr, attribute="sex", n_bootstrap=20)


def test_all_zero_rates_have_no_worst_group_and_no_ratio() -> None:
    r = _one_image_per_identity(1e-9)
    assert [g.fmr for g in r.groups] == [0.0, 0.0]
    d = r.disparities["fmr"]
    # nothing to rank: no worst or best group, no ratio built from the 0.5/n_pairs floors alone
    assert d["worst_group"] is None and d["best_group"] is None
    assert d["max_min_ratio"] is None and d["ratio_to_best"] == {} and d["difference"] == 0.0
    # what zero errors in n pairs bounds: the rule of three, 3/n at 95%
    assert d["upper_limit_95"] == {g.group: pytest.approx(3 / g.n_impostor_pairs) for g in r.groups}
    assert r.summary["inequity_rate"] is None  # no FNMR at all (no genuine pairs)
    assert any("no false matches in any group" in w for w in r.warnings)
    assert not any("ratios use 0.5/n_pairs" in w for w in r.warnings)
    assert any("FNMR cannot be measured for any group: no genuine pairs" in w for w in r.warnings)


def test_disparity_ratio_is_worst_over_best_and_ties_have_no_worst_group() -> None:
    # the zero-error group has so few pairs that its floor (0.5/50) exceeds the other group's rate:
    # that is no evidence of a gap, not a 10x one in the other direction
    d = disparity({"a": 0.001, "b": 0.0}, {"a": 10_000, "b": 50})
    assert (d["worst_group"], d["best_group"], d["max_min_ratio"]) == ("a", "b", 1.0)
    assert d["upper_limit_95"] == {"b": pytest.approx(3 / 50)}
    d = disparity({"a": 0.002, "b": 0.0}, {"a": 10_000, "b": 10_000})
    assert (d["worst_group"], d["best_group"], d["max_min_ratio"]) == ("a", "b", pytest.approx(0.002 / 0.00005))
    d = disparity({"a": 0.01, "b": 0.01, "c": 0.01}, {"a": 100, "b": 200, "c": 300})
    assert d["worst_group"] is None and d["best_group"] is None and d["max_min_ratio"] == 1.0
    # Inequity Rate: all-zero FMR contributes a factor 1, not the ratio of two floors
    assert inequity_rate([0.0, 0.0], [100, 1000], [0.1, 0.2], [10, 10]) == pytest.approx(math.sqrt(2.0))
