#!/usr/bin/env bash
# bench/field.sh — the public field board's metrics ("The field beyond what runs here" in
# ../shared/BENCHMARKS.md), measured here side by side in one run: direct to the mock, Sluice,
# and the Portkey gateway, alternating which target goes first, each measurement RUNS times.
#
#   bench/field.sh [options]
#
# Setup as bench/run.sh: Sluice on cpu 0; mocks and load generators on cpu 1 (taskset); the
# shared mock (and sse-probe) from $SHARED_BENCH/mock-upstream built into bench/.target; oha
# installed with `cargo install oha --locked` when missing; bench/field-probe (a small
# streaming client that times every SSE frame) built into bench/.target; Portkey installed
# and started as ../shared/bench/run-peers.sh does (npm in $SHARED_BENCH, `node
# node_modules/@portkey-ai/gateway/build/start-server.js --headless`, pinned to cpu 0 like
# Sluice, upstream chosen per request by x-portkey-custom-host). Sluice runs with what the
# product runs with: virtual-key auth (a key from `sluice keys create`), one request record per
# request written to SQLite, JSON logs at SLUICE_LOG=info, and admission (--admission,
# default memory: a monthly budget, a requests- and a tokens-per-minute limit on every key, far
# above the load, so every request is reserved and settled and none is refused).
#
# Mocks: "fast" (no delay, 8 deltas, no pacing) and "paced" (MOCK_CHUNKS=64,
# MOCK_CHUNK_DELAY_MS=20: the deltas 20 ms apart), each on its own port. Sluice routes model
# mock-fast to the fast mock and mock-slow to the paced one.
#
# Figures (--figures, default "c1 frontier stream memory"):
#   c1        added latency at concurrency 1: oha closed loop, one request at a time, -n
#             C1_REQUESTS (3000, 10 s timeout each) after 200 warm-up requests; p50 and p99
#             of each target, and gateway minus direct, per run
#   frontier  one concurrency sweep (--sweep, default 1 2 4 8 16 32 64 128 256), oha closed
#             loop, --step-secs (5) per step; every step published (c, req/s of 200s, p50,
#             p99, errors); the frontier at B ms (--bounds, default 1 5 10 20 50 100) is the most
#             req/s of a step with p99 <= B ms and no error (20 ms is the board's published
#             column). A target's sweep stops after the first step whose p99 exceeds the
#             largest bound (no later step can count)
#   stream    (a) time to first content frame at concurrency 1: bench/field-probe, fast mock,
#             --ttfc-streams (2000) streams after 20 warm-up; (b) inter-frame gap p50/p99 at
#             concurrency 1 against the paced mock, --gap-streams (20) streams ((a) and (b)
#             stop after 120 s at most; a stream fails after 30 s without an end); (c) concurrent
#             streams sustained: --stream-steps (10 50 100 500 1000 2000) streams, opened over
#             --ramp-secs (2) and each worker re-opening its stream as soon as it ends, for
#             --stream-secs (10); a step passes when every stream ended with [DONE], carried
#             every delta of the mock, and no frame (nor the first) came more than --stall-ms
#             (200 = 10x the pacing) after the one before; the sweep stops at the first
#             failing step. The figure is the largest passing step
#   memory    a fresh process per target and run (direct: a fresh fast mock): RSS (VmRSS
#             summed over the process tree) 2 s after it answers its readiness URL, before any
#             request; then a fixed load of --mem-rate (200) req/s for --mem-secs (60)
#             (oha --latency-correction, c=8) with RSS sampled every second: the last sample
#             is the steady RSS, the least-squares slope over the load's second half its
#             growth rate; RSS again --mem-after (10) s after the load stops
#
# Options:
#   --runs N             repetitions of each measurement (default 2)
#   --targets LIST       comma list among direct,sluice,portkey (default all three)
#   --figures "..."      subset of "c1 frontier stream memory"
#   --c1-requests N      (3000)       --sweep "C..."        --step-secs S (5)
#   --bounds "MS..."     (1 5 10 20 50 100)
#   --ttfc-streams N     (2000)       --gap-streams N (20)  --stream-steps "N..."
#   --stream-secs S      (10)         --ramp-secs S (2)     --stall-ms MS (200)
#   --mem-rate R         (200)        --mem-secs S (60)     --mem-after S (10)
#   --admission MODE     memory (default), redis or off
#   --quiet-load L       wait before each figure for the 1-minute load average to fall below L
#                        (default 0.5), --quiet-wait S at most (default 600; 0: do not wait)
#   --no-build           use the binaries as they are
#   --out DIR            results directory (default bench/results/field-<timestamp>)
# Environment: SLUICE_BIN (default target/release/sluice), MOCK_BIN and PROBE_BIN (default
# bench/.target/release/{mock-upstream,field-probe}), SHARED_BENCH (default ../shared/bench).
#
# Output: DIR/table.md (the summary table, ready to paste, then every run and every sweep step
# in full), DIR/results.jsonl (one record per measurement, with the load average and the
# foreign CPU seen), DIR/raw/ (oha and field-probe JSON, RSS samples), DIR/logs/, DIR/env.txt
# (commit, binaries, versions, the exact command). Everything binds 127.0.0.1; every load is
# bounded in time or count; every process started here is stopped by its process group on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT"
COMMAND="$0 $*"

