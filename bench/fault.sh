#!/usr/bin/env bash
# bench/fault.sh — Sluice's fault benchmark: reliability routing against failing and stalling
# deployments, compared with no routing features (method: ../shared/BENCHMARKS.md).
#
# One command, from the repository root or anywhere:
#   bench/fault.sh [options]
#
# It builds Sluice (release), installs oha (`cargo install oha --locked`) when missing, and for
# each configuration and run starts, on 127.0.0.1 and pinned with taskset (Sluice on cpu 0,
# mocks and the load generator on cpu 1):
#   three mocks (`sluice mock`, exact shares, not random, so every run sees the same pattern):
#     primary  --fail-ratio 0.5 --fail-status 500   every second request fails with 500
#     staller  --stall-ratio 0.25 --stall-ms 5000    every fourth request gets no headers for 5 s
#     backup   healthy
#   Sluice with the configuration from bench/fault-<config>.toml (mock URLs and store filled in):
#     baseline  alias "chat" = primary, staller, backup in order; fallback on retryable errors;
#               breakers off, no retry budget (no routing features)
#     routed    breakers, power-of-two pool of all three, retries with a 20% budget, 2 s
#               first-token timeout, hedge after 300 ms
#     routed-budget50  routed with a 50% retry budget (--configs to run it)
# then creates a virtual key (`sluice keys create`), sends REQUESTS non-streaming chat requests
# at CONCURRENCY (`oha -n 2000 -c 50`, closed loop), stops Sluice (which writes every request
# record before exiting) and reads the records with `sluice logs --json`. A fresh Sluice and
# fresh mocks per run, so the mocks' failure pattern restarts; configurations alternate which
# goes first. When `sluice check-config` rejects a configuration (the routing settings on a
# build without them), that configuration is reported as not run and the others still run.
#
# Options:
#   --runs N            runs per configuration (default 2)
#   --configs "A B"     configurations (default "baseline routed")
#   --requests N        requests per run (default 2000)
#   --concurrency C     concurrent connections (default 50)
#   --quiet-load L      load average to wait for before each run (default 0.5); --quiet-wait S
#                       bounds the wait (default 600, checking every 30 s)
#   --no-build          use the binary as it is (SLUICE_BIN overrides target/release/sluice)
#   --out DIR           results directory (default bench/results/fault-<timestamp>)
#
# Output: a markdown table on stdout (also DIR/table.md): one row per configuration and run,
# then the median of runs; DIR/results.jsonl (one line per run); raw oha JSON and request
# records in DIR/raw/, process logs in DIR/logs/, configurations and stores in DIR/work/.
# Every process started here is stopped by its PID (process group) on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT"

RUNS=2
CONFIGS="baseline routed"
REQUESTS=2000
CONC=50
QUIET_LOAD=0.5
QUIET_WAIT=600
BUILD=1
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --configs) CONFIGS=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --quiet-load) QUIET_LOAD=$2; shift 2 ;;
    --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$HERE/fault.sh"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
for c in $CONFIGS; do
  [ -f "$HERE/fault-$c.toml" ] || { echo "no configuration bench/fault-$c.toml" >&2; exit 2; }
done

SLUICE=${SLUICE_BIN:-$ROOT/target/release/sluice}
export PATH="$HOME/.cargo/bin:$PATH"
export SLUICE_LOG=info

