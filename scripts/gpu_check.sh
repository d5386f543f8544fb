#!/usr/bin/env bash
# GPU checks for a lent NVIDIA machine (under 10 minutes): CUDA correctness against the official outputs, then the
# play and training-step benchmarks. Results go to $OUT (the device tool's output folder) or ./gpu_out.
#
# From the dev machine, once (the device machine cannot reach ../shared or any registry; its image has torch,
# h5py, safetensors, huggingface_hub, opencv, pyyaml, tqdm and pytest, but not pygame/gymnasium/ale-py, which these
# checks do not need):
#   mkdir -p .gpu && cp -r ../shared/conformance .gpu/ && echo /.gpu/ >> .git/info/exclude
# then run with the device tool: command "bash scripts/gpu_check.sh", carry [".gpu"], timeout_s 590 (the default
# parts, check and target, should take 8-10 minutes on an H100, in order of value; if the first call is cut
# short, "PARTS=target ..." as a second call at once; "PARTS=play,compiled,train ..." reruns the full tables).
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

# PARTS picks what runs, so a short lease can split the work over two calls. By default "check" (CUDA conformance
# and the whole-frame CUDA graph tests, AOTInductor ones included) and "target" (the open target, CS:GO quality
# >= 60 Hz: the compiled-graph figure, where a compiled frame's GPU time goes by kernel family, raw conv and
# group-norm rates per map size, the frame from AOTInductor packages, and cuDNN autotuning). On request: "play" (eager and graph play benchmarks, no compiling), "profile"
# (an eager CS:GO frame's kernels), "compiled" (the torch.compile tables), "train" (one training-step benchmark)
# and "autotune" (inductor max-autotune, minutes of compiling).
PARTS=${PARTS:-check,target}
part() { [[ ",$PARTS," == *",$1,"* ]]; }
bench() { local limit=$1 name=$2; shift 2; timeout "$limit" $PY -m diamond_play bench "$@" --device cuda \
  --json "$OUT/json/$name.json" || status=1; }

if part check; then
  echo "== CUDA conformance (official outputs, fp32, TF32 off) and whole-frame CUDA graphs"
  timeout 300 $PY -m pytest -q -p no:cacheprovider tests/test_conformance.py tests/test_cuda_graph.py || status=1
fi

if part play; then
  echo "== play benchmarks (eager and CUDA graphs)"
  bench 90 csgo_quality csgo --preset quality --frames 20 --modes eager-bf16-cl,graph-bf16-cl
  bench 45 csgo_fast csgo --preset fast --frames 30 --modes eager-bf16-cl,graph-bf16-cl
  bench 45 atari atari --frames 100 --modes eager-bf16-cl,graph-bf16-cl
fi

# In order of value, so a run cut short still brings back the first figures: the compiled-graph baseline, where
# its GPU time goes, the same frame from AOTInductor packages (a first build, then a start from the disk cache),
# then cuDNN autotuning.
if part target; then
  echo "== CS:GO quality, compiled-graph-bf16-cl (torch.compile)"
  bench 200 csgo_quality_compiled csgo --preset quality --frames 20 --modes compiled-graph-bf16-cl
  echo "== profile: raw conv and group-norm rates, then CS:GO quality compiled kernels (as the graph replays them)"
  timeout 180 $PY scripts/gpu_profile.py --kind csgo --mode compiled-bf16-cl --frames 2 || status=1
  echo "== CS:GO quality, compiled-graph-bf16-cl from AOTInductor packages: first build, then from the cache"
  DIAMOND_PLAY_GPU_COMPILER=aoti bench 240 csgo_quality_aoti csgo --preset quality --frames 20 \
    --modes compiled-graph-bf16-cl
  DIAMOND_PLAY_GPU_COMPILER=aoti bench 90 csgo_quality_aoti_cached csgo --preset quality --frames 20 \
    --modes compiled-graph-bf16-cl
  echo "== CS:GO quality, compiled-graph-bf16-cl with cudnn.benchmark (autotuned convolutions)"
  DIAMOND_PLAY_CUDNN_BENCHMARK=1 bench 150 csgo_quality_compiled_cudnn_benchmark csgo --preset quality --frames 20 \
    --modes compiled-graph-bf16-cl
fi

if part profile; then
  echo "== profile: CS:GO quality, eager-bf16-cl (kernel times are those the graphs replay)"
  timeout 90 $PY scripts/gpu_profile.py --kind csgo --mode eager-bf16-cl --frames 2 || status=1
fi

if part compiled; then
  echo "== play benchmarks (torch.compile, then CUDA graphs of the compiled model)"
  bench 200 csgo_quality_compiled csgo --preset quality --frames 20 --modes compiled-graph-bf16-cl
  bench 120 atari_compiled atari --frames 100 --modes compiled-bf16-cl,compiled-graph-bf16-cl
fi

# Inductor's Triton templates for the convolutions instead of cuDNN: minutes of compiling, so not by default.
if part autotune; then
  echo "== CS:GO quality, compiled-graph-bf16-cl with inductor max-autotune"
  DIAMOND_PLAY_INDUCTOR_MODE=max-autotune-no-cudagraphs bench 300 csgo_quality_max_autotune csgo --preset quality \
    --frames 20 --modes compiled-graph-bf16-cl
fi

if part train; then
  echo "== training-step benchmark (paper batch size)"
  bench 60 train_atari train atari --steps 5 --modes eager-bf16
fi
tar -C "$OUT" -cf "$OUT/json.tar" json && rm -r "$OUT/json"
exit $status
