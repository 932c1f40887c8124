#!/usr/bin/env bash
# bench/run.sh — Sluice's benchmark: every figure side by side with direct calls to the same
# mock, in the same run, alternating direct / Sluice (method: ../shared/BENCHMARKS.md).
#
# One command, from the repository root or anywhere:
#   bench/run.sh [options]
#
# It builds Sluice (release) and the shared mock upstream + sse-probe (from
# $SHARED_BENCH/mock-upstream, default ../shared/bench, built into bench/.target), installs oha
# (`cargo install oha --locked`) when missing, starts the mocks on cpu 1 and Sluice on cpu 0
# (taskset; load generators on cpu 1), and measures:
#   1  added latency, non-streaming: oha --latency-correction at fixed rates (default 1000 and
#      200 req/s), c=32, 10 s, mock with 0 ms and 50 ms delay; p50/p99 direct vs Sluice
#   2  Sluice CPU per request: a fixed count (default 30000, closed loop c=32); utime+stime of
#      the Sluice PID from /proc/PID/stat before/after, divided by the count (the mock's CPU
#      per request measured the same way when it is called directly)
#   3  maximum throughput: closed loop c=64, 10 s; ratio Sluice / direct
#   4  streaming time to first event: sse-probe 1 at a time (2000 streams) and 16 concurrent
#      (10 s); p50/p99 direct vs Sluice (the 1-at-a-time load stops after 30 s at most)
#   5  RSS with N concurrent streams (default 10000) held open by a slow mock (an event every
#      HOLD_MS), opened by bench/hold_streams.py; a fresh Sluice per run; the mock alone is the
#      direct baseline. Sluice needs 2 descriptors per stream: when `ulimit -n` cannot be raised
#      to fit 2N, the largest N that fits is used and the table says so. Sluice answers a stream
#      once its first content event has arrived, HOLD_MS after the mock's opening event, so
#      streams open N/4 at a time: all are open after ~4 x HOLD_MS, well within the
#      10 x HOLD_MS a stream lasts
#   6  time from process start until /ready answers 200 (bench/start_ready.py, 20 starts per run;
#      the mock's start to /health as the baseline)
# each RUNS times (default 2), alternating which target goes first. What is on in Sluice:
# virtual-key auth (a key from `sluice keys create`), one request record per request written
# to SQLite, JSON logs on stderr at SLUICE_LOG=info; with --tracing, OpenTelemetry traces too;
# with --admission, budgets and rate limits too: every key gets a monthly spend budget, a
# requests-per-minute and a tokens-per-minute limit (`sluice budgets set key:* ...`, far above
# the load), counted in process (memory) or in the Redis at $SLUICE_BENCH_REDIS (default
# redis://127.0.0.1:6379).
#
# Before each figure it waits (up to --quiet-wait s, default 600, checking every 30 s) for the
# 1-minute load average to fall below --quiet-load (default 0.5), and records the load average
# and the foreign CPU (busy time of the machine not used by the processes of this benchmark)
# with every measurement.
#
# Options:
#   --runs N            repetitions (default 2)
#   --figures "1 2 .."  which figures (default "1 2 3 4 5 6")
#   --duration S        seconds per timed load (default 10)
#   --rates "R.."       fixed rates of figure 1 (default "1000 200")
#   --cpu-requests N    requests of figure 2 (default 30000)
#   --streams N         streams of figure 5 (default 10000)
#   --hold-ms MS        figure 5 mock: delay between SSE events (default 4000; 10 gaps)
#   --starts N          starts per run of figure 6 (default 20)
#   --quiet-load L      load average to wait for (default 0.5); --quiet-wait S (default 600)
#   --admission MODE    off (default), memory or redis: budgets and rate limits on every request
#   --tracing           Sluice exports every request's spans over OTLP/HTTP (`[telemetry]
#                       otlp_endpoint`) to bench/otlp_sink.py on cpu 1, which accepts them; run
#                       once without and once with it, alternating, for tracing's own overhead.
#                       Sluice's trace counters (exported / failed / shed) from /metrics go to
#                       logs/trace-counts.txt, the sink's counts to logs/otlp-sink.json
#   --store URL         keep keys, budgets and records in this Postgres database instead of the
#                       embedded SQLite file (a schema of its own per run, dropped at the end;
#                       psql must be on the PATH)
#   --no-journal        turn the local record journal off (`[store] journal_max_mb = 0`), to
#                       measure what it costs
#   --no-build          use the binaries as they are (SLUICE_BIN overrides target/release/sluice)
#   --out DIR           results directory (default bench/results/<timestamp>)
#
# Output: a markdown table on stdout (also DIR/table.md); raw JSON per measurement and
# DIR/results.jsonl; logs in DIR/logs/. Everything binds 127.0.0.1; every load is bounded in
# time or count; every process started here is stopped by its PID (process group) on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT"

