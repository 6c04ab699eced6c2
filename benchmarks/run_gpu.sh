#!/usr/bin/env bash
# The speed figures of the README, on one CUDA GPU:  bash benchmarks/run_gpu.sh [OUTDIR]
# plus a profile of the all-layers call
# (where open_clip is not installed, put the wheels of ../shared/tools/gpu-wheels.sh into .site first)
set -eo pipefail
OUT=${1:-${OUT:-benchmarks/results}}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/.site:$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
bench() { local name=$1; shift; $PY "$@" 2>&1 | grep -v WARN | tee "$OUT/$name.txt"; }
bench legrad_224_bf16 benchmarks/legrad_speed.py --model ViT-B-16 --size 224 --batch 64 --dtype bf16 --repeats 20 --ref-images 4
bench legrad_224_fp32 benchmarks/legrad_speed.py --model ViT-B-16 --size 224 --batch 64 --dtype fp32 --repeats 5 --ref-images 4
bench legrad_448_bf16 benchmarks/legrad_speed.py --model ViT-B-16 --size 448 --batch 16 --dtype bf16 --repeats 10 --ref-images 2
bench explainers_bf16 benchmarks/explainers_speed.py --model ViT-B-16 --batch 64 --dtype bf16 --repeats 10
bench profile_all_bf16 benchmarks/profile_legrad.py --model ViT-B-16 --batch 64 --dtype bf16 --layer-index 0 --repeats 5