RUNS=2
TARGETS=direct,sluice,portkey
FIGURES="c1 frontier stream memory"
C1_N=3000
SWEEP="1 2 4 8 16 32 64 128 256"
STEP_SECS=5
BOUNDS="1 5 10 20 50 100"
TTFC_N=2000
GAP_N=20
STREAM_STEPS="10 50 100 500 1000 2000"
STREAM_SECS=10
RAMP_SECS=2
STALL_MS=200
MEM_RATE=200
MEM_SECS=60
MEM_AFTER=10
ADMISSION=memory
QUIET_LOAD=0.5
QUIET_WAIT=600
BUILD=1
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --figures) FIGURES=$2; shift 2 ;;
    --c1-requests) C1_N=$2; shift 2 ;;
    --sweep) SWEEP=$2; shift 2 ;;
    --step-secs) STEP_SECS=$2; shift 2 ;;
    --bounds) BOUNDS=$2; shift 2 ;;
    --ttfc-streams) TTFC_N=$2; shift 2 ;;
    --gap-streams) GAP_N=$2; shift 2 ;;
    --stream-steps) STREAM_STEPS=$2; shift 2 ;;
    --stream-secs) STREAM_SECS=$2; shift 2 ;;
    --ramp-secs) RAMP_SECS=$2; shift 2 ;;
    --stall-ms) STALL_MS=$2; shift 2 ;;
    --mem-rate) MEM_RATE=$2; shift 2 ;;
    --mem-secs) MEM_SECS=$2; shift 2 ;;
    --mem-after) MEM_AFTER=$2; shift 2 ;;
    --admission) ADMISSION=$2; shift 2 ;;
    --quiet-load) QUIET_LOAD=$2; shift 2 ;;
    --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$HERE/field.sh"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a TLIST <<<"$TARGETS"
for t in "${TLIST[@]}"; do
  case "$t" in direct|sluice|portkey) ;; *) echo "unknown target: $t" >&2; exit 2 ;; esac