RUNS=2
FIGURES="1 2 3 4 5 6"
DURATION=10
RATES="1000 200"
RATE_C=32
THR_C=64
CPU_N=30000
SSE1_N=2000
SSE_C=16
STREAMS=10000
HOLD_MS=4000
STARTS=20
QUIET_LOAD=0.5
QUIET_WAIT=600
BUILD=1
TRACING=0
OUT=""
ADMISSION=off
STORE_URL=""
JOURNAL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --figures) FIGURES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --cpu-requests) CPU_N=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --hold-ms) HOLD_MS=$2; shift 2 ;;
    --starts) STARTS=$2; shift 2 ;;
    --quiet-load) QUIET_LOAD=$2; shift 2 ;;
    --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --admission) ADMISSION=$2; shift 2 ;;
    --store) STORE_URL=$2; shift 2 ;;
    --no-journal) JOURNAL=0; shift ;;
    --tracing) TRACING=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$HERE/run.sh"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
MOCK_SRC=$SHARED_BENCH/mock-upstream
BT=$HERE/.target
MOCK_BIN=$BT/release/mock-upstream
PROBE_BIN=$BT/release/sse-probe
SLUICE=${SLUICE_BIN:-$ROOT/target/release/sluice}
export PATH="$HOME/.cargo/bin:$PATH"
export SLUICE_LOG=info

