#!/usr/bin/env bash
# Train the Breakout engine shipped in diamond_play/shipped/atari/Breakout (see README, "The shipped Breakout
# engine"). Resumable: run it again after a stop and it continues from RUN/checkpoints/state.pt. The data is
# regenerated deterministically (scripts/breakout_data.sh), so only the run directory needs keeping between machines.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/breakout}
RUN=${RUN:-weights/_runs/breakout}
DATA="$DATA" bash scripts/breakout_data.sh
if [ -f "$RUN/checkpoints/state.pt" ]; then
  exec diamond-play train engine --resume "$RUN" "$@"  # the run keeps its config; overrides here are saved into it
fi
# The reward/termination model runs at 10x the paper's lr: at 1e-4 it still predicted the majority class (no reward)
# after 3,000 steps of batch 16, a small fraction of the paper's budget; at 1e-3 it separates reward steps in ~100.
# The shipped run used rew_end_steps_per_epoch=25 and lr 1e-4 for epochs 1-22, 100 steps from 23, lr 1e-3 from 36,
# from 39 a fresh reward/termination optimiser (AdamW moments left from 2,000 steps at 1e-4 kept its updates too
# small to leave the majority-class solution; a fresh one with warm-up separated reward steps within one epoch; what
# `--fresh-optimiser rew_end` on resume now does), from epoch 50 a target of 80 epochs instead of 60, and from
# epoch 79 one of 110 (`--resume RUN epochs=110`).
exec diamond-play train engine --data "$DATA/train" --out "$RUN" --preset small amp=true epochs=80 \
  steps_per_epoch=200 rew_end_steps_per_epoch=100 rew_end_batch_size=16 rew_end_optim.lr=0.001 sample_every=5 "$@"
