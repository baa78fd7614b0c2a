"""Feature extraction: resumable cache, cache misses, unreadable images, real faces end to end."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceaudit.data.preprocess import PreprocessSpec
from faceaudit.errors import InputError
from faceaudit.features import FeatureSet, extract_features


def _tiny_onnx(path: Path) -> Path:
    """A 2-layer conv net (fixed seed) on 16x16 inputs, built directly in ONNX."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((6, 4, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["emb"]),
    ]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", 6])], [w1, w2])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


@pytest.fixture()
def images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(23):
        p = tmp_path / "img" / f"{i:03d}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + i % 3, 18, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def test_features_known_answer_and_failures(tmp_path: Path, images: list[Path]) -> None:
    from faceaudit.backends import open_model

    model = open_model(_tiny_onnx(tmp_path / "tiny.onnx"))
    bad = tmp_path / "img" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    paths = images[:5] + [bad] + images[5:10]
    fs = extract_features(model, paths, "input,r1,emb", batch_size=4, progress=False)
    assert isinstance(fs, FeatureSet)
    assert fs.ok.tolist() == [True] * 5 + [False] + [True] * 5
    assert fs.failed[0][0] == str(bad) and "broken.jpg" in fs.failed[0][1]
    assert fs.features["emb"].shape == (10, 6) and fs.features["r1"].shape == (10, 4)
    assert fs.layers == ["x", "r1", "emb"] and fs.features["x"].shape == (10, 3 * 8 * 8)
    # the same numbers as preprocessing + extract by hand
    spec = PreprocessSpec.from_input_spec(model.input_spec)
    from faceaudit.data.images import decode_image

    x = np.stack([spec(decode_image(p)) for p in images[:10]])
    direct = model.extract(x, ["r1", "emb"])
    np.testing.assert_allclose(fs.features["emb"], direct["emb"], atol=1e-6)
    np.testing.assert_allclose(fs.features["r1"], direct["r1"], atol=1e-6)
    assert fs.to_dict()["n_failed"] == 1
    with pytest.raises(InputError, match="broken.jpg"):
        extract_features(model, paths, "emb", batch_size=4, strict=True, progress=False)


class Interrupt(Exception):
    pass


def test_cache_resumes_after_interruption(tmp_path: Path, images: list[Path]) -> None:
    from faceaudit.backends import open_model

    model = open_model(_tiny_onnx(tmp_path / "tiny.onnx"))
    cache = tmp_path / "cache"
    layers = "input,r1,r2,emb"
    full = extract_features(model, images, layers, batch_size=5, progress=False)  # no cache: reference

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise Interrupt("simulated Ctrl-C")

    with pytest.raises(Interrupt):
        extract_features(model, images, layers, batch_size=5, cache_dir=cache, progress=False, on_batch=stop_after_two)
    shard_dir = next(cache.iterdir())
    shards = sorted(shard_dir.glob("shard_*.parquet"))
    assert len(shards) == 3  # batches 0, 1, 2 finished before the interruption
    assert not list(shard_dir.glob(".*.tmp"))  # no half-written files
    before = {p.name: p.stat().st_mtime_ns for p in shards}

    computed: list[int] = []
    resumed = extract_features(model, images, layers, batch_size=5, cache_dir=cache, progress=False,
                               on_batch=lambda b, n: computed.append(b))
    assert computed == [3, 4]  # only the missing batches
    assert resumed.n_cached_batches == 3 and resumed.n_computed_batches == 2
    assert {p.name: p.stat().st_mtime_ns for p in sorted(shard_dir.glob("shard_*.parquet")) if p.name in before} == before
    for k in full.features:
        np.testing.assert_array_equal(resumed.features[k], full.features[k])

    again = extract_features(model, images, layers, batch_size=5, cache_dir=cache, progress=False,
                             on_batch=lambda b, n: computed.append(b))
    assert computed == [3, 4] and again.n_computed_batches == 0
    for k in full.features:
        np.testing.assert_array_equal(again.features[k], full.features[k])


def test_changed_settings_miss_the_cache(tmp_path: Path, images: list[Path]) -> None:
    from faceaudit.backends import open_model

    model = open_model(_tiny_onnx(tmp_path / "tiny.onnx"))
    cache = tmp_path / "cache"
    a = extract_features(model, images[:6], "emb", batch_size=3, cache_dir=cache, progress=False)
    spec = PreprocessSpec.from_input_spec(model.input_spec, mean=(100.0, 100.0, 100.0))
    b = extract_features(model, images[:6], "emb", batch_size=3, cache_dir=cache, progress=False, preprocess=spec)
    assert b.n_cached_batches == 0 and b.cache_dir != a.cache_dir
    assert not np.allclose(a.features["emb"], b.features["emb"])
    c = extract_features(model, images[:6], "emb", batch_size=3, cache_dir=cache, progress=False, pooling="max")
    assert c.n_cached_batches == 0
    d = extract_features(model, images[:6], "emb", batch_size=3, cache_dir=cache, progress=False)
    assert d.n_cached_batches == 2
    # a changed image file misses too
    os.utime(images[0], ns=(1, 1))
    e = extract_features(model, images[:6], "emb", batch_size=3, cache_dir=cache, progress=False)
    assert e.n_cached_batches == 0


@pytest.mark.realdata
def test_real_faces_with_alignment(mobilefacenet: Path, shared_data: Path) -> None:
    """Aligning raw LFW photos from landmarks gives nearly the embeddings of the bundle's aligned crops."""
    root = shared_data / "lfw"
    with open(root / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["raw_path"]][:32]
    raw = [root / r["raw_path"] for r in rows]
    aligned = [root / r["path"] for r in rows]
    lms = np.array([[[float(r[f"lm_x{k}"]), float(r[f"lm_y{k}"])] for k in range(1, 6)] for r in rows])
    a = extract_features(mobilefacenet, raw, "final", landmarks=lms, batch_size=16, progress=False)
    b = extract_features(mobilefacenet, aligned, "final", batch_size=16, progress=False)
    ea, eb = a.features["embeddings"], b.features["embeddings"]
    cos = (ea * eb).sum(1) / np.linalg.norm(ea, axis=1) / np.linalg.norm(eb, axis=1)
    assert a.ok.all() and cos.mean() > 0.97, cos
