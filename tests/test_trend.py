"""Trend across checkpoints: known-answer synthetic checkpoints, identity, the report files, the demo."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from faceaudit.errors import FaceAuditError, InputError
from faceaudit.report.trend_render import load_trend, render_trend_html
from faceaudit.trend import TrendConfig, model_labels, run_trend
from helpers import fast_critic, gaussian_mi, save_features, write_manifest

#: The checkpoints are .feats files of known features, read by the test backend (helpers.FeatureFileBackend).
pytestmark = pytest.mark.usefixtures("feature_backend")

N = 1500
# Correlation of the followed layer with age per checkpoint: rises, then falls.
RHO_FINAL = (0.3, 0.8, 0.6, 0.2)
# A middle layer whose correlation keeps rising.
RHO_MID = (0.2, 0.5, 0.7, 0.9)
FAST = fast_critic(max_steps=600, min_steps=100)


def _layer(rng: np.random.Generator, y: np.ndarray, rho: float, dim: int = 4) -> np.ndarray:
    x = rng.normal(size=(len(y), dim))
    x[:, 0] = rho * y + math.sqrt(1 - rho**2) * rng.normal(size=len(y))
    return x.astype(np.float32)


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img_{i:05d}.jpg"
        p.write_bytes(b"")  # precomputed features: the image itself is never decoded
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory, feature_backend: str) -> dict:
    """Four 'checkpoints' (precomputed features) whose age information is known in closed form."""
    root = tmp_path_factory.mktemp("trend_synth")
    rng = np.random.default_rng(123)
    paths = _images(root / "images", N)
    age = rng.normal(size=N)
    manifest = write_manifest(root / "faces.csv", [{"path": str(p), "age": f"{a:.6f}"} for p, a in zip(paths, age)])
    ckpts = []
    for k, (rf, rm) in enumerate(zip(RHO_FINAL, RHO_MID)):
        ckpts.append(save_features(root / f"step_{k * 1000:05d}.feats", paths, mid=_layer(rng, age, rm),
                                   embedding=_layer(rng, age, rf)))
    return {"root": root, "manifest": manifest, "checkpoints": ckpts}


@pytest.fixture(scope="module")
def synthetic_trend(synthetic: dict, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("trend_out")
    config = TrendConfig(
        checkpoints=synthetic["checkpoints"], manifest=synthetic["manifest"], attrs="age:continuous",
        layers="mid,embedding", estimator="entropy", seeds=2, device="cpu", out_dir=out, seed=0, progress=False,
        estimator_options=FAST,
    )
    return run_trend(config)


def test_trend_recovers_known_values_and_order(synthetic_trend) -> None:
    report = synthetic_trend.report
    assert [c["label"] for c in report["checkpoints"]] == ["step_00000", "step_01000", "step_02000", "step_03000"]
    assert report["layer_matching"] == "name"
    assert report["focus_layer"] == "embedding"
    (t,) = report["trend"]
    truth = [gaussian_mi(r) for r in RHO_FINAL]
    got = t["mi"]
    # order of the checkpoints by information is recovered
    assert list(np.argsort(got)) == list(np.argsort(truth))
    for g, want in zip(got, truth):
        assert abs(g - want) < 0.08 + 0.15 * want, (got, truth)
    assert t["peak"] == "step_01000"
    assert t["shape"] == "rise-then-fall"
    assert t["rise"]["significant"] and t["fall"]["significant"]
    # the middle layer keeps rising, read from the layers x checkpoints estimates
    mid = {e["checkpoint"]: e["mi"] for e in report["expressivity"] if e["layer"] == "mid"}
    mids = [mid[c["label"]] for c in report["checkpoints"]]
    assert mids == sorted(mids), mids
    assert abs(mids[-1] - gaussian_mi(RHO_MID[-1])) < 0.08 + 0.15 * gaussian_mi(RHO_MID[-1])


def test_trend_files_are_self_contained_and_deterministic(synthetic_trend) -> None:
    html = synthetic_trend.html_path.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "Content-Security-Policy" in html
    assert "http://" not in html and "https://" not in html
    data = load_trend(synthetic_trend.json_path)
    assert data["schema_version"] == "1.0" and data["kind"] == "trend"
    assert render_trend_html(data) == html  # the HTML is a pure function of the JSON
    assert html.count("<svg") >= 3  # overview, one panel, the layers x checkpoints heatmap
    assert synthetic_trend.findings and "age" in synthetic_trend.findings[0]


def test_trend_escapes_labels(synthetic: dict, synthetic_trend) -> None:
    data = json.loads(synthetic_trend.json_path.read_text(encoding="utf-8"))
    evil = "<script>alert(1)</script>"
    old = data["checkpoints"][1]["label"]
    data["checkpoints"][1]["label"] = evil
    for e in data["expressivity"]:
        if e["checkpoint"] == old:
            e["checkpoint"] = evil
    for t in data["trend"]:
        t["peak"] = evil
    html = render_trend_html(data)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html


def test_trend_identity_with_few_images_warns(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n_id, per = 60, 4
    ids = np.repeat(np.arange(n_id), per)
    centres = rng.normal(size=(n_id, 6))
    paths = _images(tmp_path / "images", len(ids))
    rows = [{"path": str(p), "identity": f"person_{i}", "sex": ["f", "m"][i % 2]} for p, i in zip(paths, ids)]
    rows.append({"path": str(_images(tmp_path / "extra", 1)[0]), "identity": "loner", "sex": "f"})
    manifest = write_manifest(tmp_path / "faces.csv", rows)
    all_paths = [r["path"] for r in rows]
    ckpts = []
    for k, scale in enumerate((0.0, 1.0, 3.0)):
        emb = scale * np.vstack([centres[ids], centres[:1]]) + rng.normal(size=(len(rows), 6))
        ckpts.append(save_features(tmp_path / f"ck{k}.feats", all_paths, embedding=emb.astype(np.float32)))
    out = run_trend(TrendConfig(
        checkpoints=ckpts, labels=["0", "10k", "20k"], manifest=manifest, attrs="identity,sex", layers="final",
        estimator="entropy", seeds=1, device="cpu", out_dir=tmp_path / "out", progress=False, estimator_options=FAST,
    ))
    report = out.report
    assert report["settings"]["identity_estimator"] == "entropy"
    ident = {e["checkpoint"]: e for e in report["expressivity"] if e["attribute"] == "identity"}
    assert ident["0"]["kind"] == "categorical"
    assert ident["0"]["mi"] < ident["10k"]["mi"] < ident["20k"]["mi"]
    assert report["data"]["identity"]["n_identities"] == n_id
    warnings = " ".join(report["warnings"])
    assert "median of 4 images per identity" in warnings
    assert "1 identities with a single image" in warnings


def test_labels_and_errors(tmp_path: Path, synthetic: dict) -> None:
    assert model_labels([Path("a/model.onnx"), Path("b/model.onnx")], None) == ["a/model", "b/model"]
    assert model_labels([Path("x.onnx"), Path("y.onnx")], "0,25k") == ["0", "25k"]
    with pytest.raises(InputError, match="2 label"):
        model_labels([Path("x.onnx")], "0,25k")
    with pytest.raises(InputError, match="repeat"):
        model_labels([Path("x.onnx"), Path("y.onnx")], "a,a")
    with pytest.raises(FaceAuditError, match="at least two checkpoints"):
        run_trend(TrendConfig(checkpoints=synthetic["checkpoints"][:1], manifest=synthetic["manifest"], attrs="age",
                              out_dir=tmp_path))
    with pytest.raises(FaceAuditError, match="no layer"):
        run_trend(TrendConfig(checkpoints=synthetic["checkpoints"][:2], manifest=synthetic["manifest"], attrs="age",
                              layer="nope", out_dir=tmp_path))
    with pytest.raises(InputError, match="exactly one"):
        run_trend(TrendConfig(checkpoints=synthetic["checkpoints"][:2], manifest=synthetic["manifest"], attrs="age",
                              layer="*", out_dir=tmp_path))
    from faceaudit.report.schema import ReportError

    bad = tmp_path / "trend.json"
    bad.write_text(json.dumps({"schema_version": "1.0", "kind": "audit"}), encoding="utf-8")
    with pytest.raises(ReportError, match="kind"):
        load_trend(bad)


@pytest.mark.slow
def test_demo_trend_end_to_end(tmp_path: Path) -> None:
    from faceaudit.demo import prepare_demo
    from faceaudit.trend import run_demo_trend

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny CNN: intra-op threads only spin on a busy 2-core machine
    try:
        assets = prepare_demo(tmp_path / "assets", seed=0, quick=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    out = run_demo_trend(tmp_path / "trend", assets, seed=0, progress=False)
    report = out.report
    assert report["demo"] is True
    assert [c["label"] for c in report["checkpoints"]] == [lab for lab, _ in assets.checkpoints]
    assert {t["attribute"] for t in report["trend"]} == {"age", "sex", "yaw", "identity"}
    assert len(report["expressivity"]) == 4 * len(assets.checkpoints)
    # training for identity adds identity information: the trained network holds more than its random init
    identity = next(t for t in report["trend"] if t["attribute"] == "identity")
    assert identity["mi"][-1] > identity["mi"][0]
    html = out.html_path.read_text(encoding="utf-8")
    assert "DEMO" in html and "<script" not in html.lower()
    for t in report["trend"]:
        assert len(t["mi"]) == len(assets.checkpoints)
        assert t["shape"] in ("rise-then-fall", "rising", "falling", "flat")
    assert report["timings"]["total_s"] > 0  # recorded; its size is measured in benchmarks, never asserted
