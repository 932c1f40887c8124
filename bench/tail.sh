#!/usr/bin/env bash
# tail.sh — what the slowest requests at concurrency 1 wait for: a scheduler and system-call
# trace of the gateway's cpu while oha sends requests one at a time, cut into requests by
# bench/tail_trace.py.
#
#   bench/tail.sh [-n REQUESTS] [--admission memory|off] [--no-trace] [--nice-threads REGEX] [--out DIR]
#
# --no-trace runs the same load three times untraced and prints only oha's figures. As an
# experiment, --nice-threads renices the gateway's threads whose name matches REGEX to
# $NICE_VALUE (default 10) after the warm-up.
#
# As bench/field.sh's c=1 figure: the shared mock and oha on cpu 1, Sluice on cpu 0 (the bench
# configuration: key auth, records, journal; with --admission memory, the default, three limits
# per key in in-process counters). 200 requests warm up, then `perf record -a` traces
# context switches and the gateway worker's wake-ups and system calls while oha sends REQUESTS
# (default 3000) on one connection. Needs perf with tracepoints; SLUICE_BIN overrides
# target/release/sluice.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SLUICE=${SLUICE_BIN:-$ROOT/target/release/sluice}
MOCK_BIN=$HERE/.target/release/mock-upstream
N=3000 ADMISSION=memory NICE_THREADS="" TRACE=1 OUT=$HERE/results/tail-$(date +%Y%m%d-%H%M%S)
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2 ;;
    --admission) ADMISSION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --nice-threads) NICE_THREADS=$2; shift 2 ;;
    --no-trace) TRACE=0; shift ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
# This script and everything it starts run on the load's cpu unless pinned elsewhere, so that
# only the gateway (and what the kernel puts there) runs on cpu 0.
taskset -cp 1 $$ > /dev/null
[ -x "$MOCK_BIN" ] || { echo "build the mock first: bench/run.sh builds it into bench/.target" >&2; exit 1; }
mkdir -p "$OUT"
FAST=18260 GWP=18270
export MOCK_FAST_URL=http://127.0.0.1:$FAST/v1 MOCK_SLOW_URL=http://127.0.0.1:$FAST/v1 SLUICE_BIN=$SLUICE
CFG=$("$HERE/sluice-target.sh" config "$OUT/work")
KEY=$("$HERE/sluice-target.sh" key "$OUT/work")
if [ "$ADMISSION" != off ]; then
  printf '\n[budgets]\ncounters = "%s"\n' "$ADMISSION" >> "$CFG"
  "$SLUICE" --config "$CFG" budgets set 'key:*' --usd 1000000 --period month > /dev/null
  "$SLUICE" --config "$CFG" budgets set 'key:*' --rpm 100000000 > /dev/null
  "$SLUICE" --config "$CFG" budgets set 'key:*' --tpm 100000000000 > /dev/null
fi
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
MOCK_ADDR=127.0.0.1:$FAST MOCK_THREADS=1 setsid taskset -c 1 "$MOCK_BIN" > "$OUT/mock.log" 2>&1 < /dev/null &
PIDS+=($!)
SLUICE_LOG=info setsid taskset -c 0 "$SLUICE" --config "$CFG" serve --listen 127.0.0.1:$GWP \
  > "$OUT/sluice.out" 2> "$OUT/sluice.log" < /dev/null &
GW=$!; PIDS+=($GW)
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$GWP/ready" && break; sleep 0.05; done
BODY='{"model":"mock-fast","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one sentence about benchmarking gateways."}],"max_tokens":64,"temperature":0}'
URL=http://127.0.0.1:$GWP/v1/chat/completions
ohaa=(--no-tui --output-format json -m POST -T application/json -H "authorization: Bearer $KEY" -d "$BODY")
taskset -c 1 oha "${ohaa[@]}" -n 200 -c 1 "$URL" > /dev/null
if [ -n "$NICE_THREADS" ]; then
  for t in /proc/$GW/task/*; do
    if grep -Eq "$NICE_THREADS" "$t/comm"; then renice -n "${NICE_VALUE:-10}" -p "$(basename "$t")" > /dev/null; echo "reniced $(cat "$t/comm")" >&2; fi
  done
fi

if [ "$TRACE" = 0 ]; then
  for run in 1 2 3; do
    taskset -c 1 oha "${ohaa[@]}" -n "$N" -c 1 "$URL" > "$OUT/oha.$run.json"
    python3 -c "
import json; d = json.load(open('$OUT/oha.$run.json'))
p = d['latencyPercentiles']
print(f\"oha run $run: p50 {p['p50']*1e6:.0f} µs, p95 {p['p95']*1e6:.0f} µs, p99 {p['p99']*1e6:.0f} µs, p99.9 {p['p99.9']*1e6:.0f} µs\")"
  done
  exit 0
fi
# The trace covers the measured run exactly: perf runs oha, on the load's cpu. Only the
# gateway worker's system calls and wake-ups are traced (kernel filters on its thread id), and
# every context switch, so that the trace itself costs the gateway's cpu little.
TID=$(grep -l '^sluice-worker-0$' /proc/$GW/task/*/comm | head -1 | cut -d/ -f5)
taskset -c 1 perf record -q -a \
  -e raw_syscalls:sys_enter --filter "common_pid == $TID" \
  -e raw_syscalls:sys_exit --filter "common_pid == $TID" \
  -e sched:sched_wakeup --filter "pid == $TID" \
  -e sched:sched_switch \
  -o "$OUT/perf.data" -- taskset -c 1 oha "${ohaa[@]}" -n "$N" -c 1 "$URL" > "$OUT/oha.json" 2> "$OUT/perf.err" &
PERF=$!
sleep 0.3
fds() { # fds LOCAL_PORT|- REMOTE_PORT|- — the gateway's fd of the one established socket
  python3 - "$GW" "$1" "$2" <<'PY'
import os, sys
pid, local, remote = sys.argv[1], sys.argv[2], sys.argv[3]
inodes = set()
for row in open(f"/proc/{pid}/net/tcp").read().splitlines()[1:]:
    f = row.split()
    lport, rport = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
    if f[3] == "01" and local in ("-", str(lport)) and remote in ("-", str(rport)):
        inodes.add(f[9])
for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
    if os.readlink(f"/proc/{pid}/fd/{fd}") in {f"socket:[{i}]" for i in inodes}:
        print(fd)
        break
PY
}
CLIENT_FD=$(fds "$GWP" -)
UP_FD=$(fds - "$FAST")
echo "client fd $CLIENT_FD, upstream fd $UP_FD" >&2
wait "$PERF"
perf script -i "$OUT/perf.data" -F comm,tid,cpu,time,event,trace > "$OUT/perf.txt" 2> /dev/null
python3 -c "
import json; d = json.load(open('$OUT/oha.json'))
p = d['latencyPercentiles']
print(f\"oha: {d['summary']['requestsPerSec']:.0f} req/s, p50 {p['p50']*1e6:.0f} µs, p99 {p['p99']*1e6:.0f} µs (client side)\")"
python3 "$HERE/tail_trace.py" --script "$OUT/perf.txt" --client-fd "$CLIENT_FD" --upstream-fd "$UP_FD" \
  | tee "$OUT/tail.md"
echo "raw: $OUT" >&2
