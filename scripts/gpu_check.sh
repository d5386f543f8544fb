#!/usr/bin/env bash
# GPU checks for a lent NVIDIA machine (under 10 minutes): CUDA correctness against the official outputs, then the
# play and training-step benchmarks. Results go to $OUT (the device tool's output folder) or ./gpu_out.
#
# From the dev machine, once (the device machine cannot reach ../shared or any registry; its image has torch,
# h5py, safetensors, huggingface_hub, opencv, pyyaml, tqdm and pytest, but not pygame/gymnasium/ale-py, which these
# checks do not need):
#   mkdir -p .gpu && cp -r ../shared/conformance .gpu/ && echo /.gpu/ >> .git/info/exclude
# then run with the device tool: command "bash scripts/gpu_check.sh", carry [".gpu"], timeout_s 600 (about 7
# minutes on an H100; or "PARTS=check,play,profile bash scripts/gpu_check.sh", then "PARTS=compiled,train ...").
# Everything printed goes to $OUT/log.txt and the benchmarks' JSON into $OUT/json.tar: the device tool brings
# back at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT/json"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 DIAMOND_PLAY_TEST_DEVICE=cuda
export DIAMOND_PLAY_CONFORMANCE=${DIAMOND_PLAY_CONFORMANCE:-$PWD/.gpu/conformance}
PY=${PY:-python3}
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

# PARTS picks what runs, so a short lease can split the work over two calls: "check" (CUDA conformance and the
# whole-frame CUDA graph tests), "play" (eager and graph play benchmarks, no compiling), "profile" (where a CS:GO
# frame's GPU time goes, and native vs parallel group norms per map size), "compiled" (torch.compile modes, which
# spend a minute or more compiling first), "train" (one training-step benchmark) and, only when asked for,
# "levers" (cudnn.benchmark and inductor max-autotune against the compiled-graph figure).
PARTS=${PARTS:-check,play,profile,compiled,train}
part() { [[ ",$PARTS," == *",$1,"* ]]; }
bench() { local limit=$1 name=$2; shift 2; timeout "$limit" $PY -m diamond_play bench "$@" --device cuda \
  --json "$OUT/json/$name.json" || status=1; }

if part check; then
  echo "== CUDA conformance (official outputs, fp32, TF32 off) and whole-frame CUDA graphs"
  timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_conformance.py tests/test_cuda_graph.py || status=1
fi

# The target first (CS:GO quality >= 60 Hz), then the rest, so a cut-off run still brings back the main figure.
if part play; then
  echo "== play benchmarks (eager and CUDA graphs)"
  bench 90 csgo_quality csgo --preset quality --frames 20 --modes eager-bf16-cl,graph-bf16-cl
  bench 45 csgo_fast csgo --preset fast --frames 30 --modes eager-bf16-cl,graph-bf16-cl
  bench 45 atari atari --frames 100 --modes eager-bf16-cl,graph-bf16-cl
fi

if part profile; then
  echo "== profile: CS:GO quality, eager-bf16-cl (kernel times are those the graphs replay)"
  timeout 90 $PY scripts/gpu_profile.py csgo eager-bf16-cl 2 || status=1
fi

if part compiled; then
  echo "== play benchmarks (torch.compile, then CUDA graphs of the compiled model)"
  bench 200 csgo_quality_compiled csgo --preset quality --frames 20 --modes compiled-graph-bf16-cl
  bench 120 atari_compiled atari --frames 100 --modes compiled-bf16-cl,compiled-graph-bf16-cl
fi

# Not in the default PARTS (a second call): the levers not yet measured, each against the compiled-graph figure
# above. cudnn.benchmark autotunes the convolutions for the fixed shapes; max-autotune lets inductor try Triton
# templates for them (minutes of compiling).
if part levers; then
  echo "== levers: cudnn.benchmark, then inductor max-autotune (CS:GO quality)"
  DIAMOND_PLAY_CUDNN_BENCHMARK=1 bench 90 csgo_quality_cudnn_benchmark csgo --preset quality --frames 20 \
    --modes graph-bf16-cl
  DIAMOND_PLAY_CUDNN_BENCHMARK=1 bench 200 csgo_quality_compiled_cudnn_benchmark csgo --preset quality --frames 20 \
    --modes compiled-graph-bf16-cl
  DIAMOND_PLAY_INDUCTOR_MODE=max-autotune-no-cudagraphs bench 300 csgo_quality_max_autotune csgo --preset quality \
    --frames 20 --modes compiled-graph-bf16-cl
fi

if part train; then
  echo "== training-step benchmark (paper batch size)"
  bench 60 train_atari train atari --steps 5 --modes eager-bf16
fi
tar -C "$OUT" -cf "$OUT/json.tar" json && rm -r "$OUT/json"
exit $status
