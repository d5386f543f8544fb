#!/usr/bin/env bash
# Measure the Breakout engine run on the held-out episodes and ship its weights as
# diamond_play/shipped/atari/Breakout (what `diamond-play atari Breakout` plays by default), with provenance and
# the eval table in its config. Writes docs/breakout_eval.txt, docs/breakout_strip.png and
# docs/breakout_strip_reward_event.png (the README shows them).
# Run after scripts/train_breakout_engine.sh (which also makes data/breakout/{train,test}).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-weights/_runs/breakout}
OUT=${OUT:-diamond_play/shipped/atari/Breakout}
EVAL_JSON=$(mktemp --suffix .json)
trap 'rm -f "$EVAL_JSON"' EXIT
diamond-play eval "$RUN" --data data/breakout/test --episodes "${EPISODES:-8}" --strip docs/breakout_strip.png \
  --json "$EVAL_JSON" --seed 0 | tee docs/breakout_eval.txt
diamond-play export "$RUN" --out "$OUT" --force --eval "$EVAL_JSON" \
  --provenance "data=data/breakout/train: 100k frames from python -m data_tools.atari_collect Breakout data/breakout --frames 100000 --test-frames 10000 --policy mix --seed 0 (episodes of a paddle-tracking policy with random aim and random actions mixed in, or of random play); eval on the 10k-frame held-out split data/breakout/test" \
  --provenance "command=scripts/train_breakout_engine.sh, i.e. diamond-play train engine --data data/breakout/train --out weights/_runs/breakout --preset small amp=true epochs=60 steps_per_epoch=200 rew_end_steps_per_epoch=25 rew_end_batch_size=16 sample_every=5 (then --resume across sessions; from epoch 23 on with rew_end_steps_per_epoch=100, from epoch 36 with rew_end_optim.lr=0.001, from epoch 39 with the reward/termination optimiser restarted, from epoch 50 with epochs=80, from epoch 79 with epochs=110: see scripts/train_breakout_engine.sh)" \
  --provenance "machine=2-core Intel Xeon (AVX-512 bf16, AMX), torch 2.13.0+cpu, bf16 autocast" \
  ${TRAIN_HOURS:+--provenance "train_hours=$TRAIN_HOURS"}
du -sh "$OUT"
