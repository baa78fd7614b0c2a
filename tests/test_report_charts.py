"""SVG chart helpers: palettes, number formats, axes, escaping."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from faceaudit.report import charts


def test_palette_endpoints_and_contrast() -> None:
    assert charts.sample(charts.VIRIDIS, 0.0) == "#440154"
    assert charts.sample(charts.VIRIDIS, 1.0) == "#fde725"
    assert charts.sample(charts.VIRIDIS, 2.0) == "#fde725"  # clamped
    assert charts.text_colour("#440154") == "#ffffff"
    assert charts.text_colour("#fde725") == "#000000"


@pytest.mark.parametrize(
    ("x", "sci", "num"),
    [(1e-3, "1e-3", "0.00100"), (2.5e-4, "2.5e-4", "2.5e-4"), (0.41, "4.1e-1", "0.410"), (0, "0", "0"), (None, "–", "–")],
)
def test_number_formats(x, sci, num) -> None:
    assert charts.fmt_sci(x) == sci
    assert charts.fmt_num(x) == num


def test_rate_format() -> None:
    assert charts.fmt_rate(0.0011) == "1.1e-3"
    assert charts.fmt_rate(0.046) == "0.0460"
    assert charts.fmt_rate(0.0) == "0"


@pytest.mark.parametrize(("lo", "hi"), [(0, 0.0515), (0, 1), (-0.97, 0.3), (0, 3e-4), (0.2, 0.2)])
def test_ticks_cover_the_range(lo, hi) -> None:
    t = charts._nice_ticks(lo, hi, 4)
    assert t[0] <= lo and t[-1] >= hi and len(t) <= 8
    assert t == sorted(t)


def _tags(svg: str) -> list[str]:
    seen: list[str] = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):  # noqa: ANN001
            seen.append(tag)

    P().feed(svg)
    return seen


def test_charts_escape_labels_and_carry_titles() -> None:
    bad = "<script>alert(1)</script>"
    svgs = [
        charts.heatmap([bad], [bad], [[charts.HeatCell(0.5, "0.4", bad, marked=True)]], title=bad),
        charts.line_band_chart([bad, "b"], [charts.BandSeries(bad, [0.1, None], [0.05, None], [0.15, None])],
                               title=bad, reference=([0, 0], [0.01, 0.01])),  # fmt: skip
        charts.log_heatmap([bad, "x"], [[1e-3, 0.0], [None, 1e-5]], title=bad),
        charts.dot_ci_chart([bad, "x"], [0.01, 0.03], [0.005, 0.02], [0.015, 0.04], title=bad, x_label=bad,
                            band=(0.01, 0.0125), flagged=[False, True]),  # fmt: skip
    ]
    for svg in svgs:
        tags = _tags(str(svg))
        assert "script" not in tags
        assert tags[0] == "svg" and tags[1] == "title"
        assert "&lt;script&gt;" in str(svg)


def test_log_heatmap_marks_zero_and_missing() -> None:
    svg = str(charts.log_heatmap(["a", "b"], [[1e-3, 0.0], [None, 1e-5]], title="t"))
    assert ">0</text>" in svg and ">–</text>" in svg
    assert "1e-5" in svg and "1e-3" in svg


def test_dot_chart_flags_do_not_rely_on_colour() -> None:
    svg = str(charts.dot_ci_chart(["a", "b"], [0.01, 0.03], [None, None], [None, None], title="t", x_label="x",
                                  flagged=[False, True]))  # fmt: skip
    assert "0.0300 !" in svg and "0.0100 !" not in svg
