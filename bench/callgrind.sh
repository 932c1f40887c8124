#!/usr/bin/env bash
# bench/callgrind.sh — instructions per request of `sluice serve`, counted by callgrind: a
# figure that does not move with the machine's load, for A/B comparisons of two builds or of
# one build with a feature off and on.
#
#   bench/callgrind.sh [--admission off|memory|redis] [--hook] [--dlp] [--prompt-bytes N]
#                      [--requests N] [--bin PATH] [--stream] [--no-journal]
#
# Starts `sluice mock` on 127.0.0.1:18200 and `sluice serve` under valgrind on :18210 (a fresh
# store in bench/.work/callgrind), creates a key, warms up with 300 requests, zeroes the
# counters, sends N identical non-streaming chat requests (default 2000, oha -c 8), dumps, and
# prints the instructions per request. Everything the process did in that window counts: the
# request path, the record writer and SQLite; the share of SQLite statement prepares (one-time
# costs that vary with the batch sizes the window happens to see) is printed apart. With --admission, every key has a monthly spend
# budget and per-minute request and token limits (`sluice budgets set key:* ...`), counted in
# process or in the Redis at $SLUICE_BENCH_REDIS (default redis://127.0.0.1:6379). With --hook,
# the route runs the shipped request hook (`max_input_tokens`, a bound every request passes), so
# the difference to a run without it is the cost of the policy seam with one hook on it. With
# --dlp, every built-in detector acts on the route (docs/dlp.md), answers included. With
# --prompt-bytes N, the user message is N bytes of prose (default: one short sentence).
# With --stream, the requests stream (N, default 200, at c=8, after 30 to warm up) from the
# shared mock pacing 64 deltas 2 ms apart (so every event arrives on its own, as from a real
# model; built into bench/.target like bench/field.sh does), sent by bench/field-probe, which
# checks every stream ends with [DONE] and carries every delta; the script prints the
# instructions per stream and per event the client received. Its ports (18220, 18230) differ
# from the non-streaming mode's, so the two can run at once. With --no-journal, records go to
# the store without the local journal (`[store] journal_max_mb = 0`).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$HERE/../target/release/sluice
MODE=off
HOOK=
DLP=
PROMPT_BYTES=
N=
STREAM=
NO_JOURNAL=
while [ $# -gt 0 ]; do
  case "$1" in
    --admission) MODE=$2; shift 2 ;;
    --hook) HOOK=1; shift ;;
    --dlp) DLP=1; shift ;;
    --prompt-bytes) PROMPT_BYTES=$2; shift 2 ;;
    --requests) N=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --stream) STREAM=1; shift ;;
    --no-journal) NO_JOURNAL=1; shift ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
for tool in valgrind callgrind_control oha; do
  command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
MOCK_PORT=18200 PORT=18210
if [ -n "$STREAM" ]; then
  MOCK_PORT=18220 PORT=18230 N=${N:-200}
  BT=$HERE/.target SHARED_BENCH=${SHARED_BENCH:-$HERE/../../shared/bench}
  for crate in "$SHARED_BENCH/mock-upstream" "$HERE/field-probe"; do
    cargo build --release -q --manifest-path "$crate/Cargo.toml" --target-dir "$BT"
  done
fi
N=${N:-2000}
DIR=$HERE/.work/callgrind/$MODE${HOOK:+-hook}${DLP:+-dlp}${PROMPT_BYTES:+-$PROMPT_BYTES}${STREAM:+-stream}${NO_JOURNAL:+-nojournal}
rm -rf "$DIR"; mkdir -p "$DIR"; cd "$DIR"
cat > sluice.toml <<TOML
[store]
path = "data/sluice.db"
journal_max_mb = $([ -n "$NO_JOURNAL" ] && echo 0 || echo 1024)
[providers.mock]
type = "openai_compatible"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
[deployments.mini]
provider = "mock"
model = "gpt-4o-mini"
[aliases.m]
deployments = ["mini"]
TOML
[ -n "$HOOK" ] && printf 'max_input_tokens = 100000\n' >> sluice.toml
[ -n "$DLP" ] && cat >> sluice.toml <<'TOML'
[dlp]
detectors = { email = "pseudonymise", phone = "pseudonymise", payment_card = "redact", iban = "redact", us_ssn = "redact", uk_nino = "redact", es_dni = "redact", it_codice_fiscale = "redact", ip_address = "log", secret = "block" }
TOML
case "$MODE" in
  off) ;;
  memory) printf '[budgets]\ncounters = "memory"\n' >> sluice.toml ;;
  redis) printf '[budgets]\ncounters = "redis"\nredis_url = "%s"\nredis_prefix = "{callgrind-%s}:"\n' \
           "${SLUICE_BENCH_REDIS:-redis://127.0.0.1:6379}" $$ >> sluice.toml ;;
  *) echo "--admission must be off, memory or redis" >&2; exit 2 ;;
