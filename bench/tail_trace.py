#!/usr/bin/env python3
"""tail_trace.py — where the slow requests of a concurrency-1 load spend their time.

Reads `perf script` output of a trace of the gateway's cpu (`perf record -a -e
sched:sched_switch,sched:sched_wakeup,raw_syscalls:sys_enter,raw_syscalls:sys_exit`, taken by
bench/tail.sh)
and cuts the gateway worker's timeline into requests: a request starts when a read of the
client socket returns bytes and ends when the answer's write to that socket starts. For every
request it splits that time into:

  upstream   from the write of the upstream request to the read that returned its answer,
             less the time the worker waited for its cpu once the answer had woken it
  cpu wait   the worker could run but another thread had its cpu (named, with its time)
  asleep     the worker slept outside the upstream wait (in a futex, an epoll_wait...)
  syscalls   time inside the worker's own system calls, outside the upstream wait
  own        the rest: the worker running its own code

and prints the median of each part for all requests, for the slowest 1% and for the rest,
plus, for the slowest 1%, which threads took the cpu from the worker and which system calls
were long.

    tail_trace.py --script perf.txt --client-fd N --upstream-fd M [--worker sluice-worker-0]
"""

import argparse
import collections
import re
import statistics
import sys

LINE = re.compile(
    r"^\s*(?P<comm>.+?)\s+(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<ts>\d+\.\d+):\s+"
    r"(?P<event>[\w:]+):\s*(?P<rest>.*)$")
SWITCH = re.compile(
    r"prev_comm=(?P<pc>.+?) prev_pid=(?P<pp>\d+) .*?prev_state=(?P<ps>\S+) ==> "
    r"next_comm=(?P<nc>.+?) next_pid=(?P<np>\d+)")
ENTER = re.compile(r"NR (?P<nr>-?\d+) \((?P<args>[^)]*)\)")
EXIT = re.compile(r"NR (?P<nr>-?\d+) = (?P<ret>-?\d+)")

