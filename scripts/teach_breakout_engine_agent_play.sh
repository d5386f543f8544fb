#!/usr/bin/env bash
# Second stage of the shipped Breakout engine (README, "The agent found a hole in the engine"): fine-tune its
# reward/termination model on its training data plus 20k frames of real play by the first imagination agent, which
# had learned that FIRE "prevents" lost balls in imagination. The paddle-tracking data fires almost only while no
# ball is in play, so the model had tied FIRE to "no life lost soon". The denoiser is not trained (steps_per_epoch=0).
# It works on a copy of the engine run (runs/, not committed), so weights/_runs/breakout keeps the first stage's
# resume point; ends by evaluating the result and exporting it to diamond_play/shipped/atari/Breakout.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/breakout}
PLUS=${PLUS:-data/breakout_agent_play}
RUN=${RUN:-runs/breakout_engine_agent_play}
OUT=${OUT:-diamond_play/shipped/atari/Breakout}
DATA="$DATA" bash scripts/breakout_data.sh
if [ ! -f "$PLUS/test/dataset.yaml" ]; then
  rm -rf "$PLUS"
  # The agent: epoch 15 (375 actor-critic updates) of the first imagination run, kept in git history.
  AGENT_DIR=$(mktemp -d)
  git show 22b1d59:weights/_runs/breakout_agent/checkpoints/state.pt > "$AGENT_DIR/state.pt"
  python - "$AGENT_DIR" <<'EOF'
import dataclasses, sys
import torch
from diamond_play.models.actor_critic import ActorCritic
from diamond_play.train.agent import AgentTrainConfig, actor_critic_config
from diamond_play.weights.format import save_weights_dir
from diamond_play.weights.loading import load_agent
root = sys.argv[1]
agent = load_agent("diamond_play/shipped/atari/Breakout", device="cpu")
ac_cfg = actor_critic_config(AgentTrainConfig(actor_critic_size="small"), agent.config)
agent.actor_critic = ActorCritic(ac_cfg)
agent.actor_critic.load_state_dict(torch.load(f"{root}/state.pt", weights_only=True)["trainer"]["model"])
agent.config = dataclasses.replace(agent.config, agent=dataclasses.replace(agent.config.agent, actor_critic=ac_cfg))
save_weights_dir(agent, f"{root}/agent")
EOF
  rm -rf "$PLUS.tmp" && mkdir -p "$PLUS.tmp"
  cp -r "$DATA/train" "$PLUS.tmp/train"  # the engine's data, then the agent's episodes appended after it
  python -m data_tools.atari_collect Breakout "$PLUS.tmp" --frames 120000 --test-frames 3000 --policy agent \
    --weights "$AGENT_DIR/agent" --epsilon 0.25 --seed 1
  rm -rf "$AGENT_DIR"
  mv "$PLUS.tmp" "$PLUS"
fi
if [ ! -d "$RUN" ]; then
  mkdir -p "$(dirname "$RUN")"
  cp -r weights/_runs/breakout "$RUN.tmp" && mv "$RUN.tmp" "$RUN"  # epoch 88: the first stage's engine
fi
# 3 epochs of 200 reward/termination steps (the denoiser is untouched): epochs 89-91.
diamond-play train engine --resume "$RUN" data="$PLUS/train" steps_per_epoch=0 rew_end_steps_per_epoch=200 \
  epochs=91 "$@"
# What changed, measured on both held-out sets: the engine's own (tracker + random play) and the agent's play.
for split in "$DATA/test" "$PLUS/test"; do
  python -m data_tools.end_probe "$OUT" "$RUN" --data "$split"
done
EVAL_JSON=$(mktemp --suffix .json)
trap 'rm -f "$EVAL_JSON"' EXIT
diamond-play eval "$RUN" --data "$DATA/test" --episodes 8 --strip docs/breakout_strip.png --json "$EVAL_JSON" \
  --seed 0 | tee docs/breakout_eval.txt
diamond-play export "$RUN" --out "$OUT" --force --eval "$EVAL_JSON" \
  --provenance "data=$DATA/train: 100k frames from python -m data_tools.atari_collect Breakout $DATA --frames 100000 --test-frames 10000 --policy mix --seed 0 (episodes of a paddle-tracking policy with random aim and random actions mixed in, or of random play); reward/termination model also on $PLUS/train: those 100k frames + 20k frames of real play by the first imagination agent (python -m data_tools.atari_collect --policy agent --epsilon 0.25 --seed 1); eval on the 10k-frame held-out split $DATA/test" \
  --provenance "command=scripts/train_breakout_engine.sh (88 epochs: denoiser and reward/termination model; see that script for the resumes), then scripts/teach_breakout_engine_agent_play.sh (epochs 89-91: 600 reward/termination steps on the data with the agent's play, denoiser unchanged)" \
  --provenance "machine=2-core Intel Xeon (AVX-512 bf16, AMX), torch 2.13.0+cpu, bf16 autocast; epochs 89-91 on a 2-core AMD EPYC (AVX-512 bf16)" \
  --provenance "train_hours=14.5 + ${TEACH_HOURS:-0.3} (wall-clock)"
