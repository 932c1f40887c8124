#!/usr/bin/env bash
# sluice-target.sh — Sluice as a benchmark target.
#
#   bench/sluice-target.sh config DIR   write DIR/sluice-bench.toml from bench/sluice-bench.toml,
#                                       routing "mock-fast" to $MOCK_FAST_URL and "mock-slow" to
#                                       $MOCK_SLOW_URL (OpenAI-compatible base URLs ending in /v1;
#                                       defaults: the peer harness's 127.0.0.1:18000/v1 and
#                                       :18001/v1), store in DIR/sluice-data/; print the path
#   bench/sluice-target.sh key DIR      write the config, create a virtual key in its store and
#                                       print the secret (for TARGET_API_KEY)
#   bench/sluice-target.sh serve DIR    write the config, then exec `sluice serve` on
#                                       127.0.0.1:$TARGET_PORT (the peer harness sets it)
#
# The configuration cannot read environment variables, hence this generator. DIR defaults to
# bench/.work/peers. SLUICE_BIN overrides target/release/sluice; SLUICE_LOG defaults to info.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
MOCK_FAST_URL=${MOCK_FAST_URL:-http://127.0.0.1:18000/v1}
MOCK_SLOW_URL=${MOCK_SLOW_URL:-http://127.0.0.1:18001/v1}
export SLUICE_LOG=${SLUICE_LOG:-info}

cmd=${1:-}
dir=${2:-$HERE/.work/peers}

write_config() {
  mkdir -p "$dir"
  local cfg="$dir/sluice-bench.toml"
  # Replace the two base_url lines in order: the first is mock-fast, the second mock-slow.
  awk -v fast="$MOCK_FAST_URL" -v slow="$MOCK_SLOW_URL" '
    /^base_url = / { n++; print "base_url = \"" (n == 1 ? fast : slow) "\""; next }
    { print }' "$HERE/sluice-bench.toml" > "$cfg.tmp"
  mv "$cfg.tmp" "$cfg"
  echo "$cfg"
}

case "$cmd" in
  config) write_config ;;
  key)
    cfg=$(write_config)
    "$SLUICE_BIN" --config "$cfg" keys create --name bench --json \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])' ;;
  serve)
    cfg=$(write_config)
    : "${TARGET_PORT:?TARGET_PORT is not set}"
    exec "$SLUICE_BIN" --config "$cfg" serve --listen "127.0.0.1:$TARGET_PORT" ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
