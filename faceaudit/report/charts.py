"""Inline SVG charts for the HTML report: no JavaScript, no external assets.

Every chart is a plain function from numbers and labels to an SVG string
(returned as `markupsafe.Markup`, so the template inserts it unescaped). Every
piece of text that comes from data (layer, attribute and group names) goes
through `markupsafe.escape`, so a label such as ``<script>`` shows as text.
Charts carry a ``<title>`` (read by screen readers, shown as tooltips), text
labels on the marks, and colours from colour-blind-safe palettes (viridis,
cividis) sampled into constants below.

The charts are generic so that other report kinds can reuse them: `heatmap`
(rows x columns of scores), `line_band_chart` (a value per x label with a CI
band and a grey reference band; used for depth here and for training
checkpoints in a trend report), `log_heatmap` (a square matrix on a log colour
scale) and `dot_ci_chart` (a value per group with CI whiskers and a tolerance
band).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

VIRIDIS = (
    "#440154", "#482878", "#3e4989", "#31688e", "#26828e",
    "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725",
)  # fmt: skip
"""Viridis sampled at 10 evenly spaced points (perceptually uniform, colour-blind safe)."""

CIVIDIS = (
    "#00224e", "#123570", "#3b496c", "#575d6d", "#707173",
    "#8a8779", "#a69d75", "#c4b56c", "#e4cf5b", "#fee838",
)  # fmt: skip
"""Cividis sampled at 10 evenly spaced points (designed for colour-vision deficiency)."""

INK = "#1f2933"
MUTED = "#6b7785"
GRID = "#d9dee4"
NULL_BAND = "#c9ced6"
LINE = "#31688e"
BAND = "#9ec5d9"
ALERT = "#b3261e"
OK_BAND = "#dcefe2"
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif\""


# --------------------------------------------------------------------------- small helpers


def _e(text: object) -> str:
    """Escape any text that goes into SVG (element content or attribute value)."""
    return str(escape(str(text)))


def _n(x: float) -> str:
    """Coordinate formatting: short and deterministic."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def fmt_num(x: float | None, digits: int = 3) -> str:
    """Format a number for display with `digits` significant digits; None -> an en dash."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 1e-3 and ax < 1e5:
        decimals = max(0, digits - 1 - int(math.floor(math.log10(ax))))
        return f"{x:.{decimals}f}"
    return fmt_sci(x, digits - 1)


def fmt_rate(x: float | None) -> str:
    """Error rates: scientific below 0.01 (1.1e-3), else three significant digits (0.0460)."""
    if x is not None and isinstance(x, (int, float)) and math.isfinite(x) and 0 < abs(x) < 0.01:
        return fmt_sci(x, 2)
    return fmt_num(x)


def fmt_sci(x: float | None, digits: int = 1) -> str:
    """Compact scientific notation: 0.001 -> '1e-3', 0.00025 -> '2.5e-4'."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if x == 0:
        return "0"
    mant, exp = f"{x:.{digits}e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def _hex_to_rgb(h: str) -> tuple[int, int, int]:
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


def sample(palette: Sequence[str], t: float) -> str:
    """Colour at position t in [0, 1] of a palette, linearly interpolated in sRGB."""
    t = min(1.0, max(0.0, t))
    pos = t * (len(palette) - 1)
    i = min(int(pos), len(palette) - 2)
    f = pos - i
    a, b = _hex_to_rgb(palette[i]), _hex_to_rgb(palette[i + 1])
    r, g, bl = (round(a[k] + (b[k] - a[k]) * f) for k in range(3))
    return f"#{r:02x}{g:02x}{bl:02x}"


