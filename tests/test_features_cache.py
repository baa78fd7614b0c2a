"""The Parquet feature cache: layout, readers (pyarrow, pandas), read_feature_cache, damaged shards,
subsample_rows, actor planning, and that the local path never imports Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from PIL import Image

from faceaudit.errors import InputError
from faceaudit.features import (
    CACHE_META, RESERVED_COLUMNS, extract_features, layer_columns, read_feature_cache, subsample_rows,
)
from faceaudit.features.ray import plan_actors
from test_features import _tiny_onnx  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[object, list[Path]]:
    from faceaudit.backends import open_model

    rng = np.random.default_rng(1)
    paths = []
    for i in range(11):
        p = tmp_path / "img" / f"{i:03d}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    bad = tmp_path / "img" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    paths.insert(4, bad)
    return open_model(_tiny_onnx(tmp_path / "tiny.onnx")), paths


def test_parquet_layout_and_readers(tmp_path: Path, setup: tuple) -> None:
    model, paths = setup
    fs = extract_features(model, paths, "input,r1,emb", batch_size=5, cache_dir=tmp_path / "c", progress=False)
    folder = Path(fs.cache_dir)
    assert sorted(p.name for p in folder.iterdir()) == [CACHE_META] + [f"shard_{b:06d}.parquet" for b in range(3)]
    meta = json.loads((folder / CACHE_META).read_text())
    assert meta["n_images"] == 12 and meta["n_shards"] == 3 and meta["batch_size"] == 5
    assert meta["layers"] == [{"name": "x", "column": "x", "dim": 192}, {"name": "r1", "column": "r1", "dim": 4},
                              {"name": "emb", "column": "emb", "dim": 6}]
    assert folder.name == f"features-{meta['key'][:24]}"

    # pyarrow.dataset over the folder: the metadata file is skipped, columns as documented
    table = ds.dataset(folder).to_table().sort_by("row_id")
    assert table.column_names == ["row_id", "path", "ok", "error", "x", "r1", "emb"]
    assert table.schema.field("emb").type == pa.list_(pa.float32(), 6)
    assert table["row_id"].to_pylist() == list(range(12))
    assert table["path"].to_pylist() == [str(p) for p in paths]
    assert table["ok"].to_pylist() == [i != 4 for i in range(12)]
    errors = table["error"].to_pylist()
    assert errors[4] is not None and "broken.jpg" in errors[4] and errors[:4] == [None] * 4
    assert table["emb"].null_count == 1 and table["emb"][4].as_py() is None
    emb = np.array([v for v in table["emb"].to_pylist() if v is not None], dtype=np.float32)
    np.testing.assert_array_equal(emb, fs.features["emb"])

    # pandas reads the folder too; a layer column holds one float32 array per image
    import pandas as pd

    df = pd.read_parquet(folder).sort_values("row_id")
    assert list(df.columns) == table.column_names and len(df) == 12
    np.testing.assert_array_equal(np.stack(df.loc[df["ok"], "r1"].to_list()), fs.features["r1"])

    # read back without the model
    back = read_feature_cache(tmp_path / "c")
    assert back.layers == fs.layers and back.paths == fs.paths and back.failed == fs.failed
    assert back.ok.tolist() == fs.ok.tolist() and back.model_sha256 == model.sha256 and back.pooling == "avg"
    for k in fs.features:
        np.testing.assert_array_equal(back.features[k], fs.features[k])


def test_damaged_or_missing_shards(tmp_path: Path, setup: tuple) -> None:
    model, paths = setup
    cache = tmp_path / "c"
    ref = extract_features(model, paths, "emb", batch_size=5, cache_dir=cache, progress=False)
    folder = Path(ref.cache_dir)
    (folder / "shard_000001.parquet").write_bytes(b"PAR1 truncated")
    (folder / "shard_000002.parquet").unlink()
    with pytest.raises(InputError, match="1 of 3 shards are missing .first: shard_000002"):
        read_feature_cache(folder)
    computed: list[int] = []
    again = extract_features(model, paths, "emb", batch_size=5, cache_dir=cache, progress=False,
                             on_batch=lambda b, n: computed.append(b))
    assert computed == [1, 2] and again.n_cached_batches == 1
    np.testing.assert_array_equal(again.features["emb"], ref.features["emb"])
    with pytest.raises(InputError, match="not a feature cache folder"):
        read_feature_cache(tmp_path)


def test_reserved_layer_names_get_prefixed() -> None:
    assert layer_columns(["path", "emb", "ok"]) == ["layer:path", "emb", "layer:ok"]
    assert set(RESERVED_COLUMNS) == {"row_id", "path", "ok", "error"}


def test_all_failed_shard_keeps_the_schema(tmp_path: Path, setup: tuple) -> None:
    model, paths = setup
    bad = [tmp_path / "img" / "broken.jpg"] * 3
    fs = extract_features(model, paths[:3] + bad, "emb", batch_size=3, cache_dir=tmp_path / "c", progress=False)
    assert fs.features["emb"].shape == (3, 6) and fs.ok.tolist() == [True] * 3 + [False] * 3
    t = pq.read_table(Path(fs.cache_dir) / "shard_000001.parquet")
    assert t.schema.field("emb").type == pa.list_(pa.float32(), 6) and t["emb"].null_count == 3


def test_subsample_rows() -> None:
    idx = subsample_rows(1000, 100, seed=3)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100 and np.all(np.diff(idx) > 0)
    assert idx.min() >= 0 and idx.max() < 1000
    np.testing.assert_array_equal(idx, subsample_rows(1000, 100, seed=3))
    assert not np.array_equal(idx, subsample_rows(1000, 100, seed=4))
    np.testing.assert_array_equal(subsample_rows(50, 100), np.arange(50))
    np.testing.assert_array_equal(subsample_rows(50, None), np.arange(50))
    # uniform: every decile of the rows gets about a tenth of a large draw
    big = subsample_rows(100_000, 20_000, seed=0)
    counts = np.bincount(big // 10_000, minlength=10)
    assert np.all(np.abs(counts - 2000) < 200), counts
    with pytest.raises(InputError, match="n_max"):
        subsample_rows(10, 0)


def test_plan_actors_known_answers() -> None:
    cpu = plan_actors({"CPU": 16.0}, n_shards=100, actors=None, cpus_per_actor=None)
    assert (cpu["actors"], cpu["cpus_per_actor"], cpu["gpus_per_actor"], cpu["threads_per_actor"]) == (16, 1.0, 0.0, 1)
    four = plan_actors({"CPU": 16.0}, n_shards=100, actors=None, cpus_per_actor=4)
    assert (four["actors"], four["threads_per_actor"]) == (4, 4)
    gpu = plan_actors({"CPU": 64.0, "GPU": 8.0}, n_shards=100, actors=None, cpus_per_actor=None)
    assert (gpu["actors"], gpu["cpus_per_actor"], gpu["gpus_per_actor"]) == (8, 8.0, 1.0)
    assert plan_actors({"CPU": 16.0}, n_shards=3, actors=None, cpus_per_actor=None)["actors"] == 3
    with pytest.raises(InputError, match="need 8 CPUs, but the cluster has 2"):
        plan_actors({"CPU": 2.0}, n_shards=100, actors=4, cpus_per_actor=2)


def test_unknown_executor(setup: tuple) -> None:
    model, paths = setup
    with pytest.raises(InputError, match="Unknown executor 'dask'"):
        extract_features(model, paths, "emb", executor="dask", progress=False)


def test_local_extraction_does_not_import_ray(tmp_path: Path, setup: tuple) -> None:
    model, paths = setup
    code = (
        "import sys, faceaudit.features as f\n"
        "assert 'ray' not in sys.modules, 'import'\n"
        f"fs = f.extract_features({str(model.path)!r}, {[str(p) for p in paths]!r}, 'emb', batch_size=4, "
        f"cache_dir={str(tmp_path / 'c')!r}, progress=False)\n"
        "assert fs.n_ok == 11\n"
        "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'extract'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_ray_executor_without_ray_says_how_to_install(setup: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    model, paths = setup
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like to `import ray`
    with pytest.raises(InputError, match=r"pip install 'faceaudit\[ray\]'"):
        extract_features(model, paths, "emb", executor="ray", progress=False)


# --------------------------------------------------------------------------- the executor seam


def test_executor_objects_and_their_string_shorthands() -> None:
    from faceaudit.features import LocalExecutor, RayExecutor, resolve_executor

    assert resolve_executor("ray", {"ray_address": "auto", "ray_actors": 2}) == RayExecutor(address="auto", actors=2)
    assert resolve_executor("ray", {"ray_cpus_per_actor": 4}) == RayExecutor(cpus_per_actor=4)
    assert resolve_executor("local", {"workers": 3}) == LocalExecutor(workers=3)
    assert resolve_executor("local", {"ray_actors": None}) == LocalExecutor()  # the pipeline's unset options
    given = RayExecutor(actors=1)
    assert resolve_executor(given, {}) is given
    with pytest.raises(InputError, match="ray_actors does not apply to executor='local'; its options are workers"):
        resolve_executor("local", {"ray_actors": 2})
    with pytest.raises(InputError, match=r"carries its own options, e.g. RayExecutor\(address="):
        resolve_executor(given, {"ray_actors": 2})
    with pytest.raises(InputError, match="unknown keyword argument.*ray_actor;"):
        resolve_executor("ray", {"ray_actor": 2})
    with pytest.raises(InputError, match="actors must be a whole number of at least 1"):
        RayExecutor(actors=0)
    with pytest.raises(InputError, match="cpus_per_actor must be a positive number"):
        RayExecutor(cpus_per_actor=-1.0)
    with pytest.raises(InputError, match="workers must be a whole number of at least 1"):
        LocalExecutor(workers=0)


def test_executor_object_and_string_give_the_same_features(setup: tuple) -> None:
    from faceaudit.features import LocalExecutor

    model, paths = setup
    ref = extract_features(model, paths, "r1,emb", batch_size=4, progress=False)
    one = extract_features(model, paths, "r1,emb", batch_size=4, progress=False, executor=LocalExecutor(workers=1))
    short = extract_features(model, paths, "r1,emb", batch_size=4, progress=False, executor="local", workers=1)
    for fs in (one, short):
        assert fs.extra["executor"] == "local" and fs.extra["decode_threads"] == 1 and fs.failed == ref.failed
        for k in ref.features:
            np.testing.assert_array_equal(fs.features[k], ref.features[k])
    with pytest.raises(InputError, match="unknown keyword argument.*ray_actor"):
        extract_features(model, paths, "emb", progress=False, ray_actor=2)


def test_an_executor_written_outside_the_package_plugs_into_the_seam(tmp_path: Path, setup: tuple) -> None:
    """Shards computed in reverse order with one decode thread from the public pieces: same cache, same arrays."""
    from concurrent.futures import ThreadPoolExecutor

    from faceaudit.features import Executor, decode_batch, infer_batch, shard_table

    class Reverse(Executor):
        name = "reverse"

        def run(self, plan, todo, finish):  # type: ignore[no-untyped-def]
            with ThreadPoolExecutor(1) as pool:
                for b in reversed(todo):
                    decoded = decode_batch(pool, plan.shard_paths(b), plan.shard_landmarks(b), plan.spec).result()
                    feats = infer_batch(plan.model, decoded, plan.layers, plan.pooling)
                    finish(b, shard_table(plan.rows(b), plan.shard_paths(b), decoded.ok, decoded.errors, feats,
                                          plan.layers, plan.dims))
            return {"order": list(reversed(todo))}

    model, paths = setup
    ref = extract_features(model, paths, "r1,emb", batch_size=5, cache_dir=tmp_path / "a", progress=False)
    seen: list[int] = []
    fs = extract_features(model, paths, "r1,emb", batch_size=5, cache_dir=tmp_path / "b", progress=False,
                          executor=Reverse(), on_batch=lambda b, n: seen.append(b))
    assert seen == [2, 1, 0] and fs.extra == {"executor": "reverse", "order": [2, 1, 0]} and fs.failed == ref.failed
    for k in ref.features:
        np.testing.assert_array_equal(fs.features[k], ref.features[k])
    for b in range(3):
        name = f"shard_{b:06d}.parquet"
        assert pq.read_table(Path(fs.cache_dir) / name).equals(pq.read_table(Path(ref.cache_dir) / name))
