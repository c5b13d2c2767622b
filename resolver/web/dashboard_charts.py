"""Per-prefix registrations and resolutions over time, drawn as SVG by the node.

Server-side SVG rather than a vendored chart library: a line per prefix over days is a
few dozen lines of arithmetic, needs no script (the page works without JavaScript), and
nothing has to be fetched, licensed or kept up to date. Only presentation attributes are
used (no ``style``), so the strict Content-Security-Policy holds; every text is escaped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape
from typing import Any, Protocol


class DayCounts(Protocol):
    """A statistics row as the charts read it (the registry's ``StatisticsRow``)."""

    @property
    def prefix(self) -> str: ...
    @property
    def day(self) -> str: ...
    @property
    def registrations(self) -> int: ...
    @property
    def resolutions(self) -> int: ...


DAYS = 14  # days a chart spans, today included
TOP = 6  # prefixes drawn (the most active; the rest are summed as "other")
WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP_MARGIN, BOTTOM = 56, 28, 28, 72
COLOURS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#0a7ea4", "#6e7781")


def days_until(today: str, n: int = DAYS) -> list[str]:
    end = dt.date.fromisoformat(today)
    return [(end - dt.timedelta(days=n - 1 - i)).isoformat() for i in range(n)]


def series(rows: Sequence[DayCounts], days: list[str], what: str) -> list[dict[str, Any]]:
    """One series per prefix (``what``: registrations or resolutions) over ``days``, the
    ``TOP`` busiest first and the rest summed as "other"."""
    at = {d: i for i, d in enumerate(days)}
    per: dict[str, list[int]] = {}
    for r in rows:
        i = at.get(r.day)
        if i is None:
            continue
        per.setdefault(r.prefix, [0] * len(days))[i] += int(getattr(r, what))
    ranked = sorted(per.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    out = [{"prefix": p, "counts": c} for p, c in ranked[:TOP]]
    if len(ranked) > TOP:
        rest = [sum(c[i] for _, c in ranked[TOP:]) for i in range(len(days))]
        out.append({"prefix": f"other ({len(ranked) - TOP})", "counts": rest})
    return out


def _nice(top: int) -> int:
    """A round axis maximum at or above ``top`` (1, 2, 5 times a power of ten)."""
    if top <= 4:
        return 4
    power = 1
    while True:
        for step in (1, 2, 5):
            if step * power * 4 >= top:
                return step * power * 4
        power *= 10


def line_chart(title: str, days: list[str], lines: list[dict[str, Any]], empty: str) -> str:
    """An SVG document: a line per series, a y axis of four steps, a day axis, a legend."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP_MARGIN - BOTTOM
    peak = _nice(max((max(s["counts"]) for s in lines if s["counts"]), default=0))
    step_x = plot_w / max(1, len(days) - 1)

    def x(i: int) -> float:
        return LEFT + i * step_x

    def y(v: int) -> float:
        return TOP_MARGIN + plot_h - plot_h * v / peak

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11" '
        f'role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    for k in range(5):
        v = peak * k // 4
        yy = y(v)
        out.append(
            f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{WIDTH - RIGHT}" y2="{yy:.1f}" '
            f'stroke="#d0d7de" stroke-width="1"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{v}</text>')
    for i, d in enumerate(days):
        if i % 2 == (len(days) - 1) % 2:  # every other day, the last always labelled
            out.append(
                f'<text x="{x(i):.1f}" y="{TOP_MARGIN + plot_h + 16}" '
                f'text-anchor="middle">{escape(d[5:])}</text>'
            )
    if not lines:
        out.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP_MARGIN + plot_h / 2:.1f}" '
            f'text-anchor="middle" fill="#57606a">{escape(empty)}</text>'
        )
    for n, s in enumerate(lines):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s["counts"]))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, v in enumerate(s["counts"]):
            if v:
                out.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>')
        lx = LEFT + (n % 3) * (plot_w / 3)
        ly = HEIGHT - 40 + (n // 3) * 14
        label = f"{s['prefix']} ({sum(s['counts'])})"
        out.append(
            f'<rect x="{lx:.1f}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14:.1f}" y="{ly + 1}">{escape(label)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
