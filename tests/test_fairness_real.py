"""Verification fairness on real faces (LFW by sex, FG-NET by age band) with MobileFaceNet embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceaudit.data import load_manifest
from faceaudit.fairness import verification_fairness

pytestmark = pytest.mark.realdata


def _unit(emb: np.ndarray) -> np.ndarray:
    """L2-normalised float64 rows: the cosine similarities verification uses."""
    e = emb.astype(np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _independent_rates(emb: np.ndarray, ids: np.ndarray, groups: np.ndarray, target: float, thr: float | None = None):
    """All pairs from the full similarity matrix; threshold = k-th largest impostor score, match = score > it."""
    s = emb @ emb.T
    iu, ju = np.triu_indices(len(ids), 1)
    sc = s[iu, ju]
    gen = ids[iu] == ids[ju]
    if thr is None:
        imp = np.sort(sc[~gen])[::-1]
        kth = imp[int(np.floor(target * imp.size + 1e-9))]
        match = sc > kth
    else:
        match = sc >= thr
    out = {}
    for g in sorted({x for x in groups if x is not None}):
        both = (groups[iu] == g) & (groups[ju] == g)
        out[g] = (match[both & ~gen].mean() if (both & ~gen).any() else None,
                  (~match[both & gen]).mean() if (both & gen).any() else None,
                  int((both & gen).sum()), int((both & ~gen).sum()))
    return out


@pytest.fixture(scope="module")
def lfw_subset(shared_data: Path, embed_bundle):
    m = load_manifest(shared_data / "lfw" / "manifest.csv", "sex", require_identity=True)
    rng = np.random.default_rng(0)
    ids, sex = m.identities, m.attributes["sex"].groups
    keep: list[int] = []
    for g in ("female", "male"):
        names = sorted({i for i, s in zip(ids, sex) if s == g})
        names = [n for n in names if (ids == n).sum() >= 2]
        for n in rng.permutation(names)[:80]:
            rows = np.flatnonzero(ids == n)
            keep.extend(sorted(rng.permutation(rows)[:6].tolist()))
    keep = np.array(sorted(keep))
    emb = _unit(embed_bundle([m.paths[k] for k in keep]))
    return emb, ids[keep], sex[keep]


def test_lfw_per_sex_matches_independent(lfw_subset) -> None:
    emb, ids, sex = lfw_subset
    r = verification_fairness(emb, ids, sex, target_fmr=1e-3, seed=0, attribute="sex", n_bootstrap=200)
    ref = _independent_rates(emb, ids, sex, 1e-3)
    for g in ("female", "male"):
        rg = r.group(g)
        fmr, fnmr, n_gen, n_imp = ref[g]
        assert (rg.n_genuine_pairs, rg.n_impostor_pairs) == (n_gen, n_imp)  # exhaustive at this size
        assert rg.fmr == pytest.approx(fmr, abs=1e-12) and rg.fnmr == pytest.approx(fnmr, abs=1e-12)
        assert rg.fmr_ci[0] <= rg.fmr <= rg.fmr_ci[1] and rg.fnmr_ci[0] <= rg.fnmr <= rg.fnmr_ci[1]
    d = r.to_dict()
    assert 0.1 < r.threshold < 0.7  # mean genuine ~0.6, impostor ~0 for this model
    assert d["cross_group_fmr"]["groups"] == ["female", "male"]


def test_fgnet_age_bands(shared_data: Path, embed_bundle) -> None:
    m = load_manifest(shared_data / "fgnet" / "manifest.csv", "age", require_identity=True)
    emb = _unit(embed_bundle(m.paths))
    age = m.attributes["age"]
    r = verification_fairness(emb, m.identities, age, target_fmr=1e-3, seed=0, n_bootstrap=200)
    assert r.attribute == "age" and [g.group for g in r.groups] == [g for g in age.group_order if g in set(age.groups)]
    ref = _independent_rates(emb, m.identities, age.groups, 1e-3, thr=r.threshold)
    for g in r.groups:
        fmr, fnmr, n_gen, n_imp = ref[g.group]
        assert g.n_genuine_pairs == n_gen
        if fnmr is not None:
            assert g.fnmr == pytest.approx(fnmr, abs=1e-12)
        if fmr is not None:
            # the threshold sits one float step above an impostor score; a different summation order
            # (matrix product here, chunked dot products there) may move at most that one pair across it
            assert abs(g.fmr - fmr) <= 1.0 / n_imp + 1e-12


def test_lfw_views_match_independent_rates(lfw_subset) -> None:
    emb, ids, sex = lfw_subset
    r = verification_fairness(emb, ids, sex, target_fmr=1e-2, seed=0, attribute="sex", n_bootstrap=20)
    ref = _independent_rates(emb, ids, sex, 1e-2, thr=r.threshold)
    bg = r.by_group
    assert list(bg.index) == ["female", "male"]
    fnmr = {g: ref[g][1] for g in ("female", "male")}
    assert bg["fnmr"].to_dict() == pytest.approx(fnmr, abs=1e-12)
    assert r.difference()["fnmr"] == pytest.approx(abs(fnmr["female"] - fnmr["male"]), abs=1e-12)
    worst = max(fnmr, key=fnmr.get)
    assert r.worst()["fnmr"] == worst
    assert r.ratio()["fnmr"] == pytest.approx(fnmr[worst] / min(fnmr.values()))
