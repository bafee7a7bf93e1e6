"""Turns the loadgen's JSON lines in a bench-results directory into the tables bench.sh prints.
Usage: table.py RESULTS_DIR COLUMN... (files are COLUMN-w1.json, -w2, -w3a, -w3b), or
table.py --history RESULTS_DIR (sidecar-w1.json beside sidecar-history-w1f, -w1v and -storm), or
table.py --compression RESULTS_DIR (sidecar-w2c200p, -w2c200d, -w2c2kp, -w2c2kd, -w1c2kd and the
idle runs sidecar-w3ad, -w3bd), or table.py --cluster RESULTS_DIR (two sidecars at W1 on one Redis,
sidecar-w1two, and on a 3-master cluster, sidecar-cluster-w1two; sidecar-w1 beside them if run)."""
import json
import os
import sys


def load(directory, column, workload):
    try:
        with open(os.path.join(directory, f"{column}-{workload}.json")) as f:
            return json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}


def phase(run, name):
    for p in run.get("phases", []):
        if p["name"] == name:
            return p
    return None


def why_failed(p):
    """What stopped the search at this step, so a reader knows who was the limit."""
    reasons = []
    if p["expected"] and p["lost"] / p["expected"] >= 0.001:
        reasons.append(f"loss {100.0 * p['lost'] / p['expected']:.2g}%")
    if p["p99_ms"] >= 50:
        reasons.append(f"p99 {p['p99_ms']:.0f}ms")
    if p["publisher_behind"]:
        reasons.append("publisher behind")
    if p.get("loadgen_busy_s", 0) >= 0.9 * p["publish_seconds"]:
        reasons.append("loadgen saturated")
    return ", ".join(reasons) or "fail"


def max_rate(run):
    if not run.get("phases"):
        return "n/a"
    steps = [p for p in run["phases"] if p["name"].startswith("step")]
    best = run.get("max_passing_rate", 0)
    text = f"{best / 1000:,.0f}k/s"
    failed = [p for p in steps if not p["pass"]]
    if failed:
        text += f" (next {failed[0]['target_per_s'] / 1000:,.0f}k: {why_failed(failed[0])})"
    else:
        text += " (top of ladder)"
    return text


def latency(run, name):
    p = phase(run, name)
    if not p:
        return "n/a"
    lost = f", lost {p['lost']}" if p["lost"] else ""
    return f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f} / {p['max_ms']:.1f}{lost}"


def cpu_per_million(run, name):
    p = phase(run, name)
    if not p or not p["unique"] or p["server_cpu_s"] < 0:
        return "n/a"
    return f"{p['server_cpu_s'] / p['unique'] * 1e6:.2f} s"


def churn(run):
    p = phase(run, "churn")
    if not p:
        return "n/a"
    return (f"{p['churn_per_s']:,.0f}/s, steady lost {p['lost']}, "
            f"p99 {p['p99_ms']:.2f}ms" + (f", {p['churn_failed']} failed" if p["churn_failed"] else ""))


def idle(run):
    if "rss_per_conn_kb" not in run or run.get("opened", 0) == 0:
        return "n/a"
    short = "" if run["opened"] == run["connections"] else f" ({run['opened']} opened)"
    anon = run.get("anon_per_conn_kb", -1)
    anon = f"{anon:.2f} KiB anon / " if anon >= 0 else ""
    return f"{anon}{run['rss_per_conn_kb']:.2f} KiB VmRSS{short}"


def idle_cpu(run):
    if run.get("idle_seconds", 0) <= 0 or run.get("idle_server_cpu_s", -1) < 0:
        return "n/a"
    closed = f", {run['idle_server_closed']} closed" if run.get("idle_server_closed") else ""
    return f"{run['idle_server_cpu_s']:.2f} s{closed}"


def connect(run):
    if "handshakes_per_s" not in run:
        return "n/a"
    return f"{run['handshakes_per_s']:,.0f}/s ({run['connect_seconds']:.2f} s)"


def ratio(num, den):
    return f"{num / den:.2f}x" if num > 0 and den > 0 else "n/a"


def cpu_value(run):
    p = phase(run, "fixed")
    if not p or not p["unique"] or p["server_cpu_s"] < 0:
        return -1
    return p["server_cpu_s"] / p["unique"] * 1e6


