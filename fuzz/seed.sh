#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the golden wire fixtures (crates/wire/tests/fixtures).
# The corpus is not kept in git (see .gitignore); run this before the first `cargo fuzz run`.
# Safe to run again: it only copies, overwriting its own seeds and keeping what the fuzzer found.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fixtures="$here/../crates/wire/tests/fixtures"
corpus="$here/corpus"
mkdir -p "$corpus/ingress_openai" "$corpus/ingress_anthropic" "$corpus/sse_stream"

shopt -s nullglob
# Client requests of each dialect, and the other dialect's requests translated into it.
for f in "$fixtures"/openai/*.request.json; do
  case="$(basename "$f" .request.json)"
  cp "$f" "$corpus/ingress_openai/openai_$case.json"
  to="$fixtures/openai/$case.to_anthropic.json"
  [[ -f "$to" ]] && cp "$to" "$corpus/ingress_anthropic/from_openai_$case.json"
done
for f in "$fixtures"/anthropic/*.request.json; do
  case="$(basename "$f" .request.json)"
  cp "$f" "$corpus/ingress_anthropic/anthropic_$case.json"
  to="$fixtures/anthropic/$case.to_openai.json"
  [[ -f "$to" ]] && cp "$to" "$corpus/ingress_openai/from_anthropic_$case.json"
done
# SSE streams: the target reads one control byte (chunk sizes, options) before the stream.
for f in "$fixtures"/openai/*.sse "$fixtures"/anthropic/*.sse; do
  name="$(basename "$(dirname "$f")")_$(basename "$f" .sse)"
  for control in 00 2a c5; do
    { printf "\\x$control"; cat "$f"; } > "$corpus/sse_stream/${name}_$control"
  done
done

for target in ingress_openai ingress_anthropic sse_stream; do
  echo "$target: $(ls "$corpus/$target" | wc -l) files in fuzz/corpus/$target"
done
