"""The HTML page of a load-test report: charts drawn as inline SVG, then the tables.

One self-contained file (no scripts, no fonts, nothing fetched), so it opens from a
results folder on a machine without network and survives being mailed around.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
Series = tuple[str, list[tuple[float, float]], bool]  # name, points, dashed


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        return [10.0**e for e in range(a, b + 1)]
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 2)]


def _fmt(v: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def chart(
    title: str,
    xlabel: str,
    ylabel: str,
    series: list[Series],
    *,
    logx: bool = False,
    logy: bool = False,
) -> str:
    pts = [p for _, ps, _ in series for p in ps if p[1] is not None]
    if not pts:
        return ""
    w, h, ml, mr, mt, mb = 660, 340, 70, 190, 30, 50
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    x0, x1 = (min(xs), max(xs)) if not logx else (min(xs) / 1.5, max(xs) * 1.5)
    if x0 == x1:
        x0, x1 = x0 * 0.5, x1 * 1.5 or 1
    y0, y1 = (0.0, max(ys) * 1.1 or 1) if not logy else (min(ys) / 1.5, max(ys) * 1.5)
    xt, yt = _ticks(x0, x1, logx), _ticks(y0, y1, logy)
    x0, x1 = min(x0, xt[0]), max(x1, xt[-1]) if logx else x1
    y1 = max(y1, yt[-1]) if not logy else y1
    y0 = min(y0, yt[0]) if logy else y0

    def sx(x: float) -> float:
        f = (
            (math.log10(x) - math.log10(x0)) / (math.log10(x1) - math.log10(x0))
            if logx
            else (x - x0) / (x1 - x0)
        )
        return ml + f * (w - ml - mr)

    def sy(y: float) -> float:
        f = (
            (math.log10(y) - math.log10(y0)) / (math.log10(y1) - math.log10(y0))
            if logy
            else (y - y0) / (y1 - y0)
        )
        return h - mb - f * (h - mt - mb)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{ml}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    for t in yt:
        if y0 <= t <= y1:
            y = sy(t)
            out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(
                f'<text x="{ml - 6}" y="{y + 4:.1f}" font-size="11" '
                f'text-anchor="end">{_fmt(t)}</text>'
            )
    for t in xt:
        if x0 <= t <= x1:
            x = sx(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt}" y2="{h - mb}" stroke="#eee"/>')
            out.append(
                f'<text x="{x:.1f}" y="{h - mb + 16}" font-size="11" '
                f'text-anchor="middle">{_fmt(t)}</text>'
            )
    out.append(
        f'<rect x="{ml}" y="{mt}" width="{w - ml - mr}" height="{h - mt - mb}" '
        'fill="none" stroke="#888"/>'
    )
    out.append(
        f'<text x="{(ml + w - mr) / 2}" y="{h - 12}" font-size="12" '
        f'text-anchor="middle">{html.escape(xlabel)}</text>'
    )
    out.append(
        f'<text x="16" y="{(mt + h - mb) / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 16 {(mt + h - mb) / 2})">{html.escape(ylabel)}</text>'
    )
    for k, (name, ps, dashed) in enumerate(series):
        ps = sorted((x, y) for x, y in ps if y is not None and (not logy or y > 0))
        if not ps:
            continue
        c = COLORS[k % len(COLORS)]
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ps)
        out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        for x, y in ps if len(ps) <= 12 else ():  # a drawn curve needs no markers
            out.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}">'
                f"<title>{html.escape(name)}: {_fmt(y)} at {_fmt(x)}</title></circle>"
            )
        ly = mt + 14 + 18 * k
        out.append(
            f'<line x1="{w - mr + 10}" x2="{w - mr + 34}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="{c}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{w - mr + 40}" y="{ly}" font-size="11">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _door_charts(door: str, entry: dict[str, Any], mode: str) -> list[str]:
    key = "offered_per_s" if mode == "open" else "window"
    xl = "offered load (requests/s)" if mode == "open" else "requests in flight per generator"
    pts = entry["points"]

    def s(name: str, side: str, field: str, dashed: bool = False) -> Series:
        return (name, [(p[key], p[side][field]) for p in pts if side in p], dashed)

    thr = [s("node", "node", "per_s"), s("ceiling", "ceiling", "per_s", True)]
    if mode == "open":
        thr.append(("offered", [(p[key], p[key]) for p in pts], True))
    lat = [
        s("node p50", "node", "p50_us"),
        s("node p99", "node", "p99_us"),
        s("node p99.9", "node", "p999_us"),
        s("ceiling p99", "ceiling", "p99_us", True),
    ]
    unit = entry.get("unit", "requests/s")
    return [
        chart(f"{door}: throughput against load", xl, unit, thr),
        chart(f"{door}: latency against load", xl, "latency (µs, log)", lat, logy=True),
    ]


def _table(rows: list[list[Any]], head: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _cell(c: Any) -> str:
    if c is None:
        return "–"
    if isinstance(c, float):
        return f"{c:,.3f}" if c < 10 else f"{c:,.0f}"
    if isinstance(c, int):
        return f"{c:,}"
    if isinstance(c, dict):
        return ", ".join(f"{k}: {v:,}" for k, v in c.items())
    return str(c)


def _fit_chart(pts: list[dict[str, Any]], fit: dict[str, Any]) -> str:
    """Measured cost per lookup, and both fitted curves carried out to 1.5e9."""
    lo = min(p["registry_size"] for p in pts)
    xs = [lo * (1.5e9 / lo) ** (i / 24) for i in range(25)]
    a, b = fit["log"]["a"], fit["log"]["b"]
    c, k = fit["power"]["c"], fit["power"]["k"]
    series: list[Series] = [
        ("measured", [(p["registry_size"], p["us_per_lookup"]) for p in pts], False),
        ("a + b·log10 N", [(x, a + b * math.log10(x)) for x in xs], True),
        ("c·N^k", [(x, c * x**k) for x in xs], True),
    ]
    if "sql_ceiling_power" in fit:
        sc, sk = fit["sql_ceiling_power"]["c"], fit["sql_ceiling_power"]["k"]
        series.append(
            (
                "SQL ceiling, measured",
                [
                    (p["registry_size"], 1e6 / p["ceiling_sql_batch_keys_per_s"])
                    for p in pts
                    if p.get("ceiling_sql_batch_keys_per_s")
                ],
                False,
            )
        )
        series.append(("SQL ceiling c·N^k", [(x, sc * x**sk) for x in xs], True))
    return chart(
        "cost per lookup, measured and extrapolated to 1.5e9",
        "identifiers in the registry (log)",
        "µs per lookup",
        series,
        logx=True,
    )


def _gen(r: dict[str, Any]) -> str:
    """The generator's CPU, and "saturated" when it (not the server) set the pace."""
    cpu = r.get("generator_cpu")
    if cpu is None:
        return "–"
    return f"{cpu:.2f}" + (" saturated" if r.get("generator_saturated") else "")


