#!/usr/bin/env bash
# bench/peers.sh — Sluice beside LiteLLM and Portkey in the shared peer harness
# ($SHARED_BENCH/run-peers.sh, default ../shared/bench): same mocks, same loads, same run.
#
#   bench/peers.sh [--no-build] [run-peers.sh options, e.g. --runs 2 --rates "50 200 1000"]
#
# Builds Sluice (release), writes its configuration with bench/sluice-target.sh (model
# "mock-fast" -> $MOCK_FAST_URL, "mock-slow" -> $MOCK_SLOW_URL, store under the results
# directory), creates a virtual key in that store and passes it as TARGET_API_KEY, then runs
# run-peers.sh with Sluice added as target "sluice" on 127.0.0.1:$SLUICE_PORT (default 18400),
# started by run-peers.sh itself (pinned like the peers, RSS/CPU measured, stopped at the end).
# Results: bench/results/peers-<timestamp>/ (table.md, results.jsonl, logs/).
# SLUICE_BIN overrides target/release/sluice (then --no-build).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
SLUICE_PORT=${SLUICE_PORT:-18400}
export PATH="$HOME/.cargo/bin:$PATH"

if [ "${1:-}" = --no-build ]; then shift; else
  (cd "$ROOT" && cargo build --release -q -p sluice-cli)
fi
OUT=$HERE/results/peers-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
# The key is created in the store the target command will use (the URLs are rewritten at start).
TARGET_API_KEY=$("$HERE/sluice-target.sh" key "$OUT/sluice")
export TARGET_API_KEY
{
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD) ($(git -C "$ROOT" status --porcelain | wc -l) changed/untracked paths)"
  bin=${SLUICE_BIN:-$ROOT/target/release/sluice}
  echo "sluice binary: $bin ($(stat -c '%y' "$bin"), sha256 $(sha256sum "$bin" | cut -c1-16))"
  echo "command: $SHARED_BENCH/run-peers.sh --target sluice=http://127.0.0.1:$SLUICE_PORT/v1 --target-cmd sluice='$HERE/sluice-target.sh serve $OUT/sluice' --out $OUT $*"
} > "$OUT/sluice-env.txt"
exec "$SHARED_BENCH/run-peers.sh" \
  --target "sluice=http://127.0.0.1:$SLUICE_PORT/v1" \
  --target-cmd "sluice=$HERE/sluice-target.sh serve $OUT/sluice" \
  --out "$OUT" "$@"
