#!/usr/bin/env python3
"""Renders bench-out/results.jsonl (written by bench/run.sh): a markdown
table, the issue 6 targets with PASS/FAIL, an SVG of echo throughput and p99
against connection count, and the BENCHMARKS.md section between
<!-- bench:start --> and <!-- bench:end -->. Standard library only."""
import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess

SERVERS = [("ssocket", "ssocket (Rhai plugs)"), ("rust", "plain Rust"), ("node-ws", "Node + ws"), ("bun", "Bun")]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


# What a repeated scenario's median run is chosen by; echo runs by replies
# per server core-second.
MEDIAN_BY = {"broadcast": "cpu_cores", "floor": "cpu_cores", "idle": "connections_per_sec"}


def find(rows, server, label):
    """The row for a server and label; for repeated runs, the median run by
    the label's measure (MEDIAN_BY)."""
    key = MEDIAN_BY.get(label, "replies_per_core_second")
    runs = [r for r in rows if r.get("server") == server and r.get("label") == label]
    good = [r for r in runs if "error" not in r and isinstance(r.get(key), (int, float))]
    if len(good) > 1:
        good.sort(key=lambda r: r[key])
        return good[(len(good) - 1) // 2]
    return runs[0] if runs else None


def count(rows, label):
    """How many runs of a scenario there were (the most any server had)."""
    return max((sum(1 for r in rows if r.get("server") == s and r.get("label") == label) for s, _ in SERVERS),
               default=0)


def all_runs(rows, server, label, key):
    return [v for r in rows if r.get("server") == server and r.get("label") == label
            for v in [num(r, key)] if v is not None]


def median(rows, server, label, key):
    """The median of one measure over a scenario's runs (None if none)."""
    runs = all_runs(rows, server, label, key)
    return statistics.median(runs) if runs else None


def num(r, key):
    if r is None or "error" in r:
        return None
    v = r.get(key)
    if v is None and key.endswith("_us"):
        v = r.get("latency_" + key)  # the generator may name them latency_p99_us
    return v if isinstance(v, (int, float)) else None


def fmt(v, unit="", digits=None):
    if v is None:
        return "—"
    if digits is None:
        digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else 2)
    s = f"{v:,.{digits}f}"
    return f"{s} {unit}".strip()


def us(v):
    if v is None:
        return "—"
    if v >= 1_000_000:
        return f"{v / 1e6:.2f} s"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def cell(rows, server, label, key, render):
    r = find(rows, server, label)
    if r is None:
        return "not run"
    if "error" in r:
        return "failed"
    return render(num(r, key))


