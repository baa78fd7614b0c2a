"""Backends: ONNX and PyTorch agree on a small CNN; registry; pooling; bad models; real MobileFaceNet."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from faceaudit.backends import (
    InputSpec,
    backend_for_path,
    layer_table,
    list_backends,
    open_model,
    pool,
    select_layers,
)
from faceaudit.errors import InputError, ModelError, PluginError


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.fixture(scope="module")
def cnn_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cnn")
    model = small_cnn()
    x = torch.zeros(2, 3, 32, 32)
    out = {"ts": d / "cnn.pt", "onnx": d / "cnn.onnx", "onnx1": d / "cnn_b1.onnx", "pt2": d / "cnn.pt2",
           "state": d / "cnn_state.pth"}
    torch.jit.save(torch.jit.script(model), str(out["ts"]),
                   _extra_files={"faceaudit.input_spec": '{"height": 32, "width": 32}'})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(out["onnx"]), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        torch.onnx.export(model, (x[:1],), str(out["onnx1"]), input_names=["input"], output_names=["logits"],
                          dynamo=False)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    torch.export.save(ep, str(out["pt2"]))
    torch.save(model.state_dict(), str(out["state"]))
    return out


def _batch(n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def test_registry_lists_builtins_and_selects_by_suffix() -> None:
    names = {b.name: b for b in list_backends()}
    assert {"onnx", "torch"} <= set(names)
    assert ".onnx" in names["onnx"].suffixes and ".pt2" in names["torch"].suffixes
    assert backend_for_path("x/model.ONNX") == "onnx"
    assert backend_for_path("m.pt2") == "torch"
    with pytest.raises(ModelError, match="No installed backend"):
        backend_for_path("model.caffemodel")
    with pytest.raises(PluginError, match="Did you mean: onnx"):
        open_model(__file__, backend="onx")


def test_onnx_and_torch_agree_on_shared_layers(cnn_files: dict[str, Path]) -> None:
    onx = open_model(cnn_files["onnx"], height=32, width=32)
    pt2 = open_model(cnn_files["pt2"])
    fac = open_model(cnn_files["state"], factory=small_cnn, height=32, width=32)
    ts = open_model(cnn_files["ts"])
    assert ts.input_spec.height == 32  # from the TorchScript extra file
    assert pt2.input_spec.height == 32 and pt2.input_spec.layout == "NCHW"  # from the program's input
    onnx_names = [l.name for l in onx.layers()]
    relu1 = next(n for n in onnx_names if "features.1" in n and "Relu" in n)
    relu3 = next(n for n in onnx_names if "features.3" in n and "Relu" in n)
    x = _batch()
    ref = onx.extract(x, ["input", relu1, relu3, "logits"])
    assert ref[relu1].shape == (5, 8) and ref[relu3].shape == (5, 16) and ref["logits"].shape == (5, 10)
    for m in (pt2, fac):
        got = m.extract(x, ["input", "features.1", "features.3", "output"])
        np.testing.assert_allclose(got["input"], ref["input"], atol=1e-6)
        np.testing.assert_allclose(got["features.1"], ref[relu1], atol=1e-4)
        np.testing.assert_allclose(got["features.3"], ref[relu3], atol=1e-4)
        np.testing.assert_allclose(got["output"], ref["logits"], atol=1e-4)
    got = ts.extract(x, ["input", "output"])
    np.testing.assert_allclose(got["output"], ref["logits"], atol=1e-4)
    # known answer against plain torch
    with torch.no_grad():
        direct = small_cnn()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ref["logits"], direct, atol=1e-4)
    # torch layer names are module qualified names, in execution order
    assert [l.name for l in fac.layers()] == ["input", "features.0", "features.1", "features.2", "features.3",
                                              "features", "head", "output"]


def test_fixed_batch_onnx_model_runs_any_batch(cnn_files: dict[str, Path]) -> None:
    fixed = open_model(cnn_files["onnx1"], height=32, width=32)
    dyn = open_model(cnn_files["onnx"], height=32, width=32)
    x = _batch(7, seed=1)
    names = select_layers(fixed, "auto")
    a = fixed.extract(x, names)
    b = dyn.extract(x, select_layers(dyn, "auto"))
    np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-5)


def test_external_data_onnx(cnn_files: dict[str, Path], tmp_path: Path) -> None:
    import onnx

    m = onnx.load(str(cnn_files["onnx"]))
    ext = tmp_path / "ext.onnx"
    onnx.save_model(m, str(ext), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").stat().st_size > 1000
    em = open_model(ext, height=32, width=32)
    x = _batch(3)
    relu = [l.name for l in em.layers() if l.kind == "Relu"][0]
    a = em.extract(x, [relu, "logits"])
    b = open_model(cnn_files["onnx"], height=32, width=32).extract(x, [relu, "logits"])
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6)


def test_onnx_metadata_input_spec(cnn_files: dict[str, Path], tmp_path: Path) -> None:
    import onnx

    m = onnx.load(str(cnn_files["onnx"]))
    onnx.helper.set_model_props(m, {"faceaudit.input_spec": '{"channel_order": "BGR", "mean": [1, 2, 3], "std": 2}'})
    p = tmp_path / "meta.onnx"
    onnx.save(m, str(p))
    spec = open_model(p).input_spec
    assert spec == InputSpec(32, 32, "NCHW", "BGR", (1.0, 2.0, 3.0), (2.0, 2.0, 2.0))
    assert open_model(p, channel_order="rgb").input_spec.channel_order == "RGB"  # options win


def test_layer_selection(cnn_files: dict[str, Path]) -> None:
    m = open_model(cnn_files["state"], factory=small_cnn, height=32, width=32)
    auto = select_layers(m, "auto")
    assert auto[0] == "input" and auto[-1] == "output" and 3 <= len(auto) <= 5
    assert select_layers(m, "features.*") == ["features.0", "features.1", "features.2", "features.3"]
    assert select_layers(m, "output,input") == ["input", "output"]
    with pytest.raises(ModelError, match="Did you mean: features.1"):
        select_layers(m, "featres.1")
    with pytest.raises(ModelError, match="matches no layer"):
        select_layers(m, "blocks.*")
    table = layer_table(m)
    assert [r["name"] for r in table if r["auto"]] == auto
    assert table[0]["dim"] == 3 * 8 * 8 and table[-1]["dim"] == 10


def test_pooling_known_answers() -> None:
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    np.testing.assert_allclose(pool(x, "avg"), x.mean(axis=(2, 3)))
    np.testing.assert_allclose(pool(x, "max"), x.max(axis=(2, 3)))
    g = pool(x, "grid2").reshape(2, 3, 2, 2)
    np.testing.assert_allclose(g[0, 0, 0, 0], x[0, 0, :2, :2].mean())
    np.testing.assert_allclose(g[1, 2, 1, 0], x[1, 2, 2:, :2].mean())
    assert pool(x, "flatten").shape == (2, 48)
    # adaptive bins agree with torch on a non-divisible size
    y = np.random.default_rng(0).standard_normal((2, 4, 7, 5)).astype(np.float32)
    ref = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(y), 3).reshape(2, -1).numpy()
    np.testing.assert_allclose(pool(y, "grid3"), ref, atol=1e-6)
    assert pool(x, "avg", is_input=True).shape == (2, 3 * 8 * 8)
    with pytest.raises(InputError, match="cap"):
        pool(np.zeros((1, 512, 16, 16), np.float32), "flatten")
    with pytest.raises(InputError, match="Unknown pooling"):
        pool(x, "median")


# ----------------------------------------------------------------- bad models
def test_truncated_onnx(cnn_files: dict[str, Path], tmp_path: Path) -> None:
    data = cnn_files["onnx"].read_bytes()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="trunc.onnx.*(truncated|export it again)"):
        open_model(p).extract(_batch(1), ["logits"])


def test_non_onnx_file(tmp_path: Path) -> None:
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a model\n" * 20)
    with pytest.raises(ModelError, match="notes.onnx"):
        open_model(p)
    q = tmp_path / "missing.onnx"
    with pytest.raises(ModelError, match="does not exist"):
        open_model(q)


def _linear_model(path: Path, in_shape: list, out_rank: int) -> None:
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    out_shape = in_shape if out_rank == len(in_shape) else in_shape[:out_rank]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))


def test_wrong_input_rank(tmp_path: Path) -> None:
    p = tmp_path / "vec.onnx"
    _linear_model(p, ["N", 128], 2)
    with pytest.raises(ModelError, match="vec.onnx.*rank 2.*rank 4"):
        open_model(p)


def test_output_not_2d(tmp_path: Path) -> None:
    p = tmp_path / "map.onnx"
    _linear_model(p, ["N", 3, 8, 8], 4)
    with pytest.raises(ModelError, match="map.onnx.*'y' has shape.*final_layer"):
        open_model(p)


def test_unknown_layer_and_wrong_batch(cnn_files: dict[str, Path]) -> None:
    m = open_model(cnn_files["onnx"], height=32, width=32)
    with pytest.raises(ModelError, match="no layer 'logit'.*Did you mean: logits"):
        m.extract(_batch(1), ["logit"])
    with pytest.raises(InputError, match=r"expects a batch of shape \(N, 3, 32, 32\)"):
        m.extract(np.zeros((2, 32, 32, 3), np.float32), ["logits"])


def test_torch_refuses_pickles_unless_trusted(tmp_path: Path, cnn_files: dict[str, Path]) -> None:
    p = tmp_path / "full.pt"
    torch.save(small_cnn(), str(p))
    with pytest.raises(ModelError, match="trust_pickle=True"):
        open_model(p)
    with pytest.warns(UserWarning, match="runs any code"):
        m = open_model(p, trust_pickle=True, height=32, width=32)
    assert m.extract(_batch(2), ["output"])["output"].shape == (2, 10)
    with pytest.raises(ModelError, match="state dict.*factory="):
        open_model(cnn_files["state"])
    with pytest.raises(ModelError, match="do not fit"):
        open_model(cnn_files["state"], factory=lambda: nn.Linear(3, 3))
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(cnn_files["ts"].read_bytes()[:500])
    with pytest.raises(ModelError, match="trunc.pt"):
        open_model(trunc)


# ---------------------------------------------------------------- real model
@pytest.mark.realdata
def test_mobilefacenet_layers_and_features(mobilefacenet: Path, shared_data: Path) -> None:
    import onnxruntime as ort

    from faceaudit.data.images import decode_image
    from faceaudit.data.preprocess import PreprocessSpec

    m = open_model(mobilefacenet)
    assert len(m.layers()) >= 20 and m.final_layer == "embeddings"
    assert m.input_spec == InputSpec()  # 112x112 NCHW RGB (x-127.5)/127.5
    assert len(m.sha256) == 64
    paths = sorted((shared_data / "lfw" / "aligned").glob("*.jpg"))[:64]
    spec = PreprocessSpec.from_input_spec(m.input_spec)
    x = np.stack([spec(decode_image(p)) for p in paths])
    plain = ort.InferenceSession(str(mobilefacenet), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    auto = select_layers(m, "auto")
    assert len(auto) == 5 and auto[0] == "input" and auto[-1] == "embeddings"
    got = m.extract(x, auto)
    a, b = got["embeddings"], plain
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.9999
    assert all(v.shape[0] == 64 and np.isfinite(v).all() for v in got.values())


def test_torch_pools_on_device_like_numpy(cnn_files: dict[str, Path]) -> None:
    """The torch backend pools inside its hooks; every pooling must equal the numpy reference."""
    m = open_model(cnn_files["state"], factory=small_cnn, height=32, width=32)
    x = _batch(3, seed=2)
    raw = m._run(x, ["features.1", "features.3"])  # unpooled maps
    for spec in ("avg", "max", "grid3", "flatten"):
        got = m.extract(x, ["features.1", "features.3", "output"], pooling=spec)
        for name in ("features.1", "features.3"):
            np.testing.assert_allclose(got[name], pool(raw[name], spec), atol=1e-5)
        assert got["output"].shape == (3, 10)


def test_onnx_hardcoded_batch_falls_back_to_one_by_one(tmp_path: Path) -> None:
    """A Reshape to a constant [1, -1] refuses larger batches: images then run one at a time."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["emb"])]
    g = helper.make_graph(nodes, "fixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [1, 48])], [shape])
    p = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(p))
    m = open_model(p)
    assert (m.input_spec.height, m.input_spec.width) == (4, 4)
    x = np.random.default_rng(3).standard_normal((5, 3, 4, 4)).astype(np.float32)
    got = m.extract(x, ["r", "emb"])
    np.testing.assert_allclose(got["emb"], np.maximum(x, 0).reshape(5, 48), atol=0)
    np.testing.assert_allclose(got["r"], np.maximum(x, 0).mean(axis=(2, 3)), atol=1e-6)


