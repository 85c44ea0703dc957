#!/usr/bin/env bash
# Every GPU figure the README and the issues ask for, in one run on one GPU machine (about 15 minutes on an H200; bench_extract needs PyAV for its test videos):
#   bash tests/benchmarks/gpu_checks.sh [OUT_DIR] [STEP...]     (steps: models recipes loader detect extract; default all)
# Each benchmark has its own time limit, so one that overruns costs its own figures, not the others'.
# Its logs go to OUT_DIR (default: ./gpu_checks). Needs dfd's dependencies; a machine without them can be given
# wheels in .whl/ (installed to /tmp/site, see the device notes in the closing note of issue 16).
set -u
out="${1:-gpu_checks}"
shift || true
only=" ${*:-models recipes loader detect extract} "
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
py="${PYTHON:-python3}"
step() {  # step NAME SECONDS ARGS...: run one benchmark under a limit, log to $out/NAME.log
  local name=$1 limit=$2
  shift 2
  [[ $only == *" $name "* ]] || return 0
  echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=10 "$limit" "$py" "$@" 2>&1 | tee "$out/$name.log"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
"$py" -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$out/gpu.txt"

# Issue 16: fp32 (PyTorch's default TF32) vs bf16 + channels_last (+ torch.compile), EfficientNet-B4, ViT-B/16,
# CLIP ViT-L/14, train-step images/s.
step models 320 tests/benchmarks/bench_models.py --gpu --batch 32 --steps 10
# Issue 14: CLIP ViT-L/14, full vs norm_only (GenD) vs linear_probe vs svd_residual (Effort), bf16: images/s, memory.
step recipes 80 tests/benchmarks/bench_recipes.py --device cuda --amp bf16 --batch 32 --steps 10
# Issue 16: does the loader keep the GPU busy at batch 64 (files vs shards, 8 workers)?
step loader 180 tests/benchmarks/bench_loader.py --gpu --workers 8 --images 3200
# Issue 16: MTCNN on the GPU vs the CPU on the same decoded frames, per scale rule (cuDNN bypassed, and with cuDNN).
step detect 300 tests/benchmarks/bench_detect_noise.py --device cuda
# Issues 16 and 28: MTCNN batched on the GPU (cuDNN bypassed, and with cuDNN), frames decoded by NVDEC when
# PyNvVideoCodec is installed (pip install "dfd[gpu]" or a wheel in .whl/), vs dfd on the CPU: crops/s, box IoU.
# Issue 25: on PASS, this GPU model is recorded in dfd/faces/gpu_passes.json (commit it: dfd-predict then detects
# on it without a warning, and dfd-export lists it in bundles' README) and in $out/gpu_passes.json.
step extract 240 tests/benchmarks/bench_extract.py --gpu --videos 8 --length 450 --skip deepfakebench tuned dfd-640 \
  --pass-file dfd/faces/gpu_passes.json "$out/gpu_passes.json"
