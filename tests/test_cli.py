"""The CLI in-process (click's CliRunner): help texts, listings, bad invocations, a tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from faceaudit.cli import main

REQUIRED_KEYS = {
    "schema_version", "faceaudit_version", "model", "data", "layers", "expressivity",
    "fairness", "warnings", "timings", "settings",
}
EXPRESSIVITY_KEYS = {
    "layer", "attribute", "kind", "mi", "ci_low", "ci_high", "null_mi", "normalized", "n", "estimator", "warnings",
}


class _TinyFaceNet(torch.nn.Module):
    """A small CNN whose embedding sees image brightness, so a brightness attribute is encoded."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU())
        self.stage1 = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU())
        self.stage2 = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stage2(self.stage1(self.stem(x)))
        return self.head(h.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    net = _TinyFaceNet().eval()
    torch.onnx.export(
        net, torch.zeros(1, 3, 32, 32), str(path), input_names=["input"], output_names=["embedding"],
        dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=17, dynamo=False,
    )
    return path


def _tiny_manifest(folder: Path, n_ids: int = 30, per_id: int = 4, label: str = "sex") -> Path:
    """Images whose brightness follows `label` (and a per-identity offset), with identities for pairs."""
    rng = np.random.default_rng(0)
    rows = []
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n_ids):
        sex = "female" if i % 2 else "male"
        base = 150 if sex == "female" else 90
        tint = rng.integers(0, 40, size=3)
        for k in range(per_id):
            arr = np.clip(base + tint + rng.normal(0, 12, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            name = f"img/{i:03d}_{k}.png"
            Image.fromarray(arr).save(folder / name)
            rows.append({"path": name, "identity": f"id{i:03d}", label: sex, "age": float(rng.integers(5, 80))})
    manifest = folder / "faces.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


@pytest.mark.parametrize("command", [[], ["run"], ["layers"], ["plugins"], ["report"], ["demo"]])
def test_help_texts_teach_with_examples(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    text = result.output
    if command in ([], ["run"], ["layers"], ["report"], ["demo"]):
        assert "faceaudit " in text and ("Example" in text or "Start here" in text)


def test_version() -> None:
    from faceaudit import __version__

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_plugins_lists_builtin_backends_and_estimators() -> None:
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    for name in ("onnx", "torch", "mine", "smile", "infonce", "nwj", "entropy"):
        assert f"  {name} " in result.output


def test_layers_marks_auto_choice(tiny_model: Path) -> None:
    result = CliRunner().invoke(main, ["layers", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert "embedding" in result.output and " *" in result.output
    as_json = CliRunner().invoke(main, ["layers", str(tiny_model), "--json"])
    rows = json.loads(as_json.output)
    assert any(r["name"] == "embedding" and r["auto"] for r in rows)


def test_run_end_to_end_on_tiny_set(tiny_model: Path, tmp_path: Path) -> None:
    manifest = _tiny_manifest(tmp_path / "data")
    out = tmp_path / "out"
    args = ["run", str(tiny_model), "--data", str(manifest), "--attrs", "sex,age", "--out", str(out),
            "--quick", "--seeds", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert REQUIRED_KEYS <= set(report)
    assert {"path", "sha256", "backend"} <= set(report["model"])
    assert report["model"]["backend_package"] == "faceaudit" and report["environment"]["plugins"] == "none"
    assert {"manifest", "n_images", "n_used", "n_failed"} <= set(report["data"])
    assert report["data"]["n_images"] == 120 and report["data"]["n_used"] == 120
    assert all({"name", "dim"} <= set(layer) for layer in report["layers"])
    assert report["expressivity"] and all(EXPRESSIVITY_KEYS <= set(e) for e in report["expressivity"])
    # brightness is set by sex, and the embedding sees brightness: sex is encoded above its null
    final = report["layers"][-1]["name"]
    sex = next(e for e in report["expressivity"] if e["layer"] == final and e["attribute"] == "sex")
    assert sex["mi"] > sex["null_mi"] + 0.1 and sex["ci_low"] > 0
    assert report["fairness"] and report["fairness"][0]["groups"]
    html = (out / "report.html").read_text()
    assert "<script" not in html

    # re-rendering from the JSON reproduces the HTML byte for byte
    again = CliRunner().invoke(main, ["report", str(out / "report.json"), "--out", str(tmp_path / "again.html")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again.html").read_bytes() == (out / "report.html").read_bytes()

    # a rerun reuses the feature cache
    rerun = CliRunner().invoke(main, args)
    assert rerun.exit_code == 0, rerun.output
    second = json.loads((out / "report.json").read_text())
    assert second["timings"]["features_s"] < report["timings"]["features_s"] * 2 + 1
    assert second["expressivity"] == report["expressivity"]


def _assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_missing_model_is_a_user_error(tmp_path: Path) -> None:
    manifest = _tiny_manifest(tmp_path / "data", n_ids=4, per_id=2)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "nope.onnx"), "--data", str(manifest),
                                       "--attrs", "sex", "--out", str(tmp_path / "o")])
    _assert_user_error(result, "nope.onnx")
    assert not (tmp_path / "o" / "report.html").exists()


def test_unknown_attribute_is_a_user_error(tiny_model: Path, tmp_path: Path) -> None:
    manifest = _tiny_manifest(tmp_path / "data", n_ids=4, per_id=2)
    result = CliRunner().invoke(main, ["run", str(tiny_model), "--data", str(manifest), "--attrs", "sexx",
                                       "--out", str(tmp_path / "o")])
    _assert_user_error(result, "sexx", "sex")
    assert not (tmp_path / "o" / "report.json").exists()


def test_unreadable_manifest_is_a_user_error(tiny_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "faces.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage\x00\x00")
    result = CliRunner().invoke(main, ["run", str(tiny_model), "--data", str(bad), "--attrs", "sex",
                                       "--out", str(tmp_path / "o")])
    _assert_user_error(result, "faces.csv")


def test_unwritable_output_folder_is_a_user_error(tiny_model: Path, tmp_path: Path) -> None:
    manifest = _tiny_manifest(tmp_path / "data", n_ids=4, per_id=2)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    result = CliRunner().invoke(main, ["run", str(tiny_model), "--data", str(manifest), "--attrs", "sex",
                                       "--out", str(blocker / "out")])
    _assert_user_error(result, "out")
    assert blocker.read_text() == "a file, not a folder"


def test_report_of_missing_json_is_a_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(tmp_path / "report.json")])
    _assert_user_error(result, "report.json")


def test_ray_executor_gives_the_same_report(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the `ray` extra is not installed (pip install faceaudit[ray])")
    manifest = _tiny_manifest(tmp_path / "data", n_ids=10, per_id=4)
    reports = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        result = CliRunner().invoke(main, ["run", str(tiny_model), "--data", str(manifest), "--attrs", "sex",
                                           "--out", str(out), "--quick", "--layers", "embedding",
                                           "--executor", executor, "--ray-actors", "2"])
        assert result.exit_code == 0, result.output
        reports[executor] = json.loads((out / "report.json").read_text())
    assert reports["ray"]["settings"]["executor"] == "ray"
    assert reports["ray"]["expressivity"] == reports["local"]["expressivity"]


def test_expressivity_subsample_is_stated(tiny_model: Path, tmp_path: Path) -> None:
    from faceaudit.audit import AuditConfig, run_audit

    manifest = _tiny_manifest(tmp_path / "data", n_ids=20, per_id=4)
    outcome = run_audit(AuditConfig(model=tiny_model, manifest=manifest, attrs="sex", layers="embedding",
                                    out_dir=tmp_path / "out", quick=True, expressivity_max_rows=60))
    report = outcome.report
    assert report["settings"]["expressivity_n_rows"] == 60
    assert {e["runtime"]["device"] for e in report["expressivity"]} == {"cpu"}
    assert report["environment"]["expressivity_runtime"].startswith("cpu, ")
    assert all(e["n"] == 60 for e in report["expressivity"])
    assert any("subset of 60 of 80" in w for w in report["warnings"])
    assert report["fairness"][0]["n_images"] == 80


def test_cli_hints_name_flags_that_exist(tmp_path: Path) -> None:
    import os

    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save(Evil(), str(evil))
    result = CliRunner().invoke(main, ["layers", str(evil)])
    _assert_user_error(result, "refused for safety", "--trust-pickle")
    assert "trust_pickle=" not in result.output and "factory=" not in result.output and "corrupt" not in result.output
    assert not marker.exists()


def test_cli_names_text_cells_in_a_number_column(tiny_model: Path, tmp_path: Path) -> None:
    manifest = _tiny_manifest(tmp_path / "data", n_ids=8, per_id=2)
    df = pd.read_csv(manifest)
    df["age"] = df["age"].astype(object)
    df.loc[4, "age"] = "unknown"
    df.to_csv(manifest, index=False)
    result = CliRunner().invoke(main, ["run", str(tiny_model), "--data", str(manifest), "--attrs", "age",
                                       "--out", str(tmp_path / "o")])
    _assert_user_error(result, "row 5 ('unknown')", "age:categorical")
    assert "merge rare" not in result.output


@pytest.mark.parametrize("kind", ["list", "object", "inside a valid report"])
def test_report_of_deeply_nested_json_is_a_user_error(tmp_path: Path, kind: str) -> None:
    from test_report_data import full_report

    depth = 100_000
    p = tmp_path / "report.json"
    if kind == "list":
        p.write_text("[" * depth + "]" * depth, encoding="utf-8")
    elif kind == "object":
        p.write_text('{"a":' * depth + "1" + "}" * depth, encoding="utf-8")
    else:
        text = json.dumps(full_report())
        p.write_text(text[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}", encoding="utf-8")
    result = CliRunner().invoke(main, ["report", str(p)])
    _assert_user_error(result, "report.json", "nested")
    assert not (tmp_path / "report.html").exists()


def test_terminal_control_characters_from_the_manifest_are_not_printed(tiny_model: Path, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from faceaudit.cli import _print_outcome

    manifest = _tiny_manifest(tmp_path / "data", n_ids=4, per_id=2)
    df = pd.read_csv(manifest)
    df.loc[1, "path"] = "img/\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b1m.png"  # missing file with escapes in its name
    df.to_csv(manifest, index=False)
    result = CliRunner().invoke(main, ["run", str(tiny_model), "--data", str(manifest), "--attrs", "sex",
                                       "--out", str(tmp_path / "o")])
    _assert_user_error(result, "not found", "red")
    assert not any(c in result.output for c in "\x1b\x07\x9b"), repr(result.output)
    # findings carry group labels from the manifest
    outcome = SimpleNamespace(html_path=tmp_path / "r.html", json_path=tmp_path / "r.json",
                              findings=["HIGH: FNMR for \x1b[2Jfemale\r\x08 is 2.0x that of male"])
    runner = CliRunner()
    with runner.isolation() as (out, _err, *_):
        _print_outcome(outcome)
    printed = out.getvalue().decode()
    assert "FNMR for female is 2.0x" in printed and "\x1b" not in printed and "\r" not in printed


def test_a_new_run_sets_the_previous_report_aside(tiny_model: Path, tmp_path: Path) -> None:
    from test_report_data import full_report

    from faceaudit.report import write_report
    from faceaudit.report.render import discard_previous, set_aside_previous

    out = tmp_path / "o"
    write_report(full_report(), out)  # a complete report from an earlier run
    before = (out / "report.html").read_bytes()
    manifest = _tiny_manifest(tmp_path / "data", n_ids=4, per_id=2)
    result = CliRunner().invoke(main, ["run", str(tiny_model), "--data", str(manifest), "--attrs", "sexx",
                                       "--out", str(out)])
    assert result.exit_code == 2, result.output
    # the failed run leaves no report.html that looks like its own; the earlier one is kept, renamed
    assert not (out / "report.html").exists() and not (out / "report.json").exists()
    assert (out / "report.previous.html").read_bytes() == before and (out / "report.previous.json").exists()
    # files that are not faceaudit's own are never moved or removed
    (out / "report.html").write_text("<p>my notes</p>")
    (out / "report.json").symlink_to(out / "report.previous.json")
    assert set_aside_previous(out) == []
    assert (out / "report.html").read_text() == "<p>my notes</p>" and (out / "report.json").is_symlink()
    discard_previous([out / "report.html"])
    assert (out / "report.html").exists()
    discard_previous([out / "report.previous.html"])
    assert not (out / "report.previous.html").exists()