def test_onnx_nhwc_model(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("GlobalAveragePool", ["t"], ["g"]),
        helper.make_node("Flatten", ["g"], ["emb"]),
    ]
    g = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 3])],
                          [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", 3])])
    p = tmp_path / "nhwc.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(p))
    m = open_model(p)
    assert (m.input_spec.layout, m.input_spec.height, m.input_spec.width) == ("NHWC", 8, 8)
    x = np.random.default_rng(4).standard_normal((2, 8, 8, 3)).astype(np.float32)
    got = m.extract(x, ["x", "emb"])
    np.testing.assert_allclose(got["emb"], x.mean(axis=(1, 2)), atol=1e-6)
    # the input layer as an 8x8 grid of an 8x8 image is the image itself, channels first
    np.testing.assert_allclose(got["x"], x.transpose(0, 3, 1, 2).reshape(2, -1), atol=1e-6)
    assert layer_table(m)[0]["dim"] == 192


def test_pt2_with_static_batch_runs_in_chunks(tmp_path: Path) -> None:
    model = small_cnn()
    p = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(2, 3, 32, 32),)), str(p))
    m = open_model(p)
    x = _batch(5, seed=5)
    got = m.extract(x, ["features.3", "output"])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
        ref3 = model.features(torch.from_numpy(x)).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(got["output"], ref, atol=1e-5)
    np.testing.assert_allclose(got["features.3"], ref3, atol=1e-5)