def text_colour(fill: str) -> str:
    """Black or white text, whichever contrasts better with `fill` (WCAG relative luminance)."""

    def lin(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = _hex_to_rgb(fill)
    lum = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
    return "#000000" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "#ffffff"


def _truncate(label: str, n: int) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def _svg_open(width: float, height: float, title: str, desc: str = "") -> str:
    d = f"<desc>{_e(desc)}</desc>" if desc else ""
    return (
        f'<svg class="chart" viewBox="0 0 {_n(width)} {_n(height)}" width="{_n(width)}" height="{_n(height)}" '
        f'role="img" {FONT} font-size="11" fill="{INK}"><title>{_e(title)}</title>{d}'
    )


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi - step * 1e-9:  # the last tick must cover the largest value
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _colour_bar(x: float, y: float, w: float, palette: Sequence[str], left: str, right: str, label: str) -> str:
    parts = [f'<g class="legend"><text x="{_n(x)}" y="{_n(y - 4)}" fill="{MUTED}">{_e(label)}</text>']
    steps = 20
    for i in range(steps):
        parts.append(
            f'<rect x="{_n(x + i * w / steps)}" y="{_n(y)}" width="{_n(w / steps + 0.5)}" height="10" '
            f'fill="{sample(palette, i / (steps - 1))}"/>'
        )
    parts.append(f'<text x="{_n(x)}" y="{_n(y + 22)}" fill="{MUTED}">{_e(left)}</text>')
    parts.append(f'<text x="{_n(x + w)}" y="{_n(y + 22)}" text-anchor="end" fill="{MUTED}">{_e(right)}</text></g>')
    return "".join(parts)


# --------------------------------------------------------------------------- (a) heatmap


@dataclass(frozen=True)
class HeatCell:
    """One heatmap cell: colour score in [0, 1] (None = no value), the text shown, a tooltip, a 'weak' mark."""

    score: float | None
    text: str
    tooltip: str
    marked: bool = False


def heatmap(
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    cells: Sequence[Sequence[HeatCell]],
    *,
    title: str,
    legend_label: str = "normalised score",
    mark_label: str = "not above the null baseline",
    palette: Sequence[str] = VIRIDIS,
) -> Markup:
    """Rows x columns of coloured cells with their values written in; marked cells are hatched.

    Used for layers x attributes expressivity: colour = normalised score, text =
    MI in nats, hatching where the CI lower bound does not clear the null.
    """
    cw, ch = 96.0, 34.0
    left = min(220.0, 24 + 6.5 * max((len(_truncate(r, 30)) for r in row_labels), default=4))
    top = 44.0
    bar_w = min(200.0, cw * max(1, len(col_labels)) - 10)
    legend_w = 30 + 6.2 * len(mark_label)
    width = max(left + cw * max(1, len(col_labels)) + 16, left + bar_w + 24 + legend_w)
    height = top + ch * len(row_labels) + 58
    out = [_svg_open(width, height, title, f"{len(row_labels)} rows by {len(col_labels)} columns")]
    out.append(
        '<defs><pattern id="fa-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)">'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#ffffff" stroke-opacity="0.55" stroke-width="1.2"/></pattern></defs>'
    )
    for j, c in enumerate(col_labels):
        cx = left + cw * j + cw / 2
        out.append(
            f'<text x="{_n(cx)}" y="{_n(top - 10)}" text-anchor="middle" font-weight="600">'
            f"<title>{_e(c)}</title>{_e(_truncate(c, 14))}</text>"
        )
    for i, r in enumerate(row_labels):
        y = top + ch * i
        out.append(
            f'<text x="{_n(left - 8)}" y="{_n(y + ch / 2 + 4)}" text-anchor="end">'
            f"<title>{_e(r)}</title>{_e(_truncate(r, 30))}</text>"
        )
        for j in range(len(col_labels)):
            cell = cells[i][j]
            x = left + cw * j
            fill = "#f1f3f5" if cell.score is None else sample(palette, cell.score)
            tc = INK if cell.score is None else text_colour(fill)
            out.append(f'<g><title>{_e(cell.tooltip)}</title>')
            out.append(
                f'<rect x="{_n(x + 1)}" y="{_n(y + 1)}" width="{_n(cw - 2)}" height="{_n(ch - 2)}" rx="3" fill="{fill}"/>'
            )
            if cell.marked:
                out.append(
                    f'<rect x="{_n(x + 1)}" y="{_n(y + 1)}" width="{_n(cw - 2)}" height="{_n(ch - 2)}" rx="3" '
                    'fill="url(#fa-hatch)"/>'
                )
            out.append(
                f'<text x="{_n(x + cw / 2)}" y="{_n(y + ch / 2 + 4)}" text-anchor="middle" fill="{tc}" '
                f'font-variant-numeric="tabular-nums">{_e(cell.text)}{" °" if cell.marked else ""}</text></g>'
            )
    ly = top + ch * len(row_labels) + 28
    out.append(_colour_bar(left, ly, bar_w, palette, "0", "1", legend_label))
    mx = left + bar_w + 24
    out.append(
        f'<rect x="{_n(mx)}" y="{_n(ly)}" width="22" height="12" fill="{sample(palette, 0.1)}"/>'
        f'<rect x="{_n(mx)}" y="{_n(ly)}" width="22" height="12" fill="url(#fa-hatch)"/>'
        f'<text x="{_n(mx + 28)}" y="{_n(ly + 10)}" fill="{MUTED}">° {_e(mark_label)}</text>'
    )
    out.append("</svg>")
    return Markup("".join(out))


# --------------------------------------------------------------------------- (b) line with bands


@dataclass(frozen=True)
class BandSeries:
    """A line (one value per x label) with an optional CI band; None values leave gaps."""

    name: str
    y: Sequence[float | None]
    lo: Sequence[float | None] = field(default_factory=tuple)
    hi: Sequence[float | None] = field(default_factory=tuple)
    colour: str = LINE


def _band_path(xs: Sequence[float], lo: Sequence[float | None], hi: Sequence[float | None], sy) -> list[str]:
    """Closed polygons for each run of consecutive points where both bounds exist."""
    paths, run = [], []
    for i in range(len(xs)):
        if i < len(lo) and i < len(hi) and lo[i] is not None and hi[i] is not None:
            run.append(i)
            continue
        if run:
            paths.append(run)
        run = []
    if run:
        paths.append(run)
    out = []
    for r in paths:
        if len(r) == 1:
            i = r[0]
            pts = [(xs[i] - 4, sy(hi[i])), (xs[i] + 4, sy(hi[i])), (xs[i] + 4, sy(lo[i])), (xs[i] - 4, sy(lo[i]))]
        else:
            pts = [(xs[i], sy(hi[i])) for i in r] + [(xs[i], sy(lo[i])) for i in reversed(r)]
        out.append("M" + " L".join(f"{_n(a)},{_n(b)}" for a, b in pts) + " Z")
    return out


def line_band_chart(
    x_labels: Sequence[str],
    series: Sequence[BandSeries],
    *,
    title: str,
    y_label: str = "MI (nats)",
    reference: tuple[Sequence[float | None], Sequence[float | None]] | None = None,
    reference_label: str = "null baseline",
    width: float = 460.0,
    height: float = 250.0,
    y_min: float | None = 0.0,
) -> Markup:
    """Values across ordered x labels (layers by depth, or training checkpoints) with CI bands.

    `reference` is a grey band (low, high per x label) drawn behind the lines,
    e.g. the permutation-null range: values inside it are indistinguishable
    from no information.
    """
    left, right, top, bottom = 52.0, 14.0, 28.0, 74.0
    pw, ph = width - left - right, height - top - bottom
    vals: list[float] = []
    for s in series:
        vals += [v for v in list(s.y) + list(s.lo) + list(s.hi) if v is not None]
    if reference:
        vals += [v for v in list(reference[0]) + list(reference[1]) if v is not None]
    lo_v = min(vals) if vals else 0.0
    hi_v = max(vals) if vals else 1.0
    if y_min is not None:
        lo_v = min(lo_v, y_min)
    ticks = _nice_ticks(lo_v, hi_v if hi_v > lo_v else lo_v + 0.1, 4)
    y0, y1 = ticks[0], ticks[-1]

    def sy(v: float) -> float:
        return top + ph - (v - y0) / (y1 - y0) * ph

    n = len(x_labels)
    xs = [left + (pw * (i + 0.5) / n if n else 0) for i in range(n)]
    out = [_svg_open(width, height, title, f"{len(series)} series over {n} points")]
    for t in ticks:
        out.append(
            f'<line x1="{_n(left)}" x2="{_n(left + pw)}" y1="{_n(sy(t))}" y2="{_n(sy(t))}" stroke="{GRID}"/>'
            f'<text x="{_n(left - 6)}" y="{_n(sy(t) + 4)}" text-anchor="end" fill="{MUTED}">{_e(fmt_num(t, 2))}</text>'
        )
    out.append(
        f'<text transform="translate(12 {_n(top + ph / 2)}) rotate(-90)" text-anchor="middle" fill="{MUTED}">'
        f"{_e(y_label)}</text>"
    )
    if reference:
        for d in _band_path(xs, reference[0], reference[1], sy):
            out.append(f'<path d="{d}" fill="{NULL_BAND}" fill-opacity="0.7"><title>{_e(reference_label)}</title></path>')
    for s in series:
        for d in _band_path(xs, s.lo, s.hi, sy):
            out.append(f'<path d="{d}" fill="{s.colour}" fill-opacity="0.22"><title>{_e(s.name)}: 95% CI</title></path>')
        segs, cur = [], []
        for i, v in enumerate(s.y):
            if v is None:
                if cur:
                    segs.append(cur)
                cur = []
            else:
                cur.append((xs[i], sy(v)))
        if cur:
            segs.append(cur)
        for seg in segs:
            if len(seg) > 1:
                pts = " ".join(f"{_n(a)},{_n(b)}" for a, b in seg)
                out.append(f'<polyline points="{pts}" fill="none" stroke="{s.colour}" stroke-width="2"/>')
        for i, v in enumerate(s.y):
            if v is None:
                continue
            ci = ""
            if i < len(s.lo) and i < len(s.hi) and s.lo[i] is not None and s.hi[i] is not None:
                ci = f" (95% CI {fmt_num(s.lo[i])} to {fmt_num(s.hi[i])})"
            out.append(
                f'<circle cx="{_n(xs[i])}" cy="{_n(sy(v))}" r="3.5" fill="{s.colour}" stroke="#ffffff">'
                f"<title>{_e(s.name)} at {_e(x_labels[i])}: {_e(fmt_num(v))}{_e(ci)}</title></circle>"
            )
    base = top + ph
    out.append(f'<line x1="{_n(left)}" x2="{_n(left + pw)}" y1="{_n(base)}" y2="{_n(base)}" stroke="{MUTED}"/>')
    for i, lab in enumerate(x_labels):
        out.append(
            f'<text transform="translate({_n(xs[i])} {_n(base + 12)}) rotate(-30)" text-anchor="end" fill="{INK}">'
            f"<title>{_e(lab)}</title>{_e(_truncate(lab, 18))}</text>"
        )
    # legend
    lx, ly = left, 14.0
    for s in series:
        out.append(
            f'<rect x="{_n(lx)}" y="{_n(ly - 8)}" width="14" height="8" fill="{s.colour}" fill-opacity="0.3"/>'
            f'<line x1="{_n(lx)}" x2="{_n(lx + 14)}" y1="{_n(ly - 4)}" y2="{_n(ly - 4)}" stroke="{s.colour}" stroke-width="2"/>'
            f'<text x="{_n(lx + 18)}" y="{_n(ly)}">{_e(_truncate(s.name, 24))} ± 95% CI</text>'
        )
        lx += 40 + 6.5 * min(24, len(s.name)) + 60
    if reference:
        out.append(
            f'<rect x="{_n(lx)}" y="{_n(ly - 8)}" width="14" height="8" fill="{NULL_BAND}"/>'
            f'<text x="{_n(lx + 18)}" y="{_n(ly)}" fill="{MUTED}">{_e(reference_label)}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))


# --------------------------------------------------------------------------- (c) log heatmap


def log_heatmap(
    labels: Sequence[str],
    matrix: Sequence[Sequence[float | None]],
    *,
    title: str,
    value_name: str = "FMR",
    row_name: str = "probe group",
    col_name: str = "reference group",
    palette: Sequence[str] = CIVIDIS,
) -> Markup:
    """A square matrix on a log10 colour scale (e.g. cross-group false match rates); zeros in light grey."""
    positive = [v for row in matrix for v in row if v is not None and v > 0]
    lmin = math.floor(math.log10(min(positive))) if positive else -6
    lmax = math.ceil(math.log10(max(positive))) if positive else 0
    if lmax <= lmin:
        lmax = lmin + 1
    cs = 58.0 if len(labels) <= 6 else max(34.0, 360.0 / len(labels))
    left = min(190.0, 30 + 6.5 * max((len(_truncate(x, 24)) for x in labels), default=4))
    top = 40.0 + min(120.0, 6.0 * max((len(_truncate(x, 16)) for x in labels), default=4))
    size = cs * len(labels)
    width = left + size + 20
    height = top + size + 64
    out = [_svg_open(width, height, title, f"{len(labels)} by {len(labels)} matrix, log colour scale")]
    out.append(
        f'<text x="{_n(left + size / 2)}" y="14" text-anchor="middle" fill="{MUTED}">{_e(col_name)}</text>'
        f'<text transform="translate(12 {_n(top + size / 2)}) rotate(-90)" text-anchor="middle" fill="{MUTED}">'
        f"{_e(row_name)}</text>"
    )
    for j, lab in enumerate(labels):
        out.append(
            f'<text transform="translate({_n(left + cs * j + cs / 2 + 4)} {_n(top - 6)}) rotate(-45)">'
            f"<title>{_e(lab)}</title>{_e(_truncate(lab, 16))}</text>"
        )
    for i, lab in enumerate(labels):
        y = top + cs * i
        out.append(
            f'<text x="{_n(left - 6)}" y="{_n(y + cs / 2 + 4)}" text-anchor="end"><title>{_e(lab)}</title>'
            f"{_e(_truncate(lab, 24))}</text>"
        )
        for j in range(len(labels)):
            v = matrix[i][j]
            x = left + cs * j
            if v is None:
                fill, txt = "#ffffff", "–"
            elif v <= 0:
                fill, txt = "#eceff2", "0"
            else:
                fill = sample(palette, (math.log10(v) - lmin) / (lmax - lmin))
                txt = fmt_sci(v, 1)
            tc = INK if v is None or v <= 0 else text_colour(fill)
            stroke = f' stroke="{INK}" stroke-width="1.5"' if i == j else ""
            out.append(
                f'<g><title>{_e(value_name)} {_e(labels[i])} vs {_e(labels[j])}: {_e(fmt_sci(v, 2) if v else txt)}</title>'
                f'<rect x="{_n(x + 1)}" y="{_n(y + 1)}" width="{_n(cs - 2)}" height="{_n(cs - 2)}" fill="{fill}"{stroke}/>'
                f'<text x="{_n(x + cs / 2)}" y="{_n(y + cs / 2 + 4)}" text-anchor="middle" fill="{tc}" '
                f'font-size="{10 if cs >= 50 else 8}">{_e(txt)}</text></g>'
            )
    ly = top + size + 30
    out.append(
        _colour_bar(left, ly, min(220.0, max(120.0, size)), palette, f"1e{lmin}", f"1e{lmax}", f"{value_name} (log scale)")
    )
    out.append("</svg>")
    return Markup("".join(out))


# --------------------------------------------------------------------------- (d) dots with CI whiskers


def dot_ci_chart(
    labels: Sequence[str],
    values: Sequence[float | None],
    lows: Sequence[float | None],
    highs: Sequence[float | None],
    *,
    title: str,
    x_label: str,
    band: tuple[float, float] | None = None,
    band_label: str = "tolerance band",
    flagged: Sequence[bool] = (),
    width: float = 460.0,
) -> Markup:
    """One row per group: a dot at the rate, whiskers at its 95% CI, a shaded tolerance band.

    Flagged rows (outside the band) are drawn in a contrasting colour and
    marked with a '!' so the flag does not rely on colour alone.
    """
    left = min(180.0, 30 + 6.5 * max((len(_truncate(x, 22)) for x in labels), default=4))
    right, top, row = 60.0, 30.0, 24.0
    pw = width - left - right
    height = top + row * len(labels) + 46
    vals = [v for v in list(values) + list(lows) + list(highs) if v is not None]
    if band:
        vals += [band[0], band[1]]
    ticks = _nice_ticks(0.0, max(vals) if vals and max(vals) > 0 else 1.0, 4)
    x1 = ticks[-1]

    def sx(v: float) -> float:
        return left + min(1.0, max(0.0, v / x1)) * pw

    out = [_svg_open(width, height, title, f"{len(labels)} groups")]
    for t in ticks:
        out.append(
            f'<line x1="{_n(sx(t))}" x2="{_n(sx(t))}" y1="{_n(top - 4)}" y2="{_n(top + row * len(labels))}" stroke="{GRID}"/>'
            f'<text x="{_n(sx(t))}" y="{_n(top + row * len(labels) + 14)}" text-anchor="middle" fill="{MUTED}">'
            f"{_e(fmt_rate(t))}</text>"
        )
    out.append(
        f'<text x="{_n(left + pw / 2)}" y="{_n(height - 8)}" text-anchor="middle" fill="{MUTED}">{_e(x_label)}</text>'
    )
    if band:
        out.append(
            f'<rect x="{_n(sx(band[0]))}" y="{_n(top - 4)}" width="{_n(max(1.0, sx(band[1]) - sx(band[0])))}" '
            f'height="{_n(row * len(labels) + 4)}" fill="{OK_BAND}"><title>{_e(band_label)}: '
            f"{_e(fmt_rate(band[0]))} to {_e(fmt_rate(band[1]))}</title></rect>"
            f'<text x="{_n(left)}" y="14" fill="{MUTED}">green band: {_e(band_label)}</text>'
        )
    for i, lab in enumerate(labels):
        cy = top + row * i + row / 2
        flag = i < len(flagged) and flagged[i]
        col = ALERT if flag else LINE
        out.append(
            f'<text x="{_n(left - 8)}" y="{_n(cy + 4)}" text-anchor="end"><title>{_e(lab)}</title>'
            f"{_e(_truncate(lab, 22))}</text>"
        )
        v, lo, hi = values[i], lows[i] if i < len(lows) else None, highs[i] if i < len(highs) else None
        tip = f"{lab}: {fmt_rate(v)}" + (f" (95% CI {fmt_rate(lo)} to {fmt_rate(hi)})" if lo is not None and hi is not None else "")
        out.append(f"<g><title>{_e(tip)}</title>")
        if lo is not None and hi is not None:
            out.append(
                f'<line x1="{_n(sx(lo))}" x2="{_n(sx(hi))}" y1="{_n(cy)}" y2="{_n(cy)}" stroke="{col}" stroke-width="1.5"/>'
                f'<line x1="{_n(sx(lo))}" x2="{_n(sx(lo))}" y1="{_n(cy - 4)}" y2="{_n(cy + 4)}" stroke="{col}"/>'
                f'<line x1="{_n(sx(hi))}" x2="{_n(sx(hi))}" y1="{_n(cy - 4)}" y2="{_n(cy + 4)}" stroke="{col}"/>'
            )
        if v is not None:
            shape = (
                f'<rect x="{_n(sx(v) - 4)}" y="{_n(cy - 4)}" width="8" height="8" fill="{col}"/>'
                if flag
                else f'<circle cx="{_n(sx(v))}" cy="{_n(cy)}" r="4" fill="{col}"/>'
            )
            out.append(shape)
            out.append(
                f'<text x="{_n(left + pw + 6)}" y="{_n(cy + 4)}" fill="{col}" font-variant-numeric="tabular-nums">'
                f"{_e(fmt_rate(v))}{' !' if flag else ''}</text>"
            )
        out.append("</g>")
    out.append("</svg>")
    return Markup("".join(out))


def heat_cells(
    rows: Sequence[str], cols: Sequence[str], index: Mapping[tuple[str, str], Mapping[str, Any]],
    tip: Callable[[str, str, Mapping[str, Any]], str], *, marked: Callable[[Mapping[str, Any]], bool],
) -> list[list[HeatCell]]:
    """Cells of a rows x columns expressivity heatmap from entries keyed (row, column): text = MI in nats,
    colour = normalised score, `marked(entry)` hatches a cell, `tip(row, column, entry)` is its tooltip."""
    cells = []
    for r in rows:
        line = []
        for c in cols:
            e = index.get((r, c))
            if e is None:
                line.append(HeatCell(None, "–", f"{r} × {c}: not estimated"))
            else:
                line.append(HeatCell(e.get("normalized"), fmt_num(e.get("mi"), 2), tip(r, c, e), marked=marked(e)))
        cells.append(line)
    return cells

__all__ = [
    "heat_cells",
    "ALERT",
    "BAND",
    "BandSeries",
    "CIVIDIS",
    "FONT",
    "GRID",
    "HeatCell",
    "INK",
    "LINE",
    "MUTED",
    "NULL_BAND",
    "OK_BAND",
    "VIRIDIS",
    "dot_ci_chart",
    "fmt_num",
    "fmt_rate",
    "fmt_sci",
    "heatmap",
    "line_band_chart",
    "log_heatmap",
    "sample",
    "text_colour",
]
