"""Real data: expressivity of MobileFaceNet embeddings on the bundle's UTKFace and LFW sets: clearly above
the null, never below the cross-fitted linear probe's floor, with all rows and with 600."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from faceaudit.expressivity import estimate_many

N_IMAGES = 1500
SETS = {"utkface": ("age", "sex", "race", "yaw"), "lfw": ("sex", "yaw")}

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="session")
def bundle_embeddings(shared_data: Path, embed_bundle):
    """MobileFaceNet embeddings (128-d) of every UTKFace and LFW image of the bundle, with their attributes."""
    out = {}
    for name, attrs in SETS.items():
        with open(shared_data / name / "manifest.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        emb = embed_bundle([shared_data / name / r["path"] for r in rows])
        values = {}
        for a in attrs:
            if a in ("age", "yaw"):
                values[a] = (np.array([float(r[a]) if r[a] else np.nan for r in rows]), "continuous")
            else:
                values[a] = (np.array([r[a] or None for r in rows], dtype=object), "categorical")
        out[name] = (emb, values)
    return out


@pytest.fixture(scope="session")
def utk_embeddings(bundle_embeddings):
    """The first N_IMAGES UTKFace embeddings, with age and sex."""
    emb, values = bundle_embeddings["utkface"]
    return emb[:N_IMAGES], values["age"][0][:N_IMAGES], values["sex"][0][:N_IMAGES]


@pytest.fixture(scope="session")
def bundle_estimates(bundle_embeddings):
    """Every attribute of each set estimated with all rows and with 600 (seeded subsample), computed once."""
    cache: dict = {}

    def get(name: str, n_rows: int | None):
        if (name, n_rows) not in cache:
            emb, values = bundle_embeddings[name]
            rows = np.arange(len(emb))
            if n_rows is not None:
                rows = np.sort(np.random.default_rng(1).permutation(len(emb))[:n_rows])
            old = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                cache[(name, n_rows)] = estimate_many(
                    {"embedding": emb[rows]}, {a: (v[rows], k) for a, (v, k) in values.items()},
                    progress=False, seed=0, workers=2,
                )
            finally:
                torch.set_num_threads(old)
        return cache[(name, n_rows)]

    return get


CASES = [(name, a) for name, attrs in SETS.items() for a in attrs]


@pytest.mark.parametrize("n_rows", [None, 600])
@pytest.mark.parametrize("name, attr", CASES)
def test_the_estimate_reaches_the_probe_floor(bundle_estimates, name, attr, n_rows):
    # the estimate may not lose to a plain linear probe, and the permutation null stays near 0
    r = bundle_estimates(name, n_rows)[("embedding", attr)]
    detail = (f"{name} n={r.n} {attr}: MI {r.mi:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}], floor {r.probe_mi:.3f} "
              f"+- {r.probe_se:.3f}, null {r.null_mi:.3f}")
    assert r.ci_high >= r.probe_mi, detail
    assert abs(r.null_mi) <= 0.05, detail


@pytest.mark.parametrize("name, attr", CASES)
def test_six_hundred_faces_give_a_usable_interval(bundle_estimates, name, attr):
    r = bundle_estimates(name, 600)[("embedding", attr)]
    assert (r.ci_high - r.ci_low) / 2 <= 0.12, (r.ci_low, r.ci_high)


def test_mobilefacenet_sex_and_age_above_null(utk_embeddings, record_property):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        emb, age, sex = utk_embeddings
        res = estimate_many(
            {"embedding": emb}, {"sex": (sex, "categorical"), "age": (age, "continuous")},
            progress=False, seed=0, workers=2,  # the sex and age stacks train at once
        )
    finally:
        torch.set_num_threads(old)
    for attr in ("sex", "age"):
        r = res[("embedding", attr)]
        record_property(f"{attr}_mi", r.mi)
        record_property(f"{attr}_ci", (r.ci_low, r.ci_high))
        record_property(f"{attr}_null", r.null_mi)
        assert r.mi > r.null_mi + 0.15, (attr, r.mi, r.null_mi)
        assert r.ci_low > max(r.null_mi, 0.0) + 0.05, (attr, r.ci_low, r.null_mi)
    assert res[("embedding", "sex")].entropy_y == pytest.approx(np.log(2), abs=0.05)