OUT=${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/logs" "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
RES=$OUT/results.jsonl
: > "$RES"
SUM="python3 $HERE/summarize.py"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

GW_CPU=0
LOAD_CPU=1
FAST_PORT=18100   # mock, no delay
SLOW_PORT=18101   # mock, SLOW_MS before the headers
SLOW_MS=50
HOLD_PORT=18102   # mock for figure 5: an SSE event every HOLD_MS
GW_PORT=18110     # Sluice for figures 1-4
GWH_PORT=18111    # Sluice for figure 5
SINK_PORT=18120   # OTLP sink for --tracing
GW_METRICS_PORT=18112  # Sluice's operators' listener (server.metrics_listen): /metrics for --tracing

# ---------------------------------------------------------------- build / install
if [ "$BUILD" = 1 ]; then
  OHA_JOB=""
  if ! command -v oha >/dev/null; then
    log "installing oha in the background (cargo install oha --locked; several minutes)"
    cargo install oha --locked -q > "$OUT/logs/oha-install.log" 2>&1 &
    OHA_JOB=$!
  fi
  log "building sluice (release)"
  cargo build --release -q -p sluice-cli
  log "building mock-upstream + sse-probe from $MOCK_SRC"
  cargo build --release -q --manifest-path "$MOCK_SRC/Cargo.toml" --target-dir "$BT"
  if [ -n "$OHA_JOB" ]; then
    log "waiting for the oha install"
    wait "$OHA_JOB" || { echo "oha install failed: see $OUT/logs/oha-install.log" >&2; exit 1; }
  fi
fi
for b in "$SLUICE" "$MOCK_BIN" "$PROBE_BIN"; do
  [ -x "$b" ] || { echo "missing $b (run without --no-build)" >&2; exit 1; }
done
command -v oha >/dev/null || { echo "missing oha (run without --no-build)" >&2; exit 1; }

# Figure 5 needs many descriptors: Sluice holds 2 per stream (client + upstream).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

# ---------------------------------------------------------------- processes
declare -A PID=()
start_proc() { # start_proc NAME CPU CMD... — own process group (setsid), pinned, logs in logs/
  local name=$1 cpu=$2; shift 2
  setsid taskset -c "$cpu" "$@" > "$OUT/logs/$name.out" 2> "$OUT/logs/$name.log" < /dev/null &
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

start_mock() { # start_mock NAME PORT DELAY_MS CHUNK_DELAY_MS
  MOCK_ADDR=127.0.0.1:$2 MOCK_THREADS=1 MOCK_DELAY_MS=$3 MOCK_CHUNK_DELAY_MS=$4 \
    start_proc "$1" "$LOAD_CPU" "$MOCK_BIN"
  wait_http "http://127.0.0.1:$2/health" 10
}

start_sluice() { # start_sluice NAME PORT CONFIG
  start_proc "$1" "$GW_CPU" "$SLUICE" --config "$3" serve --listen "127.0.0.1:$2"
  wait_http "http://127.0.0.1:$2/ready" 30
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- noise bookkeeping
CLK=$(getconf CLK_TCK)
load1() { awk '{print $1}' /proc/loadavg; }
machine_busy() { awk '/^cpu /{print $2 + $3 + $4}' /proc/stat; }  # user+nice+system, as run-peers.sh
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
      log "WARNING: load still $l after ${QUIET_WAIT}s; measuring anyway"; return 0
    fi
    log "load $l >= $QUIET_LOAD; waiting ($waited/${QUIET_WAIT}s)"
    sleep 30; waited=$((waited + 30))
  done
}

rec() { # rec KEY=VALUE... — append one record (adds load and foreign CPU)
  $SUM record "$RES" "load1=$(load1)" "foreign_cores=$(foreign)" "clk=$CLK" "$@"
}

order() { # order RUN -> the two targets, alternating which goes first
  if [ $(($1 % 2)) = 1 ]; then echo "direct sluice"; else echo "sluice direct"; fi
}

# ---------------------------------------------------------------- setup
WORK=$OUT/work
CFG=$(MOCK_FAST_URL=http://127.0.0.1:$FAST_PORT/v1 MOCK_SLOW_URL=http://127.0.0.1:$SLOW_PORT/v1 \
  "$HERE/sluice-target.sh" config "$WORK/main")
KEY=$(MOCK_FAST_URL=http://127.0.0.1:$FAST_PORT/v1 MOCK_SLOW_URL=http://127.0.0.1:$SLOW_PORT/v1 \
  "$HERE/sluice-target.sh" key "$WORK/main")
# Figure 5: "mock-slow" goes to the holding mock; same store layout, its own key.
HCFG=$(MOCK_FAST_URL=http://127.0.0.1:$FAST_PORT/v1 MOCK_SLOW_URL=http://127.0.0.1:$HOLD_PORT/v1 \
  "$HERE/sluice-target.sh" config "$WORK/hold")
HKEY=$(MOCK_FAST_URL=http://127.0.0.1:$FAST_PORT/v1 MOCK_SLOW_URL=http://127.0.0.1:$HOLD_PORT/v1 \
  "$HERE/sluice-target.sh" key "$WORK/hold")
DB=$WORK/main/sluice-data/bench.db
STORE_SAYS="records in SQLite ($DB)"
if [ -n "$STORE_URL" ]; then
  # A schema of its own, dropped on exit; each configuration points at it.
  SCHEMA=sluice_bench_$$
  psql -q "$STORE_URL" -c "CREATE SCHEMA $SCHEMA" > /dev/null
  trap 'cleanup; psql -q "$STORE_URL" -c "DROP SCHEMA $SCHEMA CASCADE" > /dev/null 2>&1 || true' EXIT
  PG_URL="$STORE_URL?options=-c%20search_path%3D$SCHEMA"
  for c in "$CFG" "$HCFG"; do
    sed -i "s|^path = \"sluice-data/bench.db\"\$|url = \"$PG_URL\"\njournal = \"sluice-data/journal\"|" "$c"
  done
  KEY=$("$SLUICE" --config "$CFG" keys create --name bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
  HKEY=$("$SLUICE" --config "$HCFG" keys create --name bench-hold --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
  STORE_SAYS="records in Postgres (schema $SCHEMA of $STORE_URL)"
fi
if [ "$JOURNAL" = 0 ]; then
  for c in "$CFG" "$HCFG"; do
    sed -i 's|^\[store\]$|[store]\njournal_max_mb = 0|' "$c"
  done
  STORE_SAYS="$STORE_SAYS, journal off"
else
  STORE_SAYS="$STORE_SAYS, journal on"
fi
GW_CFG=$CFG
if [ "$TRACING" = 1 ]; then
  # The base configuration has no [telemetry] section: this adds it.
  for c in "$CFG" "$HCFG"; do
    printf '\n[telemetry]\notlp_endpoint = "http://127.0.0.1:%s"\n' "$SINK_PORT" >> "$c"
  done
  # /metrics is served without a token only on the operators' listener: the gateway of
  # figures 1-4 gets one (a copy of the configuration, so figure 6's starts do not bind it).
  GW_CFG="${CFG%.toml}-metrics.toml"
  sed "s/^\[server\]\$/[server]\nmetrics_listen = \"127.0.0.1:$GW_METRICS_PORT\"/" "$CFG" > "$GW_CFG"
  TRACING_SAYS="traces over OTLP/HTTP to bench/otlp_sink.py (cpu $LOAD_CPU)"
else
  TRACING_SAYS="no tracing"
fi

# Admission: three limits per key, far above what the benchmark sends, so every request is
# reserved and settled against all three and none is refused.
case "$ADMISSION" in
  off) ;;
  memory|redis)
    for c in "$CFG" "$HCFG"; do
      {
        echo ""
        echo "[budgets]"
        echo "counters = \"$ADMISSION\""
        if [ "$ADMISSION" = redis ]; then
          echo "redis_url = \"${SLUICE_BENCH_REDIS:-redis://127.0.0.1:6379}\""
          echo "redis_prefix = \"{sluice-bench-$$}:\""
        fi
      } >> "$c"
      "$SLUICE" --config "$c" budgets set 'key:*' --usd 1000000 --period month > /dev/null
      "$SLUICE" --config "$c" budgets set 'key:*' --rpm 100000000 > /dev/null
      "$SLUICE" --config "$c" budgets set 'key:*' --tpm 100000000000 > /dev/null
    done ;;
  *) echo "--admission must be off, memory or redis" >&2; exit 2 ;;
esac

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "repository HEAD at run time: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) (working tree: $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) changed/untracked paths)"
  echo "kernel: $(uname -r); cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/\s\+/ /g'); mem: $(awk '/MemTotal/{print int($2/1024)" MiB"}' /proc/meminfo)"
  echo "rustc: $(rustc --version)"
  echo "oha: $(oha --version | head -1)"
  echo "sluice binary: $SLUICE ($(stat -c '%y' "$SLUICE"), sha256 $(sha256sum "$SLUICE" | cut -c1-16))"
  echo "pinning: Sluice on cpu $GW_CPU; mocks and load generators on cpu $LOAD_CPU"
  echo "runs: $RUNS; duration: ${DURATION}s; rates: $RATES; c: $RATE_C (rate), $THR_C (throughput)"
  echo "figure 2 requests: $CPU_N; figure 4: $SSE1_N streams at c=1, c=$SSE_C for ${DURATION}s"
  echo "figure 5: $STREAMS streams asked, mock event every ${HOLD_MS} ms; ulimit -n $NOFILE"
  echo "Sluice: auth with a virtual key, $STORE_SAYS, SLUICE_LOG=$SLUICE_LOG (JSON), $TRACING_SAYS; admission: $ADMISSION"
  echo "uptime at start: $(uptime)"
} > "$OUT/env.txt"
git -C "$ROOT" status --porcelain > "$OUT/git-status.txt" 2>/dev/null || true
log "results -> $OUT"

