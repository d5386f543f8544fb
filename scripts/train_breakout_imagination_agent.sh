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
# The run with 3 Euler steps per imagined frame (the paper's); RUN=weights/_runs/breakout_agent resumes the earlier
# 1-step run (2,950 updates, real play at random play's level: README, "Can the engine teach Breakout at all?").
RUN=${RUN:-weights/_runs/breakout_agent_3euler}
DATA="$DATA" bash scripts/breakout_data.sh
# bf16 autocast where the CPU runs bf16 natively, fp32 where it would be emulated (many times slower; README has the
# figures): decided again at every (re)start, so a run may move between machines.
AMP=$(python -c "import torch; print(str(torch.ops.mkldnn._is_mkldnn_bf16_supported()).lower())")
if [ -f "$RUN/checkpoints/state.pt" ]; then
  exec diamond-play train agent --resume "$RUN" amp="$AMP" "$@"  # the run keeps its config; overrides are saved
fi
# CPU levers (README): 16 imagined environments instead of 32, the small actor-critic, the compiled bf16 world model,
# lr 3e-4 (the paper's 400k updates at 1e-4 are out of reach here), bf16 where native; one thread, so a second job on
# a 2-core machine does not slow it tenfold. 3 Euler steps per imagined frame, as the paper: with 1 the imagined ball
# is the denoiser's faint average and a tracker finds it in 38% of frames (52% with 3, 70% in the real game).
exec diamond-play train agent --weights diamond_play/shipped/atari/Breakout --data "$DATA/train" --out "$RUN" \
  num_steps_denoising=3 num_envs=16 actor_critic_size=small num_threads=1 amp="$AMP" world_model_mode=compiled-bf16-cl \
  optim.lr=0.0003 epochs=2000 steps_per_epoch=25 eval_every=4 eval_episodes=4 final_eval_episodes=20 "$@"
