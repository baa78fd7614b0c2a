"""Real data: expressivity of MobileFaceNet embeddings for sex and age on the UTKFace subset."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from faceaudit.expressivity import estimate_many

N_IMAGES = 1500

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="session")
def utk_embeddings(shared_data: Path, mobilefacenet: Path):
    """MobileFaceNet embeddings (128-d) of the first N_IMAGES UTKFace images, with age and sex."""
    import onnxruntime as ort
    from PIL import Image

    root = shared_data / "utkface"
    with open(root / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:N_IMAGES]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(mobilefacenet), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    embs = []
    for s in range(0, len(rows), 64):
        batch = np.stack(
            [np.asarray(Image.open(root / r["path"]).convert("RGB"), dtype=np.float32) for r in rows[s : s + 64]]
        )
        batch = ((batch - 127.5) / 127.5).transpose(0, 3, 1, 2).copy()
        embs.append(sess.run(None, {name: batch})[0])
    age = np.array([float(r["age"]) if r["age"] else np.nan for r in rows])
    sex = np.array([r["sex"] or None for r in rows], dtype=object)
    return np.concatenate(embs).astype(np.float32), age, sex


def test_mobilefacenet_sex_and_age_above_null(utk_embeddings, record_property):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        emb, age, sex = utk_embeddings
        res = estimate_many(
            {"embedding": emb}, {"sex": (sex, "categorical"), "age": (age, "continuous")},
            seeds=3, progress=False, seed=0, workers=2,  # the sex and age stacks train at once
        )
    finally:
        torch.set_num_threads(old)
    for attr in ("sex", "age"):
        r = res[("embedding", attr)]
        record_property(f"{attr}_mi", r.mi)
        record_property(f"{attr}_ci", (r.ci_low, r.ci_high))
        record_property(f"{attr}_null", r.null_mi)
        print(f"{attr}: MI {r.mi:.3f} nats [{r.ci_low:.3f}, {r.ci_high:.3f}], null {r.null_mi:.3f}, "
              f"normalized {r.normalized:.3f}, n {r.n}, warnings {list(r.warnings)}")
        assert r.mi > r.null_mi + 0.15, (attr, r.mi, r.null_mi)
        assert r.ci_low > max(r.null_mi, 0.0) + 0.05, (attr, r.ci_low, r.null_mi)
    assert res[("embedding", "sex")].entropy_y == pytest.approx(np.log(2), abs=0.05)