done
case "$ADMISSION" in off|memory|redis) ;; *) echo "--admission must be off, memory or redis" >&2; exit 2 ;; esac
has() { case ",$TARGETS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
has_fig() { case " $FIGURES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
has direct || { echo "--targets must include direct (every figure is taken against it)" >&2; exit 2; }

SHARED_BENCH=$(cd "${SHARED_BENCH:-$ROOT/../shared/bench}" && pwd)
MOCK_SRC=$SHARED_BENCH/mock-upstream
BT=$HERE/.target
MOCK_BIN=${MOCK_BIN:-$BT/release/mock-upstream}
PROBE_BIN=${PROBE_BIN:-$BT/release/field-probe}
SLUICE=${SLUICE_BIN:-$ROOT/target/release/sluice}
PORTKEY_JS=$SHARED_BENCH/node_modules/@portkey-ai/gateway/build/start-server.js
export PATH="$HOME/.cargo/bin:$PATH"
export SLUICE_LOG=info

OUT=${OUT:-$HERE/results/field-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/logs" "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
RES=$OUT/results.jsonl
: > "$RES"
SUM="python3 $HERE/field_summary.py"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

GW_CPU=0
LOAD_CPU=1
FAST_PORT=18200   # mock: no delay, no pacing
PACED_PORT=18201  # mock: 64 deltas, 20 ms apart
MEM_PORT=18202    # a fresh fast mock per memory run (direct's own process)
GW_PORT=18210     # Sluice
PK_PORT=18220     # Portkey

# ---------------------------------------------------------------- build / install
if [ "$BUILD" = 1 ]; then
  OHA_JOB=""
  if ! command -v oha >/dev/null; then
    log "installing oha in the background (cargo install oha --locked; several minutes)"
    cargo install oha --locked -q > "$OUT/logs/oha-install.log" 2>&1 &
    OHA_JOB=$!
  fi
  if has sluice && [ -z "${SLUICE_BIN:-}" ]; then
    log "building sluice (release)"
    cargo build --release -q -p sluice-cli
  fi
  log "building mock-upstream from $MOCK_SRC and field-probe"
  cargo build --release -q --manifest-path "$MOCK_SRC/Cargo.toml" --target-dir "$BT"
  cargo build --release -q --manifest-path "$HERE/field-probe/Cargo.toml" --target-dir "$BT"
  if has portkey && [ ! -f "$PORTKEY_JS" ]; then
    log "installing @portkey-ai/gateway in $SHARED_BENCH (npm, versions from its package.json)"
    (cd "$SHARED_BENCH" && npm install --no-audit --no-fund -s)
  fi
  if [ -n "$OHA_JOB" ]; then
    log "waiting for the oha install"
    wait "$OHA_JOB" || { echo "oha install failed: see $OUT/logs/oha-install.log" >&2; exit 1; }
  fi
fi
for b in "$MOCK_BIN" "$PROBE_BIN" $(has sluice && echo "$SLUICE"); do
  [ -x "$b" ] || { echo "missing $b (run without --no-build)" >&2; exit 1; }
done
command -v oha >/dev/null || { echo "missing oha (run without --no-build)" >&2; exit 1; }
if has portkey && [ ! -f "$PORTKEY_JS" ]; then
  echo "missing $PORTKEY_JS (run without --no-build, or --targets direct,sluice)" >&2; exit 1
fi
for p in $FAST_PORT $PACED_PORT $MEM_PORT $GW_PORT $PK_PORT; do
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$p/"; then
    echo "port $p on 127.0.0.1 is in use: is another benchmark running?" >&2; exit 1
  fi
done

# A gateway holds 2 descriptors per stream (client and upstream).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

# ---------------------------------------------------------------- processes
declare -A PID=()
start_proc() { # start_proc NAME CPU CMD... — own process group (setsid), pinned, logs in logs/
  local name=$1 cpu=$2; shift 2
  setsid taskset -c "$cpu" "$@" >> "$OUT/logs/$name.out" 2>> "$OUT/logs/$name.log" < /dev/null &
  PID[$name]=$!
}
stop_proc() { # stop_proc NAME — TERM the group, KILL after 10 s
  local name=$1 p=${PID[$1]:-}
  [ -n "$p" ] || return 0
  kill -TERM -- "-$p" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "PID[$name]"
}
SAMPLER=""
LOAD=""
run_load() { # run_load CMD... — in the background and waited for, so a signal stops it at once
  "$@" &
  LOAD=$!
  wait "$LOAD" || true
  LOAD=""
}
cleanup() {
  local n
  [ -z "$LOAD" ] || { kill "$LOAD" 2>/dev/null || true; wait "$LOAD" 2>/dev/null || true; }
  [ -z "$SAMPLER" ] || { kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; }
  for n in "${!PID[@]}"; do stop_proc "$n"; done
}
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

start_mock() { # start_mock NAME PORT CHUNKS CHUNK_DELAY_MS
  MOCK_ADDR=127.0.0.1:$2 MOCK_THREADS=1 MOCK_DELAY_MS=0 MOCK_CHUNKS=$3 MOCK_CHUNK_DELAY_MS=$4 \
    start_proc "$1" "$LOAD_CPU" "$MOCK_BIN"
  wait_http "http://127.0.0.1:$2/health" 10
}

ready_url() { # ready_url TARGET — what answers once the process is ready
  case "$1" in
    sluice) echo "http://127.0.0.1:$GW_PORT/ready" ;;
    portkey) echo "http://127.0.0.1:$PK_PORT/" ;;
  esac
}

start_gateway() { # start_gateway TARGET — Sluice or Portkey on cpu 0, waits until ready
  case "$1" in
    sluice) start_proc sluice "$GW_CPU" "$SLUICE" --config "$CFG" serve --listen "127.0.0.1:$GW_PORT" ;;
    portkey) start_proc portkey "$GW_CPU" env -C "$SHARED_BENCH" NODE_ENV=production node \
               "$PORTKEY_JS" --port="$PK_PORT" --headless ;;
  esac
  wait_http "$(ready_url "$1")" 60
}