def table(rows):
    lines = ["| scenario | measure | " + " | ".join(n for _, n in SERVERS) + " |",
             "|---|---|" + "---|" * len(SERVERS)]
    spec = [
        (f"echo: 50 conn × 4 in flight, 100 B, 10 s (median of {count(rows, 'echo')} interleaved runs)", [
            ("replies/s", "replies_per_sec", lambda v: fmt(v)),
            ("p50 / p99 / p99.9", None, None),
            ("server CPU", "cpu_cores", lambda v: fmt(v, "cores", 2)),
            ("replies per server core-second", "replies_per_core_second", lambda v: fmt(v)),
            ("errors", "errors", lambda v: fmt(v, digits=0)),
        ], "echo"),
        *[(f"echo: {c:,} conn × 1 in flight, 100 B, 10 s (median of {count(rows, f'echo1-{c}')} runs)", [
            ("replies/s", "replies_per_sec", lambda v: fmt(v)),
            ("p50 / p99 / p99.9", None, None),
            ("replies per connection: fewest .. most", None, None),
            ("server CPU", "cpu_cores", lambda v: fmt(v, "cores", 2)),
        ], f"echo1-{c}") for c in (1000, 5000)],
        (f"broadcast: 1,000 receivers, 200 msgs/s, 10 s (median of {count(rows, 'broadcast')} interleaved runs "
         "by server CPU)", [
            ("sent / delivered", None, None),
            ("lost", "lost", lambda v: fmt(v, digits=0)),
            ("fan-out p50 / p99", None, None),
            ("server CPU", "cpu_cores", lambda v: fmt(v, "cores", 2)),
        ], "broadcast"),
        (f"idle: 10,000 connections (median of {count(rows, 'idle')} interleaved runs by connections/s)", [
            ("RSS per connection", "per_connection_bytes", lambda v: fmt(v / 1024 if v is not None else None, "KiB", 1)),
            ("RSS before → after", None, None),
            ("connections/s", "connections_per_sec", lambda v: fmt(v)),
        ], "idle"),
        ("idle: as many as the file limit allows (50,000 where it may; the row says how many)", [
            ("connections", "connections", lambda v: fmt(v, digits=0)),
            ("RSS per connection", "per_connection_bytes", lambda v: fmt(v / 1024 if v is not None else None, "KiB", 1)),
            ("connections/s", "connections_per_sec", lambda v: fmt(v)),
        ], "idle-big"),
        ("connect: 5,000 handshakes", [
            ("handshakes/s", "handshakes_per_sec", lambda v: fmt(v)),
            ("p50 / p99", None, None),
        ], "connect"),
    ]
    for title, measures, label in spec:
        first = True
        for name, key, render in measures:
            cells = []
            for server, _ in SERVERS:
                r = find(rows, server, label)
                if r is None:
                    cells.append("not run")
                elif "error" in r:
                    cells.append("failed")
                elif key is not None:
                    cells.append(render(num(r, key)))
                elif name == "p50 / p99 / p99.9":
                    cells.append(f"{us(num(r, 'p50_us'))} / {us(num(r, 'p99_us'))} / {us(num(r, 'p999_us'))}")
                elif name in ("fan-out p50 / p99", "p50 / p99"):
                    cells.append(f"{us(num(r, 'p50_us'))} / {us(num(r, 'p99_us'))}")
                elif name == "replies per connection: fewest .. most":
                    lo, hi = num(r, "per_connection_min"), num(r, "per_connection_max")
                    ratio = f" ({hi / lo:.2f}×)" if lo and hi else ""
                    cells.append(f"{fmt(lo, digits=0)} .. {fmt(hi, digits=0)}{ratio}")
                elif name == "sent / delivered":
                    cells.append(f"{fmt(num(r, 'sent'), digits=0)} / {fmt(num(r, 'delivered'), digits=0)}")
                elif name == "RSS before → after":
                    b, a = num(r, "rss_before_kib"), num(r, "rss_after_kib")
                    cells.append(f"{fmt(b / 1024 if b else None, 'MiB', 1)} → {fmt(a / 1024 if a else None, 'MiB', 1)}")
            lines.append(f"| {title if first else ''} | {name} | " + " | ".join(cells) + " |")
            first = False
    return "\n".join(lines)


def sweep(rows, server):
    pts = []
    for r in rows:
        if r.get("server") == server and str(r.get("label", "")).startswith("sweep-") and "error" not in r:
            c = r.get("sweep_connections")
            if isinstance(c, (int, float)) and num(r, "replies_per_sec") is not None:
                pts.append((c, num(r, "replies_per_sec"), num(r, "p99_us"), num(r, "cpu_cores"), num(r, "p50_us")))
    return sorted(pts)


