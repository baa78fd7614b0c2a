"""The input spec: validation, where it comes from (flag > sidecar > metadata > default), and noticing a wrong one.

The wrong-spec tests use a small ONNX network built here whose embedding is a
pooled pixel map when the centre of the face is red-dominant (true of every
phantom face fed in RGB) and a pixel hash otherwise, so feeding it the wrong
channel order destroys its identity separation. Its BGR twin is the same graph
with a channel swap prepended.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from PIL import Image

from faceaudit.backends import InputSpec, open_model
from faceaudit.backends.base import MAX_INPUT_SIDE
from faceaudit.backends.spec import embed_onnx, read_sidecar, sidecar_path, spec_report, write_sidecar
from faceaudit.cli import main
from faceaudit.data.preprocess import PreprocessSpec
from faceaudit.errors import FaceAuditError, ModelError, OutputError
from faceaudit.features import extract_features
from faceaudit.spec_check import check_input_spec, spec_variants
from faceaudit.trend import open_models

# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("value", ["bgr", "BGR", " Bgr "])
def test_lower_case_bgr_means_bgr(value: str) -> None:
    spec = InputSpec(channel_order=value)
    assert spec.channel_order == "BGR"
    pixels = np.zeros((2, 2, 3), np.uint8)
    pixels[..., 0] = 255  # pure red
    x = PreprocessSpec.from_input_spec(spec).to_tensor(pixels)
    assert x[2].max() == 1.0 and x[0].max() == -1.0  # red lands in the last channel, as BGR wants


@pytest.mark.parametrize("key,value,allowed", [
    ("channel_order", "L", "RGB or BGR"), ("channel_order", "GRAY", "RGB or BGR"), ("channel_order", "GRB", "RGB or BGR"),
    ("layout", "NC", "NCHW or NHWC"), ("channel_order", None, "RGB or BGR"),
])
def test_unknown_order_or_layout_is_refused_naming_the_allowed_values(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ModelError, match=allowed):
        InputSpec(**{key: value})
    with pytest.raises(ModelError, match=allowed):
        InputSpec().with_overrides(source="here", **{key: value} if value is not None else {key: 3})


def test_layout_is_case_insensitive() -> None:
    assert InputSpec(layout="nhwc").layout == "NHWC"


@pytest.mark.parametrize("std", [-1, 0, (127.5, -1, 127.5), float("nan"), float("inf")])
def test_std_must_be_finite_and_positive(std: object) -> None:
    with pytest.raises(ModelError, match="std"):
        InputSpec(std=std)  # type: ignore[arg-type]


@pytest.mark.parametrize("mean", [float("nan"), (1, 2), "abc", True])
def test_mean_must_be_one_or_three_finite_numbers(mean: object) -> None:
    with pytest.raises(ModelError, match="mean"):
        InputSpec(mean=mean)  # type: ignore[arg-type]


@pytest.mark.parametrize("side", [0, -5, 112.5, True, "x", MAX_INPUT_SIDE + 1, 100_000])
def test_sizes_are_positive_whole_numbers_with_a_bound(side: object) -> None:
    with pytest.raises(ModelError, match="height"):
        InputSpec(height=side)  # type: ignore[arg-type]


def test_valid_values_are_normalised() -> None:
    spec = InputSpec(height=np.int64(160), width=160.0, mean=0, std="255")  # type: ignore[arg-type]
    assert (spec.height, spec.width, spec.mean, spec.std) == (160, 160, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))
    assert isinstance(spec.height, int) and isinstance(spec.width, int)


# --------------------------------------------------------------------------- models and data


def _gated_model(path: Path, mu: np.ndarray, *, expects_bgr: bool) -> Path:
    """The network described in the module docstring; `expects_bgr` prepends a channel swap."""
    ints = {"c0": [40, 40], "c1": [72, 72], "ax23": [2, 3], "z": [0], "one": [1], "two": [2], "three": [3],
            "ax1": [1], "shp": [0, 3, -1], "shp4": [0, 3, 112, 112],
            "perm": np.random.default_rng(0).permutation(112 * 112)}
    if expects_bgr:
        ints["swap"] = [2, 1, 0]
    inits = [nh.from_array(np.array(v, np.int64), k) for k, v in ints.items()]
    inits += [nh.from_array(np.array(v, np.float32), k) for k, v in {"k": 50.0, "f": 997.0, "onef": 1.0}.items()]
    inits.append(nh.from_array(mu.astype(np.float32), "mu"))
    x = "input"
    nodes = []
    if expects_bgr:
        nodes.append(oh.make_node("Gather", ["input", "swap"], ["rgb"], axis=1))
        x = "rgb"
    nodes += [
        oh.make_node("Slice", [x, "c0", "c1", "ax23"], ["centre"]),
        oh.make_node("Slice", ["centre", "z", "one", "ax1"], ["r"]),
        oh.make_node("Slice", ["centre", "two", "three", "ax1"], ["b"]),
        oh.make_node("Sub", ["r", "b"], ["rb"]),
        oh.make_node("ReduceMean", ["rb"], ["d"], axes=[1, 2, 3], keepdims=1),
        oh.make_node("Mul", ["d", "k"], ["dk"]),
        oh.make_node("Sigmoid", ["dk"], ["gate"]),  # ~1 when the face centre is red-dominant
        oh.make_node("Reshape", [x, "shp"], ["flat"]),
        oh.make_node("Gather", ["flat", "perm"], ["scrambled"], axis=2),
        oh.make_node("Reshape", ["scrambled", "shp4"], ["scrambled4"]),
        oh.make_node("Mul", ["scrambled4", "f"], ["fast"]),
        oh.make_node("Sin", ["fast"], ["hash"]),
        oh.make_node("Mul", ["gate", x], ["kept"]),
        oh.make_node("Sub", ["onef", "gate"], ["not_gate"]),
        oh.make_node("Mul", ["not_gate", "hash"], ["hashed"]),
        oh.make_node("Add", ["kept", "hashed"], ["mixed"]),
        oh.make_node("AveragePool", ["mixed"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        oh.make_node("Flatten", ["pooled"], ["flat_pooled"], axis=1),
        oh.make_node("Sub", ["flat_pooled", "mu"], ["embedding"]),
    ]
    graph = oh.make_graph(nodes, "gated", [oh.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])],
                          [oh.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 588])], inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class Kit:
    def __init__(self, root: Path) -> None:
        from faceaudit.demo.phantom import generate_phantom

        self.manifest = generate_phantom(root / "phantom", n_identities=40, images_per_identity=4, seed=3,
                                         progress_enabled=False)
        with open(self.manifest, newline="", encoding="utf-8") as fh:
            self.rows = list(csv.DictReader(fh))
        self.paths = [self.manifest.parent / r["path"] for r in self.rows]
        self.identities = np.array([r["identity"] for r in self.rows], dtype=object)
        x = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in self.paths]).astype(np.float32)
        xn = ((x - 127.5) / 127.5).transpose(0, 3, 1, 2)
        mu = xn.reshape(len(xn), 3, 14, 8, 14, 8).mean((3, 5)).reshape(len(xn), -1).mean(0)
        (root / "models").mkdir()
        self.rgb = _gated_model(root / "models" / "rgb.onnx", mu, expects_bgr=False)
        self.bgr = _gated_model(root / "models" / "bgr.onnx", mu, expects_bgr=True)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    return Kit(tmp_path_factory.mktemp("spec"))


def _final(model: object, kit: Kit, cache: Path | None = None) -> np.ndarray:
    fs = extract_features(model, kit.paths, ["embedding"], cache_dir=cache, progress=False)
    return fs.features["embedding"]


def _check(path: Path, kit: Kit, tmp: Path, **kw: object) -> dict:
    m = open_model(path, **kw)
    return check_input_spec(m, kit.paths, kit.identities, _final(m, kit, tmp), cache_dir=tmp, seed=0)


# --------------------------------------------------------------------------- noticing a wrong spec


def test_wrong_channel_order_is_noticed_and_names_the_flag(kit: Kit, tmp_path: Path) -> None:
    check = _check(kit.bgr, kit, tmp_path)
    assert check["status"] == "better_setting"
    assert check["better"]["flags"] == "--channel-order BGR"
    assert check["better"]["auc"] > check["in_use"]["auc"] + 0.1
    assert check["source"] == "default"


@pytest.mark.parametrize("which", ["rgb", "bgr"])
def test_the_check_does_not_fire_on_a_correct_spec(kit: Kit, tmp_path: Path, which: str) -> None:
    kw = {"channel_order": "BGR"} if which == "bgr" else {}
    check = _check(getattr(kit, which), kit, tmp_path, **kw)
    assert check["status"] == "ok" and check["better"] is None
    assert len(check["variants"]) == len(spec_variants(open_model(kit.rgb).input_spec)) == 5
    swapped = check["variants"][0]
    assert swapped["auc_diff_ci"][1] < 0  # the swapped twin is clearly worse, not just "not better"


def test_with_the_flag_the_features_equal_the_original_model_on_rgb(kit: Kit) -> None:
    original = _final(open_model(kit.rgb), kit)
    fed_bgr = _final(open_model(kit.bgr, channel_order="bgr"), kit)
    np.testing.assert_array_equal(fed_bgr, original)
    assert not np.allclose(_final(open_model(kit.bgr), kit), original)


def test_without_identities_the_spec_is_not_checked(kit: Kit) -> None:
    m = open_model(kit.bgr)
    check = check_input_spec(m, kit.paths, None, None)
    assert check["status"] == "not_checked" and "identity" in check["reason"]


def _run(args: list[str]) -> object:
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_run_warns_and_reports_high_then_the_sidecar_fixes_it(kit: Kit, tmp_path: Path) -> None:
    common = ["--data", str(kit.manifest), "--attrs", "sex", "--layers", "final", "--quick"]
    res = _run(["run", str(kit.bgr), *common, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "warning: The input spec in use" in res.output and "--channel-order BGR" in res.output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["model"]["input"]["source"] == "default"
    assert report["input_check"]["status"] == "better_setting"
    html = (tmp_path / "a" / "report.html").read_text()
    assert "--channel-order BGR" in html and "input source" in html

    model = tmp_path / "bgr.onnx"
    model.write_bytes(kit.bgr.read_bytes())
    assert _run(["spec", str(model), "--channel-order", "BGR", "--write"]).exit_code == 0
    assert read_sidecar(model)["channel_order"] == "BGR"
    res = _run(["run", str(model), *common, "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "warning:" not in res.output
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["model"]["input"]["channel_order"] == "BGR"
    assert report["model"]["input"]["source"] == "sidecar"
    assert report["input_check"]["status"] == "ok"
    assert not any(f.startswith("HIGH: The input spec") for f in _findings(report))


def _findings(report: dict) -> list[str]:
    from faceaudit.report import render_findings

    return render_findings(report)


# --------------------------------------------------------------------------- where the spec comes from


def test_precedence_flag_over_sidecar_over_metadata_over_default(kit: Kit, tmp_path: Path) -> None:
    model = embed_onnx(kit.rgb, InputSpec(mean=0, std=255), tmp_path / "meta.onnx")
    m = open_model(model)
    assert m.input_spec.std == (255.0,) * 3 and spec_report(m)["source"] == "metadata"
    write_sidecar(model, InputSpec(mean=0, std=1, channel_order="BGR"))
    m = open_model(model)
    assert (m.input_spec.std, m.input_spec.channel_order) == ((1.0,) * 3, "BGR")
    assert m.input_spec_sources["std"] == "sidecar" and spec_report(m)["source"] == "sidecar"
    m = open_model(model, channel_order="rgb", std=(1, 2, 3), input_size="112x112")
    assert (m.input_spec.channel_order, m.input_spec.std) == ("RGB", (1.0, 2.0, 3.0))
    assert m.input_spec_sources["channel_order"] == "flag" and m.input_spec_sources["mean"] == "sidecar"
    assert open_model(model, sidecar=False).input_spec.channel_order == "RGB"
    assert open_model(kit.rgb).input_spec_sources == dict.fromkeys(InputSpec().to_dict(), "default")


def test_per_model_input_spec_for_compare_and_trend(kit: Kit, tmp_path: Path) -> None:
    spec_file = tmp_path / "b.json"
    spec_file.write_text(json.dumps({"channel_order": "BGR"}))
    from faceaudit.backends.spec import read_spec_file

    models = open_models([kit.rgb, kit.bgr], ["A", "B"], backend=None, backend_options={"std": 128},
                         trust_pickle=False, input_specs={"bgr.onnx": read_spec_file(spec_file)})
    assert [m.input_spec.channel_order for m in models] == ["RGB", "BGR"]
    assert all(m.input_spec.std == (128.0,) * 3 for m in models)
    with pytest.raises(FaceAuditError, match="matches none"):
        open_models([kit.rgb, kit.bgr], ["A", "B"], backend=None, backend_options={}, trust_pickle=False,
                    input_specs={"C": {"channel_order": "BGR"}})


def test_write_never_replaces_a_foreign_file_or_follows_a_link(kit: Kit, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(kit.rgb.read_bytes())
    side = sidecar_path(model)
    side.write_text("my notes, not a spec")
    with pytest.raises(OutputError, match="left alone"):
        write_sidecar(model, InputSpec())
    assert side.read_text() == "my notes, not a spec"
    side.unlink()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, side)
    with pytest.raises(OutputError, match="link"):
        write_sidecar(model, InputSpec())
    assert victim.read_text() == "keep me"


def test_embed_is_explicit_about_where_it_writes(kit: Kit, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(kit.rgb.read_bytes())
    before = model.read_bytes()
    res = _run(["spec", str(model), "--channel-order", "BGR", "--embed"])
    assert res.exit_code == 2 and "--in-place" in res.output
    out = tmp_path / "other.onnx"
    out.write_text("x")
    res = _run(["spec", str(model), "--channel-order", "BGR", "--embed", "--out", str(out)])
    assert res.exit_code == 2 and "does not overwrite" in res.output and out.read_text() == "x"
    assert model.read_bytes() == before
    res = _run(["spec", str(model), "--channel-order", "BGR", "--embed", "--in-place"])
    assert res.exit_code == 0, res.output
    m = open_model(model)
    assert m.input_spec.channel_order == "BGR" and m.input_spec_sources["channel_order"] == "metadata"


def test_spec_command_prints_the_spec_and_its_source(kit: Kit) -> None:
    res = _run(["spec", str(kit.rgb), "--std", "128"])
    assert res.exit_code == 0
    assert "source: flag" in res.output and "128,128,128" in res.output and "(default)" in res.output


# --------------------------------------------------------------------------- bad values: one line, exit 2


@pytest.mark.parametrize("args,words", [
    (["--channel-order", "GRB"], "GRB"),
    (["--std", "-1"], "--std: std must be greater than 0"),
    (["--mean", "1,2"], "--mean: mean must be one finite number or three"),
    (["--input-size", "100000x100000"], "larger than 2048"),
    (["--input-size", "112x"], "--input-size"),
])
def test_bad_flags_exit_2(kit: Kit, tmp_path: Path, args: list[str], words: str) -> None:
    res = _run(["run", str(kit.rgb), "--data", str(kit.manifest), "--attrs", "sex", "--out", str(tmp_path), *args])
    assert res.exit_code == 2 and words in res.output, res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("text,words", [
    ("{not json", "not valid JSON"), ("[1]", "JSON object"), ('{"channel_order": "L"}', "RGB or BGR"),
    ('{"colour": "BGR"}', "unknown input-spec key"), ('{"std": -1}', "greater than 0"),
])
def test_malformed_sidecar_exits_2(kit: Kit, tmp_path: Path, text: str, words: str) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(kit.rgb.read_bytes())
    sidecar_path(model).write_text(text)
    res = _run(["run", str(model), "--data", str(kit.manifest), "--attrs", "sex", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and words in res.output and "m.onnx.faceaudit.json" in res.output, res.output


def test_absurd_size_in_metadata_is_refused_up_front(kit: Kit, tmp_path: Path) -> None:
    proto = onnx.load(str(kit.rgb))
    oh.set_model_props(proto, {"faceaudit.input_spec": json.dumps({"height": 100000, "width": 100000})})
    model = tmp_path / "huge.onnx"
    onnx.save(proto, str(model))
    res = _run(["run", str(model), "--data", str(kit.manifest), "--attrs", "sex", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert "huge.onnx metadata faceaudit.input_spec: height 100000 is larger than 2048" in res.output


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_check_does_not_fire_on_mobilefacenet_with_its_correct_spec(mobilefacenet: Path, shared_data: Path,
                                                                    tmp_path: Path) -> None:
    from faceaudit.data import load_manifest

    manifest = load_manifest(shared_data / "lfw" / "manifest.csv", "sex")
    m = open_model(mobilefacenet)
    from faceaudit.spec_check import sample_rows

    rows = sample_rows(manifest.identities, seed=0)
    paths = [manifest.paths[i] for i in rows]
    emb = extract_features(m, paths, [m.final_layer], progress=False).features[m.final_layer]
    check = check_input_spec(m, paths, manifest.identities[rows], emb, cache_dir=tmp_path, seed=0)
    assert check["status"] == "ok", check
    assert check["in_use"]["auc"] > 0.95


def test_compare_checks_every_model_and_names_the_wrong_one(kit: Kit, tmp_path: Path) -> None:
    res = _run(["compare", str(kit.rgb), str(kit.bgr), "--labels", "A,B", "--data", str(kit.manifest),
                "--attrs", "sex", "--layers", "final", "--quick", "--std", "127.5", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "warning: The input spec in use for B" in res.output and "for A" not in res.output
    report = json.loads((tmp_path / "compare.json").read_text())
    checks = {m["label"]: m["input_check"] for m in report["models"]}
    assert checks["A"]["status"] == "ok" and checks["B"]["status"] == "better_setting"
    assert checks["B"]["better"]["flags"] == "--channel-order BGR"
    assert report["models"][0]["input"]["sources"]["std"] == "flag"
    html = (tmp_path / "compare.html").read_text()
    assert "Input (source)" in html and "HIGH" in html.upper() and "--channel-order BGR" in html


def test_weighted_auc_and_fnmr_match_brute_force() -> None:
    from faceaudit.fairness import threshold_at_fmr
    from faceaudit.spec_check import _stats_fn

    rng = np.random.default_rng(1)
    gen = rng.integers(0, 6, 40).astype(float)  # many ties
    imp = rng.integers(0, 5, 300).astype(float)
    g_id, i_a, i_b = rng.integers(0, 7, 40), rng.integers(0, 7, 300), rng.integers(0, 7, 300)
    w = rng.integers(0, 3, (70, 7)).astype(float)
    w[0] = 1.0
    aucs, _ = _stats_fn(gen, imp, g_id, i_a, i_b, 0.01)(w)
    for k in (0, 5, 69):
        wg, wi = w[k, g_id], w[k, i_a] * w[k, i_b]
        cmp = (gen[:, None] > imp[None]) + 0.5 * (gen[:, None] == imp[None])
        expect = (wg[:, None] * wi[None] * cmp).sum() / (wg.sum() * wi.sum())
        assert aucs[k] == pytest.approx(expect, rel=1e-12)
    # continuous scores, unit weights: FNMR at the fairness module's threshold
    gen, imp = rng.normal(1, 1, 200), rng.normal(0, 1, 5000)
    for fmr in (1e-3, 1e-2, 0.1):
        _, fnmr = _stats_fn(gen, imp, np.zeros(200, int), np.zeros(5000, int), np.zeros(5000, int), fmr)(np.ones((1, 1)))
        assert fnmr[0] == pytest.approx(np.mean(gen < threshold_at_fmr(imp, fmr)))