OUT=${OUT:-$HERE/results/fault-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/logs" "$OUT/raw" "$OUT/work"
OUT=$(cd "$OUT" && pwd)
RES=$OUT/results.jsonl
: > "$RES"
SUM="python3 $HERE/fault_summary.py"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

GW_CPU=0
LOAD_CPU=1
PRIMARY_PORT=18200
STALLER_PORT=18201
BACKUP_PORT=18202
GW_PORT=18210
STALL_MS=5000

# ---------------------------------------------------------------- build / install
if [ "$BUILD" = 1 ]; then
  if ! command -v oha >/dev/null; then
    log "installing oha (cargo install oha --locked; several minutes)"
    cargo install oha --locked -q > "$OUT/logs/oha-install.log" 2>&1 \
      || { echo "oha install failed: see $OUT/logs/oha-install.log" >&2; exit 1; }
  fi
  log "building sluice (release)"
  cargo build --release -q -p sluice-cli
fi
[ -x "$SLUICE" ] || { echo "missing $SLUICE (run without --no-build)" >&2; exit 1; }
command -v oha >/dev/null || { echo "missing oha (run without --no-build)" >&2; exit 1; }

# ---------------------------------------------------------------- processes
declare -A PID=()
start_proc() { # start_proc NAME CPU CMD... — own process group (setsid), pinned, logs in logs/
  local name=$1 cpu=$2; shift 2
  setsid taskset -c "$cpu" "$@" > "$OUT/logs/$name.out" 2> "$OUT/logs/$name.log" < /dev/null &
  PID[$name]=$!
}
stop_proc() { # stop_proc NAME — TERM the group, KILL after 20 s
  local name=$1 p=${PID[$1]:-}
  [ -n "$p" ] || return 0
  kill -TERM -- "-$p" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "PID[$name]"
}
cleanup() { local n; for n in "${!PID[@]}"; do stop_proc "$n"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # wait_http URL SECONDS
  local i
  for i in $(seq 1 $(($2 * 20))); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.05
  done
  echo "timed out waiting for $1" >&2; return 1
}

start_mocks() { # start_mocks RUN_TAG — the three mocks, fresh, so their patterns restart
  start_proc "primary.$1" "$LOAD_CPU" "$SLUICE" mock --listen "127.0.0.1:$PRIMARY_PORT" \
    --fail-ratio 0.5 --fail-status 500
  start_proc "staller.$1" "$LOAD_CPU" "$SLUICE" mock --listen "127.0.0.1:$STALLER_PORT" \
    --stall-ratio 0.25 --stall-ms "$STALL_MS"
  start_proc "backup.$1" "$LOAD_CPU" "$SLUICE" mock --listen "127.0.0.1:$BACKUP_PORT"
  # GET /v1/models is not a chat request: it does not move the mocks' counters.
  for p in $PRIMARY_PORT $STALLER_PORT $BACKUP_PORT; do
    wait_http "http://127.0.0.1:$p/v1/models" 10
  done
}
stop_mocks() { stop_proc "primary.$1"; stop_proc "staller.$1"; stop_proc "backup.$1"; }

write_config() { # write_config CONFIG DIR — fill in bench/fault-CONFIG.toml; print its path
  mkdir -p "$2"
  sed -e "s|@PRIMARY_URL@|http://127.0.0.1:$PRIMARY_PORT/v1|" \
      -e "s|@STALLER_URL@|http://127.0.0.1:$STALLER_PORT/v1|" \
      -e "s|@BACKUP_URL@|http://127.0.0.1:$BACKUP_PORT/v1|" \
      -e "s|@STORE_PATH@|$2/sluice.db|" "$HERE/fault-$1.toml" > "$2/sluice.toml"
  echo "$2/sluice.toml"
}

load1() { awk '{print $1}' /proc/loadavg; }
quiet_gate() { # wait (bounded) for the 1-minute load average to fall below QUIET_LOAD
  local waited=0 l
  while :; do
    l=$(load1)
    awk -v l="$l" -v q="$QUIET_LOAD" 'BEGIN{exit !(l < q)}' && { log "load $l"; return 0; }
    if [ "$waited" -ge "$QUIET_WAIT" ]; then
      log "WARNING: load still $l after ${QUIET_WAIT}s; measuring anyway"; return 0
    fi
    log "load $l >= $QUIET_LOAD; waiting ($waited/${QUIET_WAIT}s)"
    sleep 30; waited=$((waited + 30))
  done
}

order() { # order RUN -> the configurations, rotated by one per run
  local -a cs=($CONFIGS); local n=${#cs[@]} i out=""
  for i in $(seq 0 $((n - 1))); do out="$out ${cs[$(((i + $1 - 1) % n))]}"; done
  echo $out
}

# ---------------------------------------------------------------- setup
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "repository HEAD at run time: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) (working tree: $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) changed/untracked paths)"
  echo "kernel: $(uname -r); cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/\s\+/ /g'); mem: $(awk '/MemTotal/{print int($2/1024)" MiB"}' /proc/meminfo)"
  echo "rustc: $(rustc --version)"
  echo "oha: $(oha --version | head -1)"
  echo "sluice binary: $SLUICE ($(stat -c '%y' "$SLUICE"), sha256 $(sha256sum "$SLUICE" | cut -c1-16))"
  echo "pinning: Sluice on cpu $GW_CPU; mocks and load generator on cpu $LOAD_CPU"
  echo "runs: $RUNS; configurations: $CONFIGS; $REQUESTS requests at concurrency $CONC (oha, closed loop, non-streaming)"
  echo "mocks: primary fails 1 in 2 with 500; staller stalls 1 in 4 for $STALL_MS ms; backup healthy"
  echo "Sluice: auth with a virtual key, request records to SQLite, SLUICE_LOG=$SLUICE_LOG (JSON)"
  echo "uptime at start: $(uptime)"
} > "$OUT/env.txt"
git -C "$ROOT" status --porcelain > "$OUT/git-status.txt" 2>/dev/null || true
log "results -> $OUT"

# A configuration the build does not accept is reported once and skipped.
RUNNABLE=""
for c in $CONFIGS; do
  cfg=$(write_config "$c" "$OUT/work/$c.check")
  if "$SLUICE" --config "$cfg" check-config > "$OUT/logs/check-$c.out" 2>&1; then
    RUNNABLE="$RUNNABLE $c"
  else
    log "NOT RUN: $c — this sluice refuses bench/fault-$c.toml (expected on a build without the settings it uses, e.g. the routing settings of fault-routed.toml); the other configurations still run. sluice check-config says:"
    sed 's/^/    /' "$OUT/logs/check-$c.out" | head -20 >&2
    $SUM skip "$RES" "$c" "$OUT/logs/check-$c.out"
  fi
done
CONFIGS=$(echo $RUNNABLE)

BODY='{"model":"chat","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one sentence about benchmarking gateways."}],"max_tokens":64,"temperature":0}'

# ---------------------------------------------------------------- runs
for r in $(seq 1 "$RUNS"); do
  [ -n "$CONFIGS" ] || break
  for c in $(order "$r"); do
    tag=$c.$r
    dir=$OUT/work/$tag
    cfg=$(write_config "$c" "$dir")
    key=$("$SLUICE" --config "$cfg" keys create --name fault-bench --json 2> "$OUT/logs/key.$tag.log" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
    quiet_gate
    start_mocks "$tag"
    start_proc "sluice.$tag" "$GW_CPU" "$SLUICE" --config "$cfg" serve --listen "127.0.0.1:$GW_PORT"
    if ! wait_http "http://127.0.0.1:$GW_PORT/ready" 30; then
      log "NOT RUN: $c run $r — Sluice did not become ready (see $OUT/logs/sluice.$tag.log)"
      stop_proc "sluice.$tag"; stop_mocks "$tag"
      $SUM skip "$RES" "$c" "$OUT/logs/sluice.$tag.log" "$r"
      continue
    fi
    log "run $r: $c, $REQUESTS requests at c=$CONC"
    l0=$(load1); t0=$(date +%s.%N)
    taskset -c "$LOAD_CPU" oha --no-tui --output-format json -n "$REQUESTS" -c "$CONC" \
      -m POST -T application/json -H "authorization: Bearer $key" -d "$BODY" \
      "http://127.0.0.1:$GW_PORT/v1/chat/completions" > "$OUT/raw/oha.$tag.json" \
      2> "$OUT/raw/oha.$tag.err" || true
    t1=$(date +%s.%N)
    # A graceful stop writes every queued record before the process exits.
    stop_proc "sluice.$tag"
    stop_mocks "$tag"
    "$SLUICE" --config "$cfg" logs --json -n "$REQUESTS" > "$OUT/raw/records.$tag.jsonl" \
      2> "$OUT/raw/records.$tag.err" || true
    $SUM record "$RES" "$c" "$r" "$OUT/raw/oha.$tag.json" "$OUT/raw/records.$tag.jsonl" \
      "$REQUESTS" "$CONC" "$l0" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')"
    sleep 1
  done
done

cleanup
$SUM table "$RES" | tee "$OUT/table.md"
log "raw results: $OUT"
