"""Hostile files and careless paths: no code runs on opening a model, no write follows a planted link,
no file that is not faceaudit's is overwritten, odd images are decoded right or skipped."""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from faceaudit.backends import open_model
from faceaudit.cli import main
from faceaudit.data.images import decode_image
from faceaudit.errors import InputError, ModelError


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


def _export(path: Path, dynamic: bool = True) -> Path:
    torch.manual_seed(0)
    shapes = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic else None
    ep = torch.export.export(_Small().eval(), (torch.zeros(2, 3, 16, 16),), dynamic_shapes=shapes)
    torch.export.save(ep, str(path))
    return path


def _replace_member(archive: Path, suffix: str, data: bytes, out: Path) -> Path:
    """Copy `archive` to `out` with the member whose name ends in `suffix` replaced by `data`."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        hits = [n for n in src.namelist() if n.endswith(suffix)]
        assert len(hits) == 1, src.namelist()
        for info in src.infolist():
            dst.writestr(info, data if info.filename == hits[0] else src.read(info.filename))
    return out


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _member(archive: Path, wanted: Callable[[str], bool]) -> tuple[str, bytes]:
    """The name and bytes of the first member of `archive` whose name `wanted` accepts."""
    with zipfile.ZipFile(archive) as zf:
        name = next(n for n in zf.namelist() if wanted(n))
        return name, zf.read(name)


def _refused_without_running(evil: Path, marker: Path, match: str = "refused for safety") -> None:
    """Opening `evil` raises ModelError matching `match`, and the planted command never ran."""
    with pytest.raises(ModelError, match=match):
        open_model(evil)
    assert not marker.exists()


def _evil_pickle(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save((_Evil(marker),), buf)
    return buf.getvalue()


# ------------------------------------------------------------------ 1. .pt2 runs no code when opened
def test_pt2_with_a_malicious_sample_input_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    good = _export(tmp_path / "good.pt2")
    evil = _replace_member(good, "data/sample_inputs/model.pt", _evil_pickle(marker), tmp_path / "evil.pt2")
    result = CliRunner().invoke(main, ["layers", str(evil)])
    assert not marker.exists(), "opening the .pt2 ran the pickled command"
    assert result.exit_code == 2, result.output
    assert "refused for safety" in result.output and "--trust-pickle" in result.output
    assert "data/sample_inputs/model.pt" in result.output
    _refused_without_running(evil, marker, "trust_pickle=True")


def test_pt2_with_a_malicious_pickled_weight_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    good = _export(tmp_path / "good.pt2")
    name, raw = _member(good, lambda n: n.endswith("model_weights_config.json"))
    config = json.loads(raw)
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    step = _replace_member(good, "model_weights_config.json", json.dumps(config).encode(), tmp_path / "step.pt2")
    evil = _replace_member(step, f"data/weights/{first['path_name']}", _evil_pickle(marker), tmp_path / "evil.pt2")
    _refused_without_running(evil, marker)


def test_pt2_with_code_in_a_symbolic_shape_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    good = _export(tmp_path / "good.pt2")
    name, raw = _member(good, lambda n: "/models/" in n and n.endswith(".json"))
    text = raw.decode()
    assert '"expr_str"' in text  # the dynamic batch is stored as a symbolic expression
    payload = f"__import__('os').system('touch {marker}')"
    hostile = text.replace('"expr_str": "', '"expr_str": "' + payload.replace("'", "\\u0027") + " + ", 1)
    evil = _replace_member(good, name.split("/", 1)[1], hostile.encode(), tmp_path / "evil.pt2")
    _refused_without_running(evil, marker)


@pytest.mark.parametrize("member", ["{prefix}/data/aotinductor/model/model.so", "version"])
def test_pt2_with_native_code_or_the_unchecked_old_layout_is_refused(tmp_path: Path, member: str) -> None:
    good = _export(tmp_path / "good.pt2")
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w", zipfile.ZIP_STORED) as dst:
        prefix = src.namelist()[0].split("/", 1)[0]
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        dst.writestr(member.format(prefix=prefix), b"\x7fELF")
    with pytest.raises(ModelError, match="refused for safety"):
        open_model(evil)


def test_legitimate_pt2_still_opens_and_trust_pickle_still_works(tmp_path: Path) -> None:
    for dynamic in (True, False):
        m = open_model(_export(tmp_path / f"m{dynamic}.pt2", dynamic))
        assert m.extract(np.zeros((2, 3, 16, 16), np.float32), ["output"])["output"].shape == (2, 3)
    marker = tmp_path / "ran"
    good = _export(tmp_path / "good.pt2")
    evil = _replace_member(good, "data/sample_inputs/model.pt", _evil_pickle(marker), tmp_path / "evil.pt2")
    with pytest.warns(UserWarning, match="runs any code"), contextlib.suppress(ModelError):
        open_model(evil, trust_pickle=True)  # torch then fails on the command's return value
    assert marker.exists()  # the opt-in does what it says


# ------------------------------------------------------------------ 2. no write follows a planted link
def test_write_probe_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    important = tmp_path / "important.txt"
    important.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".faceaudit-write-test").symlink_to(important)
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    bad_manifest = tmp_path / "faces.csv"
    bad_manifest.write_text("nothing,here\n1,2\n")
    result = CliRunner().invoke(main, ["run", str(tmp_path / "model.onnx"), "--data", str(bad_manifest),
                                       "--attrs", "sex", "--out", str(out), "--quick"])
    assert result.exit_code == 2, result.output  # the run fails on its inputs ...
    assert important.read_text() == "keep me\n"  # ... and the planted link's target is untouched
    assert (out / ".faceaudit-write-test").is_symlink()


def test_report_files_replace_a_planted_symlink_not_its_target(tmp_path: Path) -> None:
    from faceaudit._atomic import atomic_write_text

    important = tmp_path / "important.txt"
    important.write_text("keep me\n")
    link = tmp_path / "report.html"
    link.symlink_to(important)
    atomic_write_text(link, "<html></html>")
    assert important.read_text() == "keep me\n"


# ------------------------------------------------------------------ 3. faceaudit overwrites only its own files
@pytest.fixture()
def report_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real report.json, written by the report writer from a small audit result."""
    from test_report_data import full_report

    from faceaudit.report import write_report

    out = tmp_path_factory.mktemp("rep")
    write_report(full_report(), out)
    (out / "report.html").unlink()
    return out / "report.json"


