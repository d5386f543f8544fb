#!/usr/bin/env bash
# Make data/breakout/{train,test} (or $DATA), the Breakout engine's data, unless a complete copy is there: 100k
# training and 10k held-out frames, regenerated deterministically (same seed -> same episodes), so runs need only
# their run directory between machines. The held-out split is written after the training one, so a killed
# collection (or the README's held-out-only command) has no complete pair and is made again from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/breakout}
if [ ! -f "$DATA/test/dataset.yaml" ] || [ -z "$(ls -A "$DATA/train/episodes" 2>/dev/null)" ]; then
  rm -rf "$DATA"
  python -m data_tools.atari_collect Breakout "$DATA" --frames 100000 --test-frames 10000 --policy mix --seed 0
fi