def storm_rows(run):
    s = run.get("storm")
    if not s:
        return [("resume storm", "n/a (see sidecar-history-storm.txt)")]
    mib = lambda kb: f"{kb / 1024:.1f} MiB"
    verdict = "all exact" if s["ok"] else "FAILED"
    return [
        ("clients, rooms, messages behind, handshakes in flight",
         f"{s['clients']:,}, {s['rooms']}, {s['behind']}, {s['max_in_flight']}"),
        ("time until all live (recovered welcome + every missed message)",
         f"{s['all_live_s']:.2f} s (per client p50 {s['live_p50_ms']:.0f} ms, "
         f"p99 {s['live_p99_ms']:.0f} ms)"),
        ("checked: recovered / exactly once, in order / resyncs",
         f"{s['recovered']:,} / {s['exact']:,} / {s['resyncs']} ({verdict})"),
        ("Redis FCALLs during the storm (sidecar_read)",
         f"{s['fcalls']} for {s['rooms']} rooms; sidecar_history_reads_total +"
         f"{s['history_reads']:.0f}, _coalesced_total +{s['history_reads_coalesced']:.0f}"),
        ("sidecar RSS before / peak during (VmRSS polled every 5 ms) / VmHWM",
         f"{mib(s['rss_before_kb'])} / {mib(s['rss_peak_kb'])} / {mib(s['hwm_kb'])}"),
    ]


