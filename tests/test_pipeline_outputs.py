"""The command as typed (no --data), the CI gate, report.md, the notebook frames and quiet logs.

End to end through the CLI in-process: the demo's face CNN (exported to ONNX as
the demo does, untrained) on the built-in phantom faces, and a tiny CNN on two
drawn manifests, one whose "hard" group's identities all look alike (a known
FMR disparity) and one whose groups are drawn the same way (fair).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from faceaudit.cli import main
from faceaudit.demo.default_data import PHANTOM_ATTRIBUTES, SYNTHETIC_STATEMENT
from faceaudit.report.markdown import md_escape

PAYLOAD = "<script>alert(1)</script>|*x*"


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from faceaudit.demo.model import FaceCNN, export_onnx

    torch.manual_seed(0)
    return export_onnx(FaceCNN().eval(), tmp_path_factory.mktemp("demo") / "face_cnn.onnx")


@pytest.fixture(scope="module")
def bare(demo_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """`faceaudit run MODEL --attrs age,sex,yaw --quick` as typed (small phantom), with progress output on."""
    out = tmp_path_factory.mktemp("bare") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FACEAUDIT_NO_PROGRESS", raising=False)  # progress on, as for a user: stderr is not a TTY here
        result = CliRunner().invoke(main, ["run", str(demo_model), "--attrs", "age,sex,yaw", "--quick",
                                           "--n-faces", "100", "--out", str(out)])
    return result, out


def test_bare_command_audits_the_phantom_and_says_the_faces_are_synthetic(bare) -> None:
    result, out = bare
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    data = report["data"]
    assert data["synthetic"] is True and data["statement"] == SYNTHETIC_STATEMENT
    assert data["n_images"] == data["n_used"] == 100 and data["phantom"]["size"] == 112  # the model's input size
    assert {a["name"] for a in data["attributes"]} == {"age", "sex", "yaw"}
    assert report["expressivity"] and report["fairness"] is not None  # phantom identities give genuine pairs
    md = (out / "report.md").read_text()
    assert "**Synthetic data.**" in md and md_escape(SYNTHETIC_STATEMENT) in md
    assert "SYNTHETIC DATA" in (out / "report.html").read_text()
    assert "synthetic phantom faces" in result.stdout


def test_a_non_terminal_gets_plain_lines_not_bars(bare) -> None:
    result, _ = bare
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert any(re.match(r"faceaudit: features: 100 img in \d", line) for line in lines), result.stderr
    assert any(line.startswith("faceaudit: expressivity (") and " in " in line for line in lines), result.stderr


def test_report_format_md_rerenders_report_md(bare, tmp_path: Path) -> None:
    _, out = bare
    again = CliRunner().invoke(main, ["report", str(out / "report.json"), "--format", "md",
                                      "--out", str(tmp_path / "again.md")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again.md").read_bytes() == (out / "report.md").read_bytes()


def test_frames_columns_are_the_report_json_fields(bare) -> None:
    from faceaudit.audit import ReportOutcome
    from faceaudit.report import load_report

    _, out = bare
    report = json.loads((out / "report.json").read_text())
    for result in (ReportOutcome(out / "report.html", out / "report.json", report, []), load_report(out / "report.json")):
        ef, ff = result.expressivity_frame(), result.fairness_frame()
        assert isinstance(ef, pd.DataFrame) and isinstance(ff, pd.DataFrame)
        assert set(ef.columns) == set().union(*(e.keys() for e in report["expressivity"]))
        assert len(ef) == len(report["expressivity"])
        assert ef[["layer", "attribute", "mi"]].to_dict("records") == [
            {"layer": e["layer"], "attribute": e["attribute"], "mi": e["mi"]} for e in report["expressivity"]
        ]
        groups = [g for f in report["fairness"] for g in f["groups"]]
        assert set(ff.columns) == {"attribute", "target_fmr", "threshold"} | set().union(*(g.keys() for g in groups))
        assert len(ff) == len(groups)
        html = result._repr_html_()
        assert "<svg" in html and "Synthetic data." in html and "<script" not in html


def test_attrs_outside_the_phantom_are_listed(demo_model: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(demo_model), "--attrs", "age,race", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "'race'" in result.output
    assert ", ".join(PHANTOM_ATTRIBUTES) in result.output and "--data" in result.output
    assert not (tmp_path / "cache").exists()  # checked before any face is drawn


def test_n_faces_with_a_manifest_is_a_user_error(demo_model: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "faces.csv"
    manifest.write_text("path,age\na.png,30\n")
    result = CliRunner().invoke(main, ["run", str(demo_model), "--data", str(manifest), "--attrs", "age",
                                       "--n-faces", "100", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--n-faces" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["trend", "compare"])
def test_trend_and_compare_default_to_the_phantom_too(command: str, demo_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [command, str(demo_model), str(demo_model), "--labels", "a,b", "--attrs", "age",
                                       "--layers", "final", "--estimator", "entropy", "--quick", "--n-faces", "40",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / f"{command}.json").read_text())
    assert report["data"]["synthetic"] is True and report["data"]["n_images"] == 40
    assert md_escape(SYNTHETIC_STATEMENT) in (out / f"{command}.md").read_text()
    assert "SYNTHETIC DATA" in (out / f"{command}.html").read_text()


# --------------------------------------------------------------------------- --fail-on, --quiet, escaping


class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU())
        self.stage1 = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(16 * 8 * 8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage1(self.stem(x)).flatten(1))


def _manifest(folder: Path, *, disparity: bool, labels: tuple[str, str], n_ids: int = 20, per_id: int = 3) -> Path:
    """Identities drawn as random 8x8 textures; with `disparity`, the second group's all vary one shared texture
    a little, so they look alike to any network and its false match rate is high."""
    rng = np.random.default_rng(1)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    base = rng.normal(0, 1, size=(8, 8, 3))
    rows = []
    for g, label in enumerate(labels):
        for i in range(n_ids):
            own = rng.normal(0, 1, size=(8, 8, 3))
            pattern = base + 0.15 * own if (disparity and g == 1) else own
            for k in range(per_id):
                arr = np.kron(pattern, np.ones((4, 4, 1))) + rng.normal(0, 0.1, size=(32, 32, 3))
                name = f"img/{g}_{i:02d}_{k}.png"
                Image.fromarray(np.clip(128 + 50 * arr, 0, 255).astype(np.uint8)).save(folder / name)
                rows.append({"path": name, "identity": f"{g}-{i}", "group": label})
    pd.DataFrame(rows).to_csv(folder / "faces.csv", index=False)
    return folder / "faces.csv"


@pytest.fixture(scope="module")
def gate_runs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gate")
    model = root / "tiny.onnx"
    torch.onnx.export(_TinyNet().eval(), torch.zeros(1, 3, 32, 32), str(model), input_names=["input"],
                      output_names=["embedding"], dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                      opset_version=17, dynamo=False)
    runs = {}
    for name, disparity, labels, level in (("biased", True, ("plain", PAYLOAD), "high"),
                                           ("fair", False, ("easy", "hard"), "medium")):
        manifest = _manifest(root / name, disparity=disparity, labels=labels)
        out = root / f"out-{name}"
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("FACEAUDIT_NO_PROGRESS", raising=False)  # so --quiet has something to silence
            runs[name] = (CliRunner().invoke(main, [
                "run", str(model), "--data", str(manifest), "--attrs", "group", "--layers", "embedding", "--quick",
                "--target-fmr", "0.05", "--fail-on", level, "-q", "--out", str(out)]), out)
    return runs


def test_fail_on_exits_3_on_a_known_disparity_and_names_it(gate_runs) -> None:
    result, out = gate_runs["biased"]
    assert result.exit_code == 3, result.output
    assert "fail-on high: 1 finding(s)" in result.stderr and "HIGH: FMR for " + PAYLOAD in result.stderr
    assert (out / "report.json").is_file() and (out / "report.md").is_file()  # the report is written all the same


def test_fail_on_exits_0_when_fair_and_quiet_prints_only_the_summary(gate_runs) -> None:
    result, _ = gate_runs["fair"]
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # --quiet: no stage lines, no progress, no warnings
    assert result.stdout.startswith("report: ") and "fail-on" not in result.output


def test_report_md_escapes_manifest_values(gate_runs) -> None:
    _, out = gate_runs["biased"]
    md = (out / "report.md").read_text()
    assert "<script" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;\\|\\*x\\*" in md
    unescaped_pipe = re.compile(r"(?<!\\)\|")
    lines = md.splitlines()
    n_rows, cells = 0, None
    for i, line in enumerate(lines):  # every row has as many cells as its table's header: no label splits a cell
        if not line.startswith("| "):
            continue
        if i + 1 < len(lines) and lines[i + 1].startswith("| ---"):
            cells = len(unescaped_pipe.findall(line))
            continue
        assert len(unescaped_pipe.findall(line)) == cells, line
        n_rows += 1
    assert n_rows >= 3
