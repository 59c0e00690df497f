"""Small SVG charts for the run report: drawn here, so the page needs no script library
and opens offline. Every drawn data mark has class `mark` (the page's self-check counts
them) and a <title>, which browsers show as a tooltip."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from html import escape

W, H = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 44
COLORS = ["#2f6fdf", "#e0603b", "#3a9d5d", "#8a5cc7", "#c49a12"]


def figure(name: str, svg: str) -> str:
    """A chart as the page holds it: named, and found by the page's self-check."""
    return f'<figure class=chart data-chart="{escape(name)}">{svg}</figure>'


def _frame(body: list[str], label: str, height: int = H) -> str:
    return (f'<svg viewBox="0 0 {W} {height}" width="100%" role="img" aria-label="{escape(label)}" '
            f'xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>")


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * exp:
            return m * exp
    return 10 * exp


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:,.3g}"


def _y_axis(top_value: float, plot_h: float, height: int) -> list[str]:
    out = []
    for i in range(5):
        v = top_value * i / 4
        y = height - BOTTOM - plot_h * i / 4
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#555">{_fmt(v)}</text>')
    return out


def bars(labels: list[str], values: list[float], label: str, color: str = COLORS[0]) -> str:
    """Vertical bars, one per label."""
    height = H
    plot_w, plot_h = W - LEFT - RIGHT, height - TOP - BOTTOM
    top_value = _nice_max(max(values, default=0))
    body = _y_axis(top_value, plot_h, height)
    n = max(1, len(values))
    slot = plot_w / n
    for i, (name, v) in enumerate(zip(labels, values)):
        h = plot_h * v / top_value
        x = LEFT + i * slot + slot * 0.15
        y = height - BOTTOM - h
        body.append(f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{max(h, 0.5):.1f}" '
                    f'fill="{color}"><title>{escape(name)}: {_fmt(v)}</title></rect>')
        if n <= 24:
            body.append(f'<text x="{x + slot * 0.35:.1f}" y="{height - BOTTOM + 16}" text-anchor="middle" '
                        f'font-size="11" fill="#333">{escape(_short(name, slot))}</text>')
    return _frame(body, label, height)


def grouped_bars(labels: list[str], series: dict[str, list[float]], label: str) -> str:
    """Bars side by side, one group per label and one colour per series; the legend sits
    above the plot, where no bar reaches."""
    legend = 20
    height = H + legend
    plot_w, plot_h = W - LEFT - RIGHT, height - TOP - legend - BOTTOM
    top_value = _nice_max(max((v for values in series.values() for v in values), default=0))
    body = _y_axis(top_value, plot_h, height)
    slot = plot_w / max(1, len(labels))
    width = slot * 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        for i, (group, v) in enumerate(zip(labels, values)):
            h = plot_h * v / top_value
            x = LEFT + i * slot + slot * 0.1 + k * width
            body.append(f'<rect class="mark" x="{x:.1f}" y="{height - BOTTOM - h:.1f}" width="{width:.1f}" '
                        f'height="{max(h, 0.5):.1f}" fill="{color}"><title>{escape(group)}, {escape(name)}: '
                        f'{_fmt(v)}</title></rect>')
        body.append(f'<text x="{LEFT + 110 * k}" y="{TOP}" font-size="12" fill="{color}">\u25a0 {escape(name)}</text>')
    if len(labels) <= 24:
        for i, group in enumerate(labels):
            body.append(f'<text x="{LEFT + (i + 0.5) * slot:.1f}" y="{height - BOTTOM + 16}" text-anchor="middle" '
                        f'font-size="11" fill="#333">{escape(_short(group, slot))}</text>')
    return _frame(body, label, height)


def histogram(values: list[float], label: str, bins: int = 20, color: str = COLORS[0]) -> str:
    """Counts of `values` in `bins` even bins from the smallest to the largest."""
    return histogram_of_counts(Counter(values), label, bins, color)


def histogram_of_counts(counts: Mapping[float, int], label: str, bins: int = 20, color: str = COLORS[0]) -> str:
    """`histogram` of values given as {value: how many}, so a caller can stream its values."""
    if not counts:
        return bars([], [], label)
    lo, hi = min(counts), max(counts)
    width = (hi - lo) / bins or 1.0
    totals = [0] * bins
    for v, n in counts.items():
        totals[min(bins - 1, int((v - lo) / width))] += n
    names = [f"{_fmt(lo + width * i)}-{_fmt(lo + width * (i + 1))}" for i in range(bins)]
    return bars(names, totals, label, color)


def lines(series: dict[str, list[tuple[float, float]]], label: str, x_label: str = "") -> str:
    """Line charts sharing one x axis; None values leave a gap."""
    height = H
    plot_w, plot_h = W - LEFT - RIGHT, height - TOP - BOTTOM
    xs = [x for points in series.values() for x, y in points if y is not None]
    ys = [y for points in series.values() for x, y in points if y is not None]
    if not xs:
        return bars([], [], label)
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    top_value = _nice_max(max(ys))
    body = _y_axis(top_value, plot_h, height)
    for i in range(5):
        v = x0 + (x1 - x0) * i / 4
        x = LEFT + plot_w * i / 4
        body.append(f'<text x="{x:.1f}" y="{height - BOTTOM + 16}" text-anchor="middle" font-size="11" '
                    f'fill="#555">{_fmt(v)}</text>')
    if x_label:
        body.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle" font-size="11" '
                    f'fill="#555">{escape(x_label)}</text>')
    for k, (name, points) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        path, dots, pen_up = [], [], True
        for x, y in points:
            if y is None:
                pen_up = True
                continue
            px = LEFT + plot_w * (x - x0) / (x1 - x0)
            py = height - BOTTOM - plot_h * y / top_value
            path.append(f"{'M' if pen_up else 'L'}{px:.1f},{py:.1f}")
            dots.append(f'<circle class="mark" cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{color}">'
                        f'<title>{escape(name)} at {_fmt(x)}: {_fmt(y)}</title></circle>')
            pen_up = False
        body.append(f'<path class="mark" d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="2">'
                    f'<title>{escape(name)}</title></path>')
        if len(dots) <= 120:  # a short run: its few points, each with its value
            body += dots
        body.append(f'<text x="{W - RIGHT}" y="{TOP + 12 + 14 * k}" text-anchor="end" font-size="12" '
                    f'fill="{color}">{escape(name)}</text>')
    return _frame(body, label, height)


def scatter(groups: dict[str, list[list[float]]], label: str) -> str:
    """Points in 2-D, one colour per group."""
    height = 420
    plot_w, plot_h = W - 2 * 16, height - 2 * 16 - 20
    pts = [p for points in groups.values() for p in points]
    if not pts:
        return bars([], [], label)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1e-9)
    y0, y1 = min(ys), max(max(ys), min(ys) + 1e-9)
    body = []
    for k, (name, points) in enumerate(groups.items()):
        color = COLORS[k % len(COLORS)]
        for x, y in points:
            px = 16 + plot_w * (x - x0) / (x1 - x0)
            py = 36 + plot_h * (1 - (y - y0) / (y1 - y0))
            body.append(f'<circle class="mark" cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{color}" '
                        f'fill-opacity="0.6"><title>{escape(name)}</title></circle>')
        body.append(f'<text x="{16 + 110 * k}" y="18" font-size="12" fill="{color}">\u25cf {escape(name)} '
                    f'({len(points)})</text>')
    return _frame(body, label, height)


def _short(text: str, width: float) -> str:
    room = max(3, int(width / 6.5))
    return text if len(text) <= room else text[: room - 1] + "\u2026"