esac
KEY=$("$BIN" --config sluice.toml keys create --name callgrind --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
if [ "$MODE" != off ]; then
  "$BIN" --config sluice.toml budgets set 'key:*' --usd 1000000 --period month > /dev/null
  "$BIN" --config sluice.toml budgets set 'key:*' --rpm 100000000 > /dev/null
  "$BIN" --config sluice.toml budgets set 'key:*' --tpm 100000000000 > /dev/null
fi
if [ -n "$STREAM" ]; then
  MOCK_ADDR=127.0.0.1:$MOCK_PORT MOCK_THREADS=1 MOCK_DELAY_MS=0 MOCK_CHUNKS=64 MOCK_CHUNK_DELAY_MS=2 \
    "$BT/release/mock-upstream" > mock.log 2>&1 &
else
  "$BIN" mock --listen 127.0.0.1:$MOCK_PORT > mock.log 2>&1 &
fi
MOCK=$!
valgrind --tool=callgrind --callgrind-out-file="$DIR/callgrind.out" \
  "$BIN" --config sluice.toml serve --listen 127.0.0.1:$PORT > serve.log 2>&1 &
VG=$!
trap 'kill -TERM $VG $MOCK 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -s -o /dev/null http://127.0.0.1:$PORT/ready && break; sleep 0.2; done
PROMPT="Write one sentence about benchmarking gateways."
if [ -n "$PROMPT_BYTES" ]; then
  # Prose with no sensitive value: the cost of looking, not of acting.
  SENTENCE="The quarterly review covers latency, throughput and the cost of every route we run. "
  PROMPT=$(python3 -c "import sys; s=sys.argv[1]; n=int(sys.argv[2]); print((s*(n//len(s)+1))[:n])" "$SENTENCE" "$PROMPT_BYTES")
fi
BODY="{\"model\":\"m\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"$PROMPT\"}]}"
URL=http://127.0.0.1:$PORT/v1/chat/completions
load() { oha --no-tui -n "$1" -c 8 -m POST -T application/json -H "authorization: Bearer $KEY" \
  -d "$BODY" "$URL" > "$2"; }
if [ -n "$STREAM" ]; then
  BODY="${BODY%\}},\"stream\":true}"
  load() { "$BT/release/field-probe" --url "$URL" -H "authorization: Bearer $KEY" --body "$BODY" \
    -n "$1" -c 8 --stall-ms 10000 --timeout 120 > "$2"; }
fi
load $([ -n "$STREAM" ] && echo 30 || echo 300) warm.txt
sleep 1
callgrind_control -z $VG > /dev/null 2>&1
load "$N" load.txt
sleep 1   # the record writer's last batch
callgrind_control -d $VG > /dev/null 2>&1
if [ -n "$STREAM" ]; then
  # Every stream ended with [DONE] and carried every delta the mock sends.
  EVENTS=$(python3 -c 'import json,sys
d = json.loads(open(sys.argv[1]).read().splitlines()[-1])
frames = d["content_frames"]
ok = d["ok"] == int(sys.argv[2]) and d["failed"] == d["lost"] == 0 and frames["min"] == frames["max"] > 0
print(d["ok"] * frames["max"] if ok else "")' load.txt "$N")
  [ -n "$EVENTS" ] || { echo "some streams failed or lost deltas: $DIR/load.txt" >&2; exit 1; }
else
  grep -q "Success rate:.*100.00%" load.txt || { echo "some requests failed: $DIR/load.txt" >&2; exit 1; }
fi
total=$(awk '/^totals:/ {print $2}' "$DIR"/callgrind.out.1)
# SQLite prepares each new statement once (an INSERT per batch size the record writer has not
# met yet; sqlx caches them): a warm-up cost that depends on which batch sizes the window saw.
callgrind_annotate --inclusive=yes "$DIR"/callgrind.out.1 > "$DIR"/inclusive.txt 2>/dev/null
prepare=$(awk '/sqlite3LockAndPrepare \[/ {gsub(",", "", $1); print $1; exit}' "$DIR"/inclusive.txt)
prepare=${prepare:-0}
[ -n "$STREAM" ] && echo "streams=$N content_events=$EVENTS per_content_event=$(((total - prepare) / EVENTS)) (without prepares; the per-stream work included)"
echo "admission=$MODE journal=$([ -n "$NO_JOURNAL" ] && echo off || echo on) hook=${HOOK:-0} dlp=${DLP:-0} prompt_bytes=${PROMPT_BYTES:-48} requests=$N instructions=$total per_request=$((total / N))" \
  "prepares_per_request=$((prepare / N)) per_request_without_prepares=$(((total - prepare) / N))"