def render(report: dict[str, Any]) -> str:
    cfg = report.get("config", {})
    mode = cfg.get("mode", "closed")
    parts = [
        "<!doctype html><html lang='en'><meta charset='utf-8'>",
        f"<title>idnode load test {html.escape(report.get('started', ''))}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right;font-size:13px}th{background:#f4f4f4}svg{margin:0 1em 1em 0}"
        ".note{color:#555}</style>",
        f"<h1>idnode load test {html.escape(report.get('label') or '')}</h1>",
        f"<p class='note'>{html.escape(report.get('started', ''))} – "
        f"{html.escape(report.get('finished', ''))}; "
        f"{html.escape(json.dumps(report.get('machine', {})))}</p>",
    ]
    reg = report.get("registry")
    if reg:
        parts.append(f"<p>Registry: {html.escape(json.dumps(reg))}</p>")
    if cfg:
        parts.append(
            f"<p class='note'>{mode} loop, {cfg.get('distribution')} popularity, "
            f"{cfg.get('miss_share', 0):.0%} unregistered, YCSB {cfg.get('mix')}, "
            f"{cfg.get('generators')} generator(s) on CPUs {cfg.get('load_cpus')}, node on CPUs "
            f"{cfg.get('server_cpus')}, {cfg.get('seconds')} s per point after "
            f"{cfg.get('warmup')} s warm-up. Latency is measured "
            + (
                "from each request's intended send time."
                if mode == "open"
                else "from send to answer."
            )
            + "</p>"
        )
    for door, entry in report.get("doors", {}).items():
        parts.append(
            f"<h2>{html.escape(door)}</h2>"
            f"<p class='note'>ceiling: {html.escape(entry['ceiling'])}</p>"
        )
        if "dnsperf" in entry:  # the DNS door: dnsperf's figures, one point
            d = entry["dnsperf"]
            sides = [("node", d["node"]), ("ceiling", d.get("ceiling") or {})]
            parts.append(
                _table(
                    [
                        [
                            side,
                            f.get("qps"),
                            d.get("ratio_to_ceiling") if side == "node" else None,
                            f.get("latency_avg_s"),
                            f.get("lost"),
                            f.get("rcodes"),
                        ]
                        for side, f in sides
                        if f
                    ],
                    ["", "queries/s", "ratio", "average latency s", "lost", "rcodes"],
                )
            )
            continue
        parts.extend(_door_charts(door, entry, mode))
        parts.append(
            "<p class='note'>A saturated generator used its whole core or fell behind its "
            "schedule: what it measured is a floor for the server behind it. A ceiling "
            "measured by a saturated generator is the generator's limit, not the door's.</p>"
        )
        key = "offered_per_s" if mode == "open" else "window"
        rows = []
        for p in entry["points"]:
            n, c = p["node"], p.get("ceiling", {})
            t = n.get("tiers") or {}
            h = n.get("host") or {}  # what the machine did meanwhile (host_stats.py)
            rows.append(
                [
                    p[key],
                    n["per_s"],
                    c.get("per_s"),
                    n.get("ratio_to_ceiling"),
                    n["p50_us"],
                    n["p90_us"],
                    n["p99_us"],
                    n["p999_us"],
                    n["max_us"],
                    n["lost"] + n["dropped"],
                    n["codes"],
                    t.get("l1_hit_ratio"),
                    t.get("l2_hit_ratio"),
                    t.get("l3_hit_ratio"),
                    _gen(n),
                    _gen(c) if c else None,
                    h.get("steal_pct"),
                    (c.get("host") or {}).get("steal_pct"),
                    h.get("iowait_pct"),
                    h.get("disk_read_mb"),
                ]
            )
        parts.append(
            _table(
                rows,
                [
                    key,
                    "node/s",
                    "ceiling/s",
                    "ratio",
                    "p50 µs",
                    "p90 µs",
                    "p99 µs",
                    "p99.9 µs",
                    "max µs",
                    "lost",
                    "codes",
                    "L1 hit",
                    "L2 hit",
                    "L3 found",
                    "generator CPU (node run)",
                    "generator CPU (ceiling run)",
                    "steal % (node run)",
                    "steal % (ceiling run)",
                    "iowait %",
                    "disk read MB",
                ],
            )
        )
        ups = [p["updates"] for p in entry["points"] if "updates" in p]
        if ups:
            parts.append("<p>Updates (REST PUT):</p>")
            parts.append(
                _table(
                    [[u["per_s"], u["p50_us"], u["p99_us"], u["codes"]] for u in ups],
                    ["updates/s", "p50 µs", "p99 µs", "codes"],
                )
            )
    if report.get("tier_ceilings"):
        parts.append(
            "<p>Tier ceilings (batches of 100, from a load core): "
            f"{html.escape(json.dumps(report['tier_ceilings']))}</p>"
        )
    scale = report.get("scale")
    if scale:
        pts = scale["points"]
        parts.append("<h2>Cost against registry size</h2>")
        parts.append(
            chart(
                "latency against registry size",
                "identifiers in the registry (log)",
                "latency (µs)",
                [
                    ("p50", [(p["registry_size"], p["p50_us"]) for p in pts], False),
                    ("p99", [(p["registry_size"], p["p99_us"]) for p in pts], False),
                ],
                logx=True,
            )
        )
        parts.append(
            chart(
                "lookups/s against registry size",
                "identifiers in the registry (log)",
                "lookups/s (every one reaches SQL)",
                [
                    ("node", [(p["registry_size"], p["per_s"]) for p in pts], False),
                    (
                        "SQL ceiling (bare asyncpg)",
                        [(p["registry_size"], p.get("ceiling_sql_batch_keys_per_s")) for p in pts],
                        True,
                    ),
                ],
                logx=True,
            )
        )
        parts.append(
            _table(
                [
                    [
                        p["registry_size"],
                        p["per_s"],
                        p["p50_us"],
                        p["p99_us"],
                        p["p999_us"],
                        p.get("ceiling_sql_batch_keys_per_s"),
                        p.get("ratio_to_ceiling"),
                        p.get("bytes_per_identifier"),
                        p.get("us_per_lookup"),
                    ]
                    for p in pts
                ],
                [
                    "identifiers",
                    "lookups/s",
                    "p50 µs",
                    "p99 µs",
                    "p99.9 µs",
                    "SQL batch ceiling keys/s",
                    "ratio",
                    "bytes/id",
                    "µs per lookup",
                ],
            )
        )
        fit = scale.get("fit")
        if fit:
            parts.append(_fit_chart(pts, fit))
            parts.append(f"<p>Fit: {html.escape(fit['text'])}</p>")
    parts.append("<details><summary>report.json</summary><pre>")
    parts.append(html.escape(json.dumps(report, indent=1, ensure_ascii=False)))
    parts.append("</pre></details></html>")
    return "\n".join(p for p in parts if p)
