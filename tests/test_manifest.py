"""Manifest loading: attribute kinds, bins, missing values, and every bad-manifest error."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faceaudit.data import DEFAULT_BINS, Binning, load_manifest
from faceaudit.data.attributes import infer_kind
from faceaudit.errors import ManifestError

LM = [f"lm_{a}{k}" for k in range(1, 6) for a in ("x", "y")]
FRONTAL = [40.0, 50.0, 80.0, 50.0, 60.0, 70.0, 45.0, 90.0, 75.0, 90.0]


def _write(tmp_path: Path, rows: list[dict], name: str = "m.csv", images: bool = True) -> Path:
    df = pd.DataFrame(rows)
    if images:
        (tmp_path / "img").mkdir(exist_ok=True)
        for p in df["path"]:
            if isinstance(p, str) and p and not Path(p).is_absolute():
                (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / p).write_bytes(b"x")
    out = tmp_path / name
    if name.endswith(".parquet"):
        df.to_parquet(out)
    else:
        df.to_csv(out, index=False)
    return out


def _rows(n: int = 30) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "path": f"img/{i:03d}.jpg",
                "identity": f"id{i // 3}",
                "age": [3, 8, 15, 25, 40, 55, 70, 33, 12, 19, 20, 36][i % 12] + (i % 5) / 10,
                "sex": "female" if i % 2 else "male",
                "code": i % 3,
                **dict(zip(LM, FRONTAL)),
            }
        )
    return rows


def test_kinds_bins_and_paths(tmp_path: Path) -> None:
    path = _write(tmp_path, _rows())
    m = load_manifest(path, "age,sex,code,identity")
    assert len(m) == 30 and m.root == tmp_path.resolve()
    assert all(p.is_absolute() and p.is_file() for p in m.paths)
    assert m.attributes["age"].kind == "continuous"
    assert m.attributes["sex"].kind == "categorical"
    assert m.attributes["code"].kind == "categorical"  # numeric with 3 levels
    assert m.attributes["identity"].kind == "categorical" and len(m.attributes["identity"].group_order) == 10
    age = m.attributes["age"]
    assert age.group_order == ["0-12", "13-19", "20-35", "36-50", "51-65", "66+"]
    # known answers from the bin edges [0,13,20,36,51,66,inf)
    expect = {3: "0-12", 8: "0-12", 12: "0-12", 15: "13-19", 19: "13-19", 20: "20-35", 25: "20-35",
              33: "20-35", 36: "36-50", 40: "36-50", 55: "51-65", 70: "66+"}
    for v, g in zip(age.values, age.groups):
        assert g == expect[int(math.floor(v))]
    assert m.landmarks is not None and m.landmarks.shape == (30, 5, 2)


def test_kind_override_and_custom_bins(tmp_path: Path) -> None:
    path = _write(tmp_path, _rows())
    m = load_manifest(path, "age:categorical,code:continuous", bins={"code": [0, 1, 3]})
    assert m.attributes["age"].kind == "categorical"
    code = m.attributes["code"]
    assert code.kind == "continuous" and list(code.groups[:3]) == ["0-1", "1-3", "1-3"]
    m2 = load_manifest(path, "age", bins={"age": {"edges": [0, 18, 200], "labels": ["minor", "adult"]}})
    assert set(m2.attributes["age"].groups) == {"minor", "adult"}


def test_infer_kind_rules() -> None:
    assert infer_kind(pd.Series(np.arange(50.0))) == "continuous"
    assert infer_kind(pd.Series([0, 1] * 20)) == "categorical"
    assert infer_kind(pd.Series(["a", "b"] * 20)) == "categorical"
    assert infer_kind(pd.Series([str(i) for i in range(40)])) == "continuous"


def test_missing_values_excluded_per_attribute(tmp_path: Path) -> None:
    rows = _rows()
    rows[4]["age"] = None
    rows[7]["sex"] = ""
    rows[9]["age"] = None
    rows[10]["sex"] = "NA"
    m = load_manifest(_write(tmp_path, rows), "age,sex")
    assert m.attributes["age"].n_missing == 2 and m.attributes["sex"].n_missing == 2
    assert m.attributes["age"].groups[4] is None and m.attributes["sex"].groups[4] is not None
    assert np.isnan(m.attributes["age"].values[9]) and m.attributes["sex"].values[7] is None
    assert len(m) == 30


def test_parquet_and_absolute_paths(tmp_path: Path) -> None:
    rows = _rows(6)
    (tmp_path / "img").mkdir()
    for r in rows:
        f = tmp_path / r["path"]
        f.write_bytes(b"x")
        r["path"] = str(f)
    m = load_manifest(_write(tmp_path, rows, "m.parquet", images=False), "sex")
    assert [str(p) for p in m.paths] == [r["path"] for r in rows]


def test_yaw_from_landmarks_when_no_yaw_column(tmp_path: Path) -> None:
    m = load_manifest(_write(tmp_path, _rows()), "yaw")
    yaw = m.attributes["yaw"]
    assert yaw.source == "landmarks" and np.allclose(yaw.values, 0.0, atol=1e-9)
    assert set(yaw.groups) == {"frontal"} and any("proxy" in w for w in m.warnings)


def test_error_missing_attribute_column(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as e:
        load_manifest(_write(tmp_path, _rows()), "Sex,age")
    msg = str(e.value)
    assert "'Sex' not found" in msg and "columns are: path, identity, age, sex" in msg and "'sex'" in msg


def test_error_missing_path_column(tmp_path: Path) -> None:
    rows = [{"file": r["path"], "sex": r["sex"]} for r in _rows(4)]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ManifestError, match="required column 'path' not found.*Closest match: 'file'"):
        load_manifest(tmp_path / "m.csv", "sex")


def test_error_missing_image_files(tmp_path: Path) -> None:
    path = _write(tmp_path, _rows())
    for i in (2, 5, 6):
        (tmp_path / f"img/{i:03d}.jpg").unlink()
    with pytest.raises(ManifestError, match=r"3 of 30 image file\(s\) not found.*row 3: img/002.jpg"):
        load_manifest(path, "sex")
    assert len(load_manifest(path, "sex", check_files=False)) == 30


def test_error_duplicate_paths(tmp_path: Path) -> None:
    rows = _rows()
    rows[7]["path"] = rows[2]["path"]
    with pytest.raises(ManifestError, match=r"1 duplicate path\(s\): 'img/002.jpg' at rows 3 and 8"):
        load_manifest(_write(tmp_path, rows), "sex")


def test_error_single_image_identities(tmp_path: Path) -> None:
    rows = _rows(6)
    for i, r in enumerate(rows):
        r["identity"] = f"p{i}"
    path = _write(tmp_path, rows)
    with pytest.raises(ManifestError, match="every identity .* has a single image"):
        load_manifest(path, "sex", require_identity=True)
    load_manifest(path, "sex")  # fine when pairs are not needed
    rows2 = [{k: v for k, v in r.items() if k != "identity"} for r in _rows(6)]
    with pytest.raises(ManifestError, match="identity column 'identity' not found"):
        load_manifest(_write(tmp_path, rows2, "n.csv"), "sex", require_identity=True)


def test_error_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "m.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(ManifestError, match="could not be read as Parquet"):
        load_manifest(bad, "sex")
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope.csv", "sex")
    (tmp_path / "m.xlsx").write_bytes(b"x")
    with pytest.raises(ManifestError, match="unsupported file type"):
        load_manifest(tmp_path / "m.xlsx", "sex")
    latin = tmp_path / "l.csv"
    latin.write_bytes("path,sex\nimg/\xe9.jpg,male\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        load_manifest(latin, "sex", check_files=False)
    (tmp_path / "e.csv").write_text("path,sex\n")
    with pytest.raises(ManifestError, match="no rows"):
        load_manifest(tmp_path / "e.csv", "sex")


def test_error_bad_landmarks(tmp_path: Path) -> None:
    rows = _rows()
    rows[11]["lm_y3"] = "abc"
    with pytest.raises(ManifestError, match=r"bad landmark value 'abc' at row 12, column 'lm_y3'"):
        load_manifest(_write(tmp_path, rows), "sex")
    rows = _rows()
    rows[4]["lm_x2"] = None
    with pytest.raises(ManifestError, match=r"row 5 has some landmarks but not all \(empty: lm_x2\)"):
        load_manifest(_write(tmp_path, rows, "b.csv"), "sex")
    rows = [{k: v for k, v in r.items() if k != "lm_y5"} for r in _rows()]
    with pytest.raises(ManifestError, match="landmark columns incomplete, missing lm_y5"):
        load_manifest(_write(tmp_path, rows, "c.csv"), "sex")
    rows = _rows()
    rows[0]["lm_x1"] = "inf"
    with pytest.raises(ManifestError, match="row 1, column 'lm_x1'"):
        load_manifest(_write(tmp_path, rows, "d.csv"), "sex")


def test_error_bad_continuous_and_specs(tmp_path: Path) -> None:
    rows = _rows()
    rows[3]["age"] = "old"
    path = _write(tmp_path, rows)
    with pytest.raises(ManifestError, match=r"'age' is continuous but 1 value\(s\).*row 4 \('old'\)"):
        load_manifest(path, "age:continuous")
    with pytest.raises(ManifestError, match="unknown kind 'ordinal'"):
        load_manifest(path, "age:ordinal")
    with pytest.raises(ManifestError, match="bin edges must increase"):
        load_manifest(path, "code:continuous", bins={"code": [0, 2, 1]})


def test_default_bins_documented() -> None:
    assert isinstance(DEFAULT_BINS["yaw"], Binning) and DEFAULT_BINS["yaw"].absolute
    g = DEFAULT_BINS["yaw"].assign(np.array([-50.0, -20.0, 0.0, 14.9, 15.0, 44.9, 45.0, np.nan]))
    assert list(g) == ["profile", "semi-profile", "frontal", "frontal", "semi-profile", "semi-profile", "profile", None]


@pytest.mark.realdata
def test_real_manifests_load(shared_data: Path) -> None:
    lfw = load_manifest(shared_data / "lfw" / "manifest.csv", "sex,yaw", require_identity=True)
    assert len(lfw) == 5234 and dict(lfw.attributes["sex"].group_counts()) == {"female": 1076, "male": 4158}
    fg = load_manifest(shared_data / "fgnet" / "manifest.csv", "age,sex", require_identity=True)
    assert len(fg) == 522 and fg.attributes["age"].kind == "continuous"
    counts = dict(fg.attributes["age"].group_counts())
    assert sum(counts.values()) == 522 and counts["0-12"] > 100
    utk = load_manifest(shared_data / "utkface" / "manifest.csv", "age,sex,race")
    assert utk.identities is None and utk.attributes["race"].kind == "categorical"


def test_text_cells_in_a_number_column_are_named(tmp_path: Path) -> None:
    rows = _rows()
    rows[2]["age"] = "unknown"
    rows[6]["age"] = "approx. 40"
    path = _write(tmp_path, rows)
    with pytest.raises(ManifestError) as err:
        load_manifest(path, "age")
    msg = str(err.value)
    assert "column 'age'" in msg and "row 3 ('unknown')" in msg and "row 7 ('approx. 40')" in msg, msg
    assert "merge rare" not in msg and "age:categorical" in msg
    # declared categorical, every value is a label: no complaint
    assert load_manifest(path, "age:categorical").attributes["age"].kind == "categorical"
    # a text column with a few numbers stays a categorical attribute
    rows = _rows()
    for i, r in enumerate(rows):
        r["sex"] = "female" if i % 2 else ("male" if i % 3 else "3")
    assert load_manifest(_write(tmp_path, rows, "t.csv"), "sex").attributes["sex"].kind == "categorical"


@pytest.mark.parametrize(("sep", "word"), [(";", "semicolon"), ("\t", "tab"), ("|", "'|'")])
def test_manifest_with_another_delimiter_is_named(tmp_path: Path, sep: str, word: str) -> None:
    path = _write(tmp_path, _rows())
    text = path.read_text(encoding="utf-8").replace(",", sep)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError, match=f"{word}-separated|separated by {word}") as err:
        load_manifest(path, "sex")
    assert "comma" in str(err.value)


def test_missing_files_hint_names_the_python_argument_only_in_python(tmp_path: Path) -> None:
    from faceaudit.errors import command_line

    path = _write(tmp_path, _rows())
    (tmp_path / "img/002.jpg").unlink()
    with pytest.raises(ManifestError, match="check_files=False"):
        load_manifest(path, "sex")
    with command_line(), pytest.raises(ManifestError) as err:
        load_manifest(path, "sex")
    assert "check_files" not in str(err.value) and "row 3: img/002.jpg" in str(err.value)


def test_empty_manifest_says_so(tmp_path: Path) -> None:
    p = tmp_path / "faces.csv"
    p.write_bytes(b"")
    with pytest.raises(ManifestError, match="faces.csv is empty"):
        load_manifest(p, "sex")
