#!/usr/bin/env bash
# bench/profile.sh — where Sluice's CPU goes under a benchmark load (perf, cpu-clock samples).
#
#   bench/profile.sh [--rate R | --conc C] [--seconds S] [--dwarf] [--out DIR]
#
# Starts the shared mock (cpu 1) and Sluice (cpu 0, the bench configuration: key auth, records
# to SQLite, SLUICE_LOG=info), warms up, then runs oha on cpu 1 — at a fixed rate (--rate R,
# c=32, latency-corrected) or closed loop (--conc C, default 64) — for S+4 seconds (default 10)
# while `perf record -e cpu-clock` samples the Sluice PID for S seconds. --dwarf adds call
# graphs (large files). Prints the top symbols by thread, by shared object and by symbol, plus
# Sluice's CPU per request over the window (utime+stime from /proc/PID/stat).
# Needs perf; when perf cannot sample here, use `valgrind --tool=callgrind` on the binary.
# SLUICE_BIN overrides target/release/sluice. Everything is stopped by PID on exit.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SLUICE=${SLUICE_BIN:-$ROOT/target/release/sluice}
MOCK_BIN=$HERE/.target/release/mock-upstream
RATE=""; CONC=64; SECS=10; DWARF=0
OUT=$HERE/results/profile-$(date +%Y%m%d-%H%M%S)
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) RATE=$2; shift 2 ;;
    --conc) CONC=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --dwarf) DWARF=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$HERE/profile.sh" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$MOCK_BIN" ] || { echo "build the mock first: bench/run.sh builds it into bench/.target" >&2; exit 1; }
mkdir -p "$OUT"
FAST=18200; GWP=18210
CFG=$(MOCK_FAST_URL=http://127.0.0.1:$FAST/v1 MOCK_SLOW_URL=http://127.0.0.1:$FAST/v1 \
  SLUICE_BIN=$SLUICE "$HERE/sluice-target.sh" config "$OUT/work")
KEY=$(MOCK_FAST_URL=http://127.0.0.1:$FAST/v1 MOCK_SLOW_URL=http://127.0.0.1:$FAST/v1 \
  SLUICE_BIN=$SLUICE "$HERE/sluice-target.sh" key "$OUT/work")
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
taskset -c 1 oha "${ohaa[@]}" -z 3s -c 32 "$URL" > /dev/null
if [ -n "$RATE" ]; then load=(-c 32 -q "$RATE" --latency-correction); else load=(-c "$CONC"); fi
taskset -c 1 oha "${ohaa[@]}" -z "$((SECS + 4))s" "${load[@]}" "$URL" > "$OUT/oha.json" &
OHA=$!
sleep 2
if [ "$DWARF" = 1 ]; then cg=(--call-graph dwarf,16384 -F 499); else cg=(-F 1999); fi
perf record -q -e cpu-clock "${cg[@]}" -p "$GW" -o "$OUT/perf.data" -- sleep "$SECS" 2> "$OUT/perf.err" &
PERF=$!
sleep 1   # perf attached; measure CPU over a window inside the sampled one
t0=$(awk '{print $14 + $15}' /proc/$GW/stat); w0=$(date +%s.%N)
sleep "$((SECS - 2))"
t1=$(awk '{print $14 + $15}' /proc/$GW/stat); w1=$(date +%s.%N)
wait "$PERF" || true
wait "$OHA" || true
python3 - "$OUT/oha.json" "$((t1 - t0))" "$(getconf CLK_TCK)" "$(echo "$w1 - $w0" | bc)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); ticks, clk, secs = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rps = d["summary"]["requestsPerSec"]
print(f"load: {rps:.0f} req/s (whole run, perf attached); Sluice CPU over a {secs:.1f} s window: {ticks / clk:.2f} s "
      f"= {ticks / clk / secs:.2f} cores ≈ {ticks / clk * 1e6 / (rps * secs):.0f} µs/request")
PY
rep() { perf report -i "$OUT/perf.data" --stdio --no-children "$@" 2>/dev/null | grep -v '^#' | grep -v '^$'; }
echo "--- by thread";        rep --sort comm | head -8
echo "--- by object";        rep --sort dso | head -8
echo "--- top symbols";      rep --sort comm,sym | head -40
echo "perf data: $OUT/perf.data"