body() { # body MODEL [stream]
  local s=""; [ "${2:-}" = stream ] && s=',"stream":true'
  printf '{"model":"%s","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one sentence about benchmarking gateways."}],"max_tokens":64,"temperature":0%s}' "$1" "$s"
}

url_of() { # url_of TARGET UPSTREAM(fast|slow)
  if [ "$1" = direct ]; then
    if [ "$2" = fast ]; then echo "http://127.0.0.1:$FAST_PORT/v1/chat/completions"
    else echo "http://127.0.0.1:$SLOW_PORT/v1/chat/completions"; fi
  else echo "http://127.0.0.1:$GW_PORT/v1/chat/completions"; fi
}

oha_run() { # oha_run OUTFILE URL MODEL oha-args...
  local f=$1 url=$2 model=$3; shift 3
  taskset -c "$LOAD_CPU" oha --no-tui --output-format json -m POST -T application/json \
    -H "authorization: Bearer $KEY" -d "$(body "$model")" "$@" "$url" > "$f" 2> "$f.err" || true
}

probe_run() { # probe_run OUTFILE URL probe-args...
  local f=$1 url=$2; shift 2
  taskset -c "$LOAD_CPU" "$PROBE_BIN" --url "$url" -H "authorization: Bearer $KEY" \
    --body "$(body mock-fast stream)" "$@" > "$f" 2> "$f.err" || true
}

