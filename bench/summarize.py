#!/usr/bin/env python3
"""summarize.py — bench/run.sh's bookkeeping.

    summarize.py record RESULTS.jsonl KEY=VALUE... [file=PATH kind=oha|sse|hold|ready|none]
        parse one load generator output and append one JSON line (numbers stay numbers)
    summarize.py table RESULTS.jsonl
        print the markdown tables (every run, the median of runs and the min–max spread)

Figures that are Sluice's own (added latency, CPU, RSS, time to ready) are rounded *up* at the
last digit shown and throughput ratios *down*, so no rounding is in Sluice's favour.
"""

import json
import math
import statistics
import sys


def num(v):
    if v in ("null", "None", ""):
        return None
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


def parse_oha(d, rec):
    s = d["summary"]
    lp = d.get("latencyPercentiles", {}) or {}
    codes = d.get("statusCodeDistribution", {}) or {}
    errs = {k: v for k, v in (d.get("errorDistribution", {}) or {}).items()
            if k != "aborted due to deadline"}
    ok = int(codes.get("200", 0))
    total = sum(int(v) for v in codes.values()) + sum(int(v) for v in errs.values())
    ms = lambda k: None if lp.get(k) is None else lp[k] * 1000
    rec.update(ok=ok, errors=total - ok, codes=codes, error_kinds=errs,
               secs=s.get("total"), rps=s.get("requestsPerSec"),
               ok_rps=(ok / s["total"]) if ok and s.get("total") else 0,
               p50_ms=ms("p50"), p90_ms=ms("p90"), p99_ms=ms("p99"), p999_ms=ms("p99.9"),
               max_ms=None if s.get("slowest") is None else s["slowest"] * 1000)


def parse_sse(d, rec):
    rec.update(ok=d["ok"], errors=d["errors"], first_error=d.get("first_error", ""),
               rps=d["rps"], ttfb_p50_ms=d["first_event_ms"]["p50"],
               ttfb_p90_ms=d["first_event_ms"]["p90"], ttfb_p99_ms=d["first_event_ms"]["p99"],
               ttfb_max_ms=d["first_event_ms"]["max"], hdr_p50_ms=d["headers_ms"]["p50"],
               total_p50_ms=d["total_ms"]["p50"])


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
        else:
            if kind == "oha":
                parse_oha(d, rec)
            elif kind == "sse":
                parse_sse(d, rec)
            else:
                rec.update(d)
    if rec.get("cpu_ticks") is not None and rec.get("clk") and rec.get("ok"):
        rec["cpu_us_per_req"] = rec["cpu_ticks"] * 1e6 / rec["clk"] / rec["ok"]
    with open(path, "a") as out:
        out.write(json.dumps(rec) + "\n")


# ---------------------------------------------------------------- tables

def up(x, nd=3):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    f = 10 ** nd
    return f"{math.ceil(x * f - 1e-9) / f:.{nd}f}"


def down(x, nd=2):
    if x is None:
        return "—"
    f = 10 ** nd
    return f"{math.floor(x * f + 1e-9) / f:.{nd}f}"


def plain(x, nd=3):
    return "—" if x is None else f"{x:.{nd}f}"


def sign_up(x, nd=3):
    if x is None:
        return "—"
    s = up(x, nd)
    return s if s.startswith("-") else "+" + s


