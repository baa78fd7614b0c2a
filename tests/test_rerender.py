"""`faceaudit.report.rerender.rerender`: the library call behind `faceaudit report`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from test_report_data import full_report

from faceaudit.cli import main
from faceaudit.errors import OutputError
from faceaudit.report import write_report
from faceaudit.report.rerender import rerender


def test_rerender_writes_what_the_command_writes(tmp_path: Path) -> None:
    _, json_path = write_report(full_report(), tmp_path / "run")
    for fmt in ("html", "md"):
        lib = rerender(json_path, tmp_path / f"lib.{fmt}", fmt=fmt)
        result = CliRunner().invoke(main, ["report", str(json_path), "--format", fmt, "--out", str(tmp_path / f"cli.{fmt}")])
        assert result.exit_code == 0, result.output
        assert lib.read_bytes() == (tmp_path / f"cli.{fmt}").read_bytes()
    assert rerender(json_path, tmp_path) == tmp_path / "report.html"  # a folder gets the default name


def test_rerender_never_overwrites_its_input_and_names_the_python_argument(tmp_path: Path) -> None:
    _, json_path = write_report(full_report(), tmp_path / "run")
    before = json_path.read_bytes()
    with pytest.raises(OutputError, match="Choose another out="):
        rerender(json_path, json_path)
    assert json_path.read_bytes() == before