def test_builtin_backends_pass_check_backend(cnn_files: dict[str, Path]) -> None:
    from faceaudit.backends.onnx_backend import OnnxBackend
    from faceaudit.backends.torch_backend import TorchBackend
    from faceaudit.testing import CHECKS, check_backend

    assert check_backend(OnnxBackend, cnn_files["onnx"]) == list(CHECKS)
    assert check_backend(OnnxBackend, cnn_files["onnx1"]) == list(CHECKS)  # fixed batch of 1
    assert check_backend(TorchBackend, cnn_files["pt2"]) == list(CHECKS)
    assert check_backend(TorchBackend, cnn_files["state"],
                         options={"factory": small_cnn, "height": 32, "width": 32}) == list(CHECKS)


def test_final_layer_hint_names_what_can_be_typed(tmp_path: Path) -> None:
    from faceaudit.errors import command_line

    p = tmp_path / "map.onnx"
    _linear_model(p, ["N", 3, 8, 8], 4)
    with pytest.raises(ModelError) as err:
        open_model(p)
    assert "final_layer=" in str(err.value) and "--final-layer" not in str(err.value)
    with command_line(), pytest.raises(ModelError) as err:
        open_model(p)
    # the command line has no option to name the embedding layer: only what can be done there
    assert "final_layer=" not in str(err.value) and "--final-layer" not in str(err.value)
    assert "Re-export" in str(err.value)