records() {
  if [ -n "$STORE_URL" ]; then
    psql -qtA "$STORE_URL" -c "select count(*) from $SCHEMA.requests" 2>/dev/null || echo '?'
  else
    sqlite3 "file:$DB?mode=ro" 'select count(*) from requests' 2>/dev/null || echo '?'
  fi
}

trace_counts() { # trace_counts LABEL PORT — Sluice's trace counters (from its metrics listener), appended to logs/trace-counts.txt
  [ "$TRACING" = 1 ] || return 0
  local counts
  counts=$(curl -s --max-time 5 "http://127.0.0.1:$2/metrics" | grep '^sluice_traces_' | tr '\n' ' ')
  echo "$1: $counts" >> "$OUT/logs/trace-counts.txt"
  log "trace counters ($1): $counts"
  case "$counts" in
    *"shed_total 0 "*"failed_total 0 "*) ;;
    *) log "WARNING: spans were shed or failed: tracing's cost is understated" ;;
  esac
}

# Mocks and Sluice for figures 1-4 and 6.
start_mock mock-fast "$FAST_PORT" 0 0
start_mock mock-slow "$SLOW_PORT" "$SLOW_MS" 5
if [ "$TRACING" = 1 ]; then
  start_proc otlp-sink "$LOAD_CPU" python3 "$HERE/otlp_sink.py" --port "$SINK_PORT" \
    --stats "$OUT/logs/otlp-sink.json"
  wait_http "http://127.0.0.1:$SINK_PORT/health" 10
fi
start_sluice sluice "$GW_PORT" "$GW_CFG"
GW=${PID[sluice]}
log "sluice pid $GW on cpu $GW_CPU; mocks on cpu $LOAD_CPU; ulimit -n $NOFILE"

# Sanity: one plain and one streaming request through Sluice must succeed.
curl -sf --max-time 10 -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  --data "$(body mock-fast)" "$(url_of sluice fast)" > "$OUT/logs/sample.json"
grep -q '"choices"' "$OUT/logs/sample.json"
curl -sfN --max-time 10 -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  --data "$(body mock-fast stream)" "$(url_of sluice fast)" > "$OUT/logs/sample.sse"
grep -q '\[DONE\]' "$OUT/logs/sample.sse"
curl -s -o /dev/null -w '%{http_code}' -H 'authorization: Bearer sk-sluice-wrong' \
  -H 'content-type: application/json' --data "$(body mock-fast)" "$(url_of sluice fast)" \
  > "$OUT/logs/sample.badkey" || true
grep -q 401 "$OUT/logs/sample.badkey" || log "WARNING: a wrong key was not refused with 401"

log "warm-up"
for t in direct sluice; do
  oha_run "$OUT/raw/warm.$t.json" "$(url_of $t fast)" mock-fast -z 3s -c 16
  oha_run "$OUT/raw/warms.$t.json" "$(url_of $t slow)" mock-slow -z 1s -c 16
done

