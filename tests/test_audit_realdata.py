"""`faceaudit run` end to end on the real MobileFaceNet and real LFW faces."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from faceaudit.cli import main

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _lfw_subset(shared_data: Path, folder: Path, n_identities: int = 120, per_identity: int = 6) -> Path:
    """A manifest of real LFW faces, at most `per_identity` images of each chosen identity, absolute paths."""
    lfw = shared_data / "lfw"
    df = pd.read_csv(lfw / "manifest.csv")
    rng = np.random.default_rng(0)
    counts = df.groupby("identity").size()
    female = counts[df.groupby("identity")["sex"].first() == "female"].index.tolist()
    male = counts[df.groupby("identity")["sex"].first() == "male"].index.tolist()
    chosen = list(rng.choice(female, n_identities // 2, replace=False)) + list(
        rng.choice(male, n_identities // 2, replace=False)
    )
    sub = df[df["identity"].isin(chosen)].groupby("identity", group_keys=False).head(per_identity).copy()
    sub["path"] = [str((lfw / p).resolve()) for p in sub["path"]]
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "lfw_subset.csv"
    sub[["path", "identity", "sex", "yaw"]].to_csv(out, index=False)
    return out


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)


def test_run_on_real_lfw(mobilefacenet: Path, shared_data: Path, tmp_path: Path) -> None:
    manifest = _lfw_subset(shared_data, tmp_path / "data")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, [
        "run", str(mobilefacenet), "--data", str(manifest), "--attrs", "sex,yaw", "--out", str(out),
        "--seeds", "2", "--target-fmr", "1e-2",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["backend"] == "onnx" and len(report["model"]["sha256"]) == 64
    assert report["data"]["n_used"] == report["data"]["n_images"] > 300
    assert len(report["layers"]) == 5 and report["layers"][-1]["name"] == "embeddings"
    final = {e["attribute"]: e for e in report["expressivity"] if e["layer"] == "embeddings"}
    sex = final["sex"]
    # the final embedding of a face network encodes sex: clearly above the permutation null
    assert sex["ci_low"] > max(sex["null_mi"], 0.0) + 0.02, sex
    # where the critics trained, which with the seed makes the CPU numbers reproducible
    threads = torch.get_num_threads()
    assert all(e["runtime"] == {"device": "cpu", "torch_threads": threads, "workers": e["runtime"]["workers"]}
               and 1 <= e["runtime"]["workers"] <= threads for e in report["expressivity"])
    assert report["environment"]["expressivity_runtime"].startswith(f"cpu, {threads} torch thread")
    fair = report["fairness"][0]
    assert fair["attribute"] == "sex" and {g["group"] for g in fair["groups"]} == {"female", "male"}
    assert all(0 <= g["fnmr"] <= 1 and 0 <= g["fmr"] <= 1 for g in fair["groups"])
    html = (out / "report.html").read_text()
    parser = _Tags()
    parser.feed(html)
    assert "script" not in parser.tags and "svg" in parser.tags
    assert report["environment"]["expressivity_runtime"] in html


def test_hostile_column_and_group_names_are_text(mobilefacenet: Path, shared_data: Path, tmp_path: Path) -> None:
    payload_col = "<img src=x onerror=alert(1)>"
    payload_group = "<script>alert(1)</script>"
    manifest = _lfw_subset(shared_data, tmp_path / "data", n_identities=20, per_identity=4)
    df = pd.read_csv(manifest)
    df[payload_col] = np.where(df["sex"] == "female", payload_group, "male")
    df.to_csv(manifest, index=False)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, [
        "run", str(mobilefacenet), "--data", str(manifest), "--attrs", payload_col, "--out", str(out),
        "--quick", "--layers", "embeddings",
    ])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    parser = _Tags()
    parser.feed(html)
    assert "script" not in parser.tags and "img" not in parser.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