tree_pids() { # tree_pids PID — PID and its descendants
  local p=$1 c
  echo "$p"
  for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do tree_pids "$c"; done
}
rss_kb() { # rss_kb PID — VmRSS summed over the process tree, KiB
  local n=0 p v
  for p in $(tree_pids "$1"); do
    v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || true)
    n=$((n + ${v:-0}))
  done
  echo "$n"
}
hwm_kb() { # hwm_kb PID — VmHWM summed over the process tree, KiB
  local n=0 p v
  for p in $(tree_pids "$1"); do
    v=$(awk '/^VmHWM:/{print $2}' "/proc/$p/status" 2>/dev/null || true)
    n=$((n + ${v:-0}))
  done
  echo "$n"
}
ticks() { # ticks PID — utime+stime over the process tree
  local n=0 p v
  for p in $(tree_pids "$1"); do
    v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true)
    n=$((n + ${v:-0}))
  done
  echo "$n"
}

# ---------------------------------------------------------------- noise bookkeeping
CLK=$(getconf CLK_TCK)
load1() { awk '{print $1}' /proc/loadavg; }
machine_busy() { awk '/^cpu /{print $2 + $3 + $4}' /proc/stat; }
children_ticks() { # CPU of this shell's reaped children (load generators), in ticks
  times > "$OUT/.times"
  awk -v clk="$CLK" 'NR==2{ t=0; for(i=1;i<=2;i++){ split($i,a,"m"); sub("s","",a[2]); t+=a[1]*60+a[2] } printf "%d\n", t*clk }' "$OUT/.times"
}
our_ticks() {
  local n=0 p
  for p in "${PID[@]}"; do n=$((n + $(ticks "$p"))); done
  echo $((n + $(children_ticks)))
}
mark() { M_BUSY=$(machine_busy); M_OURS=$(our_ticks); M_T0=$(date +%s.%N); }
foreign() { # cores of CPU used by other work since mark
  local b o t1
  b=$(machine_busy); o=$(our_ticks); t1=$(date +%s.%N)
  awk -v b=$((b - M_BUSY)) -v o=$((o - M_OURS)) -v t0="$M_T0" -v t1="$t1" -v clk="$CLK" \
    'BEGIN{ dt=t1-t0; if (dt < 1) { print "null"; exit } f=(b-o)/(dt*clk); if (f<0) f=0; printf "%.2f\n", f }'
}
quiet_gate() { # wait (bounded) for the 1-minute load average to fall below QUIET_LOAD
  local waited=0 l
  while :; do
    l=$(load1)
    awk -v l="$l" -v q="$QUIET_LOAD" 'BEGIN{exit !(l < q)}' && { log "load $l"; return 0; }
    if [ "$waited" -ge "$QUIET_WAIT" ]; then
      log "WARNING: load $l >= $QUIET_LOAD after ${QUIET_WAIT}s; measuring anyway (noisy)"; return 0
    fi
    log "load $l >= $QUIET_LOAD; waiting ($waited/${QUIET_WAIT}s)"
    sleep 30; waited=$((waited + 30))
  done
}
rec() { # rec KEY=VALUE... — append one record (adds the load average and the foreign CPU)
  $SUM record "$RES" "load1=$(load1)" "foreign_cores=$(foreign)" "$@"
}

