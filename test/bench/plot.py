"""Draws delivered rate and p99 latency against offered rate, for W1 and W2, from a bench-results
directory, as one SVG written by hand (standard library only, no network, no plotting package).

Usage: plot.py RESULTS_DIR OUT.svg COLUMN... [--title TEXT]
Reads COLUMN-w1.json and COLUMN-w2.json (the loadgen's JSON lines that scripts/bench.sh keeps);
the fixed-rate phase and each step of the rising search are one point each: x its offered deliveries/s, y what
the clients received per second, and its p99 from publish to read. A failed step is drawn
hollow: it stopped that server's search."""
import json
import math
import os
import sys
from xml.sax.saxutils import escape

COLOURS = {"sidecar": "#1f77b4", "naive": "#2ca02c", "nchan": "#d62728"}
FALLBACK = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
W, H = 1000, 720  # the whole picture
PW, PH = 380, 230  # one panel's plotting area
LEFT, TOP, GAP_X, GAP_Y = 95, 80, 115, 95


def load(directory, column, workload):
    try:
        with open(os.path.join(directory, f"{column}-{workload}.json")) as f:
            return json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}


def points(run):
    """(offered, delivered, p99_ms, passed) per phase with publishing, by offered rate."""
    out = []
    for p in run.get("phases", []):
        name = p.get("name", "")
        if not (name.startswith("step") or name == "fixed") or not p.get("target_per_s"):
            continue
        out.append((p["target_per_s"], p["achieved_per_s"], max(p["p99_ms"], 0.01), p["pass"]))
    out.sort()
    return out


def log_ticks(lo, hi):
    """1, 2, 5 times powers of ten within [lo, hi]."""
    ticks = []
    e = math.floor(math.log10(lo))
    while 10**e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10**e
            if lo * 0.9999 <= v <= hi * 1.0001:
                ticks.append(v)
        e += 1
    return ticks


def si(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


class Panel:
    def __init__(self, x0, y0, xr, yr, title, xlabel, ylabel):
        self.x0, self.y0 = x0, y0
        self.xr = (math.log10(xr[0]), math.log10(xr[1]))
        self.yr = (math.log10(yr[0]), math.log10(yr[1]))
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.lo = (xr[0], yr[0])
        self.hi = (xr[1], yr[1])

    def x(self, v):
        return self.x0 + PW * (math.log10(v) - self.xr[0]) / (self.xr[1] - self.xr[0])

    def y(self, v):
        v = min(max(v, self.lo[1]), self.hi[1])
        return self.y0 + PH - PH * (math.log10(v) - self.yr[0]) / (self.yr[1] - self.yr[0])

    def frame(self, out, diagonal=False, limit=None):
        out.append(f'<rect x="{self.x0}" y="{self.y0}" width="{PW}" height="{PH}" '
                   'fill="white" stroke="#444"/>')
        for t in log_ticks(*[10**v for v in self.xr]):
            x = self.x(t)
            out.append(f'<line x1="{x:.1f}" y1="{self.y0}" x2="{x:.1f}" y2="{self.y0 + PH}" '
                       'stroke="#e4e4e4"/>')
            out.append(f'<text x="{x:.1f}" y="{self.y0 + PH + 16}" text-anchor="middle">'
                       f"{si(t)}</text>")
        for t in log_ticks(*[10**v for v in self.yr]):
            y = self.y(t)
            out.append(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x0 + PW}" y2="{y:.1f}" '
                       'stroke="#e4e4e4"/>')
            out.append(f'<text x="{self.x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{si(t)}</text>')
        if diagonal:  # delivered = offered
            a = max(10**self.xr[0], 10**self.yr[0])
            b = min(10**self.xr[1], 10**self.yr[1])
            out.append(f'<line x1="{self.x(a):.1f}" y1="{self.y(a):.1f}" x2="{self.x(b):.1f}" '
                       f'y2="{self.y(b):.1f}" stroke="#999" stroke-dasharray="4 4"/>')
        if limit is not None:
            y = self.y(limit)
            out.append(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x0 + PW}" y2="{y:.1f}" '
                       'stroke="#c60" stroke-dasharray="6 3"/>')
            out.append(f'<text x="{self.x0 + PW - 4}" y="{y - 4:.1f}" text-anchor="end" '
                       f'fill="#c60">search limit {limit:g} ms</text>')
        out.append(f'<text x="{self.x0 + PW / 2}" y="{self.y0 - 10}" text-anchor="middle" '
                   f'font-weight="bold">{escape(self.title)}</text>')
        out.append(f'<text x="{self.x0 + PW / 2}" y="{self.y0 + PH + 36}" '
                   f'text-anchor="middle">{escape(self.xlabel)}</text>')
        cx, cy = self.x0 - 62, self.y0 + PH / 2
        out.append(f'<text x="{cx}" y="{cy}" text-anchor="middle" '
                   f'transform="rotate(-90 {cx} {cy})">{escape(self.ylabel)}</text>')

    def series(self, out, pts, colour, width):
        """Earlier series are drawn wider, so that one hidden under another still shows."""
        if not pts:
            return
        path = " ".join(f"{self.x(a):.1f},{self.y(b):.1f}" for a, b, _ in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                   f'stroke-width="{width}" stroke-opacity="0.85"/>')
        for a, b, ok in pts:
            fill = colour if ok else "white"
            out.append(f'<circle cx="{self.x(a):.1f}" cy="{self.y(b):.1f}" r="{width + 2}" '
                       f'fill="{fill}" stroke="{colour}" stroke-width="1.5"/>')


