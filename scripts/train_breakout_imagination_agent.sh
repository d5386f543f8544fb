#!/usr/bin/env bash
# Train the Breakout agent to ship with diamond_play/shipped/atari/Breakout: an actor-critic trained only inside the
# shipped world model (see README, "Train an agent inside an engine"). Resumable: run it again after a stop and it
# continues from RUN/checkpoints/state.pt. The start segments come from the engine's own training data, which is
# regenerated deterministically (same seed -> same episodes), so only the run directory needs keeping. The engine is
# the shipped one after its second stage (scripts/teach_breakout_engine_agent_play.sh); the first run of this
# script, on the engine before it, learned to hold FIRE (README, "The agent found a hole in the engine").
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/breakout}
RUN=${RUN:-weights/_runs/breakout_agent}
DATA="$DATA" bash scripts/breakout_data.sh
# bf16 autocast where the CPU runs bf16 natively, fp32 where it would be emulated (many times slower; README has the
# figures): decided again at every (re)start, so a run may move between machines.
AMP=$(python -c "import torch; print(str(torch.ops.mkldnn._is_mkldnn_bf16_supported()).lower())")
if [ -f "$RUN/checkpoints/state.pt" ]; then
  exec diamond-play train agent --resume "$RUN" amp="$AMP" "$@"  # the run keeps its config; overrides are saved
fi
# CPU levers (README): 1 Euler step per imagined frame instead of 3, 16 imagined environments instead of 32, the
# small actor-critic, bf16 where native; one thread, so a second job on a 2-core machine does not slow it tenfold.
exec diamond-play train agent --weights diamond_play/shipped/atari/Breakout --data "$DATA/train" --out "$RUN" \
  num_steps_denoising=1 num_envs=16 actor_critic_size=small num_threads=1 amp="$AMP" epochs=2000 steps_per_epoch=25 \
  eval_every=4 eval_episodes=4 final_eval_episodes=20 "$@"