order() { # order RUN — the targets, rotated by one per run so each goes first in turn
  local n=${#TLIST[@]} i out=()
  for i in $(seq 0 $((n - 1))); do out+=("${TLIST[$(((i + $1 - 1) % n))]}"); done
  echo "${out[*]}"
}

# ---------------------------------------------------------------- targets
WORK=$OUT/work
export MOCK_FAST_URL=http://127.0.0.1:$FAST_PORT/v1 MOCK_SLOW_URL=http://127.0.0.1:$PACED_PORT/v1
if has sluice; then
  CFG=$(SLUICE_BIN=$SLUICE "$HERE/sluice-target.sh" config "$WORK/sluice")
  KEY=$(SLUICE_BIN=$SLUICE "$HERE/sluice-target.sh" key "$WORK/sluice")
  if [ "$ADMISSION" != off ]; then
    # As bench/run.sh --admission: three limits per key, far above the load.
    {
      echo ""
      echo "[budgets]"
      echo "counters = \"$ADMISSION\""
      if [ "$ADMISSION" = redis ]; then
        echo "redis_url = \"${SLUICE_BENCH_REDIS:-redis://127.0.0.1:6379}\""
        echo "redis_prefix = \"{sluice-field-$$}:\""
      fi
    } >> "$CFG"
    {
      "$SLUICE" --config "$CFG" budgets set 'key:*' --usd 1000000 --period month
      "$SLUICE" --config "$CFG" budgets set 'key:*' --rpm 100000000
      "$SLUICE" --config "$CFG" budgets set 'key:*' --tpm 100000000000
      "$SLUICE" --config "$CFG" budgets show
    } > "$OUT/logs/budgets.txt" 2>&1
  fi
fi

upstream() { # upstream fast|paced|mem — the mock's OpenAI base URL
  case "$1" in
    fast) echo "http://127.0.0.1:$FAST_PORT/v1" ;;
    paced) echo "http://127.0.0.1:$PACED_PORT/v1" ;;
    mem) echo "http://127.0.0.1:$MEM_PORT/v1" ;;
  esac
}
url_of() { # url_of TARGET UPSTREAM
  case "$1" in
    direct) echo "$(upstream "$2")/chat/completions" ;;
    sluice) echo "http://127.0.0.1:$GW_PORT/v1/chat/completions" ;;
    portkey) echo "http://127.0.0.1:$PK_PORT/v1/chat/completions" ;;
  esac
}
model_of() { [ "$1" = paced ] && echo mock-slow || echo mock-fast; }  # Sluice's aliases
headers() { # headers TARGET UPSTREAM — sets HDR to the -H arguments of the target
  case "$1" in
    direct) HDR=(-H "authorization: Bearer sk-fake") ;;
    sluice) HDR=(-H "authorization: Bearer $KEY") ;;
    portkey) HDR=(-H "authorization: Bearer sk-fake" -H "x-portkey-provider: openai"
                  -H "x-portkey-custom-host: $(upstream "$2")") ;;
  esac
}
body() { # body MODEL [stream]
  local s=""; [ "${2:-}" = stream ] && s=',"stream":true'
  printf '{"model":"%s","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one sentence about benchmarking gateways."}],"max_tokens":64,"temperature":0%s}' "$1" "$s"
}
oha_run() { # oha_run OUTFILE TARGET UPSTREAM oha-args...
  local f=$1 t=$2 u=$3; shift 3
  headers "$t" "$u"
  run_load taskset -c "$LOAD_CPU" oha --no-tui --output-format json -m POST -T application/json \
    "${HDR[@]}" -d "$(body "$(model_of "$u")")" "$@" "$(url_of "$t" "$u")" > "$f" 2> "$f.err"
}
probe_run() { # probe_run OUTFILE TARGET UPSTREAM field-probe-args...
  local f=$1 t=$2 u=$3; shift 3
  headers "$t" "$u"
  run_load taskset -c "$LOAD_CPU" "$PROBE_BIN" --url "$(url_of "$t" "$u")" "${HDR[@]}" \
    --body "$(body "$(model_of "$u")" stream)" "$@" > "$f" 2> "$f.err"
}
gw_pid() { # gw_pid TARGET UPSTREAM — the process the target's figures are of (direct: the mock)
  case "$1" in direct) echo "${PID[mock-$2]}" ;; *) echo "${PID[$1]}" ;; esac
}

