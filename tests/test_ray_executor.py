"""The Ray executor on a local 2-CPU Ray cluster: real faces and MobileFaceNet give the local executor's arrays,
write the same cache, and an interrupted Ray run resumes from its finished shards."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'faceaudit[ray]'); the Ray executor is optional")

from faceaudit.features import FeatureSet, RayExecutor, extract_features, read_feature_cache  # noqa: E402

pytestmark = pytest.mark.realdata
BATCH = 16


@pytest.fixture(scope="module")
def faces(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray]:
    """32 raw LFW photos with landmarks (aligned on the fly), 32 aligned UTKFace crops (no landmarks: NaN),
    one undecodable file: 65 images, 5 shards of 16 (the last holds one image)."""
    lfw = shared_data / "lfw"
    with open(lfw / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["raw_path"]][:32]
    raw = [lfw / r["raw_path"] for r in rows]
    lms = np.array([[[float(r[f"lm_x{k}"]), float(r[f"lm_y{k}"])] for k in range(1, 6)] for r in rows])
    utk = shared_data / "utkface"
    with open(utk / "manifest.csv", newline="") as fh:
        crops = [utk / r["path"] for r in list(csv.DictReader(fh))[:32]]
    bad = tmp_path_factory.mktemp("bad") / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    paths = raw[:20] + [bad] + raw[20:] + crops
    landmarks = np.concatenate([lms[:20], np.full((1, 5, 2), np.nan), lms[20:], np.full((32, 5, 2), np.nan)])
    return paths, landmarks


@pytest.fixture(scope="module")
def reference(mobilefacenet: Path, faces: tuple) -> FeatureSet:
    paths, landmarks = faces
    return extract_features(mobilefacenet, paths, "auto", landmarks=landmarks, batch_size=BATCH, progress=False)


def _same(a: FeatureSet, b: FeatureSet) -> None:
    assert a.layers == b.layers and a.ok.tolist() == b.ok.tolist() and a.failed == b.failed
    for k in a.features:
        np.testing.assert_array_equal(a.features[k], b.features[k], err_msg=k)


class Interrupt(Exception):
    pass


def test_ray_interrupted_run_resumes_from_finished_shards(
    mobilefacenet: Path, faces: tuple, reference: FeatureSet, tmp_path: Path
) -> None:
    """Ray not started by the caller: the executor starts a local instance and shuts it down, also on error."""
    paths, landmarks = faces
    cache = tmp_path / "cache"
    reported: list[int] = []

    def stop_after_two(b: int, n: int) -> None:
        reported.append(b)
        if len(reported) == 2:
            raise Interrupt("simulated crash of the driver after two shards")

    assert not ray.is_initialized()
    with pytest.raises(Interrupt):
        extract_features(mobilefacenet, paths, "auto", landmarks=landmarks, batch_size=BATCH, cache_dir=cache,
                         progress=False, executor="ray", ray_actors=2, on_batch=stop_after_two)
    assert not ray.is_initialized()  # the instance it started is shut down
    folder = next(cache.iterdir())
    on_disk = sorted(int(p.stem.split("_")[1]) for p in folder.glob("shard_*.parquet"))
    assert on_disk == sorted(reported) and len(on_disk) == 2  # exactly the shards reported finished
    assert not list(folder.glob(".*.tmp"))
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard_*.parquet")}

    computed: list[int] = []
    resumed = extract_features(mobilefacenet, paths, "auto", landmarks=landmarks, batch_size=BATCH, cache_dir=cache,
                               progress=False, executor="ray", on_batch=lambda b, n: computed.append(b))
    assert sorted(computed) == sorted(set(range(5)) - set(on_disk))  # only the missing shards
    assert resumed.n_cached_batches == 2 and resumed.n_computed_batches == 3
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("shard_*.parquet") if p.name in before} == before
    _same(resumed, reference)
    assert resumed.extra["ray"]["actors"] == 2 and resumed.extra["ray"]["shards"] == 3


def test_ray_unreachable_cluster_names_the_fix(mobilefacenet: Path, faces: tuple) -> None:
    from faceaudit.errors import InputError

    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    paths, _ = faces
    with pytest.raises(InputError, match="Cannot start or reach the Ray cluster at auto.*ray start --head"):
        extract_features(mobilefacenet, paths[:4], "final", progress=False, executor="ray", ray_address="auto")


@pytest.fixture(scope="module")
def ray_cluster() -> object:
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def test_ray_matches_local_and_writes_the_same_cache(
    ray_cluster: object, mobilefacenet: Path, faces: tuple, reference: FeatureSet, tmp_path: Path
) -> None:
    paths, landmarks = faces
    cache = tmp_path / "cache"
    fs = extract_features(mobilefacenet, paths, "auto", landmarks=landmarks, batch_size=BATCH, cache_dir=cache,
                          progress=False, executor="ray")
    assert fs.extra["executor"] == "ray" and fs.extra["ray"]["cluster_cpus"] == 2.0
    assert fs.n_computed_batches == 5 and fs.n_ok == 64 and "broken.jpg" in fs.failed[0][1]
    _same(fs, reference)  # bit-identical to the local executor
    assert fs.features[fs.layers[-1]].shape == (64, 128)
    # the local executor finds the Ray-written cache complete (same key, same shards)
    local = extract_features(mobilefacenet, paths, "auto", landmarks=landmarks, batch_size=BATCH, cache_dir=cache,
                             progress=False)
    assert local.cache_dir == fs.cache_dir and local.n_cached_batches == 5 and local.n_computed_batches == 0
    _same(local, reference)
    _same(read_feature_cache(fs.cache_dir), reference)
    # without a cache the Ray executor (here as an object) returns the same arrays from memory
    one = extract_features(mobilefacenet, paths, "auto", landmarks=landmarks, batch_size=BATCH, progress=False,
                           executor=RayExecutor(actors=1))
    _same(one, reference)
    assert one.extra["executor"] == "ray" and one.extra["ray"]["actors"] == 1


def test_ray_strict_raises_the_image_error(ray_cluster: object, mobilefacenet: Path, faces: tuple) -> None:
    from faceaudit.errors import InputError

    paths, landmarks = faces
    with pytest.raises(InputError, match="broken.jpg"):
        extract_features(mobilefacenet, paths[16:24], "final", batch_size=8, progress=False, executor="ray",
                         strict=True)


def test_ray_worker_with_a_different_model_file_fails_clearly(ray_cluster: object, tmp_path: Path) -> None:
    """A worker whose model file differs from the driver's raises the same ModelError class, naming the fix."""
    import onnx
    from PIL import Image
    from test_features import _tiny_onnx

    from faceaudit.backends import open_model
    from faceaudit.errors import ModelError

    path = _tiny_onnx(tmp_path / "m.onnx")
    imgs = []
    for i in range(4):
        imgs.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(imgs[-1])
    model = open_model(path)
    model.extract(np.zeros((1, 3, 16, 16), np.float32), ["emb"])  # the driver's session and hash are made now
    assert model.sha256
    changed = onnx.load(str(path))
    onnx.helper.set_model_props(changed, {"note": "another export"})
    onnx.save(changed, str(path))  # what the workers will find at the same path
    with pytest.raises(ModelError, match="differs from the driver's .* Copy the same file to every worker"):
        extract_features(model, imgs, "emb", batch_size=2, progress=False, executor="ray")