def test_report_refuses_to_overwrite_its_input(report_json: Path) -> None:
    before = report_json.read_bytes()
    result = CliRunner().invoke(main, ["report", str(report_json), "--out", str(report_json)])
    assert result.exit_code == 2, result.output
    assert "is the input" in result.output
    assert report_json.read_bytes() == before
    forced = CliRunner().invoke(main, ["report", str(report_json), "--out", str(report_json), "--force"])
    assert forced.exit_code == 2 and report_json.read_bytes() == before


def test_report_refuses_to_overwrite_a_file_that_is_not_a_report(report_json: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("path,sex\na.png,female\n")
    result = CliRunner().invoke(main, ["report", str(report_json), "--out", str(data)])
    assert result.exit_code == 2, result.output
    assert "not a faceaudit HTML report" in result.output and "--force" in result.output
    assert data.read_text() == "path,sex\na.png,female\n"
    other_json = tmp_path / "other.json"  # another run's JSON report is not an HTML report either
    other_json.write_bytes(report_json.read_bytes())
    refused = CliRunner().invoke(main, ["report", str(report_json), "--out", str(other_json)])
    assert refused.exit_code == 2 and other_json.read_bytes() == report_json.read_bytes()
    forced = CliRunner().invoke(main, ["report", str(report_json), "--out", str(data), "--force"])
    assert forced.exit_code == 0, forced.output
    assert '<meta name="generator" content="faceaudit' in data.read_text()


def test_report_replaces_its_own_html_and_writes_into_a_folder(report_json: Path, tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    first = CliRunner().invoke(main, ["report", str(report_json), "--out", str(target)])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, ["report", str(report_json), "--out", str(target)])
    assert again.exit_code == 0, again.output  # a faceaudit report is replaced without --force
    folder = tmp_path / "site"
    folder.mkdir()
    into = CliRunner().invoke(main, ["report", str(report_json), "--out", str(folder)])
    assert into.exit_code == 0, into.output
    assert (folder / "report.html").read_bytes() == target.read_bytes()


def test_report_writer_never_overwrites_a_foreign_file_in_the_out_folder(report_json: Path, tmp_path: Path) -> None:
    from faceaudit.errors import OutputError
    from faceaudit.report import load_report, write_report

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text('{"my": "own data"}\n')
    with pytest.raises(OutputError, match="not a faceaudit JSON report"):
        write_report(load_report(report_json), out)
    assert (out / "report.json").read_text() == '{"my": "own data"}\n'
    assert not (out / "report.html").exists()
    (out / "report.json").unlink()
    write_report(load_report(report_json), out)
    write_report(load_report(report_json), out)  # its own files are replaced on a rerun


def test_run_refuses_a_foreign_report_json_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("[1, 2, 3]\n")
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    (tmp_path / "faces.csv").write_text("path,sex\na.png,female\n")
    result = CliRunner().invoke(main, ["run", str(tmp_path / "model.onnx"), "--data", str(tmp_path / "faces.csv"),
                                       "--attrs", "sex", "--out", str(out), "--quick"])
    assert result.exit_code == 2, result.output
    assert "report.json is a file that is not a faceaudit JSON report" in result.output
    assert (out / "report.json").read_text() == "[1, 2, 3]\n"


# ------------------------------------------------------------------ 5. high bit depth images
def test_16_bit_greyscale_png_decodes_to_the_right_grey_levels(tmp_path: Path) -> None:
    levels16 = np.array([[0, 257 * 64, 257 * 128], [257 * 200, 65535, 257 * 17]], dtype=np.uint16)
    p = tmp_path / "grey16.png"
    Image.fromarray(levels16).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I;16") or im.mode == "I"
    got = decode_image(p)
    assert got.shape == (2, 3, 3) and got.dtype == np.uint8
    expected = np.array([[0, 64, 128], [200, 255, 17]], dtype=np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(got[..., c], expected)


def test_32_bit_integer_and_float_images_are_not_saturated(tmp_path: Path) -> None:
    p = tmp_path / "grey32.tif"
    Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32), mode="I").save(p)
    got = decode_image(p)
    np.testing.assert_array_equal(got[0, :, 0], [0, 4, 255])
    f = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F").save(f)
    with pytest.raises(InputError, match="floating-point"):
        decode_image(f)


