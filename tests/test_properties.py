"""Property-based tests (Hypothesis) of the two readers a user's file reaches first.

The manifest reader and `faceaudit report`'s JSON loader get arbitrary cell values, encodings,
delimiters and JSON shapes. Whatever the input, the outcome is a result or a clear
`FaceAuditError` (exit 2 on the command line), never a traceback (exit 1), and nothing is
written outside `--out`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_report_data import full_report

from faceaudit.cli import main
from faceaudit.data import load_manifest
from faceaudit.errors import FaceAuditError

# Modest by default so the suite stays quick; FACEAUDIT_PROPERTY_EXAMPLES=1000 for a thorough hunt.
PROPS = settings(max_examples=int(os.environ.get("FACEAUDIT_PROPERTY_EXAMPLES", "40")), deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])

# Cells as a spreadsheet or a hostile user might fill them: text with control characters, quotes,
# delimiters and line breaks, numbers, missing-value tokens.
CELL = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="0123456789.-e+ ,;\t\"'\n\r\x00\x1b", max_size=8),
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "NA", "n/a", "nan", "None", "?", "unknown", "inf", "-inf", "1e309", "female", "male"]),
)
COLUMN = st.sampled_from(["path", "identity", "age", "sex", "yaw", "race", "lm_x1", "Path", "path ", "a;b", ""])
DELIMITER = st.sampled_from([",", ";", "\t", "|"])
ENCODING = st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"])
SUFFIX = st.sampled_from([".csv", ".tsv", ".txt"])
ATTRS = st.sampled_from(["age,sex,yaw", "sex", "age", "age:continuous", "sex:categorical", "identity", "race,age"])


@st.composite
def manifests(draw: Any) -> tuple[bytes, str, str]:
    """(file bytes, suffix, attrs spec): mostly well-formed tables with arbitrary cells, sometimes any header,
    delimiter, encoding or raw bytes."""
    attrs = draw(ATTRS)
    suffix = draw(SUFFIX)
    if draw(st.integers(0, 2)):  # well formed: the columns asked for, the suffix's delimiter, UTF-8
        names = [a.partition(":")[0] for a in attrs.split(",")]
        columns = list(dict.fromkeys(["path", "identity", *names, *draw(st.lists(COLUMN, max_size=2))]))
        delimiter = "\t" if suffix == ".tsv" else ","
        encoding = draw(st.sampled_from(["utf-8", "utf-8-sig"]))
    else:
        columns = draw(st.lists(COLUMN, min_size=1, max_size=5))
        if draw(st.booleans()) and "path" not in columns:
            columns = ["path", *columns]
        delimiter, encoding = draw(DELIMITER), draw(ENCODING)
    n = draw(st.integers(0, 25))
    rows = [[f"img/{i}.png"] + draw(st.lists(CELL, min_size=len(columns) - 1, max_size=len(columns) - 1))
            if columns[0] == "path" and draw(st.booleans())
            else draw(st.lists(CELL, min_size=len(columns), max_size=len(columns))) for i in range(n)]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(columns)
    writer.writerows(rows)
    text = buf.getvalue()
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode("utf-8", errors="replace")
    if draw(st.integers(0, 9)) == 0:  # now and then, raw bytes
        data = draw(st.binary(max_size=200))
    return data, suffix, attrs


def _snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p.read_bytes() if not p.is_symlink() else b"<link>"
    return out


@PROPS
@given(manifests())
def test_manifest_reader_gives_a_manifest_or_a_clear_error(case: tuple[bytes, str, str]) -> None:
    data, suffix, attrs = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"faces{suffix}"
        path.write_bytes(data)
        try:
            m = load_manifest(path, attrs, check_files=False)
        except FaceAuditError as exc:
            assert str(exc) and "\n" not in str(exc).strip() or "manifest" in str(exc)
        else:
            assert len(m) >= 1 and all(isinstance(p, Path) for p in m.paths)


@PROPS
@given(manifests())
def test_run_on_any_manifest_exits_cleanly_and_writes_only_into_out(case: tuple[bytes, str, str]) -> None:
    # the model does not exist: the manifest is read and checked first, so every manifest ends in exit 2
    data, suffix, attrs = case
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "data").mkdir()
        manifest = root / "data" / f"faces{suffix}"
        manifest.write_bytes(data)
        (root / "data" / "img").mkdir()
        for i in range(25):  # the files the well-formed manifests name, so reading goes past the path check
            (root / "data" / "img" / f"{i}.png").write_bytes(b"")
        before = _snapshot(root)
        result = CliRunner().invoke(main, ["run", str(root / "missing.onnx"), "--data", str(manifest),
                                           "--attrs", attrs, "--out", str(root / "out")])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "\x1b" not in result.output
        after = {k: v for k, v in _snapshot(root).items() if not k.startswith("out" + os.sep)}
        assert after == before


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=10))
JSON = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=20)


def _paths(d: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a nested dict/list (for replacing one value of a valid report)."""
    out = [prefix] if prefix else []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d[:3]):
            out += _paths(v, (*prefix, i))
    return out


TREND_KEYS = ("faceaudit_version", "created", "checkpoints", "data", "focus_layer", "layers", "expressivity",
              "trend", "settings")
COMPARE_KEYS = ("faceaudit_version", "created", "models", "data", "layers", "expressivity",
                "expressivity_differences", "fairness", "fairness_differences", "settings")
REPORT = full_report()
REPORT_PATHS = _paths(REPORT)


@st.composite
def report_texts(draw: Any) -> str:
    """A report.json text: arbitrary JSON, or a valid report with one value replaced, dropped or retyped."""
    how = draw(st.sampled_from(["any", "replace", "drop", "raw", "other kind"]))
    if how == "any":
        return json.dumps(draw(JSON))
    if how == "other kind":  # the trend and compare loaders, reached through the same command
        kind = draw(st.sampled_from(["trend", "compare"]))
        keys = TREND_KEYS if kind == "trend" else COMPARE_KEYS
        d = {k: draw(JSON) for k in keys}
        d.update(schema_version="1.0", kind=kind)
        return json.dumps(d)
    if how == "raw":
        return draw(st.text(max_size=200))
    d = json.loads(json.dumps(REPORT))
    path = draw(st.sampled_from(REPORT_PATHS))
    parent = d
    for k in path[:-1]:
        parent = parent[k]
    if how == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON)
    return json.dumps(d)


@PROPS
@given(report_texts())
def test_report_on_any_json_exits_cleanly_and_writes_only_into_out(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        src = root / "in" / "report.json"
        src.parent.mkdir()
        src.write_text(text, encoding="utf-8", errors="surrogatepass")
        before = _snapshot(root)
        out = root / "out" / "report.html"
        result = CliRunner().invoke(main, ["report", str(src), "--out", str(out)])
        assert result.exit_code in (0, 2), result.output
        assert "Traceback" not in result.output
        if result.exit_code == 0:
            assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
        after = {k: v for k, v in _snapshot(root).items() if not k.startswith("out" + os.sep)}
        assert after == before


def test_the_valid_report_itself_renders() -> None:
    # the strategies mutate this report: it must render as it is, or every mutation would fail alike
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "report.json"
        src.write_text(json.dumps(REPORT), encoding="utf-8")
        result = CliRunner().invoke(main, ["report", str(src), "--out", str(Path(d) / "o.html")])
        assert result.exit_code == 0, result.output


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