sanity() { # sanity TARGET — one plain and one streaming request, through both mocks
  local u
  for u in fast paced; do
    headers "$1" "$u"
    curl -sf --max-time 20 "${HDR[@]}" -H 'content-type: application/json' \
      --data "$(body "$(model_of "$u")")" "$(url_of "$1" "$u")" > "$OUT/logs/sample.$1.$u.json" &&
    grep -q '"choices"' "$OUT/logs/sample.$1.$u.json" &&
    curl -sfN --max-time 20 "${HDR[@]}" -H 'content-type: application/json' \
      --data "$(body "$(model_of "$u")" stream)" "$(url_of "$1" "$u")" > "$OUT/logs/sample.$1.$u.sse" &&
    grep -q '\[DONE\]' "$OUT/logs/sample.$1.$u.sse" ||
      { echo "$1: a sanity request through the $u mock failed (see $OUT/logs/sample.$1.*)" >&2; return 1; }
  done
}

# ---------------------------------------------------------------- env
REV=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo '?')
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $REV ($(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) changed/untracked paths)"
  echo "command: $COMMAND"
  echo "kernel: $(uname -r); cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/\s\+/ /g'); mem: $(awk '/MemTotal/{print int($2/1024)" MiB"}' /proc/meminfo)"
  echo "oha: $(oha --version | head -1)"
  has sluice && echo "sluice binary: $SLUICE ($(stat -c '%y' "$SLUICE"), sha256 $(sha256sum "$SLUICE" | cut -c1-16))"
  has portkey && echo "portkey-gateway: $(cd "$SHARED_BENCH" && node -p 'require("./node_modules/@portkey-ai/gateway/package.json").version' 2>/dev/null); node $(node --version)"
  echo "pinning: gateways on cpu $GW_CPU; mocks and load generators on cpu $LOAD_CPU; ulimit -n $NOFILE"
  echo "targets: $TARGETS; runs: $RUNS; figures: $FIGURES"
  echo "c1: $C1_N requests; sweep: c = $SWEEP, ${STEP_SECS}s each; bounds: $BOUNDS ms"
  echo "stream: $TTFC_N streams (ttfc), $GAP_N streams (gaps, 64 deltas 20 ms apart), steps $STREAM_STEPS for ${STREAM_SECS}s (ramp ${RAMP_SECS}s), stall ${STALL_MS} ms"
  echo "memory: $MEM_RATE req/s for ${MEM_SECS}s, RSS ${MEM_AFTER}s after"
  has sluice && echo "Sluice: auth with a virtual key, request records to SQLite, SLUICE_LOG=$SLUICE_LOG (JSON), admission: $ADMISSION"
  echo "uptime at start: $(uptime)"
} > "$OUT/env.txt"
git -C "$ROOT" status --porcelain > "$OUT/git-status.txt" 2>/dev/null || true
log "results -> $OUT"

