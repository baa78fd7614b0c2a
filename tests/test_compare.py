"""Model comparison: known-answer synthetic models (different architectures), fairness differences, real data."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from faceaudit.compare import CompareConfig, run_compare, significant_changes
from faceaudit.errors import FaceAuditError
from faceaudit.report.compare_render import load_compare, render_compare_html
from helpers import fast_critic, gaussian_mi, save_features, write_manifest

FAST = fast_critic(max_steps=300, min_steps=50)


@pytest.fixture(scope="module")
def synthetic_compare(tmp_path_factory: pytest.TempPathFactory, feature_backend: str):
    """Two 'models' with different layer lists; B encodes age less at its final layer and separates group b worse.

    The models are .feats files of known features, read by the test backend (helpers.FeatureFileBackend).
    """
    root = tmp_path_factory.mktemp("compare_synth")
    rng = np.random.default_rng(11)
    n_id, per = 200, 5
    ids = np.repeat(np.arange(n_id), per)
    group = np.where(np.arange(n_id) % 2 == 0, "a", "b")[ids]
    age = rng.normal(size=len(ids))
    centres = rng.normal(size=(n_id, 16))
    (root / "images").mkdir()
    paths = []
    for i in range(len(ids)):
        p = root / "images" / f"{i:05d}.jpg"
        p.write_bytes(b"")
        paths.append(str(p))
    manifest = write_manifest(root / "faces.csv", [
        {"path": p, "identity": f"id{i}", "group": g, "age": f"{a:.6f}"}
        for p, i, g, a in zip(paths, ids, group, age)
    ])

    def emb(rho: float, scale_b: float) -> np.ndarray:
        scale = np.where(group == "b", scale_b, 1.0)[:, None]
        x = 3.0 * scale * centres[ids] + rng.normal(size=(len(ids), 16))
        x[:, 0] = rho * age + math.sqrt(1 - rho**2) * rng.normal(size=len(ids))
        return x.astype(np.float32)

    def noise_layer(rho: float) -> np.ndarray:
        x = rng.normal(size=(len(ids), 4))
        x[:, 0] = rho * age + math.sqrt(1 - rho**2) * rng.normal(size=len(ids))
        return x.astype(np.float32)

    a = save_features(root / "model_a.feats", paths, early=noise_layer(0.5), embedding=emb(0.8, 1.0))
    b = save_features(root / "model_b.feats", paths, conv1=noise_layer(0.5), conv2=noise_layer(0.5),
                      conv3=noise_layer(0.5), embedding=emb(0.3, 0.35))
    out = run_compare(CompareConfig(
        models=[a, b], labels=["before", "after"], manifest=manifest, attrs="age:continuous,group",
        layers="auto", estimator="entropy", seeds=2, device="cpu", target_fmr=1e-2, fairness_attrs=["group"],
        out_dir=root / "out", progress=False, estimator_options=FAST,
    ))
    return out


def test_compare_matches_layers_by_depth(synthetic_compare) -> None:
    report = synthetic_compare.report
    assert report["layer_matching"] == "depth"
    final = next(l for l in report["layers"] if l["final"])
    assert final["names"] == {"before": "embedding", "after": "embedding"}
    first = min(report["layers"], key=lambda l: l["depth"])
    assert first["names"] == {"before": "early", "after": "conv1"}  # the input of each model
    assert any("relative depth" in w for w in report["warnings"])


def test_compare_expressivity_difference_known_answer(synthetic_compare) -> None:
    report = synthetic_compare.report
    d = next(x for x in report["expressivity_differences"] if x["layer"] == "final" and x["attribute"] == "age")
    want_a, want_b = gaussian_mi(0.8), gaussian_mi(0.3)
    assert abs(d["mi_a"] - want_a) < 0.08 + 0.15 * want_a
    assert abs(d["mi_b"] - want_b) < 0.08 + 0.15 * want_b
    assert d["delta"] < 0 and d["significant"]
    assert d["threshold"] == pytest.approx(1.96 * d["se"])
    # the input layers carry the same information in both models: no significant difference
    same = next(x for x in report["expressivity_differences"] if x["layer"] == "input" and x["attribute"] == "age")
    assert not same["significant"], same


def test_compare_fairness_difference(synthetic_compare) -> None:
    report = synthetic_compare.report
    assert report["fairness"] is not None and {f["model"] for f in report["fairness"]} == {"before", "after"}
    fnmr = next(d for d in report["fairness_differences"]
                if d["metric"] == "fnmr" and d["quantity"] == "disparity")
    # group b's identities are squeezed together in model "after": its error gap between groups grows
    assert fnmr["value_b"] > fnmr["value_a"]
    changes = significant_changes(report)
    assert any(c.get("metric") in ("fmr", "fnmr") for c in changes)
    assert any("fairness" == f.split(":")[0].lower() or "gap" in f for f in synthetic_compare.findings)


def test_compare_html_is_safe_and_deterministic(synthetic_compare) -> None:
    html = synthetic_compare.html_path.read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "Content-Security-Policy" in html
    data = load_compare(synthetic_compare.json_path)
    assert data["kind"] == "compare" and data["schema_version"] == "1.0"
    assert render_compare_html(data) == html
    evil = json.loads(json.dumps(data))
    evil["models"][1]["label"] = "<script>x</script>"
    for e in evil["expressivity"]:
        if e["model"] == "after":
            e["model"] = "<script>x</script>"
    for key in ("expressivity_differences", "fairness_differences"):
        for d in evil[key]:
            d["model_b"] = "<script>x</script>"
    for f in evil["fairness"]:
        if f["model"] == "after":
            f["model"] = "<script>x</script>"
    out = render_compare_html(evil)
    assert "<script" not in out.lower() and "&lt;script&gt;" in out


def test_compare_needs_two_models(tmp_path: Path) -> None:
    with pytest.raises(FaceAuditError, match="at least two models"):
        run_compare(CompareConfig(models=[tmp_path / "a.onnx"], manifest=tmp_path / "m.csv", attrs="sex",
                                  out_dir=tmp_path / "out"))


@pytest.mark.realdata
def test_compare_real_mobilefacenet_vs_rerandomised_final_layer(mobilefacenet: Path, shared_data: Path,
                                                                tmp_path: Path) -> None:
    """MobileFaceNet against itself with the final 1x1 convolution re-randomised, on 400 LFW images."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(mobilefacenet))
    conv = next(n for n in reversed(model.graph.node) if n.op_type in ("Conv", "Gemm", "MatMul"))
    inits = {i.name: i for i in model.graph.initializer}
    rng = np.random.default_rng(0)
    for name in conv.input[1:]:
        if name in inits:
            w = numpy_helper.to_array(inits[name])
            inits[name].CopyFrom(numpy_helper.from_array((rng.normal(size=w.shape) * w.std()).astype(w.dtype), name))
    rerand = tmp_path / "mobilefacenet_rerandomised.onnx"
    onnx.save(model, str(rerand))

    with open(shared_data / "lfw" / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_id: dict[str, list[dict]] = {}
    for r in rows:
        by_id.setdefault(r["identity"], []).append(r)
    names = sorted(n for n, v in by_id.items() if len(v) >= 3)
    np.random.default_rng(1).shuffle(names)
    chosen: list[dict] = []
    for n in names:
        chosen += by_id[n][:4]
        if len(chosen) >= 400:
            break
    manifest = write_manifest(tmp_path / "lfw_subset.csv", [
        {"path": str(shared_data / "lfw" / r["path"]), "identity": r["identity"], "sex": r["sex"]} for r in chosen
    ])
    out = run_compare(CompareConfig(
        models=[mobilefacenet, rerand], labels=["mobilefacenet", "rerandomised"], manifest=manifest, attrs="sex",
        layers="final", estimator="entropy", seeds=2, quick=True, target_fmr=1e-2, out_dir=tmp_path / "out",
        progress=False,
    ))
    report = out.report
    assert report["layer_matching"] == "name"
    (d,) = report["expressivity_differences"]
    assert d["attribute"] == "sex" and d["layer"] == "embeddings"
    assert d["threshold"] == pytest.approx(1.96 * d["se"])
    # a random final projection ruins verification: FNMR at the same FMR goes up in both sex groups, clearly
    rates = [x for x in report["fairness_differences"] if x["metric"] == "fnmr" and x["quantity"] == "group rate"]
    assert {x["group"] for x in rates} == {"female", "male"}
    assert all(x["value_b"] > x["value_a"] for x in rates), rates
    assert any(x["significant"] for x in rates), rates
    assert "<script" not in out.html_path.read_text(encoding="utf-8").lower()


def test_fairness_difference_of_equal_rates_names_no_worst_group() -> None:
    from faceaudit.compare import fairness_differences

    def entry(model: str, fmr_f: float) -> dict:
        return {"model": model, "attribute": "sex", "groups": [
            {"group": "female", "fmr": fmr_f, "fmr_ci": [0.0, 0.01], "fnmr": 0.1, "fnmr_ci": [0.05, 0.15]},
            {"group": "male", "fmr": 0.0, "fmr_ci": [0.0, 0.01], "fnmr": 0.2, "fnmr_ci": [0.15, 0.25]}]}

    report = {"settings": {}, "models": [{"label": "before"}, {"label": "after"}],
              "fairness": [entry("before", 0.0), entry("after", 0.004)]}
    fmr = next(d for d in fairness_differences(report) if d["metric"] == "fmr" and d["quantity"] == "disparity")
    # no false match in either group before: a gap of 0, and no group is worse than itself
    assert fmr["value_a"] == 0.0 and fmr["worst_a"] is None and fmr["best_a"] is None
    assert (fmr["worst_b"], fmr["best_b"]) == ("female", "male")
