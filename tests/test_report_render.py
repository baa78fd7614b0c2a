"""HTML rendering: determinism, escaping, self-containment, atomic writes."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_report_data import XSS_IMG, XSS_SCRIPT, full_report, no_fairness_report, warning_heavy_report, xss_report

from faceaudit.errors import OutputError
from faceaudit.report import AuditResult, ReportError, load_report, render_html, write_report
from faceaudit.report.render import template_dirs


class _Collector(HTMLParser):
    """Every start tag with its attributes, and all text (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.section_ids: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section" and a.get("id"):
            self.section_ids.append(a["id"])

    def handle_startendtag(self, tag, attrs):  # noqa: ANN001
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):  # noqa: ANN001
        self.text.append(data)


def _parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    c.close()
    return c


def test_render_is_deterministic_and_survives_a_json_round_trip(tmp_path: Path) -> None:
    a = render_html(full_report())
    b = render_html(full_report())
    assert a == b
    assert render_html(AuditResult.from_dict(full_report())) == a
    html_path, json_path = write_report(full_report(), tmp_path / "out")
    assert html_path.read_text(encoding="utf-8") == a
    again = render_html(load_report(json_path))
    assert again == a
    # a second write of the loaded report gives byte-identical files
    h2, j2 = write_report(load_report(json_path), tmp_path / "out2")
    assert j2.read_bytes() == json_path.read_bytes()
    assert h2.read_bytes() == html_path.read_bytes()


def test_report_json_is_strict_and_indented(tmp_path: Path) -> None:
    d = warning_heavy_report()
    d["expressivity"][0]["mi"] = float("nan")
    _, json_path = write_report(d, tmp_path)
    text = json_path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    assert text.startswith('{\n  "schema_version": "1.0",')
    assert json.loads(text)["expressivity"][0]["mi"] is None


def test_sections_in_order_and_content() -> None:
    html = render_html(full_report())
    c = _parse(html)
    assert c.section_ids == ["findings", "heatmap", "depth", "detail", "fairness", "warnings", "metadata", "glossary"]
    text = " ".join(c.text)
    assert "FNMR for female is 2.3× that of male (0.0460 vs 0.0200) at FMR 1e-3" in text
    assert text.index("FNMR for female") < text.index("Expressivity: layers × attributes")
    for word in ("Expressivity", "nats", "Normalised score", "Null baseline", "FMR / FNMR", "Threshold", "FDR", "GARBE"):
        assert word in text
    assert "DEMO" not in text
    svgs = [t for t, _ in c.tags if t == "svg"]
    # heatmap + 3 depth charts + (2 dot charts + 1 cross heatmap) x 2 fairness attributes
    assert len(svgs) == 1 + 3 + 6
    titles = [t for t, _ in c.tags if t == "title"]
    assert len(titles) > len(svgs)  # every chart and many marks carry a <title>
    assert "ab" * 32 in text and "0.1.0" in text and "2026-11-28T01:00:00+00:00" in text


def test_demo_banner_and_skipped_fairness() -> None:
    d = no_fairness_report()
    d["demo"] = True
    text = " ".join(_parse(render_html(d)).text)
    assert "DEMO" in text
    assert "Not measured." in text and "no identity column" in text
    assert "Verification fairness was not measured: the manifest has no identity column" in text


def test_warning_heavy_report_renders_every_warning() -> None:
    d = warning_heavy_report()
    html = render_html(d)
    text = " ".join(_parse(html).text)
    for k in range(12):
        assert f"run warning {k}" in text
    assert "estimate did not converge in 2000 steps" in text
    assert "group 'black' has only 15 identities" in text
    assert "none observed" in text  # FMR ratio against a zero best group


def test_hostile_labels_are_text_never_markup() -> None:
    html = render_html(xss_report())
    c = _parse(html)
    tags = {t for t, _ in c.tags}
    assert "script" not in tags and "img" not in tags and "iframe" not in tags
    for _, attrs in c.tags:
        assert not any(k.startswith("on") for k in attrs), attrs
    text = "".join(c.text)
    assert XSS_SCRIPT in text and XSS_IMG in text
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()


def test_self_contained_no_external_references() -> None:
    for d in (full_report(), xss_report(), warning_heavy_report()):
        html = render_html(d)
        c = _parse(html)
        for tag, attrs in c.tags:
            for key in ("src", "href", "xlink:href", "action", "srcset", "data", "poster"):
                v = attrs.get(key)
                if v is None:
                    continue
                assert v.startswith("#"), (tag, key, v)
        assert "http:" not in html and "https:" not in html
        assert "url(" not in html.replace("url(#fa-hatch)", "")
        assert "@import" not in html
    csp = [a for t, a in _parse(render_html(full_report())).tags if t == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in (csp[0]["content"] or "")


def test_small_file_for_five_layers_by_four_attributes() -> None:
    d = full_report()
    extra = []
    for e in d["expressivity"]:
        if e["attribute"] == "race":
            e2 = dict(e, attribute="age", kind="continuous", entropy_y=None)
            extra.append(e2)
    d["expressivity"] += extra
    d["data"]["attributes"].append({"name": "age", "kind": "continuous", "n_valid": 3000, "n_missing": 0, "groups": []})
    html = render_html(d)
    assert len(html.encode("utf-8")) < 200_000
    assert html.count("<svg") == 1 + 4 + 6


def test_template_is_found() -> None:
    dirs = template_dirs()
    assert dirs and (dirs[0] / "report.html.j2").is_file()


def test_unwritable_folder_raises_output_error_and_leaves_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError) as info:
        write_report(full_report(), blocker / "out")
    assert str(blocker / "out") in str(info.value) and "writable" in str(info.value)

    # The HTML target cannot be replaced (a folder sits there): the JSON written first is removed again.
    out = tmp_path / "out"
    (out / "report.html").mkdir(parents=True)
    with pytest.raises(OutputError) as info:
        write_report(full_report(), out)
    assert "report.html" in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]
    assert not any(out.glob(".*tmp"))


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root ignores folder permissions")
def test_read_only_folder_raises_output_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="writable"):
            write_report(full_report(), ro)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_load_report_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        load_report(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": "1.0",', encoding="utf-8")
    with pytest.raises(ReportError, match=r"bad.json is not valid JSON \(line 1"):
        load_report(bad)
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(full_report()).replace('"mi": 0.41', '"mi": NaN'), encoding="utf-8")
    with pytest.raises(ReportError, match="NaN"):
        load_report(nan)
    inv = tmp_path / "inv.json"
    d = full_report()
    del d["layers"]
    inv.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(ReportError, match=r"inv.json: report is missing key 'layers'"):
        load_report(inv)
    # a folder resolves to its report.json
    write_report(full_report(), tmp_path / "ok")
    assert load_report(tmp_path / "ok").model.backend == "onnx"


def test_unwritable_folder_hint_names_the_python_argument_in_python(tmp_path) -> None:
    from faceaudit.errors import OutputError, command_line
    from faceaudit.report import write_report

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError) as err:
        write_report(full_report(), blocker / "out")
    assert "out_dir=" in str(err.value) and "--out" not in str(err.value)
    with command_line(), pytest.raises(OutputError, match="--out"):
        write_report(full_report(), blocker / "out")
