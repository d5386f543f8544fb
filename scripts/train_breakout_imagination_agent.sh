#!/usr/bin/env bash
# Train the Breakout agent to ship with diamond_play/shipped/atari/Breakout: an actor-critic trained only inside the
# shipped world model (see README, "Train an agent inside an engine"). Resumable: run it again after a stop and it
# continues from RUN/checkpoints/state.pt. The start segments come from the engine's own training data, which is
# regenerated deterministically (same seed -> same episodes), so only the run directory needs keeping.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/breakout}
RUN=${RUN:-weights/_runs/breakout_agent}
DATA="$DATA" bash scripts/breakout_data.sh
if [ -f "$RUN/checkpoints/state.pt" ]; then
  # The run keeps its config; overrides here are saved into it. The engine is named again because the committed run
  # started when it lay in weights/atari/Breakout: the resume checks that it is the same file.
  exec diamond-play train agent --resume "$RUN" engine=diamond_play/shipped/atari/Breakout "$@"
fi
# CPU levers (README): 1 Euler step per imagined frame instead of 3, 16 imagined environments instead of 32, the
# small actor-critic; one thread, so a second job on a 2-core machine does not slow it tenfold.
exec diamond-play train agent --weights diamond_play/shipped/atari/Breakout --data "$DATA/train" --out "$RUN" \
  num_steps_denoising=1 num_envs=16 actor_critic_size=small num_threads=1 epochs=2000 steps_per_epoch=25 \
  eval_every=4 eval_episodes=4 final_eval_episodes=20 "$@"