# ------------------------------------------------------------------ 6a. an oversized image is skipped, not fatal
def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (Pillow checks the size when it opens it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_an_unreadable_image(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(40000, 40000))
    with pytest.raises(InputError, match=r"bomb\.png.*too large"):
        decode_image(bomb)


def test_one_oversized_image_is_skipped_and_listed(tmp_path: Path) -> None:
    from faceaudit.features import extract_features

    torch.manual_seed(0)
    model_path = tmp_path / "m.pt2"
    _export(model_path)
    paths = []
    for i in range(3):
        p = tmp_path / f"ok{i}.png"
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(p)
        paths.append(str(p))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(40000, 40000))
    paths.insert(1, str(bomb))
    fs = extract_features(model_path, paths, "output", batch_size=2, progress=False)
    assert list(fs.ok) == [True, False, True, True]
    assert len(fs.failed) == 1 and fs.failed[0][0] == str(bomb) and "too large" in fs.failed[0][1]


def test_phantom_images_replace_a_planted_symlink_not_its_target(tmp_path: Path) -> None:
    from faceaudit.demo.phantom import generate_phantom

    important = tmp_path / "important.txt"
    important.write_text("keep me\n")
    (tmp_path / "out" / "images").mkdir(parents=True)
    (tmp_path / "out" / "images" / "id_00000.png").symlink_to(important)
    generate_phantom(tmp_path / "out", n_identities=2, images_per_identity=2, size=32, progress_enabled=False)
    assert important.read_text() == "keep me\n"
    assert not (tmp_path / "out" / "images" / "id_00000.png").is_symlink()


def test_trend_and_compare_pairs_replace_their_own_files_only(tmp_path: Path) -> None:
    from faceaudit import __version__
    from faceaudit.errors import OutputError
    from faceaudit.report.trend_render import dumps, write_pair

    text_json = dumps({"schema_version": "1.0", "kind": "trend", "faceaudit_version": __version__,
                       "created": "2024-01-01T00:00:00+00:00", "checkpoints": [{"label": "a", "path": "a.npz"}],
                       "data": {"manifest": "m.csv", "n_images": 0, "n_used": 0, "n_failed": 0, "failed": [],
                                "attributes": []},
                       "focus_layer": "final", "layers": [], "expressivity": [], "trend": [], "settings": {"attrs": []}})
    text_html = f'<!DOCTYPE html>\n<html>\n<head>\n<meta name="generator" content="faceaudit {__version__}">\n'
    out = tmp_path / "out"
    write_pair(text_json, text_html, out, "trend.json", "trend.html")
    write_pair(text_json, text_html, out, "trend.json", "trend.html")  # a rerun replaces its own pair
    (out / "compare.html").write_text("<html>my notes</html>\n")
    with pytest.raises(OutputError, match="compare.html is a file that is not a faceaudit HTML report"):
        write_pair(text_json, text_html, out, "compare.json", "compare.html")
    assert (out / "compare.html").read_text() == "<html>my notes</html>\n" and not (out / "compare.json").exists()
    (out / "trend.md").write_text("# my notes\n")  # the Markdown twin is guarded the same way
    with pytest.raises(OutputError, match="trend.md is a file that is not a faceaudit MD report"):
        write_pair(text_json, text_html, out, "trend.json", "trend.html")
    assert (out / "trend.md").read_text() == "# my notes\n"
