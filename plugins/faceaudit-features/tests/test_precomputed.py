"""The precomputed-features plugin: .npz and .parquet, found through the entry point, matched by path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from faceaudit.backends import PrecomputedFeatures, backend_for_path, list_backends, open_model, select_layers
from faceaudit.errors import ModelError
from faceaudit.features import extract_features

pytest.importorskip("faceaudit_features", reason="install the plugin: pip install -e plugins/faceaudit-features")


def _data(n: int = 6) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 4)).astype(np.float32), rng.standard_normal((n, 3)).astype(np.float32),
            [f"faces/img_{i}.jpg" for i in range(n)])


def test_registered_through_entry_point() -> None:
    info = {b.name: b for b in list_backends()}
    assert info["features"].distribution == "faceaudit-features" and info["features"].error is None
    assert backend_for_path("feats.npz") == "features" and backend_for_path("f.parquet") == "features"


def test_npz_with_paths(tmp_path: Path) -> None:
    block, emb, paths = _data()
    f = tmp_path / "feats.npz"
    np.savez(f, block3=block, embedding=emb, paths=np.array(paths))
    m = open_model(f)
    assert m.backend_name == "features" and m.final_layer == "embedding" and isinstance(m, PrecomputedFeatures)
    assert [(l.name, l.shape) for l in m.layers()] == [("block3", (None, 4)), ("embedding", (None, 3))]
    # absolute manifest paths match the relative stored ones; order follows the request; one is missing
    want = [tmp_path / paths[3], tmp_path / paths[0], tmp_path / "faces/other.jpg"]
    fs = extract_features(m, want, "block3,final", progress=False)
    assert fs.ok.tolist() == [True, True, False] and "other.jpg" in fs.failed[0][0]
    np.testing.assert_array_equal(fs.features["embedding"], emb[[3, 0]])
    np.testing.assert_array_equal(fs.features["block3"], block[[3, 0]])
    with pytest.raises(ModelError, match="Did you mean: embedding"):
        select_layers(m, "embeding")
    with pytest.raises(ModelError, match="cannot run on image batches"):
        m.extract(np.zeros((1, 3, 112, 112), np.float32), ["embedding"])


def test_npz_without_paths_uses_order(tmp_path: Path) -> None:
    block, emb, paths = _data()
    f = tmp_path / "feats.npz"
    np.savez(f, embedding=emb)
    fs = extract_features(open_model(f), paths, "final", progress=False)
    np.testing.assert_array_equal(fs.features["embedding"], emb)
    with pytest.raises(ModelError, match="6 rows and no 'paths'"):
        extract_features(open_model(f), paths[:2], "final", progress=False)


def test_parquet_list_and_scalar_columns(tmp_path: Path) -> None:
    block, emb, paths = _data()
    table = pa.table({
        "path": paths,
        "embedding": pa.array(list(emb), type=pa.list_(pa.float32(), 3)),
        "block3": pa.array([list(r) for r in block], type=pa.list_(pa.float32())),
        "score": pa.array(block[:, 0]),
    })
    f = tmp_path / "feats.parquet"
    pq.write_table(table, f)
    m = open_model(f)
    assert {l.name: l.shape for l in m.layers()} == {"embedding": (None, 3), "block3": (None, 4), "score": (None, 1)}
    fs = extract_features(m, list(reversed(paths)), "embedding,block3,score", progress=False)
    np.testing.assert_array_equal(fs.features["embedding"], emb[::-1])
    np.testing.assert_array_equal(fs.features["block3"], block[::-1])
    np.testing.assert_array_equal(fs.features["score"][:, 0], block[::-1, 0])


def test_bad_files(tmp_path: Path) -> None:
    f = tmp_path / "bad.npz"
    f.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="bad.npz"):
        open_model(f)
    g = tmp_path / "ragged.npz"
    np.savez(g, a=np.zeros((3, 2)), b=np.zeros((4, 2)))
    with pytest.raises(ModelError, match="different numbers of rows"):
        open_model(g)
    h = tmp_path / "maps.npz"
    np.savez(h, a=np.zeros((3, 2, 2)))
    with pytest.raises(ModelError, match="2-D numeric"):
        open_model(h)


def test_passes_check_backend(tmp_path: Path) -> None:
    from faceaudit.testing import CHECKS, check_backend
    from faceaudit_features.backend import PrecomputedFeaturesBackend

    rng = np.random.default_rng(0)
    paths = [f"faces/img_{i}.jpg" for i in range(9)]
    f = tmp_path / "feats.npz"
    np.savez(f, block3=rng.standard_normal((9, 4)).astype(np.float32),
             embedding=rng.standard_normal((9, 3)).astype(np.float32), paths=np.array(paths))
    assert check_backend(PrecomputedFeaturesBackend, f, paths=paths) == list(CHECKS)
    g = tmp_path / "feats.parquet"
    pq.write_table(pa.table({"path": paths, "embedding": pa.array(list(rng.standard_normal((9, 3))),
                                                                  type=pa.list_(pa.float64(), 3))}), g)
    assert check_backend(PrecomputedFeaturesBackend, g, paths=paths) == list(CHECKS)