def main(argv):
    title = "scripts/bench.sh"
    if "--title" in argv:
        i = argv.index("--title")
        title = argv[i + 1]
        del argv[i:i + 2]
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    directory, target, columns = argv[0], argv[1], argv[2:]
    runs = {(c, w): points(load(directory, c, w)) for c in columns for w in ("w1", "w2")}
    offered = [p[0] for pts in runs.values() for p in pts] or [1e4, 1e6]
    delivered = [p[1] for pts in runs.values() for p in pts if p[1] > 0] or [1e4, 1e6]
    p99 = [p[2] for pts in runs.values() for p in pts] + [50, 500]  # the search limits show
    xr = (10 ** math.floor(math.log10(min(offered))), 10 ** math.ceil(math.log10(max(offered))))
    yr_rate = (10 ** math.floor(math.log10(min(min(delivered), xr[0]))),
               10 ** math.ceil(math.log10(max(max(delivered), xr[1]))))
    yr_p99 = (10 ** math.floor(math.log10(min(p99))), 10 ** math.ceil(math.log10(max(p99))))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="28" text-anchor="middle" font-size="16" font-weight="bold">'
           f"{escape(title)}</text>"]
    names = {"w1": "W1: 100 rooms of 100", "w2": "W2: one room of 10,000"}
    limits = {"w1": 50, "w2": 500}
    for col, w in enumerate(("w1", "w2")):
        x0 = LEFT + col * (PW + GAP_X)
        rate = Panel(x0, TOP, xr, yr_rate, f"{names[w]}: delivered",
                     "offered deliveries/s", "delivered/s")
        lat = Panel(x0, TOP + PH + GAP_Y, xr, yr_p99, f"{names[w]}: p99 latency",
                    "offered deliveries/s", "p99 ms (publish to read)")
        rate.frame(out, diagonal=True)
        lat.frame(out, limit=limits[w])
        for i, c in enumerate(columns):
            colour = COLOURS.get(c, FALLBACK[i % len(FALLBACK)])
            pts = runs[(c, w)]
            width = max(5 - 1.5 * i, 1.5)
            rate.series(out, [(a, b, ok) for a, b, _, ok in pts], colour, width)
            lat.series(out, [(a, l, ok) for a, _, l, ok in pts], colour, width)
    # Legend
    lx, ly = LEFT, H - 22
    for i, c in enumerate(columns):
        colour = COLOURS.get(c, FALLBACK[i % len(FALLBACK)])
        x = lx + i * 150
        out.append(f'<line x1="{x}" y1="{ly}" x2="{x + 24}" y2="{ly}" stroke="{colour}" '
                   'stroke-width="2"/>')
        out.append(f'<circle cx="{x + 12}" cy="{ly}" r="3.5" fill="{colour}"/>')
        out.append(f'<text x="{x + 30}" y="{ly + 4}">{escape(c)}</text>')
    out.append(f'<circle cx="{lx + len(columns) * 150 + 12}" cy="{ly}" r="3.5" fill="white" '
               'stroke="#444" stroke-width="1.5"/>')
    out.append(f'<text x="{lx + len(columns) * 150 + 22}" y="{ly + 4}">failed step '
               "(loss, p99 or publisher behind): the search stopped</text>")
    out.append("</svg>")
    with open(target, "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
