#!/usr/bin/env bash
# The CPU play benchmarks behind the README's performance table (about 10 minutes on the 2-core dev machine).
# Run it on a quiet machine (no training in the background): the figures are wall-clock.
# JSON results go to docs/bench/ (or $BENCH_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${BENCH_OUT:-docs/bench}
mkdir -p "$OUT"
diamond-play bench atari --device cpu --frames 30 --json "$OUT/play_atari_cpu.json"
diamond-play bench csgo --preset fast --device cpu --frames 6 --modes eager-bf16-cl,compiled-bf16-cl \
  --json "$OUT/play_csgo_fast_cpu.json"
diamond-play bench csgo --preset quality --device cpu --frames 3 --modes eager-bf16-cl,compiled-bf16-cl \
  --json "$OUT/play_csgo_quality_cpu.json"
