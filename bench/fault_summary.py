#!/usr/bin/env python3
"""fault_summary.py — bench/fault.sh's bookkeeping.

    fault_summary.py record RESULTS.jsonl CONFIG RUN OHA.json RECORDS.jsonl REQUESTS CONC LOAD1 SECS
        read one run's oha output and request records (`sluice logs --json`), append one line
    fault_summary.py skip RESULTS.jsonl CONFIG LOGFILE [RUN]
        append a "not run" line with the first error line of LOGFILE
    fault_summary.py table RESULTS.jsonl
        print the markdown table: one row per configuration and run, then the median of runs

Success is status 200 out of the requests sent (oha) or out of the records; latency percentiles
from oha are over every response it got, from the records over `latency_us` (nearest rank).
Retries are attempts beyond the first of each request, divided by the requests; a hedged
request's second attempt counts as one.
"""

import collections
import json
import math
import re
import statistics
import sys

# Deployments in the order the table shows them; others follow, sorted.
KNOWN = ["primary", "staller", "backup"]
# A request slower than this waited out a stall (the mock's stalls are 5 s; everything else
# answers in milliseconds).
SLOW_MS = 1000


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    return sorted_vals[max(0, math.ceil(p * len(sorted_vals)) - 1)]


def load_oha(path):
    try:
        d = json.load(open(path))
    except (OSError, ValueError) as e:
        return {"oha_error": f"no oha result: {e}"}
    s = d.get("summary", {}) or {}
    lp = d.get("latencyPercentiles", {}) or {}
    codes = {k: int(v) for k, v in (d.get("statusCodeDistribution", {}) or {}).items()}
    errs = {k: int(v) for k, v in (d.get("errorDistribution", {}) or {}).items()}
    ms = lambda k: None if lp.get(k) is None else lp[k] * 1000
    return {"oha_codes": codes, "oha_errors": errs, "oha_ok": codes.get("200", 0),
            "oha_p50_ms": ms("p50"), "oha_p99_ms": ms("p99"), "oha_secs": s.get("total"),
            "oha_rps": s.get("requestsPerSec")}


def load_records(path):
    recs = []
    try:
        for line in open(path):
            line = line.strip()
            if line:
                recs.append(json.loads(line))
    except (OSError, ValueError) as e:
        return {"records_error": f"no records: {e}"}
    n = len(recs)
    lat = sorted(r["latency_us"] / 1000 for r in recs)
    # Deployments the plan skipped (open circuit, Retry-After cool-down, full queue) are in the
    # records with outcome `skipped`, but nothing was sent to them: they are not attempts.
    attempts = [[a for a in (r.get("attempts") or []) if a.get("outcome") != "skipped"] for r in recs]
    total_attempts = sum(len(a) for a in attempts)
    retries = sum(max(len(a) - 1, 0) for a in attempts)
    per_dep = collections.Counter(a["deployment"] for atts in attempts for a in atts)
    outcomes = collections.defaultdict(collections.Counter)
    for atts in attempts:
        for a in atts:
            outcomes[a["deployment"]][a["outcome"]] += 1
    served = collections.Counter(r.get("deployment") for r in recs if r["status"] == 200)
    statuses = collections.Counter(str(r["status"]) for r in recs)
    return {"records": n, "slow": sum(1 for ms in lat if ms > SLOW_MS), "records_ok": statuses.get("200", 0), "record_statuses": dict(statuses),
            "rec_p50_ms": pct(lat, 0.50), "rec_p99_ms": pct(lat, 0.99),
            "attempts_per_request": total_attempts / n if n else None,
            "retries_share": retries / n if n else None,
            "attempts_by_deployment": dict(per_dep),
            "outcomes_by_deployment": {k: dict(v) for k, v in outcomes.items()},
            "served_by_deployment": {str(k): v for k, v in served.items()}}


def record(path, config, run, oha, records, requests, conc, load1, secs):
    rec = {"config": config, "run": int(run), "requests": int(requests), "conc": int(conc),
           "load1": float(load1), "secs": float(secs)}
    rec.update(load_oha(oha))
    rec.update(load_records(records))
    if "oha_ok" in rec:
        rec["oha_success"] = rec["oha_ok"] / rec["requests"]
    if rec.get("records"):
        rec["rec_success"] = rec["records_ok"] / rec["records"]
    with open(path, "a") as out:
        out.write(json.dumps(rec) + "\n")


