#!/usr/bin/env python3
"""field_summary.py — bench/field.sh's bookkeeping (the field board's metrics).

    field_summary.py record RESULTS.jsonl KEY=VALUE... [file=PATH kind=oha|probe|mem]
        parse one measurement (oha JSON, bench/field-probe JSON, or a memory run: oha JSON
        plus samples=PATH of "seconds rss_kib" lines) and append one JSON line
    field_summary.py table RESULTS.jsonl ENV.txt [--bounds "1 5 10 20 50 100"]
        print the markdown: the summary (median of runs, min … max), then every run and every
        sweep step in full

Definitions (per run; the summary takes the median over runs of each per-run value):
  added X         gateway's X minus direct's X, same run
  frontier at B   the most req/s (200s per second) of a sweep step with p99 <= B ms and no error
  streams         the largest step of concurrent streams that passed (no failed, lost or stalled
                  stream); 0 when the first step failed
  steady RSS      the last 1 s sample under the fixed load; growth: least-squares slope of the
                  samples over the load's second half
Sluice's own figures are rounded against it: latency and memory up, throughput down, and the
ratio to Portkey in Portkey's favour.
"""

import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize import num, parse_oha  # noqa: E402  (bench/run.sh's oha parser)

TARGETS = ("direct", "sluice", "portkey")


# ---------------------------------------------------------------- record

def parse_probe(d, rec):
    rec.update(
        streams=d["streams"], ok=d["ok"], failed=d["failed"], lost=d["lost"],
        stalled=d["stalled"], errors=d.get("errors", []), peak_in_flight=d["peak_in_flight"],
        wall_s=d["wall_s"], max_interval_ms=d["max_interval_ms"],
        content_min=d["content_frames"]["min"], expect_content=d.get("expect_content"),
        ttfc_p50_ms=d["ttfc_ms"].get("p50"), ttfc_p99_ms=d["ttfc_ms"].get("p99"),
        ttfc_n=d["ttfc_ms"]["n"],
        gap_p50_ms=d["gap_ms"].get("p50"), gap_p99_ms=d["gap_ms"].get("p99"),
        gap_max_ms=d["gap_ms"].get("max"), gap_n=d["gap_ms"]["n"],
        first_event_p99_ms=d["first_event_ms"].get("p99"),
        first_event_max_ms=d["first_event_ms"].get("max"),
    )
    need = rec.get("conc") or 1
    rec["pass"] = (d["streams"] > 0 and d["failed"] == 0 and d["lost"] == 0
                   and d["stalled"] == 0 and d["ok"] >= need)


def slope(points):
    """Least-squares slope of (x, y) points; None with fewer than 3."""
    if len(points) < 3:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return None if den == 0 else sum((x - mx) * (y - my) for x, y in points) / den


def parse_mem(d, rec):
    parse_oha(d, rec)
    samples = []
    try:
        for line in open(rec["samples"]):
            parts = line.split()
            if len(parts) == 2 and int(parts[1]) > 0:
                samples.append((float(parts[0]), int(parts[1])))
    except OSError:
        pass
    rec["rss_samples"] = samples
    if samples:
        rec["steady_kb"] = samples[-1][1]
        half = samples[-1][0] / 2
        rec["growth_kb_s"] = slope([s for s in samples if s[0] >= half])


def record(path, kvs):
    rec = {}
    for kv in kvs:
        k, _, v = kv.partition("=")
        rec[k] = num(v)
    f, kind = rec.pop("file", None), rec.pop("kind", "none")
    if f is not None and kind != "none":
        try:
            d = json.load(open(f))
        except Exception as e:  # noqa: BLE001
            try:
                tail = open(f + ".err").read()[-300:]
            except OSError:
                tail = ""
            rec["error"] = f"no result: {e}: {tail}"
            if kind == "probe":
                rec["pass"] = False
        else:
            {"oha": parse_oha, "probe": parse_probe, "mem": parse_mem}[kind](d, rec)
    if rec.get("cpu_ticks") is not None and rec.get("clk") and rec.get("ok"):
        rec["cpu_us_per_req"] = rec["cpu_ticks"] * 1e6 / rec["clk"] / rec["ok"]
    with open(path, "a") as out:
        out.write(json.dumps(rec) + "\n")


