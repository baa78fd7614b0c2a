"""`faceaudit trend` and `faceaudit compare` in-process (skipped until the commands are registered in the CLI)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from faceaudit.cli import main


def _command(name: str) -> None:
    if name not in main.commands:
        pytest.skip(f"`faceaudit {name}` is not registered in faceaudit.cli yet")


@pytest.fixture()
def checkpoints(tmp_path: Path) -> tuple[list[str], Path]:
    pytest.importorskip("faceaudit_features")
    rng = np.random.default_rng(3)
    n = 400
    age = rng.normal(size=n)
    paths = []
    for i in range(n):
        p = tmp_path / f"{i:04d}.jpg"
        p.write_bytes(b"")
        paths.append(str(p))
    manifest = tmp_path / "faces.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "age"])
        w.writerows([p, f"{a:.5f}"] for p, a in zip(paths, age))
    files = []
    for k, rho in enumerate((0.2, 0.8, 0.4)):
        x = rng.normal(size=(n, 3))
        x[:, 0] = rho * age + math.sqrt(1 - rho**2) * rng.normal(size=n)
        f = tmp_path / f"ck{k}.npz"
        np.savez(f, embedding=x.astype(np.float32), paths=np.array(paths))
        files.append(str(f))
    return files, manifest


def test_cli_trend(checkpoints: tuple[list[str], Path], tmp_path: Path) -> None:
    _command("trend")
    files, manifest = checkpoints
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["trend", *files, "--data", str(manifest), "--attrs", "age", "--labels",
                                    "0,1k,2k", "--layers", "final", "--estimator", "entropy", "--quick",
                                    "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "trend.html").is_file() and (out / "trend.json").is_file()
    report = json.loads((out / "trend.json").read_text())  # the plugin that read the files is on record
    assert {c["backend_package"] for c in report["checkpoints"]} == {"faceaudit-features"}
    assert report["environment"]["plugins"].startswith("faceaudit-features ")
    assert "features (faceaudit-features " in (out / "trend.html").read_text()
    res = CliRunner().invoke(main, ["trend", *files, "--data", str(manifest), "--attrs", "age", "--labels", "0,1k",
                                    "--out", str(out)])
    assert res.exit_code == 2 and "label" in res.output


def test_cli_compare(checkpoints: tuple[list[str], Path], tmp_path: Path) -> None:
    _command("compare")
    files, manifest = checkpoints
    out = tmp_path / "cmp"
    res = CliRunner().invoke(main, ["compare", files[0], files[1], "--data", str(manifest), "--attrs", "age",
                                    "--layers", "final", "--estimator", "entropy", "--quick", "--device", "cpu",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "compare.html").is_file()
    report = json.loads((out / "compare.json").read_text())
    assert {m["backend_package"] for m in report["models"]} == {"faceaudit-features"}
    assert report["environment"]["plugins"].startswith("faceaudit-features 0.1.0 (backend features")
    assert "features (faceaudit-features " in (out / "compare.html").read_text()
