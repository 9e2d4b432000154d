"""Server-rendered SVG charts for the overview: no JavaScript, escaped labels, a fixed size.

`line_chart` draws one polyline per series over a time window (outbox lag per service);
`bar_chart` draws stacked bars per time slot (completions and compensations per minute).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape

from markupsafe import Markup

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777")
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 22


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10 if value >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def _fmt(value: float) -> str:
    if value >= 10 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _frame(width: int, height: int, y_max: float, label: str, title: str) -> list[str]:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}" class="chart">',
        f"<title>{escape(title)}</title>",
    ]
    plot_h = height - TOP - BOTTOM
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
            f"{_fmt(y_max * i / 4)}</text>"
        )
    parts.append(f'<text x="{LEFT}" y="{height - 4}" class="axis">{escape(label)}</text>')
    return parts


def line_chart(
    series: Mapping[str, Sequence[tuple[datetime, float]]],
    *,
    start: datetime,
    end: datetime,
    title: str,
    unit: str = "",
    width: int = 640,
    height: int = 180,
) -> Markup:
    """One line per series; x is time from `start` to `end`, y from 0 to a round maximum."""
    span = max((end - start).total_seconds(), 1.0)
    peak = max((v for points in series.values() for _, v in points), default=0.0)
    y_max = _nice_max(peak)
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    parts = _frame(width, height, y_max, f"last {span / 60:.0f} min · {unit}", title)
    legend_x = LEFT + 8
    for index, (name, points) in enumerate(sorted(series.items())):
        colour = PALETTE[index % len(PALETTE)]
        coords = []
        for when, value in points:
            x = LEFT + plot_w * min(1.0, max(0.0, (when - start).total_seconds() / span))
            y = TOP + plot_h - plot_h * min(1.0, max(0.0, value / y_max))
            coords.append(f"{x:.1f},{y:.1f}")
        if len(coords) == 1:
            cx, cy = coords[0].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
        elif coords:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" '
                f'points="{" ".join(coords)}"/>'
            )
        parts.append(
            f'<rect x="{legend_x}" y="{TOP + 2}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{TOP + 11}" class="legend">{escape(name)}</text>'
        )
        legend_x += 20 + 7 * len(name)
    if not any(series.values()):
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="axis">'
            "no samples yet</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    series: Mapping[str, Sequence[tuple[datetime, int]]],
    *,
    title: str,
    width: int = 640,
    height: int = 180,
) -> Markup:
    """Stacked bars, one per slot (the series share their slots), one colour per series."""
    names = list(series)
    slots = [when for when, _ in series[names[0]]] if names else []
    totals = [sum(series[name][i][1] for name in names) for i in range(len(slots))]
    # Counts: four grid steps of whole numbers.
    y_max = max(4.0, _nice_max(max(totals, default=0)))
    y_max = float(-(-int(y_max) // 4) * 4)
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    parts = _frame(width, height, y_max, f"per minute, last {len(slots)} min", title)
    bar_w = plot_w / max(len(slots), 1)
    for i, when in enumerate(slots):
        base = 0.0
        for index, name in enumerate(names):
            value = series[name][i][1]
            if not value:
                continue
            h = plot_h * value / y_max
            y = TOP + plot_h - plot_h * base / y_max - h
            parts.append(
                f'<rect x="{LEFT + i * bar_w + 0.5:.1f}" y="{y:.1f}" '
                f'width="{max(bar_w - 1, 0.5):.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[index % len(PALETTE)]}">'
                f"<title>{when:%H:%M} {escape(name)}: {value}</title></rect>"
            )
            base += value
    legend_x = LEFT + 8
    for index, name in enumerate(names):
        parts.append(
            f'<rect x="{legend_x}" y="{TOP + 2}" width="10" height="10" '
            f'fill="{PALETTE[index % len(PALETTE)]}"/>'
            f'<text x="{legend_x + 14}" y="{TOP + 11}" class="legend">{escape(name)}</text>'
        )
        legend_x += 20 + 7 * len(name)
    parts.append("</svg>")
    return Markup("".join(parts))