# ---------------------------------------------------------------- formatting

def _bad(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


def up(x, nd=0):
    if _bad(x):
        return "—"
    f = 10 ** nd
    return f"{math.ceil(x * f - 1e-9) / f:,.{nd}f}"


def down(x, nd=0):
    if _bad(x):
        return "—"
    f = 10 ** nd
    return f"{math.floor(x * f + 1e-9) / f:,.{nd}f}"


def near(x, nd=0):
    return "—" if _bad(x) else f"{x:,.{nd}f}"


def signed(fmt):
    def g(x):
        s = fmt(x)
        return s if s == "—" or s.startswith("-") else "+" + s
    return g


def med(vals):
    vals = [v for v in vals if not _bad(v)]
    return statistics.median(vals) if vals else None


def med_spread(vals, fmt):
    vals = [v for v in vals if not _bad(v)]
    if not vals:
        return "—"
    if len(vals) == 1:
        return fmt(vals[0])
    return f"{fmt(statistics.median(vals))} ({fmt(min(vals))} … {fmt(max(vals))})"


def ratio(s, p, higher_better):
    """Sluice against Portkey, rounded in Portkey's favour: 'N×' when Sluice's figure is the
    larger, '1/N' when it is the smaller."""
    if _bad(s) or _bad(p) or s <= 0 or p <= 0:
        return "—"
    x = s / p
    if higher_better:
        return f"{math.floor(x * 10) / 10:g}×" if x >= 1 else f"1/{math.ceil(10 / x) / 10:g}"
    return f"1/{math.floor(10 / x) / 10:g}" if x <= 1 else f"{math.ceil(x * 10) / 10:g}×"


def load_note(r):
    if not r:
        return "—"
    f = r.get("foreign_cores")
    return f"{r.get('load1', '?')} · {'?' if f is None else f'{f:.2f}'}"


# ---------------------------------------------------------------- table

def table(path, env_path, bounds):
    recs = [json.loads(line) for line in open(path) if line.strip()]
    targets = [t for t in TARGETS if any(r.get("target") == t for r in recs)]
    runs = sorted({r["run"] for r in recs if isinstance(r.get("run"), int)})
    one = {}
    for r in recs:
        if r.get("fig") in ("c1", "ttfc", "gap", "memory"):
            one[(r["fig"], r["target"], r["run"])] = r

    def val(fig, key, scale=1.0):
        def f(t, run):
            r = one.get((fig, t, run))
            v = None if r is None else r.get(key)
            return None if v is None else v * scale
        return f

    def frontier(bound):
        def f(t, run):
            steps = [r for r in recs if r.get("fig") == "sweep" and r["target"] == t
                     and r["run"] == run]
            if not steps:
                return None
            ok = [r.get("ok_rps") or 0 for r in steps
                  if r.get("errors") == 0 and r.get("p99_ms") is not None
                  and r["p99_ms"] <= bound and not r.get("error")]
            return max(ok) if ok else 0
        return f

    def streams(t, run):
        steps = [r for r in recs if r.get("fig") == "streams" and r["target"] == t
                 and r["run"] == run and not r.get("skipped")]
        if not steps:
            return None
        best = 0
        for r in sorted(steps, key=lambda r: r["conc"]):
            if not r.get("pass"):
                break
            best = r["conc"]
        return best

    def top_step(t, run):
        steps = [r["conc"] for r in recs if r.get("fig") == "streams" and r["target"] == t
                 and r["run"] == run]
        return max(steps) if steps else None

    mib = 1 / 1024
    # (label, per-run getter, gateway formatter, lower is better, has an "added" figure)
    rows = [
        ("latency at c=1: p50 (µs)", val("c1", "p50_ms", 1000), up, True, True),
        ("latency at c=1: p99 (µs)", val("c1", "p99_ms", 1000), up, True, True),
    ]
    for b in bounds:
        rows.append((f"throughput frontier: req/s while p99 ≤ {b:g} ms, no error",
                     frontier(b), down, False, False))
    rows += [
        ("streaming: time to first content frame p50 (ms)", val("ttfc", "ttfc_p50_ms"),
         lambda x: up(x, 3), True, True),
        ("streaming: time to first content frame p99 (ms)", val("ttfc", "ttfc_p99_ms"),
         lambda x: up(x, 3), True, True),
        ("streaming: inter-frame gap p50, 20 ms pacing (ms)", val("gap", "gap_p50_ms"),
         lambda x: up(x, 3), True, True),
        ("streaming: inter-frame gap p99, 20 ms pacing (ms)", val("gap", "gap_p99_ms"),
         lambda x: up(x, 3), True, True),
        ("streaming: concurrent streams sustained, no lost frame, no stall", streams,
         down, False, False),
        ("memory: idle RSS before any request (MiB)", val("memory", "idle_kb", mib),
         lambda x: up(x, 1), True, False),
        ("memory: steady RSS under the fixed load (MiB)", val("memory", "steady_kb", mib),
         lambda x: up(x, 1), True, False),
        ("memory: RSS growth under the load (KiB/s)", val("memory", "growth_kb_s"),
         lambda x: up(x, 1), True, False),
        ("memory: RSS after the load stops (MiB)", val("memory", "after_kb", mib),
         lambda x: up(x, 1), True, False),
    ]

    out = []
    p = out.append
    env = {}
    try:
        for line in open(env_path):
            k, _, v = line.rstrip("\n").partition(": ")
            env[k] = v
    except OSError:
        pass
    p(f"## Field-board metrics ({env.get('date', '?')}, commit {env.get('commit', '?')})\n")
    p(f"Command: `{env.get('command', '?')}`  ")
    for k in ("pinning", "Sluice", "portkey-gateway", "paced mock", "oha"):
        if k in env:
            p(f"{k}: {env[k]}  ")
    p(f"Runs: {len(runs)} (each cell: median of runs, then min … max).\n")

    gw = [t for t in targets if t != "direct"]
    head = ["figure"] + targets + [f"added: {t}" for t in gw]
    if "sluice" in gw and "portkey" in gw:
        head.append("Sluice vs Portkey")
    p("| " + " | ".join(head) + " |")
    p("|" + "---|" * len(head))
    for label, get, fmt, lower, added in rows:
        per = {t: [get(t, r) for r in runs] for t in targets}
        if all(_bad(v) for vs in per.values() for v in vs):
            continue
        cells = [label]
        for t in targets:
            f = fmt if t != "direct" else (lambda x, fmt=fmt: fmt(x))
            cells.append(med_spread(per[t], f))
        adds = {}
        for t in gw:
            if added:
                a = [None if _bad(g) or _bad(d) else g - d
                     for g, d in zip(per[t], per["direct"])]
                adds[t] = med(a)
                cells.append(med_spread(a, signed(fmt)))
            else:
                rel = [None if _bad(g) or _bad(d) or d == 0 else g / d
                       for g, d in zip(per[t], per["direct"])]
                cells.append(med_spread(rel, lambda x: f"{x:.2f}") + "× direct"
                             if lower is False and any(not _bad(x) for x in rel) else "—")
        if "sluice" in gw and "portkey" in gw:
            if "growth" in label:  # a rate that may be negative: no ratio
                cells.append("—")
            elif added:
                cells.append(ratio(adds.get("sluice"), adds.get("portkey"), higher_better=False)
                             + " (added)")
            else:
                cells.append(ratio(med(per["sluice"]), med(per["portkey"]),
                                   higher_better=not lower))
        p("| " + " | ".join(cells) + " |")
    notes = []
    for t in targets:
        for r in runs:
            s, top = streams(t, r), top_step(t, r)
            if s is not None and top is not None and s == top:
                notes.append(f"{t} run {r}")
    if notes:
        p("\nThe largest step of concurrent streams passed for " + ", ".join(notes)
          + ": the figure is a lower bound (direct's figure is the harness's own limit).")
    low = []
    for t in targets:
        for r in runs:
            steps = sorted(x["conc"] for x in recs if x.get("fig") == "streams"
                           and x["target"] == t and x["run"] == r and not x.get("skipped"))
            if steps and streams(t, r) == 0:
                low.append(f"{t} run {r} (< {steps[0]})")
    if low:
        p("\nThe first step of concurrent streams failed for " + ", ".join(low)
          + ": the figure 0 means fewer than that step.")
    p("")

    # c=1 in full
    c1 = [r for r in recs if r.get("fig") == "c1"]
    if c1:
        p("### Latency at concurrency 1 (oha closed loop, one request at a time), every run\n")
        p("| target | run | p50 µs | p99 µs | added p50 / p99 µs | ok / errors | CPU µs/req "
          "| load1 · foreign cores |")
        p("|---|---|---|---|---|---|---|---|")
        for run in runs:
            d = one.get(("c1", "direct", run))
            for t in targets:
                r = one.get(("c1", t, run))
                if not r:
                    continue
                add = "—"
                if t != "direct" and d and r.get("p50_ms") is not None and d.get("p50_ms") is not None:
                    add = (f"{signed(up)((r['p50_ms'] - d['p50_ms']) * 1000)} / "
                           f"{signed(up)((r['p99_ms'] - d['p99_ms']) * 1000)}")
                p(f"| {t} | {run} | {up((r.get('p50_ms') or math.nan) * 1000)} "
                  f"| {up((r.get('p99_ms') or math.nan) * 1000)} | {add} "
                  f"| {r.get('ok', 0)} / {r.get('errors', r.get('error', '?'))} "
                  f"| {up(r.get('cpu_us_per_req'), 1)} | {load_note(r)} |")
        p("")

    sweep = [r for r in recs if r.get("fig") == "sweep"]
    if sweep:
        p("### Throughput frontier: the concurrency sweep in full (oha closed loop)\n")
        p("| target | run | c | req/s (200s) | p50 ms | p99 ms | errors | load1 · foreign cores |")
        p("|---|---|---|---|---|---|---|---|")
        for t in targets:
            for run in runs:
                for r in sorted((r for r in sweep if r["target"] == t and r["run"] == run),
                                key=lambda r: r["conc"]):
                    errs = r.get("errors", r.get("error", "?"))
                    if r.get("error_kinds"):
                        errs = f"{errs} {json.dumps(r['error_kinds'])}"
                    p(f"| {t} | {run} | {r['conc']} | {down(r.get('ok_rps'))} "
                      f"| {near(r.get('p50_ms'), 3)} | {near(r.get('p99_ms'), 3)} | {errs} "
                      f"| {load_note(r)} |")
        p("")
        p("| target | run | " + " | ".join(f"p99 ≤ {b:g} ms" for b in bounds) + " |")
        p("|---|---|" + "---|" * len(bounds))
        for t in targets:
            for run in runs:
                if not any(r["target"] == t and r["run"] == run for r in sweep):
                    continue
                p(f"| {t} | {run} | " + " | ".join(down(frontier(b)(t, run)) for b in bounds)
                  + " |")
        p("")

    if any(r.get("fig") in ("ttfc", "gap") for r in recs):
        p("### Streaming at concurrency 1 (bench/field-probe), every run\n")
        p("| target | run | time to first content frame p50 / p99 ms (fast mock) | streams ok / failed "
          "| inter-frame gap p50 / p99 / max ms (20 ms pacing) | gaps | paced streams ok / lost / stalled "
          "| load1 · foreign cores |")
        p("|---|---|---|---|---|---|---|---|")
        for run in runs:
            for t in targets:
                a, g = one.get(("ttfc", t, run)), one.get(("gap", t, run))
                if not a and not g:
                    continue
                p(f"| {t} | {run} "
                  f"| {near(a and a.get('ttfc_p50_ms'), 3)} / {near(a and a.get('ttfc_p99_ms'), 3)} "
                  f"| {a.get('ok', 0) if a else '—'} / {a.get('failed', '?') if a else '—'} "
                  f"| {near(g and g.get('gap_p50_ms'), 3)} / {near(g and g.get('gap_p99_ms'), 3)} / "
                  f"{near(g and g.get('gap_max_ms'), 3)} | {g.get('gap_n', 0) if g else '—'} "
                  f"| {g.get('ok', 0) if g else '—'} / {g.get('lost', '?') if g else '—'} / "
                  f"{g.get('stalled', '?') if g else '—'} | {load_note(a or g)} |")
        p("")

    st = [r for r in recs if r.get("fig") == "streams"]
    if st:
        p("### Concurrent paced streams: every step (a step passes with no failed, lost or stalled stream)\n")
        p("| target | run | streams held | pass | streams ok / failed / lost / stalled "
          "| longest wait for a frame ms (first one included) | first frame max ms | gap p99 ms "
          "| peak in flight | peak RSS MiB | first errors | load1 · foreign cores |")
        p("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for t in targets:
            for run in runs:
                for r in sorted((r for r in st if r["target"] == t and r["run"] == run),
                                key=lambda r: r["conc"]):
                    if r.get("skipped"):
                        p(f"| {t} | {run} | {r['conc']} | not run: {r['skipped']} "
                          "| — | — | — | — | — | — | — | — |")
                        continue
                    errs = "; ".join(r.get("errors") or []) or r.get("error", "")
                    rss = r.get("peak_rss_kb")
                    p(f"| {t} | {run} | {r['conc']} | {'yes' if r.get('pass') else 'NO'} "
                      f"| {r.get('ok', 0)} / {r.get('failed', '?')} / {r.get('lost', '?')} / "
                      f"{r.get('stalled', '?')} | {near(r.get('max_interval_ms'), 1)} "
                      f"| {near(r.get('first_event_max_ms'), 1)} | {near(r.get('gap_p99_ms'), 3)} | {r.get('peak_in_flight', '—')} "
                      f"| {up(None if rss is None else rss / 1024, 1)} | {errs[:120]} "
                      f"| {load_note(r)} |")
        p("")

    mem = [r for r in recs if r.get("fig") == "memory"]
    if mem:
        p("### Memory: a fresh process per run (VmRSS over the process tree)\n")
        p("| target | run | idle MiB | steady MiB (last sample) | growth KiB/s (second half) "
          "| after the load MiB | peak (VmHWM) MiB | load req ok / errors | load1 · foreign cores |")
        p("|---|---|---|---|---|---|---|---|---|")
        for run in runs:
            for t in targets:
                r = one.get(("memory", t, run))
                if not r:
                    continue
                m = lambda k: up(None if r.get(k) is None else r[k] / 1024, 1)  # noqa: E731
                p(f"| {t} | {run} | {m('idle_kb')} | {m('steady_kb')} | {up(r.get('growth_kb_s'), 1)} "
                  f"| {m('after_kb')} | {m('peak_kb')} | {r.get('ok', 0)} / "
                  f"{r.get('errors', r.get('error', '?'))} | {load_note(r)} |")
        p("")
    print("\n".join(out))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "record":
        record(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "table":
        bounds = [1, 5, 10, 20, 50, 100]
        if "--bounds" in sys.argv:
            bounds = [float(x) for x in sys.argv[sys.argv.index("--bounds") + 1].split()]
        table(sys.argv[2], sys.argv[3], bounds)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
