"""The run page's two charts as inline SVG, drawn here (no JavaScript library, no build step).

- `fitness`: every evaluated variant's raw mean at its iteration, error bars of one standard
  error, coloured by claim (as in the report's figure); the confirmed best as a step line
  that moves only at a promotion; failed variants as crosses at the foot.
- `lineage`: the tree of variants, one row per generation (depth from the baseline), each
  node a link to its variant's page; the confirmed best's ancestry drawn thicker.

Text is escaped (markupsafe) and numbers are formatted here; the templates insert the
result as markup.
"""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

COLOURS = {"raw": "#1f4e9c", "confirming": "#1f4e9c", "not confirmed": "#8c8c8c",
           "confirmed": "#1a7f37", "best": "#d2691e", "failed": "#c0392b", "other": "#9aa5b1"}
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 720, 300, 64, 16, 16, 40


def _nice(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def fitness(variants: list[dict[str, Any]], promoted: list[int], metric: str,
            run: str) -> Markup:
    done = [v for v in variants if v["fitness"] is not None and math.isfinite(v["fitness"])]
    failed = [v for v in variants if v["status"] == "failed"]
    if not done:
        return Markup('<p class="muted">No variant has a fitness yet.</p>')
    lo = min(v["fitness"] - (v["stderr"] or 0) for v in done)
    hi = max(v["fitness"] + (v["stderr"] or 0) for v in done)
    span = (hi - lo) or abs(hi) or 1.0
    foot = lo - 0.12 * span
    lo, hi = (foot - 0.04 * span) if failed else lo - 0.05 * span, hi + 0.05 * span
    last = max(v["iteration"] for v in done + failed)
    x0, x1 = -0.5, last + 0.5

    def X(it: float) -> float:
        return PAD_L + (it - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def Y(y: float) -> float:
        return PAD_T + (hi - y) / (hi - lo) * (H - PAD_T - PAD_B)

    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="fitness over the run">']
    for t in _nice(lo, hi):
        out.append(f'<line class="grid" x1="{PAD_L}" x2="{W - PAD_R}" y1="{Y(t):.1f}" y2="{Y(t):.1f}"/>'
                   f'<text class="tick" x="{PAD_L - 6}" y="{Y(t) + 4:.1f}" '
                   f'text-anchor="end">{_fmt(t)}</text>')
    xt = _nice(0, last, 8) if last > 0 else [0]
    for t in xt:
        if float(t).is_integer():
            out.append(f'<text class="tick" x="{X(t):.1f}" y="{H - PAD_B + 16}" '
                       f'text-anchor="middle">{int(t)}</text>')
    out.append(f'<text class="axis" x="{(PAD_L + W - PAD_R) / 2}" y="{H - 6}" text-anchor="middle">'
               f'iteration (0: the baseline)</text>'
               f'<text class="axis" transform="translate(14 {(PAD_T + H - PAD_B) / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(metric)}</text>')
    # the confirmed best: the baseline, then each promoted variant, as a step line
    by_id = {v["id"]: v for v in done}
    steps = [(0, by_id[0]["fitness"])] if 0 in by_id else []
    steps += [(by_id[i]["iteration"], by_id[i]["fitness"]) for i in promoted if i in by_id]
    if steps:
        pts, prev = [], None
        for it, y in steps + [(last + 0.5, steps[-1][1])]:
            if prev is not None:
                pts.append(f"{X(it):.1f},{Y(prev):.1f}")
            pts.append(f"{X(it):.1f},{Y(y):.1f}")
            prev = y
        out.append(f'<polyline class="best-line" points="{" ".join(pts)}" '
                   f'stroke="{COLOURS["best"]}"/>')
    for v in done:
        colour = COLOURS.get(v["claim"], COLOURS["raw"])
        cx, cy = X(v["iteration"]), Y(v["fitness"])
        se = v["stderr"] or 0.0
        tip = escape(f'{v["name"]}: {v["fitness_text"]} (n={v["n"]}), {v["claim"]}')
        out.append(f'<a href="/runs/{escape(run)}/variants/{v["id"]}" class="pt" data-variant="{v["id"]}">'
                   f'<title>{tip}</title>')
        if se > 0:
            out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{Y(v["fitness"] + se):.1f}" '
                       f'y2="{Y(v["fitness"] - se):.1f}" stroke="{colour}" class="err"/>'
                       f'<line x1="{cx - 4:.1f}" x2="{cx + 4:.1f}" y1="{Y(v["fitness"] + se):.1f}" '
                       f'y2="{Y(v["fitness"] + se):.1f}" stroke="{colour}" class="err"/>'
                       f'<line x1="{cx - 4:.1f}" x2="{cx + 4:.1f}" y1="{Y(v["fitness"] - se):.1f}" '
                       f'y2="{Y(v["fitness"] - se):.1f}" stroke="{colour}" class="err"/>')
        fill = "white" if v["claim"] == "not confirmed" else colour
        if v["claim"] in ("confirmed", "best"):
            out.append(f'<rect x="{cx - 5:.1f}" y="{cy - 5:.1f}" width="10" height="10" '
                       f'fill="{fill}" stroke="{colour}"/>')
        else:
            out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{fill}" stroke="{colour}"/>')
        out.append('</a>')
    for v in failed:
        cx, cy = X(v["iteration"]), Y(foot)
        out.append(f'<a href="/runs/{escape(run)}/variants/{v["id"]}" class="pt" data-variant="{v["id"]}">'
                   f'<title>{escape(v["name"])}: failed</title>'
                   f'<path d="M{cx - 5:.1f},{cy - 5:.1f}L{cx + 5:.1f},{cy + 5:.1f}M{cx - 5:.1f},'
                   f'{cy + 5:.1f}L{cx + 5:.1f},{cy - 5:.1f}" stroke="{COLOURS["failed"]}" '
                   f'class="cross"/></a>')
    out.append('</svg>')
    return Markup("".join(out))


def lineage(variants: list[dict[str, Any]], best_id: int | None, run: str) -> Markup:
    if not variants:
        return Markup('<p class="muted">No variants yet.</p>')
    by_id = {v["id"]: v for v in variants}
    depth: dict[int, int] = {}
    for v in sorted(variants, key=lambda v: v["id"]):
        p = v["parent_id"]
        depth[v["id"]] = depth.get(p, -1) + 1 if p is not None else 0
    rows: dict[int, list[dict[str, Any]]] = {}
    for v in sorted(variants, key=lambda v: v["id"]):
        rows.setdefault(depth[v["id"]], []).append(v)
    ancestry = set()
    cur = best_id
    while cur is not None and cur in by_id:
        ancestry.add(cur)
        cur = by_id[cur]["parent_id"]
    widest = max(len(r) for r in rows.values())
    col_w = max(44, min(90, 700 // max(widest, 1)))
    width = max(W, 40 + widest * col_w)
    row_h = 58
    height = 30 + len(rows) * row_h
    pos: dict[int, tuple[float, float]] = {}
    for d, row in rows.items():
        offset = (width - len(row) * col_w) / 2
        for i, v in enumerate(row):
            pos[v["id"]] = (offset + (i + 0.5) * col_w, 24 + d * row_h)
    out = [f'<svg class="chart lineage" viewBox="0 0 {width:.0f} {height}" role="img" '
           f'aria-label="lineage tree of the variants">']
    for v in variants:
        p = v["parent_id"]
        if p is not None and p in pos:
            (x1, y1), (x2, y2) = pos[p], pos[v["id"]]
            cls = "edge best-path" if v["id"] in ancestry else "edge"
            out.append(f'<path class="{cls}" d="M{x1:.1f},{y1 + 9:.1f}C{x1:.1f},{y1 + 30:.1f} '
                       f'{x2:.1f},{y2 - 30:.1f} {x2:.1f},{y2 - 9:.1f}"/>')
    for v in variants:
        x, y = pos[v["id"]]
        kind = ("best" if v["id"] == best_id else "failed" if v["status"] == "failed" else
                v["claim"] if v["fitness"] is not None else "other")
        colour = COLOURS.get(kind, COLOURS["raw"])
        tip = escape(f'{v["name"]} ({v["status"]}): {v["fitness_text"]} — {v["text"][:160]}')
        out.append(f'<a href="/runs/{escape(run)}/variants/{v["id"]}" class="node" data-variant="{v["id"]}">'
                   f'<title>{tip}</title><circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="{colour}"/>'
                   f'<text x="{x:.1f}" y="{y + 22:.1f}" text-anchor="middle" class="tick">'
                   f'{escape(v["name"])}</text></a>')
    out.append('</svg>')
    return Markup("".join(out))
