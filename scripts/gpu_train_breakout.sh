#!/usr/bin/env bash
# Continue the Breakout engine run (weights/_runs/breakout, see scripts/train_breakout_engine.sh) on a lent GPU for
# one device call, then bring the new resume point back. On an H100 a denoiser step at the paper's batch takes
# about 0.13 s against 5-9 s on the 2-core dev machine, so one call of under 10 minutes adds more steps than a
# whole CPU session.
#
# From the dev machine (the device machine has torch, h5py, opencv and tensorboard but not ale-py/gymnasium, and
# cannot reach a registry; the run's state.pt, config.yaml and log.csv are tracked files and travel with the tree):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl ale-py==0.12.1 gymnasium==1.4.0 farama-notifications==0.0.6
# then run with the device tool: command "bash scripts/gpu_train_breakout.sh", carry [".whl"], timeout_s 600.
# Back here, with the files under FILES (the tool's files_at):
#   cat FILES/state.pt.part* > weights/_runs/breakout/checkpoints/state.pt && cp FILES/log.csv weights/_runs/breakout/
# and commit them (git add -f). The data is regenerated there from the same seed (about two minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
WHEELS=${WHEELS:-.whl}  # the carried wheels (built for the device's Python 3.12)
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
RUN=${RUN:-weights/_runs/breakout}
DATA=${DATA:-data/breakout}
TRAIN_S=${TRAIN_S:-400}  # training wall-clock; the run stops there and keeps its last finished epoch
EXTRA_EPOCHS=${EXTRA_EPOCHS:-40}  # the target it trains towards (more than TRAIN_S allows, normally)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
if [ ! -f "$DATA/test/dataset.yaml" ]; then
  rm -rf "$DATA"
  time python3 -m data_tools.atari_collect Breakout "$DATA" --frames 100000 --test-frames 10000 --policy mix --seed 0
fi
state="$RUN/checkpoints/state.pt"
epoch=$(python3 -c "import torch; print(torch.load('$state', weights_only=True, map_location='cpu')['epoch'])")
echo "resuming at epoch $epoch, training for ${TRAIN_S}s towards epoch $((epoch + EXTRA_EPOCHS))"
# state.pt is written atomically at each epoch's end, so stopping mid-epoch loses only that epoch.
timeout --signal=INT --kill-after=30 "$TRAIN_S" python3 -m diamond_play train engine --resume "$RUN" \
  epochs=$((epoch + EXTRA_EPOCHS)) || echo "training stopped (exit $?)"
# (A log row of an epoch cut off before its checkpoint is dropped by the next resume.)
python3 -c "import torch; print('state.pt now at epoch', torch.load('$state', weights_only=True, map_location='cpu')['epoch'])"
# The device tool brings back files of at most 16 MiB.
split -b 15M -d "$state" "$OUT/state.pt.part"
cp "$RUN/log.csv" "$RUN/config.yaml" "$OUT/"
ls -la "$OUT"