def _evil_pickles(folder: Path) -> tuple[Path, Path, Path]:
    """A fully pickled object whose loading runs a shell command, and a state dict hiding one."""
    import os

    marker = folder / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    full, sd = folder / "evil.pt", folder / "evil_state.pt"
    torch.save(Evil(), str(full))
    torch.save({"weight": torch.zeros(3, 3), "bias": Evil()}, str(sd))
    return full, sd, marker


def test_malicious_pickle_is_refused_for_safety_not_called_corrupted(tmp_path: Path) -> None:
    from faceaudit.errors import command_line

    full, sd, marker = _evil_pickles(tmp_path)
    with pytest.raises(ModelError) as err:
        open_model(full)
    msg = str(err.value)
    assert "refused for safety" in msg and "posix.system" in msg and "trust_pickle=True" in msg, msg
    assert "corrupt" not in msg and "truncated" not in msg and "torch.jit.save" in msg
    with command_line(), pytest.raises(ModelError) as err:
        open_model(full)
    assert "--trust-pickle" in str(err.value) and "trust_pickle=" not in str(err.value)
    with pytest.raises(ModelError) as err:
        open_model(sd, factory=lambda: nn.Linear(3, 3))
    msg = str(err.value)
    assert "refused for safety" in msg and "state_dict()" in msg, msg
    assert "weights_only" not in msg  # torch's advice to switch the safety off is not passed on
    assert not marker.exists()
