#!/usr/bin/env bash
# The bounded CPU run of the Atari 100k trainer on Breakout (`--preset small`, about two hours on a 2-core CPU).
# Resumable: run it again after a stop and it continues exactly from RUN/checkpoints/state.pt.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-weights/_runs/atari_breakout_small}
if [ -f "$RUN/checkpoints/state.pt" ]; then
  exec diamond-play train atari --resume "$RUN" "$@"
fi
exec diamond-play train atari Breakout --out "$RUN" --preset small "$@"