def print_table(header, cells):
    widths = [max(len(str(r[i])) for r in cells + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print(line(r))


def history(directory):
    plain = load(directory, "sidecar", "w1")
    fcall = load(directory, "sidecar-history", "w1f")
    v1 = load(directory, "sidecar-history", "w1v")
    columns = [("PUBLISH, verbatim clients", plain), ("FCALL, verbatim clients", fcall),
               ("FCALL, sidecar.v1 clients", v1)]
    n1 = plain.get("connections", "?")
    r1 = plain.get("rooms", "?")
    base = cpu_value(plain)
    rows = [
        (f"W1 rooms ({n1} conns, {r1} rooms): max rate, <0.1% loss & p99<50ms", max_rate),
        ("W1 at fixed rate: p50 / p99 / max ms", lambda r: latency(r, "fixed")),
        ("W1 at fixed rate: server CPU per 1M deliveries", lambda r: cpu_per_million(r, "fixed")),
        ("  ... relative to PUBLISH, same sitting", lambda r: ratio(cpu_value(r), base)),
    ]
    print("history rows: sidecar with history: for org:{org}, published with FCALL sidecar_publish")
    print_table(["metric"] + [c for c, _ in columns],
                [[label] + [fn(run) for _, run in columns] for label, fn in rows])
    print()
    storm = load(directory, "sidecar-history", "storm")
    print_table(["resume storm (sidecar.v1, FCALL)", "sidecar"],
                [list(r) for r in storm_rows(storm)])


def fixed_value(run, fn):
    p = phase(run, "fixed")
    return fn(p) if p and p.get("unique") else -1


def per_delivery(key):
    return lambda p: p[key] / p["unique"] if p.get(key, -1) >= 0 else -1


def cpu_s_per_million(p):
    return p["server_cpu_s"] / p["unique"] * 1e6 if p["server_cpu_s"] >= 0 else -1


def per_publication(key, scale=1.0):
    def fn(p):
        pubs = p.get("srv_publications", -1)
        v = p.get(key, -1)
        return v * scale / pubs if pubs > 0 and v >= 0 else -1
    return fn


def deflate_share(p):
    """The part of the server's CPU over the phase that went into deflate."""
    d, cpu = p.get("deflate_seconds", -1), p.get("server_cpu_s", -1)
    return 100.0 * d / cpu if d >= 0 and cpu > 0 else -1


def fmt(v, spec, unit=""):
    return "n/a" if v < 0 else f"{v:{spec}}{unit}"


def compression(directory):
    runs = {k: load(directory, "sidecar", k) for k in
            ("w2c200p", "w2c200d", "w2c2kp", "w2c2kd", "w1c2kd", "w3ad", "w3bd")}
    n2 = runs["w2c2kp"].get("connections", "?")
    fixed = phase(runs["w2c2kp"], "fixed")
    rate = f"{fixed['target_per_s']:,.0f} deliveries/s" if fixed else "the fixed rate"
    print(f"compression rows: W2 ({n2} clients in one room) at {rate}, realistic JSON events "
          "(--payload json), clients that offer permessage-deflate or not; same sidecar config")
    pairs = [("~200 B JSON", runs["w2c200p"], runs["w2c200d"]),
             ("~2 KiB JSON", runs["w2c2kp"], runs["w2c2kd"])]
    header = ["metric"]
    for name, _, _ in pairs:
        header += [f"{name}, plain", f"{name}, deflate", "deflate / plain"]

    def row(label, fn, spec, unit="", with_ratio=True):
        cells = [label]
        for _, plain, defl in pairs:
            a, b = fixed_value(plain, fn), fixed_value(defl, fn)
            cells += [fmt(a, spec, unit), fmt(b, spec, unit),
                      ratio(b, a) if with_ratio else ""]
        return cells

    mb_per_million = lambda p: p["wire_bytes"] / p["unique"] if p.get("wire_bytes") else -1
    rows = [
        row("payload bytes per delivery (as published)", per_delivery("payload_bytes"), ".0f",
            " B", False),
        row("bytes on the wire per 1M deliveries (read by the clients)", mb_per_million, ".1f",
            " MB"),
        row("server CPU per 1M deliveries", cpu_s_per_million, ".2f", " s"),
        row("p99 from publish to read", lambda p: p["p99_ms"], ".1f", " ms", False),
        row("deflates per publication (sidecar_deflate_frames_built_total)",
            per_publication("deflate_frames_built"), ".3f", "", False),
        row("deflate time per publication (sidecar_deflate_seconds_total)",
            per_publication("deflate_seconds", 1e6), ".1f", " us", False),
        row("lost / inflate errors", lambda p: p["lost"] + p.get("inflate_errors", 0), ".0f", "",
            False),
    ]
    print_table(header, rows)
    print()
    w1, w2 = runs["w1c2kd"], runs["w2c2kd"]
    r1 = w1.get("connections", 0) // max(w1.get("rooms", 1), 1)
    r2 = w2.get("connections", 0) // max(w2.get("rooms", 1), 1)
    once = [("~2 KiB JSON, deflate", f"{r1:,} recipients per publication (W1)",
             f"{r2:,} recipients per publication (W2)")]
    rows = [
        ("deflates per publication", per_publication("deflate_frames_built"), ".3f", ""),
        ("compressed frames queued per publication", per_publication("deflate_frames_queued"),
         ",.0f", ""),
        ("deflate time per publication", per_publication("deflate_seconds", 1e6), ".1f", " us"),
        ("deflate time per 1M deliveries", lambda p: p.get("deflate_seconds", -1) / p["unique"]
         * 1e6 if p.get("deflate_seconds", -1) >= 0 else -1, ".3f", " s"),
        ("deflate share of the server's CPU", deflate_share, ".1f", " %"),
        ("server CPU per 1M deliveries", cpu_s_per_million, ".2f", " s"),
    ]
    print_table(list(once[0]),
                [[label, fmt(fixed_value(w1, fn), spec, unit), fmt(fixed_value(w2, fn), spec, unit)]
                 for label, fn, spec, unit in rows])
    print()
    print_table(["idle, clients offering permessage-deflate", "sidecar"],
                [[f"W3 idle RSS per connection at {runs['w3ad'].get('connections', '?')}, "
                  f"{runs['w3ad'].get('deflate_agreed', 0)} agreed deflate", idle(runs["w3ad"])],
                 [f"W3 idle RSS per connection at {runs['w3bd'].get('connections', '?')}, "
                  f"{runs['w3bd'].get('deflate_agreed', 0)} agreed deflate", idle(runs["w3bd"])]])


def cluster(directory):
    single = load(directory, "sidecar", "w1two")
    shard = load(directory, "sidecar-cluster", "w1two")
    columns = [("2 sidecars, one Redis", single),
               ("2 sidecars, 3-master cluster, sharded", shard)]
    one = load(directory, "sidecar", "w1")
    if one.get("phases"):
        columns.insert(0, ("1 sidecar, one Redis", one))
    fixed = phase(single, "fixed") or phase(shard, "fixed")
    rate = f"{fixed['target_per_s']:,.0f} deliveries/s" if fixed else "the fixed rate"
    n, r = single.get("connections", "?"), single.get("rooms", "?")
    print(f"cluster rows: W1 ({n} clients in {r} rooms, each room's clients on both sidecars), "
          f"fixed rate {rate}; CPU summed over the sidecars, Redis CPU over the Redis processes")

    delivered = lambda p: p["achieved_per_s"]
    redis_us = lambda p: (p["redis_cpu_s"] / p["published"] * 1e6
                          if p.get("redis_cpu_s", -1) >= 0 and p["published"] else -1)
    ladder = lambda run: run.get("max_passing_rate", 0) if run.get("phases") else -1
    rows = [
        ("W1 at fixed rate: delivered/s (lost)",
         lambda run: fmt(fixed_value(run, delivered), ",.0f", "/s") +
         (f" ({phase(run, 'fixed')['lost']})" if phase(run, "fixed") else ""),
         lambda run: fixed_value(run, delivered)),
        ("W1 max rate, <0.1% loss & p99<50ms", max_rate, ladder),
        ("W1 at fixed rate: p50 / p99 / max ms", lambda run: latency(run, "fixed"),
         lambda run: fixed_value(run, lambda p: p["p99_ms"])),
        ("W1 at fixed rate: sidecar CPU per 1M deliveries",
         lambda run: cpu_per_million(run, "fixed"), cpu_value),
        ("W1 at fixed rate: Redis CPU per publication",
         lambda run: fmt(fixed_value(run, redis_us), ".1f", " us"),
         lambda run: fixed_value(run, redis_us)),
        ("W4 churn during W1 fixed rate", churn, None),
    ]
    header = ["metric"] + [c for c, _ in columns] + ["cluster / one Redis (2 sidecars)"]
    cells = []
    for label, text, value in rows:
        cells.append([label] + [text(run) for _, run in columns] +
                     [ratio(value(shard), value(single)) if value else ""])
    print_table(header, cells)


def main():
    if sys.argv[1] == "--cluster":
        cluster(sys.argv[2])
        return
    if sys.argv[1] == "--history":
        history(sys.argv[2])
        return
    if sys.argv[1] == "--compression":
        compression(sys.argv[2])
        return
    directory, columns = sys.argv[1], sys.argv[2:]
    runs = {c: {w: load(directory, c, w) for w in ("w1", "w2", "w3a", "w3b")} for c in columns}
    first = next(iter(runs.values()))
    n1 = first["w1"].get("connections", "?")
    r1 = first["w1"].get("rooms", "?")
    n3 = first["w3b"].get("connections", "?")
    rows = [
        (f"W1 rooms ({n1} conns, {r1} rooms): max rate, <0.1% loss & p99<50ms",
         lambda c: max_rate(runs[c]["w1"])),
        ("W1 at fixed rate: p50 / p99 / max ms", lambda c: latency(runs[c]["w1"], "fixed")),
        ("W1 at fixed rate: server CPU per 1M deliveries",
         lambda c: cpu_per_million(runs[c]["w1"], "fixed")),
        ("W2 broadcast (1 room): max rate, <0.1% loss & p99<BENCH_W2_P99_MS (500)",
         lambda c: max_rate(runs[c]["w2"])),
        ("W2 at fixed rate: p50 / p99 / max ms", lambda c: latency(runs[c]["w2"], "fixed")),
        ("W2 at fixed rate: server CPU per 1M deliveries",
         lambda c: cpu_per_million(runs[c]["w2"], "fixed")),
        (f"W3 idle RSS per connection at {n1}", lambda c: idle(runs[c]["w3a"])),
        (f"W3 idle RSS per connection at {n3}", lambda c: idle(runs[c]["w3b"])),
        (f"W3 server CPU over {first['w3b'].get('idle_seconds', 0):.0f} s, {n3} idle connections",
         lambda c: idle_cpu(runs[c]["w3b"])),
        (f"W4 connect {n1}: handshakes/s", lambda c: connect(runs[c]["w1"])),
        (f"W4 connect {n3}: handshakes/s", lambda c: connect(runs[c]["w3b"])),
        ("W4 churn during W1 fixed rate", lambda c: churn(runs[c]["w1"])),
    ]
    fixed = phase(first["w1"], "fixed")
    if fixed:
        print(f"fixed rate: {fixed['target_per_s']:,.0f} deliveries/s")
    print_table(["metric"] + columns, [[label] + [fn(c) for c in columns] for label, fn in rows])


if __name__ == "__main__":
    main()