# ---------------------------------------------------------------- start
start_mock mock-fast "$FAST_PORT" 8 0
start_mock mock-paced "$PACED_PORT" 64 20
for t in "${TLIST[@]}"; do
  [ "$t" = direct ] && continue
  start_gateway "$t"
  log "$t pid ${PID[$t]} on cpu $GW_CPU"
done
for t in "${TLIST[@]}"; do sanity "$t"; done

# How many content deltas the paced mock sends (it splits a fixed text into MOCK_CHUNKS
# pieces, rounding): a stream with fewer lost a frame.
probe_run "$OUT/raw/calibrate.json" direct paced -n 1
EXPECT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["content_frames"]["max"])' "$OUT/raw/calibrate.json" 2>/dev/null || echo 0)
[ "$EXPECT" -gt 0 ] || { echo "the paced mock sent no content frame" >&2; exit 1; }
log "the paced mock sends $EXPECT content deltas per stream"
echo "paced mock: MOCK_CHUNKS=64 gives $EXPECT content deltas per stream" >> "$OUT/env.txt"

log "warm-up"
for t in "${TLIST[@]}"; do
  oha_run "$OUT/raw/warm.$t.json" "$t" fast -z 3s -c 16
done

# ---------------------------------------------------------------- c1
if has_fig c1; then
  quiet_gate
  for r in $(seq 1 "$RUNS"); do
    for t in $(order "$r"); do
      log "c1 run $r: $t, $C1_N requests one at a time"
      oha_run "$OUT/raw/c1-warm.$t.$r.json" "$t" fast -n 200 -c 1 -t 10s
      f="$OUT/raw/c1.$t.$r.json"
      p=$(gw_pid "$t" fast); c0=$(ticks "$p"); mark
      oha_run "$f" "$t" fast -n "$C1_N" -c 1 -t 10s
      rec fig=c1 target="$t" run="$r" kind=oha file="$f" cpu_ticks=$(($(ticks "$p") - c0)) clk="$CLK"
    done
  done
fi

# ---------------------------------------------------------------- frontier
if has_fig frontier; then
  quiet_gate
  MAXB=$(echo "$BOUNDS" | tr ' ' '\n' | sort -n | tail -1)
  for r in $(seq 1 "$RUNS"); do
    for t in $(order "$r"); do
      for c in $SWEEP; do
        log "frontier run $r: $t, c=$c ${STEP_SECS}s"
        f="$OUT/raw/sweep.$t.$r.c$c.json"; mark
        oha_run "$f" "$t" fast -z "${STEP_SECS}s" -c "$c" -w
        rec fig=sweep target="$t" run="$r" conc="$c" kind=oha file="$f"
        p99=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1]).get("p99_ms") or 1e9)' "$RES")
        if awk -v a="$p99" -v b="$MAXB" 'BEGIN{exit !(a > b)}'; then
          log "frontier run $r: $t p99 ${p99} ms > ${MAXB} ms at c=$c: sweep stops"
          break
        fi
        sleep 1
      done
    done
  done
fi