def sweep_table(rows):
    """Replies/s and p50 / p99 per server and connection count."""
    by = {server: {p[0]: p for p in sweep(rows, server)} for server, _ in SERVERS}
    present = [(s, n) for s, n in SERVERS if by[s]]
    lines = ["| connections (× 4 in flight) | " + " | ".join(f"{n}: replies/s, p50 / p99" for _, n in present) + " |",
             "|---|" + "---|" * len(present)]
    for c in sorted({c for s, _ in present for c in by[s]}):
        cells = []
        for s, _ in present:
            p = by[s].get(c)
            cells.append(f"{fmt(p[1])}, {us(p[4])} / {us(p[2])}" if p else "—")
        lines.append(f"| {c:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if present else "_The sweep did not run._"


def floor_table(rows):
    r = find(rows, "floor", "floor")
    if r is None:
        return "not run"
    if "error" in r:
        return "failed (see bench-out/run.log)"
    return ("| writes/s | sender CPU | CPU per write | fan-out p50 / p99 | lost |\n|---|---|---|---|---|\n"
            f"| {fmt(num(r, 'writes') / num(r, 'duration_secs') if num(r, 'writes') else None)} "
            f"| {fmt(num(r, 'cpu_cores'), 'cores', 2)} | {fmt(num(r, 'cpu_us_per_write'), 'µs', 2)} "
            f"| {us(num(r, 'p50_us'))} / {us(num(r, 'p99_us'))} | {fmt(num(r, 'lost'), digits=0)} |")


def targets(rows):
    out = []

    def verdict(ok):
        return "n/a (not measured)" if ok is None else ("**PASS**" if ok else "**FAIL**")

    ss = num(find(rows, "ssocket", "echo"), "replies_per_core_second")
    rust = num(find(rows, "rust", "echo"), "replies_per_core_second")
    node = num(find(rows, "node-ws", "echo"), "replies_per_core_second")
    ok = None if ss is None or rust is None else ss >= 0.6 * rust

    def runs(server):
        return ", ".join(fmt(v) for v in all_runs(rows, server, "echo", "replies_per_core_second"))

    detail = ""
    if len(all_runs(rows, "ssocket", "echo", "replies_per_core_second")) > 1:
        detail = f"; medians of interleaved runs: ssocket {runs('ssocket')}, plain Rust {runs('rust')}"
    out.append(f"| echo replies per server core-second ≥ 0.6 × plain Rust | ssocket {fmt(ss)} vs plain Rust {fmt(rust)}"
               f" (ratio {fmt(ss / rust if ss and rust else None, '×', 2)}{detail}) | {verdict(ok)} |")
    ok = None if ss is None or node is None else ss >= 2 * node
    out.append(f"| echo replies per server core-second ≥ 2 × Node + ws | ssocket {fmt(ss)} vs Node + ws {fmt(node)}"
               f" (ratio {fmt(ss / node if ss and node else None, '×', 2)}) | {verdict(ok)} |")
    b = find(rows, "ssocket", "broadcast")
    lost, p99, cpu = num(b, "lost"), num(b, "p99_us"), num(b, "cpu_cores")
    out.append(f"| broadcast 1,000 receivers at 200 msgs/s: nothing lost | {fmt(lost, digits=0)} lost "
               f"({fmt(num(b, 'sent'), digits=0)} sent, {fmt(num(b, 'delivered'), digits=0)} delivered)"
               f" | {verdict(None if lost is None else lost == 0)} |")
    fl = find(rows, "floor", "floor")
    fl_p99, fl_cpu = num(fl, "p99_us"), num(fl, "cpu_cores")
    out.append(f"| broadcast: p99 fan-out ≤ 5 ms | {us(p99)} (machine floor: {us(fl_p99)}) | {verdict(None if p99 is None else p99 <= 5000)} |")
    out.append(f"| broadcast: server CPU ≤ 0.75 cores | {fmt(cpu, 'cores', 2)} (machine floor: {fmt(fl_cpu, 'cores', 2)}) | {verdict(None if cpu is None else cpu <= 0.75)} |")
    per = num(find(rows, "ssocket", "idle"), "per_connection_bytes")
    out.append(f"| 10,000 idle connections ≤ 6 KiB RSS each | {fmt(per / 1024 if per is not None else None, 'KiB', 2)} each"
               f" | {verdict(None if per is None else per <= 6144)} |")
    runs = [r["startup_ms"] for r in rows if r.get("label") == "startup" and isinstance(r.get("startup_ms"), (int, float))]
    ok = None if len(runs) == 0 else max(runs) < 1000
    out.append(f"| start-up with 1,000 plugs listening in < 1 s | {', '.join(f'{v:.0f} ms' for v in runs) or '—'}"
               f" ({len(runs)} runs, worst counts) | {verdict(ok)} |")
    return "| target (issue 6) | measured | result |\n|---|---|---|\n" + "\n".join(out)


def targets16(rows):
    """Issue 16's targets, each against the peers of the same run."""
    out = []

    def verdict(ok):
        return "n/a (not measured)" if ok is None else ("**PASS**" if ok else "**FAIL**")

    def le(a, b):
        return None if a is None or b is None else a <= b

    def ge(a, b):
        return None if a is None or b is None else a >= b

    def each(label, key, render):
        """Every run of a repeated scenario, ssocket's then Bun's, for the reader to judge the noise."""
        if len(all_runs(rows, "ssocket", label, key)) < 2:
            return ""
        runs = {s: ", ".join(render(v) for v in all_runs(rows, s, label, key)) for s in ("ssocket", "bun")}
        return f" (medians; every run: ssocket {runs['ssocket']}; Bun {runs['bun']})"

    e, eb, er = (find(rows, s, "echo1-1000") for s in ("ssocket", "bun", "rust"))
    p99, bp99 = num(e, "p99_us"), num(eb, "p99_us")
    out.append(f"| 1. echo 1,000 × 1: p99 no worse than Bun's | {us(p99)} vs Bun {us(bp99)} | {verdict(le(p99, bp99))} |")
    lo, hi = num(e, "per_connection_min"), num(e, "per_connection_max")
    ratio = hi / lo if lo and hi else None
    out.append(f"| 1. echo 1,000 × 1: busiest connection ≤ 1.5 × the least busy | {fmt(lo, digits=0)} .. {fmt(hi, digits=0)}"
               f" ({fmt(ratio, '×', 2)}) | {verdict(None if ratio is None else ratio <= 1.5)} |")
    rps, brps, rrps = num(e, "replies_per_sec"), num(eb, "replies_per_sec"), num(er, "replies_per_sec")
    out.append(f"| 1. echo 1,000 × 1: throughput ≥ Bun's | {fmt(rps)} vs Bun {fmt(brps)} replies/s | {verdict(ge(rps, brps))} |")
    out.append(f"| 1. then ≥ plain tokio-tungstenite's | {fmt(rps)} vs plain Rust {fmt(rrps)} replies/s | {verdict(ge(rps, rrps))} |")
    e4 = find(rows, "ssocket", "echo")
    r4 = num(e4, "replies_per_sec")
    out.append(f"| 2. echo 50 × 4 stays where it was (issue 16 measured 171k–199k replies/s, p99 1.3 ms) | {fmt(r4)} replies/s,"
               f" p99 {us(num(e4, 'p99_us'))} | {verdict(None if r4 is None else r4 >= 199_000)} |")
    i, ib = find(rows, "ssocket", "idle"), find(rows, "bun", "idle")
    per = num(i, "per_connection_bytes")
    out.append(f"| 3. 10,000 idle: ≤ 2 KiB each | {fmt(per / 1024 if per is not None else None, 'KiB', 2)} each"
               f" (Bun {fmt(num(ib, 'per_connection_bytes') / 1024 if num(ib, 'per_connection_bytes') else None, 'KiB', 2)})"
               f" | {verdict(None if per is None else per <= 2048)} |")
    cps, bcps = num(i, "connections_per_sec"), num(ib, "connections_per_sec")
    out.append(f"| 3. connects per second ≥ Bun's | {fmt(cps)} vs Bun {fmt(bcps)}"
               f"{each('idle', 'connections_per_sec', fmt)} | {verdict(ge(cps, bcps))} |")
    b, bb, fl = find(rows, "ssocket", "broadcast"), find(rows, "bun", "broadcast"), find(rows, "floor", "floor")
    lost = num(b, "lost")
    out.append(f"| 4. broadcast 1,000 at 200/s: 0 lost | {fmt(lost, digits=0)} | {verdict(None if lost is None else lost == 0)} |")
    # Each measure's own median: the median run by CPU need not be the one by p99.
    p99, bp99 = median(rows, "ssocket", "broadcast", "p99_us"), median(rows, "bun", "broadcast", "p99_us")
    out.append(f"| 4. broadcast p99 ≤ Bun's | {us(p99)} vs Bun {us(bp99)}"
               f"{each('broadcast', 'p99_us', us)} | {verdict(le(p99, bp99))} |")
    cpu, bcpu, fcpu = num(b, "cpu_cores"), num(bb, "cpu_cores"), num(fl, "cpu_cores")
    out.append(f"| 4. broadcast CPU ≤ Bun's | {fmt(cpu, 'cores', 2)} vs Bun {fmt(bcpu, 'cores', 2)}"
               f"{each('broadcast', 'cpu_cores', lambda v: fmt(v, digits=2))} | {verdict(le(cpu, bcpu))} |")
    floors = ", ".join(fmt(v, digits=2) for v in all_runs(rows, "floor", "floor", "cpu_cores"))
    out.append(f"| 4. broadcast CPU within 10 % of the floor's | {fmt(cpu, 'cores', 2)} vs floor {fmt(fcpu, 'cores', 2)}"
               f" (median of the floor's runs: {floors})"
               f" | {verdict(None if cpu is None or fcpu is None else cpu <= 1.1 * fcpu)} |")
    e5 = find(rows, "ssocket", "echo1-5000")
    big = find(rows, "ssocket", "idle-big")
    n = num(big, "connections")
    out.append(f"| 5. on record: echo 5,000 × 1 | {'recorded' if num(e5, 'replies_per_sec') else 'missing'} |"
               f" {verdict(None if e5 is None else num(e5, 'replies_per_sec') is not None)} |")
    note = "" if n is None or n >= 50_000 else f" (the file limit, ulimit -n {big.get('nofile', '?')}, allows {n:,.0f})"
    out.append(f"| 5. on record: 50,000 idle | {fmt(n, digits=0)} connections{note} |"
               f" {verdict(None if n is None else n >= 50_000)} |")
    return "| target (issue 16) | measured | result |\n|---|---|---|\n" + "\n".join(out)


def svg(rows):
    series = [("ssocket", "ssocket (Rhai plugs)", "#d9480f"), ("rust", "plain Rust (tokio-tungstenite)", "#1864ab"),
              ("node-ws", "Node + ws", "#2b8a3e"), ("bun", "Bun", "#862e9c")]
    data = [(name, color, sweep(rows, key)) for key, name, color in series]
    data = [d for d in data if d[2]]
    W, H = 960, 430
    pw, ph = 360, 270
    panels = [(80, 70, "Echo throughput (replies/s)", 1, lambda v: f"{v / 1000:g}k" if v else "0"),
              (560, 70, "Echo p99 latency (ms, log scale)", 2, lambda v: f"{v:g}")]
    series_rank = {name: i for i, (name, _, _) in enumerate(data)}
    xs_all = sorted({p[0] for _, _, pts in data for p in pts}) or [10, 100, 1000, 5000]
    lx0, lx1 = math.log10(min(xs_all)), math.log10(max(xs_all))
    if lx1 == lx0:
        lx1 = lx0 + 1
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="Helvetica, Arial, sans-serif" font-size="13">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="26" text-anchor="middle" font-size="17" font-weight="bold">'
         'Echo vs connection count (4 requests in flight each, 100 B payload; server on 1 core)</text>']
    for px, py, title, idx, ylab in panels:
        vals = []
        for _, _, pts in data:
            for p in pts:
                v = p[idx]
                if v is not None:
                    vals.append(v / 1000 if idx == 2 else v)
        top = max(vals) if vals else 1
        step = 10 ** (math.floor(math.log10(top)) - 1) if top > 0 else 1
        for m in (1, 2, 2.5, 5, 10, 20, 25, 50, 100):
            if top / (step * m) <= 6:
                step *= m
                break
        ymax = step * math.ceil(top / step * 1.05) if top > 0 else 1
        logy = idx == 2  # latency spans 0.1 ms to seconds: log scale
        if logy:
            pos = [v for v in vals if v > 0] or [1]
            lo = 10 ** math.floor(math.log10(min(pos)))
            hi = 10 ** math.ceil(math.log10(max(pos)))
            if hi <= lo:
                hi = lo * 10

        def ypos(v):
            if logy:
                v = max(v, lo)
                return py + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph
            return py + ph - v / ymax * ph
        o.append(f'<text x="{px + pw / 2}" y="{py - 14}" text-anchor="middle" font-size="15" font-weight="bold">{title}</text>')
        o.append(f'<rect x="{px}" y="{py}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
        ticks = []
        if logy:
            t = lo
            while t <= hi * 1.0001:
                ticks.append(t)
                t *= 10
        else:
            t = 0.0
            while t <= ymax + 1e-9:
                ticks.append(t)
                t += step
        for t in ticks:
            y = ypos(t)
            o.append(f'<line x1="{px}" y1="{y:.1f}" x2="{px + pw}" y2="{y:.1f}" stroke="#ddd"/>')
            o.append(f'<text x="{px - 6}" y="{y + 4:.1f}" text-anchor="end">{ylab(t)}</text>')
        for c in xs_all:
            x = px + (math.log10(c) - lx0) / (lx1 - lx0) * pw
            o.append(f'<line x1="{x:.1f}" y1="{py}" x2="{x:.1f}" y2="{py + ph}" stroke="#eee"/>')
            o.append(f'<text x="{x:.1f}" y="{py + ph + 18}" text-anchor="middle">{c:,}</text>')
        o.append(f'<text x="{px + pw / 2}" y="{py + ph + 40}" text-anchor="middle">connections (log scale)</text>')
        for name, color, pts in data:
            coords = []
            for p in pts:
                v = p[idx]
                if v is None:
                    continue
                v = v / 1000 if idx == 2 else v
                x = px + (math.log10(p[0]) - lx0) / (lx1 - lx0) * pw
                coords.append((x, ypos(v), v))
            if coords:
                o.append(f'<polyline fill="none" stroke="{color}" stroke-width="2.5" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in coords) + '"/>')
                for k, (x, y, v) in enumerate(coords):
                    label = f"{v / 1000:.0f}k" if idx == 1 else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}")
                    o.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
                    # Labels beside the point, on the line's own side: left of the last point.
                    anchor, dx = ("end", -7) if k == len(coords) - 1 else ("start", 7)
                    if series_rank[name] > 1:
                        continue  # four lines: numbers on the first two only (the table has them all)
                    dy = -8 if series_rank[name] == 0 else 16
                    o.append(f'<text x="{x + dx:.1f}" y="{y + dy:.1f}" text-anchor="{anchor}" fill="{color}" '
                             f'font-size="11">{label}</text>')
    ly = H - 22
    lx = 60
    for name, color, _ in data:
        o.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 28}" y2="{ly}" stroke="{color}" stroke-width="3"/>')
        o.append(f'<text x="{lx + 34}" y="{ly + 4}">{name}</text>')
        lx += 230
    if not data:
        o.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no sweep data</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
            ram = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    bun = os.environ.get("BENCH_BUN", "")
    return [
        f"- {os.cpu_count()} cores (`nproc` = {sh(['nproc'])}), CPU model `{model}` (as /proc/cpuinfo names it), {ram} RAM",
        f"- Linux {platform.release()}",
        f"- {sh(['rustc', '--version'])}, release profile; Node {sh(['node', '--version'])} with ws "
        f"{os.environ.get('BENCH_WS_VERSION', '?')}; Bun {sh([bun, '--version']) if bun else '?'}",
        f"- ssocket built from commit {os.environ.get('BENCH_GIT', '?')}",
        "- server pinned to CPU 0 (`taskset -c 0`), `ssocket-bench` to CPU 1 (`taskset -c 1`), over loopback",
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--benchmarks", required=True)
    ap.add_argument("--svg", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--command", default="bench/run.sh")
    a = ap.parse_args()
    rows = load(a.results)
    with open(a.svg, "w") as f:
        f.write(svg(rows))
    failed = sorted({f"{r.get('server')} {r.get('label')}" for r in rows if "error" in r})
    main_table = table(rows)
    with open(a.table, "w") as f:
        f.write(main_table + "\n\n" + sweep_table(rows) + "\n\n" + targets(rows) + "\n")
    svg_rel = os.path.relpath(a.svg, os.path.dirname(os.path.abspath(a.benchmarks)))
    section = [
        START,
        "## Comparison with peer servers (issues 6 and 16)",
        "",
        "Generated by `bench/run.sh` from `bench-out/results.jsonl`; edit the script,",
        "not this section. Peers answer the same protocol as their users would write",
        "them: `bench/peers/rust` (tokio + tokio-tungstenite, 4 KiB read buffer; the",
        "ceiling), `bench/peers/node-ws` (Node + `ws`), `bench/peers/bun` (Bun.serve).",
        "Each parses the JSON payload and serialises it again, as ssocket does, and",
        "encodes a broadcast once. ssocket runs the repo's `plugs/` with",
        "`--limits.messagesPerSecond 0 --maxConnections 0 --logLevel 0`. Every",
        "scenario gets a freshly started server; CPU is the server process's",
        "user + system time over the measured interval.",
        "",
        "Read with care: the generator has one core too, so where a server is",
        "faster than the generator (the plain-Rust and Bun echo numbers) the server",
        "shows less than full CPU and the per-core-second figure is the fairer",
        "one; fan-out latency is stamped when the generator's receiver task reads",
        "the message, so it includes the generator's own queueing. Before each",
        "scenario the script waits (up to 60 s) for the machine to be idle.",
        "",
        f"Date: {datetime.date.today().isoformat()}",
        "",
        "Machine:",
        "",
        *machine(),
        "",
        "Command:",
        "",
        "```sh",
        a.command,
        "```",
        "",
        "### Results",
        "",
        main_table,
        "",
        "### Echo vs connection count",
        "",
        f"![echo throughput and p99 vs connections]({svg_rel})",
        "",
        sweep_table(rows),
        "",
        "### The machine's floor for the broadcast",
        "",
        "`ssocket-bench floor`: the broadcast scenario's fan-out (1,000 sockets,",
        "200 msgs/s, 117-byte messages, as they cross the wire) done as plain",
        "blocking TCP writes from one thread pinned to CPU 0, with no server,",
        "WebSocket or scheduler involved. No server on this machine can send the",
        "same messages one write each for less CPU; only batching several",
        "messages per write (delaying them) could. Its latency is measured the",
        "same way, generator-side queueing included, and varies as much from run",
        "to run as the servers' does: read it loosely.",
        "",
        floor_table(rows),
        "",
        "### Targets",
        "",
        targets(rows),
        "",
        targets16(rows),
        "",
    ]
    if failed:
        section += ["Runs that failed or did not run: " + ", ".join(failed) + " (see bench-out/run.log).", ""]
    section.append(END)
    text = "\n".join(section)
    with open(a.benchmarks) as f:
        doc = f.read()
    if START in doc and END in doc:
        doc = doc[:doc.index(START)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    with open(a.benchmarks, "w") as f:
        f.write(doc)


if __name__ == "__main__":
    main()