def skip(path, config, logfile, run=None):
    reason = "rejected"
    try:
        lines = [l.strip() for l in open(logfile) if l.strip()]
    except OSError:
        lines = []
    # Validation errors are `- field.path: problem` lines; a TOML error ends with the problem
    # (`unknown field ...`) after a header naming the line.
    fields = [l[2:] for l in lines if l.startswith("- ")]
    if fields:
        reason = fields[0] + (f" (and {len(fields) - 1} more)" if len(fields) > 1 else "")
    elif lines:
        reason = lines[-1]
        at = re.search(r"at line (\d+)", lines[0])
        if at:
            reason += f" (line {at.group(1)})"
    rec = {"config": config, "skipped": reason}
    if run is not None:
        rec["run"] = int(run)
    with open(path, "a") as out:
        out.write(json.dumps(rec) + "\n")


def f_pct(x):
    return "?" if x is None else f"{x * 100:.2f}%"


def f_ms(x):
    return "?" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.1f}")


def f_num(x, nd=2):
    return "?" if x is None else f"{x:.{nd}f}"


def deployments(rows):
    names = set()
    for r in rows:
        names |= set(r.get("attempts_by_deployment", {}))
    return KNOWN + sorted(names - set(KNOWN))


def row(label, run, r, deps):
    by = r.get("attempts_by_deployment", {})
    served = r.get("served_by_deployment", {})
    other = {k: v for k, v in r.get("record_statuses", {}).items() if k != "200"}
    other_s = ", ".join(f"{v}×{k}" for k, v in sorted(other.items())) or "none"
    if r.get("records") is not None and r.get("requests") and r["records"] != r["requests"]:
        other_s += f"; {r['records']} records"
    if r.get("records_error"):
        other_s += "; " + r["records_error"]
    if r.get("oha_errors"):
        other_s += "; oha: " + ", ".join(f"{v}× {k}" for k, v in r["oha_errors"].items())
    return (f"| {label} | {run} | {f_pct(r.get('oha_success'))} | {f_pct(r.get('rec_success'))} "
            f"| {f_ms(r.get('oha_p50_ms'))} / {f_ms(r.get('oha_p99_ms'))} "
            f"| {f_ms(r.get('rec_p50_ms'))} / {f_ms(r.get('rec_p99_ms'))} "
            f"| {f_num(r.get('slow'), 0)} "
            f"| {f_num(r.get('attempts_per_request'), 3)} | {f_pct(r.get('retries_share'))} "
            f"| {' · '.join(str(round(by.get(d, 0))) for d in deps)} "
            f"| {' · '.join(str(round(served.get(d, 0))) for d in deps)} "
            f"| {other_s} | {f_num(r.get('secs'), 1)} | {r.get('load1', '?')} |")


MEDIAN_KEYS = ["oha_success", "rec_success", "oha_p50_ms", "oha_p99_ms", "rec_p50_ms",
               "rec_p99_ms", "slow", "attempts_per_request", "retries_share", "secs"]


def median_of(rows, deps):
    m = {}
    for k in MEDIAN_KEYS:
        vals = [r[k] for r in rows if r.get(k) is not None]
        m[k] = statistics.median(vals) if vals else None
    for field in ("attempts_by_deployment", "served_by_deployment"):
        m[field] = {d: statistics.median([r.get(field, {}).get(d, 0) for r in rows])
                    for d in deps}
    m["load1"] = "—"
    return m


def table(path):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    runs = [r for r in recs if "skipped" not in r]
    skipped = [r for r in recs if "skipped" in r]
    deps = deployments(runs) or KNOWN
    configs = list(dict.fromkeys(r["config"] for r in recs))
    first = runs[0] if runs else {}
    print(f"Fault benchmark: {first.get('requests', '?')} non-streaming requests at concurrency "
          f"{first.get('conc', '?')} (oha, closed loop) per run; primary fails 1 in 2 with 500, "
          "staller stalls 1 in 4 for 5 s, backup healthy.\n")
    dl = " · ".join(deps)
    print(f"| configuration | run | success (oha) | success (records) | p50 / p99 ms (oha) "
          f"| p50 / p99 ms (records) | over {SLOW_MS // 1000} s | attempts / request "
          f"| retries / requests | attempts: {dl} | served: {dl} | non-200 | time s | load1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in configs:
        rows = sorted((r for r in runs if r["config"] == c), key=lambda r: r["run"])
        for r in rows:
            print(row(c, r["run"], r, deps))
        if len(rows) > 1:
            print(row(f"**{c}**", "median", median_of(rows, deps), deps).replace("| none |", "| — |"))
    for s in skipped:
        run = f" run {s['run']}" if "run" in s else ""
        print(f"\n**{s['config']}{run}: not run** — this Sluice refused bench/fault-{s['config']}.toml: "
              f"{s['skipped']}. A build without the settings that file uses refuses them; run "
              "again with one that has them.")


if __name__ == "__main__":
    a = sys.argv
    if len(a) == 11 and a[1] == "record":
        record(*a[2:])
    elif len(a) in (5, 6) and a[1] == "skip":
        skip(*a[2:])
    elif len(a) == 3 and a[1] == "table":
        table(a[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
