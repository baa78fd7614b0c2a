"""Demo assets: the face phantom, the small face CNN trained on it, its ONNX export."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceaudit.demo import DemoAssets, prepare_demo
from faceaudit.demo.phantom import MANIFEST_COLUMNS, SKIN_TONES, generate_phantom, render_phantom
from faceaudit.errors import InputError

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _ridge_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, lam: float) -> np.ndarray:
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    a, b = (x_tr - mu) / sd, (x_te - mu) / sd
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y_tr - y_tr.mean()))
    return b @ w + y_tr.mean()


# --------------------------------------------------------------------------- phantom


def test_phantom_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = render_phantom(n_identities=3, images_per_identity=2, seed=5, progress_enabled=False)
    b = render_phantom(n_identities=3, images_per_identity=2, seed=5, progress_enabled=False)
    c = render_phantom(n_identities=3, images_per_identity=2, seed=6, progress_enabled=False)
    for fa, fb in zip(a, b):
        assert np.array_equal(fa.image, fb.image)
        assert fa.to_dict() == fb.to_dict()
    assert not all(np.array_equal(fa.image, fc.image) for fa, fc in zip(a, c))
    # identity i looks the same whatever the number of identities asked for
    d = render_phantom(n_identities=1, images_per_identity=2, seed=5, progress_enabled=False)
    assert np.array_equal(d[1].image, a[1].image)

    m1 = generate_phantom(tmp_path / "one", n_identities=3, images_per_identity=2, seed=5, progress_enabled=False)
    m2 = generate_phantom(tmp_path / "two", n_identities=3, images_per_identity=2, seed=5, progress_enabled=False)
    assert m1.read_bytes() == m2.read_bytes()
    for row in _read_manifest(m1):
        assert (m1.parent / row["path"]).read_bytes() == (m2.parent / row["path"]).read_bytes()


def test_manifest_columns_and_value_ranges(tmp_path: Path) -> None:
    manifest = generate_phantom(tmp_path, n_identities=12, images_per_identity=3, seed=1, progress_enabled=False)
    with open(manifest, encoding="utf-8") as fh:
        assert tuple(fh.readline().strip().split(",")) == MANIFEST_COLUMNS
    rows = _read_manifest(manifest)
    assert len(rows) == 36
    ids = [r["identity"] for r in rows]
    assert all(ids.count(i) == 3 for i in set(ids)) and len(set(ids)) == 12
    for r in rows:
        img = Image.open(manifest.parent / r["path"])
        assert img.size == (112, 112) and img.mode == "RGB"
        assert 1.0 <= float(r["age"]) <= 90.0
        assert r["sex"] in ("female", "male")
        assert r["skin_tone"] in SKIN_TONES
        assert -50.0 <= float(r["yaw"]) <= 50.0 and -12.0 <= float(r["roll"]) <= 12.0
        lm = np.array([[float(r[f"lm_x{i}"]), float(r[f"lm_y{i}"])] for i in range(1, 6)])
        assert np.all((lm > 0) & (lm < 111))
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # image-left before image-right
        assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()  # eyes above nose above mouth
    # per-identity attributes are persistent (sex, skin tone), age varies only a little
    by_id: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_id.setdefault(r["identity"], []).append(r)
    for group in by_id.values():
        assert len({r["sex"] for r in group}) == 1 and len({r["skin_tone"] for r in group}) == 1
        ages = [float(r["age"]) for r in group]
        assert max(ages) - min(ages) < 12.0


def test_landmarks_lie_on_the_drawn_features_and_yaw_has_the_documented_sign() -> None:
    faces = render_phantom(n_identities=60, images_per_identity=3, seed=3, progress_enabled=False)
    ratios = []
    for f in faces:
        lum = f.image.astype(np.float32) @ LUMA
        face_level = np.median(lum[40:80, 30:80])
        for x, y in f.landmarks[:2]:  # eyes: the drawn pupil is (near) black
            xi, yi = int(round(x)), int(round(y))
            ratios.append(lum[yi - 1:yi + 2, xi - 1:xi + 2].min() / face_level)
    ratios = np.array(ratios)
    assert np.median(ratios) < 0.25 and np.quantile(ratios, 0.95) < 0.4
    # yaw > 0 = face turned toward the image's left: the nose tip lies left of the eye midpoint
    lm = np.stack([f.landmarks for f in faces])
    yaw = np.array([f.yaw for f in faces])
    offset = (lm[:, 0, 0] + lm[:, 1, 0]) / 2 - lm[:, 2, 0]
    assert np.corrcoef(yaw, offset)[0, 1] > 0.9
    assert np.all(np.sign(offset[np.abs(yaw) > 10]) == np.sign(yaw[np.abs(yaw) > 10]))


def test_age_and_sex_are_visible_but_not_trivial() -> None:
    n_ids, per = 200, 2
    faces = render_phantom(n_identities=n_ids, images_per_identity=per, seed=11, progress_enabled=False)
    x = np.stack([np.asarray(Image.fromarray(f.image).resize((16, 16), Image.Resampling.BOX))
                  for f in faces]).reshape(len(faces), -1) / 255.0
    ids = np.repeat(np.arange(n_ids), per)
    tr, te = ids < 140, ids >= 140  # held-out identities
    sex = np.array([1.0 if f.sex == "male" else -1.0 for f in faces])
    age = np.array([f.age for f in faces])
    acc = float((np.sign(_ridge_predict(x[tr], sex[tr], x[te], 100.0)) == sex[te]).mean())
    chance = max((sex[te] > 0).mean(), (sex[te] < 0).mean())
    pred = _ridge_predict(x[tr], age[tr], x[te], 100.0)
    r2 = 1 - ((pred - age[te]) ** 2).sum() / ((age[te] - age[te].mean()) ** 2).sum()
    assert acc > chance + 0.08, (acc, chance)
    assert acc < 0.97, acc  # hair length etc. overlap between the sexes
    assert 0.3 < r2 < 0.95, r2


def test_phantom_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="n_identities"):
        render_phantom(n_identities=0)
    with pytest.raises(InputError, match="hard_group"):
        render_phantom(n_identities=1, hard_group="purple")
    with pytest.raises(InputError, match="image_format"):
        generate_phantom(tmp_path, n_identities=1, image_format="gif")


# --------------------------------------------------------------------------- model and export


def test_onnx_export_matches_torch_and_carries_the_input_spec(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    import torch

    from faceaudit.demo.model import embed, export_onnx, train_face_model

    faces = render_phantom(n_identities=6, images_per_identity=3, seed=2, progress_enabled=False)
    x = np.stack([f.image for f in faces])
    y = np.repeat(np.arange(6), 3)
    net, result = train_face_model(x, y, epochs=1, seed=0, progress_enabled=False)
    net2, _ = train_face_model(x, y, epochs=1, seed=0, progress_enabled=False)
    for (k, a), (_, b) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert torch.equal(a, b), k  # deterministic on CPU for a seed
    assert result.epochs == 1 and len(result.history) == 1

    path = export_onnx(net, tmp_path / "m.onnx", label="epoch_1")
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    spec = json.loads(meta["faceaudit.input_spec"])
    assert spec == {"height": 112, "width": 112, "layout": "NCHW", "channel_order": "RGB",
                    "mean": 127.5, "std": 127.5}
    assert meta["faceaudit.checkpoint"] == "epoch_1"
    assert any(o.version == 17 for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    names = [n.name for n in proto.graph.node]
    for part in ("stem", "stage1", "stage2", "stage3", "pool", "embedding"):
        assert any(f"/{part}/" in n for n in names), part

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    assert inp.name == "input" and out.name == "embedding"
    assert list(inp.shape[1:]) == [3, 112, 112] and not isinstance(inp.shape[0], int)
    for batch in (1, 5):
        xin = ((x[:batch].transpose(0, 3, 1, 2).astype(np.float32) - spec["mean"]) / spec["std"])
        got = sess.run(["embedding"], {"input": xin})[0]
        assert got.shape == (batch, 128)
        np.testing.assert_allclose(got, embed(net, x[:batch]), atol=1e-4, rtol=1e-4)


def test_training_rejects_bad_input() -> None:
    from faceaudit.demo.model import train_face_model

    with pytest.raises(InputError, match="uint8"):
        train_face_model(np.zeros((4, 112, 112, 3), np.float32), np.zeros(4, int))
    with pytest.raises(InputError, match="labels"):
        train_face_model(np.zeros((4, 112, 112, 3), np.uint8), np.zeros(3, int))


@pytest.fixture(scope="module")
def quick_assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    return prepare_demo(tmp_path_factory.mktemp("demo"), seed=0, quick=True, progress=False)


def test_prepare_demo_makes_complete_assets(quick_assets: DemoAssets) -> None:
    a = quick_assets
    assert a.manifest.is_file() and a.model.is_file()
    rows = _read_manifest(a.manifest)
    assert a.n_images == len(rows) == 48 * 4 and a.n_identities == 48
    labels = [label for label, _ in a.checkpoints]
    assert labels == ["epoch_0", "epoch_2", "epoch_4"]
    assert a.checkpoints[-1][1] == a.model and all(p.is_file() for _, p in a.checkpoints)
    assert a.train_seconds > 0 and {"generate", "train", "export"} <= set(a.timings)
    assert "skin_tone=dark" in a.notes
    d = a.to_dict()
    json.dumps(d)
    assert d["n_images"] == a.n_images


def test_trained_model_separates_unseen_identities(quick_assets: DemoAssets) -> None:
    import onnxruntime as ort

    rows = _read_manifest(quick_assets.manifest)
    x = np.stack([np.asarray(Image.open(quick_assets.manifest.parent / r["path"])) for r in rows])
    ids = np.array([r["identity"] for r in rows])
    emb = {}
    for label, path in (quick_assets.checkpoints[0], quick_assets.checkpoints[-1]):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        e = sess.run(None, {"input": (x.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 127.5})[0]
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        iu = np.triu_indices(len(e), 1)
        s = (e @ e.T)[iu]
        same = (ids[:, None] == ids[None, :])[iu]
        emb[label] = (s[same].mean(), s[~same].mean())
    gen, imp = emb["epoch_4"]
    assert gen > imp + 0.15, (gen, imp)  # none of these identities was seen in training
    gen0, imp0 = emb["epoch_0"]
    assert (gen - imp) > (gen0 - imp0)  # training helped
    assert quick_assets.verification_accuracy > 0.7


def test_prepare_demo_reuses_complete_assets(quick_assets: DemoAssets) -> None:
    out = quick_assets.manifest.parent.parent
    t = time.perf_counter()
    again = prepare_demo(out, seed=0, quick=True, progress=False)
    assert time.perf_counter() - t < 2.0
    assert again.reused and again.model == quick_assets.model and again.checkpoints == quick_assets.checkpoints
    assert again.train_accuracy == quick_assets.train_accuracy


@pytest.mark.realdata
def test_demo_model_loads_like_the_real_mobilefacenet(quick_assets: DemoAssets, mobilefacenet: Path) -> None:
    import onnxruntime as ort

    real = ort.InferenceSession(str(mobilefacenet), providers=["CPUExecutionProvider"])
    demo = ort.InferenceSession(str(quick_assets.model), providers=["CPUExecutionProvider"])
    ri, di = real.get_inputs()[0], demo.get_inputs()[0]
    assert ri.name == di.name == "input"
    assert list(ri.shape[1:]) == list(di.shape[1:]) == [3, 112, 112]
    rows = _read_manifest(quick_assets.manifest)
    x = np.stack([np.asarray(Image.open(quick_assets.manifest.parent / r["path"])) for r in rows[:4]])
    xin = (x.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 127.5
    for sess in (real, demo):
        out = sess.run(None, {"input": xin})[0]
        assert out.shape[0] == 4 and out.ndim == 2 and np.isfinite(out).all()
