#!/usr/bin/env bash
# open_streams.sh — open streams held through Sluice, with the upstream spoken to over HTTP/1.1
# or over HTTP/2 (prior knowledge), against the same mock: RSS per stream, and at 10,000.
#
#   bench/open_streams.sh [--streams N] [--runs R] [--hold-ms MS] [--versions "http1 http2"]
#                         [--no-build]
#
# The upstream is `sluice mock` (HTTP/1.1 and h2c on one port, 200 streams per HTTP/2
# connection), pinned on cpu 1 with the load generator; its events come --hold-ms apart (the
# `#mock chunk_delay_ms` directive). Sluice (auth and records on, bench/sluice-bench.toml) is
# pinned on cpu 0, fresh for every run, with `http_version` of the mock's provider set to the
# version under test. bench/hold_streams.py opens the streams, a quarter of them at once, and
# samples RSS once every stream is open. KiB per stream = (RSS held − RSS before) / streams
# open; the figure at 10,000 adds that to the idle RSS. Results in bench/.work/open-streams/.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SLUICE=${SLUICE_BIN:-$ROOT/target/release/sluice}
STREAMS=10000 RUNS=2 HOLD_MS=4000 VERSIONS="http1 http2" BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --streams) STREAMS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --hold-ms) HOLD_MS=$2; shift 2 ;;
    --versions) VERSIONS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
GW_CPU=0 LOAD_CPU=1 MOCK_PORT=18240 GW_PORT=18250
OUT=$HERE/.work/open-streams/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
[ "$BUILD" = 0 ] || (cd "$ROOT" && cargo build --release -p sluice-cli)
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
# Sluice needs a descriptor per client stream and, over HTTP/1.1, one per upstream stream.
N=$STREAMS
if [ $((2 * STREAMS + 100)) -gt "$NOFILE" ]; then
  N=$(((NOFILE - 100) / 2))
  echo "ulimit -n is $NOFILE: $N streams, not $STREAMS (for both versions alike)" >&2
fi

declare -A PID
start() { # start NAME CPU CMD...
  local name=$1 cpu=$2; shift 2
  setsid taskset -c "$cpu" "$@" > "$OUT/$name.out" 2> "$OUT/$name.log" < /dev/null &
  PID[$name]=$!
}
stop() {
  local p=${PID[$1]:-}
  [ -n "$p" ] || return 0
  kill -TERM -- "-$p" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "PID[$1]"
}
cleanup() { local n; for n in "${!PID[@]}"; do stop "$n"; done; }
trap cleanup EXIT
wait_http() {
  for _ in $(seq 1 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; exit 1
}

echo "| run | upstream | streams open at the sample | errors | RSS idle MiB | RSS held MiB | KiB per stream | at 10,000 streams MiB |"
echo "|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$RUNS"); do
  order=$VERSIONS
  [ $((r % 2)) = 1 ] || order=$(echo "$VERSIONS" | tr ' ' '\n' | tac | tr '\n' ' ')
  for v in $order; do
    dir=$OUT/$v.$r
    start mock "$LOAD_CPU" "$SLUICE" mock --listen "127.0.0.1:$MOCK_PORT"
    wait_http "http://127.0.0.1:$MOCK_PORT/v1/models"
    cfg=$(MOCK_SLOW_URL=http://127.0.0.1:$MOCK_PORT/v1 "$HERE/sluice-target.sh" config "$dir")
    sed -i "s|^base_url = \"http://127.0.0.1:$MOCK_PORT/v1\"\$|&\nhttp_version = \"$v\"|" "$cfg"
    key=$("$SLUICE" --config "$cfg" keys create --name bench --json \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
    SLUICE_LOG=info start sluice "$GW_CPU" "$SLUICE" --config "$cfg" serve --listen "127.0.0.1:$GW_PORT"
    wait_http "http://127.0.0.1:$GW_PORT/ready"
    sleep 1
    par=$(((N + 3) / 4)); [ "$par" -ge 256 ] || par=256
    taskset -c "$LOAD_CPU" python3 "$HERE/hold_streams.py" \
      --url "http://127.0.0.1:$GW_PORT/v1/chat/completions" -n "$N" --key "$key" \
      --model mock-slow --parallel "$par" --pid "${PID[sluice]}" \
      --content "Hold this stream open.
#mock chunk_delay_ms=$HOLD_MS" > "$OUT/$v.$r.json" 2> "$OUT/$v.$r.err" || true
    stop sluice
    stop mock
    python3 - "$OUT/$v.$r.json" "$r" "$v" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
idle, held = d["before"][0]["VmRSS"], d["held"][0]["VmRSS"]
n = d["open_at_sample"]
per = (held - idle) / max(n, 1)
print(f"| {sys.argv[2]} | {sys.argv[3]} | {n} | {d['errors']} | {idle/1024:.1f} | {held/1024:.1f} "
      f"| {per:.2f} | {(idle + per * 10000)/1024:.1f} |")
PY
    sleep 5
  done
done
echo "raw results: $OUT" >&2
