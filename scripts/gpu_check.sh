#!/usr/bin/env bash
# GPU checks for a lent NVIDIA machine (under 10 minutes): CUDA correctness against the official outputs, then the
# play and training-step benchmarks. Results go to $OUT (the device tool's output folder) or ./gpu_out.
#
# From the dev machine, once (the device machine cannot reach ../shared or any registry; its image has torch,
# h5py, safetensors, huggingface_hub, opencv, pyyaml, tqdm and pytest, but not pygame/gymnasium/ale-py, which these
# checks do not need):
#   mkdir -p .gpu && cp -r ../shared/conformance .gpu/ && echo /.gpu/ >> .git/info/exclude
# then run with the device tool: command "bash scripts/gpu_check.sh", carry [".gpu"], timeout_s 600.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 DIAMOND_PLAY_TEST_DEVICE=cuda
export DIAMOND_PLAY_CONFORMANCE=${DIAMOND_PLAY_CONFORMANCE:-$PWD/.gpu/conformance}
PY=${PY:-python3}
status=0
{ nvidia-smi; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
  2>&1 | tee "$OUT/device.txt"

echo "== CUDA conformance (official outputs, fp32, TF32 off) and whole-frame CUDA graphs"
timeout 200 $PY -m pytest -q -p no:cacheprovider tests/test_conformance.py tests/test_cuda_graph.py 2>&1 \
  | tee "$OUT/conformance.txt" || status=1

# The target first (CS:GO quality >= 60 Hz), then the rest, so a cut-off run still brings back the main figure.
echo "== play benchmarks"
timeout 130 $PY -m diamond_play bench csgo --preset quality --device cuda --frames 20 \
  --modes eager-bf16-cl,graph-bf16-cl,compiled-graph-bf16-cl \
  --json "$OUT/bench_csgo_quality.json" 2>&1 | tee "$OUT/bench_csgo_quality.txt" || status=1
timeout 60 $PY -m diamond_play bench csgo --preset fast --device cuda --frames 30 \
  --modes eager-bf16-cl,graph-bf16-cl --json "$OUT/bench_csgo_fast.json" 2>&1 | tee "$OUT/bench_csgo_fast.txt" \
  || status=1
timeout 120 $PY -m diamond_play bench atari --device cuda --frames 100 \
  --modes eager-bf16-cl,compiled-bf16-cl,graph-bf16-cl,compiled-graph-bf16-cl \
  --json "$OUT/bench_atari.json" 2>&1 | tee "$OUT/bench_atari.txt" || status=1

echo "== training-step benchmarks (paper batch sizes)"
timeout 80 $PY -m diamond_play bench train atari --device cuda --steps 5 --modes eager-bf16 \
  --json "$OUT/bench_train_atari.json" 2>&1 | tee "$OUT/bench_train_atari.txt" || status=1
exit $status