def med_spread(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "—"
    return f"{fmt(statistics.median(vals))} ({fmt(min(vals))} … {fmt(max(vals))})"


def label_ups(ups):
    parts = ups.split("-")
    name = {"fast": "0 ms mock", "slow": "50 ms mock"}.get(parts[0], parts[0])
    c = parts[1][1:] if len(parts) > 1 else "32"
    return f"{name}, c={c}"


def mock_us(r):
    if not r or r.get("mock_ticks") is None or not r.get("ok") or not r.get("clk"):
        return None
    return r["mock_ticks"] * 1e6 / r["clk"] / r["ok"]


def load_of(r):
    return r.get("load1", "?")


def foreign_of(r):
    f = r.get("foreign_cores")
    return "?" if f is None else f"{f:.2f}"


def table(path):
    recs = [json.loads(line) for line in open(path) if line.strip()]
    by = {}
    for r in recs:
        by.setdefault((r.get("fig"), r.get("phase"), r.get("target"), r.get("run")), r)
    runs = sorted({r["run"] for r in recs if isinstance(r.get("run"), int)})
    out = []
    p = out.append

    def get(fig, phase, target, run):
        return by.get((fig, phase, target, run))

    def errs(r):
        if r is None:
            return "—"
        e = r.get("errors")
        return f"{r.get('ok', 0)}/{e if e is not None else r.get('error', '?')}"

    # Figure 1
    phases1 = sorted({r["phase"] for r in recs if r.get("fig") == 1},
                     key=lambda s: (-int(s.split("-")[0][4:]), s))
    if phases1:
        p("### 1. Added latency, non-streaming (oha --latency-correction, fixed rate, 10 s)\n")
        p("| rate, upstream | run | direct p50 / p99 ms | Sluice p50 / p99 ms | added p50 / p99 ms "
          "| Sluice CPU µs/req | mock CPU µs/req direct · behind Sluice | ok/errors direct · Sluice | load1 · foreign cores |")
        p("|---|---|---|---|---|---|---|---|---|")
        summary = []
        for ph in phases1:
            a50, a99 = [], []
            for run in runs:
                d, g = get(1, ph, "direct", run), get(1, ph, "sluice", run)
                if not d and not g:
                    continue
                ad50 = ad99 = None
                if d and g and d.get("p50_ms") is not None and g.get("p50_ms") is not None:
                    ad50, ad99 = g["p50_ms"] - d["p50_ms"], g["p99_ms"] - d["p99_ms"]
                    a50.append(ad50)
                    a99.append(ad99)
                rate, ups = ph.split("-", 1)
                ups = label_ups(ups)
                p(f"| {rate[4:]}/s, {ups} | {run} "
                  f"| {plain(d and d.get('p50_ms'))} / {plain(d and d.get('p99_ms'))} "
                  f"| {plain(g and g.get('p50_ms'))} / {plain(g and g.get('p99_ms'))} "
                  f"| {sign_up(ad50)} / {sign_up(ad99)} "
                  f"| {up(g and g.get('cpu_us_per_req'), 1)} "
                  f"| {up(mock_us(d), 1)} · {up(mock_us(g), 1)} "
                  f"| {errs(d)} · {errs(g)} "
                  f"| {load_of(g or d)} · {foreign_of(d)}, {foreign_of(g)} |")
            summary.append((ph, a50, a99))
        p("")
        p("| rate, upstream | added p50 ms: median (min … max) | added p99 ms: median (min … max) |")
        p("|---|---|---|")
        for ph, a50, a99 in summary:
            rate, ups = ph.split("-", 1)
            ups = label_ups(ups)
            p(f"| {rate[4:]}/s, {ups} | {med_spread(a50, sign_up)} | {med_spread(a99, sign_up)} |")
        p("")

    # Figure 2
    if any(r.get("fig") == 2 for r in recs):
        p("### 2. CPU per request (fixed count, closed loop c=32; utime+stime from /proc/PID/stat)\n")
        p("| run | requests ok (direct · Sluice) | mock µs/req, direct | Sluice µs/req | mock µs/req behind Sluice "
          "| records written | load1 · foreign cores |")
        p("|---|---|---|---|---|---|---|")
        vals = []
        for run in runs:
            d, g = get(2, "cpu", "direct", run), get(2, "cpu", "sluice", run)
            if not d and not g:
                continue
            if g and g.get("cpu_us_per_req") is not None:
                vals.append(g["cpu_us_per_req"])
            mock_behind = None
            if g and g.get("mock_ticks") is not None and g.get("ok"):
                mock_behind = g["mock_ticks"] * 1e6 / g["clk"] / g["ok"]
            p(f"| {run} | {errs(d)} · {errs(g)} | {up(d and d.get('cpu_us_per_req'), 1)} "
              f"| {up(g and g.get('cpu_us_per_req'), 1)} | {up(mock_behind, 1)} "
              f"| {g.get('records_delta', '?') if g else '—'} "
              f"| {load_of(g or d)} · {foreign_of(d)}, {foreign_of(g)} |")
        p(f"\nSluice CPU per request, median (min … max): **{med_spread(vals, lambda x: up(x, 1))} µs**\n")

    # Figure 3
    if any(r.get("fig") == 3 for r in recs):
        p("### 3. Maximum throughput (closed loop c=64, 10 s)\n")
        p("| run | direct req/s | Sluice req/s | Sluice ÷ direct | Sluice CPU µs/req | ok/errors direct · Sluice | load1 · foreign cores |")
        p("|---|---|---|---|---|---|---|")
        ratios, gv = [], []
        for run in runs:
            d, g = get(3, "thr", "direct", run), get(3, "thr", "sluice", run)
            if not d and not g:
                continue
            ratio = None
            if d and g and d.get("ok_rps") and g.get("ok_rps") is not None:
                ratio = g["ok_rps"] / d["ok_rps"]
                ratios.append(ratio)
            if g and g.get("ok_rps") is not None:
                gv.append(g["ok_rps"])
            p(f"| {run} | {down(d and d.get('ok_rps'), 0)} | {down(g and g.get('ok_rps'), 0)} "
              f"| {down(ratio, 3)} | {up(g and g.get('cpu_us_per_req'), 1)} | {errs(d)} · {errs(g)} "
              f"| {load_of(g or d)} · {foreign_of(d)}, {foreign_of(g)} |")
        p(f"\nSluice req/s median (min … max): {med_spread(gv, lambda x: down(x, 0))}; "
          f"ratio to direct: {med_spread(ratios, lambda x: down(x, 3))}\n")

    # Figure 4
    phases4 = sorted({r["phase"] for r in recs if r.get("fig") == 4})
    if phases4:
        p("### 4. Streaming time to first event (sse-probe, fast mock)\n")
        p("| load | run | direct p50 / p99 ms | Sluice p50 / p99 ms | overhead p50 / p99 ms "
          "| whole stream p50 ms direct · Sluice | streams/s direct · Sluice "
          "| streams ok/errors direct · Sluice | load1 · foreign cores |")
        p("|---|---|---|---|---|---|---|---|---|")
        summary = []
        for ph in phases4:
            o50, o99 = [], []
            for run in runs:
                d, g = get(4, ph, "direct", run), get(4, ph, "sluice", run)
                if not d and not g:
                    continue
                x50 = x99 = None
                if d and g and d.get("ttfb_p50_ms") is not None and g.get("ttfb_p50_ms") is not None:
                    x50, x99 = g["ttfb_p50_ms"] - d["ttfb_p50_ms"], g["ttfb_p99_ms"] - d["ttfb_p99_ms"]
                    o50.append(x50)
                    o99.append(x99)
                p(f"| {ph} | {run} | {plain(d and d.get('ttfb_p50_ms'))} / {plain(d and d.get('ttfb_p99_ms'))} "
                  f"| {plain(g and g.get('ttfb_p50_ms'))} / {plain(g and g.get('ttfb_p99_ms'))} "
                  f"| {sign_up(x50)} / {sign_up(x99)} "
                  f"| {plain(d and d.get('total_p50_ms'))} · {plain(g and g.get('total_p50_ms'))} "
                  f"| {plain(d and d.get('rps'), 0)} · {plain(g and g.get('rps'), 0)} "
                  f"| {errs(d)} · {errs(g)} "
                  f"| {load_of(g or d)} · {foreign_of(d)}, {foreign_of(g)} |")
            summary.append((ph, o50, o99))
        p("")
        p("| load | overhead p50 ms: median (min … max) | overhead p99 ms: median (min … max) |")
        p("|---|---|---|")
        for ph, o50, o99 in summary:
            p(f"| {ph} | {med_spread(o50, sign_up)} | {med_spread(o99, sign_up)} |")
        p("")

    # Figure 5
    if any(r.get("fig") == 5 for r in recs):
        p("### 5. Concurrent open streams held by a slow mock\n")
        p("| run | target | streams asked | open when sampled | ended with [DONE] | errors | ramp s "
          "| RSS idle MiB | RSS held MiB | peak (VmHWM) MiB | KiB per stream | fds held | load1 |")
        p("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        ext = []
        for run in runs:
            for t in ("direct", "sluice"):
                r = get(5, "hold", t, run)
                if not r:
                    continue
                if r.get("error"):
                    p(f"| {run} | {t} | {r.get('n', '?')} | error: {r['error'][:80]} |||||||||")
                    continue
                b, h, a = r["before"][0], r["held"][0], r["after"][0]
                per = None
                if r.get("open_at_sample"):
                    per = (h.get("VmRSS", 0) - b.get("VmRSS", 0)) / r["open_at_sample"]
                peak = max(h.get("VmHWM", 0), a.get("VmHWM", 0))
                who = "mock (direct)" if t == "direct" else "Sluice"
                p(f"| {run} | {who} | {r['n']} | {r['open_at_sample']} | {r['ok']} | {r['errors']} "
                  f"| {plain(r['ramp_s'], 1)} | {up(b.get('VmRSS', 0) / 1024, 1)} "
                  f"| {up(h.get('VmRSS', 0) / 1024, 1)} | {up(peak / 1024, 1)} "
                  f"| {up(per, 2)} | {h.get('fds', '?')} | {load_of(r)} |")
                if t == "sluice" and per is not None:
                    ext.append((b.get("VmRSS", 0) + per * 10000) / 1024)
        if ext:
            p(f"\nSluice RSS extrapolated linearly to 10,000 streams (idle + 10,000 × KiB per stream), "
              f"median (min … max): {med_spread(ext, lambda x: up(x, 1))} MiB\n")
        for r in recs:
            if r.get("fig") == 5 and r.get("first_errors"):
                p(f"- run {r['run']} {r['target']}: first errors: {r['first_errors'][:3]}")
        p("")

    # Figure 6
    if any(r.get("fig") == 6 for r in recs):
        p("### 6. Process start until the readiness URL answers 200\n")
        p("| run | target | starts ok | median ms | min … max ms | samples ms | load1 |")
        p("|---|---|---|---|---|---|---|")
        meds = []
        for run in runs:
            for t in ("direct", "sluice"):
                r = get(6, "ready", t, run)
                if not r:
                    continue
                who = "mock (/health)" if t == "direct" else "Sluice (/ready)"
                if t == "sluice" and r.get("median_ms") is not None:
                    meds.append(r["median_ms"])
                samples = ", ".join(f"{s:.1f}" for s in r.get("samples_ms", []))
                p(f"| {run} | {who} | {r.get('ok')}/{r.get('starts')} | {up(r.get('median_ms'), 2)} "
                  f"| {up(r.get('min_ms'), 2)} … {up(r.get('max_ms'), 2)} | {samples} | {load_of(r)} |")
        p(f"\nSluice start to ready, median of run medians (min … max): {med_spread(meds, lambda x: up(x, 2))} ms\n")
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "record":
        record(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