READS = {0, 17, 19, 45, 47}          # read pread64 readv recvfrom recvmsg
WRITES = {1, 18, 20, 44, 46}         # write pwrite64 writev sendto sendmsg
NAMES = {0: "read", 1: "write", 7: "poll", 17: "pread64", 18: "pwrite64", 19: "readv",
         20: "writev", 44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg",
         202: "futex", 232: "epoll_wait", 233: "epoll_ctl", 281: "epoll_pwait",
         441: "epoll_pwait2", 24: "sched_yield", 228: "clock_gettime", 230: "clock_nanosleep"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--script", required=True, help="perf script output")
    p.add_argument("--client-fd", type=int, required=True)
    p.add_argument("--upstream-fd", type=int, required=True)
    p.add_argument("--worker", default="sluice-worker-0", help="the worker thread's name")
    p.add_argument("--cpu", type=int, default=0, help="the gateway's cpu")
    p.add_argument("--slow", type=float, default=0.01, help="share of requests called slow")
    args = p.parse_args()

    worker_tid = None
    requests = []
    current = None             # the request under way
    in_syscall = None          # (nr, fd, start) of the worker's system call under way
    off = None                 # the worker off its cpu: when, why, since when it could run
    running_since = None       # when the thread now on the cpu got it
    upstream_from = None       # when the upstream request was written

    def add(part, amount, key=None):
        if current is None or amount <= 0:
            return
        current["parts"][part] += amount
        if key is not None:
            current["by"][(part, key)] += amount

    with open(args.script) as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            ts = float(m["ts"]) * 1e6   # µs
            event, rest, tid, comm = m["event"], m["rest"], int(m["tid"]), m["comm"].strip()
            if worker_tid is None and comm == args.worker:
                worker_tid = tid
            if event == "sched:sched_wakeup":
                if off is not None and f"pid={worker_tid} " in rest + " " and off["woken"] is None:
                    off["woken"] = ts
                continue
            if event == "sched:sched_switch":
                if int(m["cpu"]) != args.cpu:
                    continue
                s = SWITCH.search(rest)
                if not s:
                    continue
                pp, np_ = int(s["pp"]), int(s["np"])
                if off is not None and pp != worker_tid and off["woken"] is not None:
                    # Time another thread had the cpu while the worker could have run.
                    since = max(running_since or ts, off["woken"])
                    off["ran"][s["pc"].strip()] += max(0.0, ts - since)
                if pp == worker_tid:
                    state = s["ps"]
                    off = {"start": ts, "woken": ts if state.startswith("R") else None,
                           "ran": collections.Counter(), "state": state}
                if np_ == worker_tid and off is not None:
                    woken = off["woken"] if off["woken"] is not None else ts
                    if current is not None:
                        waited = ts - woken
                        add("cpu wait", waited)
                        for name, amount in off["ran"].items():
                            current["by"][("cpu wait", name)] += amount
                        if upstream_from is not None:
                            current["in_upstream_wait"] += waited
                        elif not off["state"].startswith("R"):
                            call = NAMES.get(in_syscall[0], str(in_syscall[0])) if in_syscall else "?"
                            add("asleep", woken - off["start"], call)
                    off = None
                running_since = ts
                continue
            if tid != worker_tid:
                continue
            if event == "raw_syscalls:sys_enter":
                e = ENTER.search(rest)
                if not e:
                    continue
                nr = int(e["nr"])
                first = e["args"].split(",")[0].strip()
                try:
                    fd = int(first, 16)
                except ValueError:
                    fd = -1
                in_syscall = (nr, fd, ts)
                if nr in WRITES and fd == args.client_fd and current is not None:
                    current["end"] = ts
                    requests.append(current)
                    current = None
                elif nr in WRITES and fd == args.upstream_fd and current is not None:
                    upstream_from = ts
            elif event == "raw_syscalls:sys_exit":
                x = EXIT.search(rest)
                if not x or in_syscall is None:
                    continue
                nr, fd, start = in_syscall
                ret = int(x["ret"])
                in_syscall = None
                if nr in READS and fd == args.client_fd and ret > 0 and current is None:
                    current = {"start": ts, "parts": collections.Counter(),
                               "by": collections.Counter(), "in_upstream_wait": 0.0}
                    continue
                if nr in READS and fd == args.upstream_fd and ret > 0 and upstream_from is not None:
                    add("upstream", ts - upstream_from - current["in_upstream_wait"])
                    current["in_upstream_wait"] = 0.0
                    upstream_from = None
                    continue
                if upstream_from is None and current is not None:
                    add("syscalls", ts - start, NAMES.get(nr, str(nr)))

    if not requests:
        sys.exit("no requests found: check --client-fd, --upstream-fd and --worker")
    for r in requests:
        r["total"] = r["end"] - r["start"]
        r["parts"]["own"] = r["total"] - sum(r["parts"].values())
    requests.sort(key=lambda r: r["total"])
    n_slow = max(1, int(len(requests) * args.slow))
    slow, rest = requests[-n_slow:], requests[:-n_slow]
    parts = ["upstream", "cpu wait", "asleep", "syscalls", "own"]

    def med(rs, key):
        return statistics.median(r[key] if key == "total" else r["parts"][key] for r in rs)

    print(f"{len(requests)} requests; the slowest {len(slow)} are 'slow'\n")
    print("| requests | total | " + " | ".join(parts) + " |")
    print("|---|---|" + "---|" * len(parts))
    for name, rs in (("all", requests), ("slowest 1%", slow), ("the other 99%", rest)):
        print(f"| {name} (median µs) | {med(rs, 'total'):.0f} | "
              + " | ".join(f"{med(rs, k):.0f}" for k in parts) + " |")
    print(f"\np50 {requests[len(requests) // 2]['total']:.0f} µs, "
          f"p99 {requests[int(len(requests) * 0.99)]['total']:.0f} µs (worker side, client read to answer write)")
    def pct(values, q):
        values = sorted(values)
        return values[min(len(values) - 1, int(q * len(values)))]
    print("\neach part on its own, over all requests (µs): p50 / p99")
    for k in ["total"] + parts:
        values = [r[k] if k == "total" else r["parts"][k] for r in requests]
        print(f"  {k:10s} {pct(values, 0.5):7.0f} / {pct(values, 0.99):7.0f}")
    total_by = collections.Counter()
    hit_by = collections.Counter()
    for r in slow:
        for key, amount in r["by"].items():
            total_by[key] += amount
            hit_by[key] += 1
    print("\nin the slowest 1%: what took the time, summed (µs) and in how many of them")
    for (part, key), amount in total_by.most_common(12):
        print(f"  {part:10s} {str(key):28s} {amount:9.0f} µs in {hit_by[(part, key)]:3d}")
    rest_hit = collections.Counter()
    for r in rest:
        for key in r["by"]:
            rest_hit[key] += 1
    print("\nthe same causes in the other 99%: in how many of them")
    for (part, key), _ in total_by.most_common(12):
        share = rest_hit[(part, key)] / max(1, len(rest))
        print(f"  {part:10s} {str(key):28s} {100 * share:5.1f}%")


if __name__ == "__main__":
    main()