# ---------------------------------------------------------------- stream
if has_fig stream; then
  quiet_gate
  for r in $(seq 1 "$RUNS"); do
    for t in $(order "$r"); do
      log "stream run $r: $t, time to first content frame, $TTFC_N streams one at a time"
      f="$OUT/raw/ttfc.$t.$r.json"; mark
      probe_run "$f" "$t" fast -n "$TTFC_N" -c 1 --warmup 20 --stall-ms "$STALL_MS" --duration 120
      rec fig=ttfc target="$t" run="$r" kind=probe file="$f"
    done
  done
  for r in $(seq 1 "$RUNS"); do
    for t in $(order "$r"); do
      log "stream run $r: $t, inter-frame gaps, $GAP_N paced streams one at a time"
      f="$OUT/raw/gap.$t.$r.json"; mark
      probe_run "$f" "$t" paced -n "$GAP_N" -c 1 --warmup 2 --stall-ms "$STALL_MS" \
        --expect-content "$EXPECT" --duration 120
      rec fig=gap target="$t" run="$r" kind=probe file="$f"
    done
  done
  for r in $(seq 1 "$RUNS"); do
    for t in $(order "$r"); do
      for s in $STREAM_STEPS; do
        if [ "$t" != direct ] && [ $((2 * s + 200)) -gt "$NOFILE" ]; then
          log "stream run $r: $t: $s streams need $((2 * s)) descriptors (ulimit -n $NOFILE): not run"
          rec fig=streams target="$t" run="$r" conc="$s" skipped="ulimit -n $NOFILE"
          break
        fi
        log "stream run $r: $t, $s concurrent paced streams for ${STREAM_SECS}s"
        f="$OUT/raw/streams.$t.$r.s$s.json"
        p=$(gw_pid "$t" paced); mark
        # Peak RSS of the step: VmRSS sampled every second while it runs.
        ( peak=0; while :; do v=$(rss_kb "$p"); [ "$v" -gt "$peak" ] && peak=$v;
            echo "$peak" > "$f.rss"; sleep 1; done ) &
        SAMPLER=$!
        probe_run "$f" "$t" paced -c "$s" --duration "$STREAM_SECS" --ramp "$RAMP_SECS" \
          --stall-ms "$STALL_MS" --expect-content "$EXPECT" --timeout 30
        kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
        rec fig=streams target="$t" run="$r" conc="$s" kind=probe file="$f" \
          peak_rss_kb="$(cat "$f.rss" 2>/dev/null || echo null)"
        pass=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1]).get("pass", False))' "$RES")
        sleep 2
        if [ "$pass" != True ]; then
          log "stream run $r: $t failed at $s streams: sweep stops"
          break
        fi
      done
    done
  done
fi

# ---------------------------------------------------------------- memory
if has_fig memory; then
  # A fresh process per target and run: the gateways of the figures above go first.
  for t in "${TLIST[@]}"; do [ "$t" = direct ] || stop_proc "$t"; done
  quiet_gate
  for r in $(seq 1 "$RUNS"); do
    for t in $(order "$r"); do
      if [ "$t" = direct ]; then
        start_mock mock-mem "$MEM_PORT" 8 0; name=mock-mem; ups=mem
      else
        start_gateway "$t"; name=$t; ups=fast
      fi
      p=${PID[$name]}
      sleep 2
      idle=$(rss_kb "$p")
      log "memory run $r: $t idle RSS $idle KiB; $MEM_RATE req/s for ${MEM_SECS}s"
      f="$OUT/raw/mem.$t.$r.json"; samples="$OUT/raw/mem.$t.$r.samples"; : > "$samples"
      ( t0=$(date +%s.%N); while :; do
          echo "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{printf "%.2f", a-b}') $(rss_kb "$p")" >> "$samples"
          sleep 1; done ) &
      SAMPLER=$!
      mark
      oha_run "$f" "$t" "$ups" -z "${MEM_SECS}s" -c 8 -q "$MEM_RATE" --latency-correction -w
      kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
      sleep "$MEM_AFTER"
      after=$(rss_kb "$p")
      log "memory run $r: $t RSS $after KiB ${MEM_AFTER}s after the load"
      rec fig=memory target="$t" run="$r" kind=mem file="$f" samples="$samples" idle_kb="$idle" \
        after_kb="$after" peak_kb="$(hwm_kb "$p")" rate="$MEM_RATE"
      stop_proc "$name"
      sleep 1
    done
  done
fi

cleanup
$SUM table "$RES" "$OUT/env.txt" --bounds "$BOUNDS" | tee "$OUT/table.md"
log "raw results: $OUT"