has_fig() { case " $FIGURES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------- figure 1
if has_fig 1; then
  quiet_gate
  for q in $RATES; do
    # At q req/s a 50 ms upstream keeps q*0.05 requests in flight: when c=32 cannot hold them
    # (1000/s needs 50) the c=32 row measures queueing in the load generator, so such a rate
    # also runs with twice the connections needed.
    variants="fast:$RATE_C slow:$RATE_C"
    need=$((q * SLOW_MS / 1000))
    [ "$need" -lt "$RATE_C" ] || variants="$variants slow:$((2 * need))"
    for v in $variants; do
      ups=${v%%:*}; c=${v#*:}
      model=mock-$ups
      ph="rate$q-$ups"; [ "$c" = "$RATE_C" ] || ph="$ph-c$c"
      for r in $(seq 1 "$RUNS"); do
        for t in $(order "$r"); do
          log "fig 1 run $r: $t $q/s upstream $ups c=$c"
          f="$OUT/raw/f1.$ph.$t.$r.json"
          mp=${PID[mock-$ups]}
          c0=$(ticks "$GW"); k0=$(ticks "$mp"); mark
          oha_run "$f" "$(url_of $t $ups)" "$model" -z "${DURATION}s" -c "$c" -q "$q" --latency-correction -w
          c1=$(ticks "$GW"); k1=$(ticks "$mp")
          if [ "$t" = sluice ]; then cpu="cpu_ticks=$((c1 - c0))"; else cpu="gw_idle_ticks=$((c1 - c0))"; fi
          rec fig=1 phase="$ph" target="$t" run="$r" rate="$q" conc="$c" kind=oha file="$f" "$cpu" \
            mock_ticks=$((k1 - k0))
          sleep 1
        done
      done
    done
  done
fi

# ---------------------------------------------------------------- figure 2
if has_fig 2; then
  quiet_gate
  MOCKP=${PID[mock-fast]}
  for r in $(seq 1 "$RUNS"); do
    for t in $(order "$r"); do
      log "fig 2 run $r: $t, $CPU_N requests"
      f="$OUT/raw/f2.$t.$r.json"
      n0=$(records)
      g0=$(ticks "$GW"); m0=$(ticks "$MOCKP"); mark
      oha_run "$f" "$(url_of $t fast)" mock-fast -n "$CPU_N" -c "$RATE_C"
      sleep 2   # let the record writer finish inside the window
      g1=$(ticks "$GW"); m1=$(ticks "$MOCKP")
      n1=$(records)
      if [ "$t" = sluice ]; then
        rec fig=2 phase=cpu target=sluice run="$r" kind=oha file="$f" cpu_ticks=$((g1 - g0)) \
          mock_ticks=$((m1 - m0)) records_delta=$((n1 - n0))
      else
        rec fig=2 phase=cpu target=direct run="$r" kind=oha file="$f" cpu_ticks=$((m1 - m0)) \
          gw_idle_ticks=$((g1 - g0))
      fi
      sleep 1
    done
  done
fi

# ---------------------------------------------------------------- figure 3
if has_fig 3; then
  quiet_gate
  for r in $(seq 1 "$RUNS"); do
    for t in $(order "$r"); do
      log "fig 3 run $r: $t, c=$THR_C ${DURATION}s"
      f="$OUT/raw/f3.$t.$r.json"
      c0=$(ticks "$GW"); mark
      oha_run "$f" "$(url_of $t fast)" mock-fast -z "${DURATION}s" -c "$THR_C"
      c1=$(ticks "$GW")
      if [ "$t" = sluice ]; then cpu="cpu_ticks=$((c1 - c0))"; else cpu="gw_idle_ticks=$((c1 - c0))"; fi
      rec fig=3 phase=thr target="$t" run="$r" kind=oha file="$f" "$cpu"
      sleep 1
    done
  done
fi

# ---------------------------------------------------------------- figure 4
if has_fig 4; then
  quiet_gate
  for r in $(seq 1 "$RUNS"); do
    for t in $(order "$r"); do
      log "fig 4 run $r: $t, 1 at a time ($SSE1_N streams)"
      f="$OUT/raw/f4.c1.$t.$r.json"; mark
      probe_run "$f" "$(url_of $t fast)" -n "$SSE1_N" -c 1 --warmup 20 --duration 30
      rec fig=4 phase="c1" target="$t" run="$r" kind=sse file="$f"
      log "fig 4 run $r: $t, $SSE_C concurrent (${DURATION}s)"
      f="$OUT/raw/f4.c$SSE_C.$t.$r.json"; mark
      probe_run "$f" "$(url_of $t fast)" -n 100000000 -c "$SSE_C" --duration "$DURATION" --warmup 20
      rec fig=4 phase="c$SSE_C" target="$t" run="$r" kind=sse file="$f"
      sleep 1
    done
  done
fi

trace_counts "figures 1-4" "$GW_METRICS_PORT"

# ---------------------------------------------------------------- figure 6
# (before figure 5, whose 20k sockets linger in TIME_WAIT for a minute)
if has_fig 6; then
  quiet_gate
  for r in $(seq 1 "$RUNS"); do
    for t in $(order "$r"); do
      f="$OUT/raw/f6.$t.$r.json"; mark
      if [ "$t" = sluice ]; then
        log "fig 6 run $r: Sluice start -> /ready, $STARTS starts"
        taskset -c "$LOAD_CPU" python3 "$HERE/start_ready.py" --starts "$STARTS" --cpu "$GW_CPU" \
          --path /ready --log "$OUT/logs/f6.sluice.log" -- \
          "$SLUICE" --config "$CFG" serve --listen '127.0.0.1:{port}' > "$f" 2> "$f.err" || true
      else
        log "fig 6 run $r: mock start -> /health, $STARTS starts"
        taskset -c "$LOAD_CPU" python3 "$HERE/start_ready.py" --starts "$STARTS" --cpu "$LOAD_CPU" \
          --path /health --env 'MOCK_ADDR=127.0.0.1:{port}' --log "$OUT/logs/f6.mock.log" -- \
          "$MOCK_BIN" > "$f" 2> "$f.err" || true
      fi
      rec fig=6 phase=ready target="$t" run="$r" kind=json file="$f"
    done
  done
fi

# ---------------------------------------------------------------- figure 5
if has_fig 5; then
  # Sluice needs one descriptor per client stream and one per upstream connection.
  N_GW=$STREAMS
  if [ $((2 * STREAMS + 100)) -gt "$NOFILE" ]; then
    N_GW=$(((NOFILE - 100) / 2))
    log "fig 5: ulimit -n is $NOFILE (cannot be raised here): Sluice gets $N_GW streams, not $STREAMS"
  fi
  stop_proc sluice   # figures 1-4 are done; figure 5 uses a fresh Sluice per run
  quiet_gate
  for r in $(seq 1 "$RUNS"); do
    for t in $(order "$r"); do
      f="$OUT/raw/f5.$t.$r.json"
      start_mock mock-hold "$HOLD_PORT" 0 "$HOLD_MS"
      if [ "$t" = sluice ]; then
        start_sluice sluice-hold "$GWH_PORT" "$HCFG"
        n=$N_GW; url="http://127.0.0.1:$GWH_PORT/v1/chat/completions"; pid=${PID[sluice-hold]}
        sleep 1
      else
        n=$STREAMS; url="http://127.0.0.1:$HOLD_PORT/v1/chat/completions"; pid=${PID[mock-hold]}
      fi
      # Streams waiting for their first event at once: a quarter of them (at least 256). With
      # hold_streams.py's default of 256, each wave waits HOLD_MS for its first content event
      # through Sluice, and 10,000 streams take 40 waves: the first ones end before the last
      # open, and far fewer than N are open when RSS is sampled.
      par=$(((n + 3) / 4)); [ "$par" -ge 256 ] || par=256
      log "fig 5 run $r: $t, $n streams held (event every ${HOLD_MS} ms, $par opening at once)"
      mark
      taskset -c "$LOAD_CPU" python3 "$HERE/hold_streams.py" --url "$url" -n "$n" --key "$HKEY" \
        --model mock-slow --parallel "$par" --pid "$pid" --pid "${PID[mock-hold]}" \
        > "$f" 2> "$f.err" || true
      rec fig=5 phase=hold target="$t" run="$r" kind=json file="$f" streams_asked="$STREAMS"
      [ "$t" = sluice ] && stop_proc sluice-hold
      stop_proc mock-hold
      sleep 5
    done
  done
fi

cleanup
$SUM table "$RES" | tee "$OUT/table.md"
log "raw results: $OUT"
