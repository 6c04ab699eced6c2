#!/usr/bin/env bash
# Issue 20's figures on one CUDA GPU, at most 9 minutes (the timeouts): ImageBind audio + ViT-H-14 (random weights)
# alone and through eval and localize end to end (benchmarks/pipeline_speed.py), then the same
# with tiny models (where the CPU side is all that is left), and localize's one-thread frame
# conversion and batch-sized queues before/after. Results (tables, JSON, nvidia-smi, CPU) go to $OUT (default
# benchmarks/results/gpu-pipeline).
#
# Where open_clip or PyAV is missing (a bare CUDA image), the wheels are installed from .whl/ as
# ../shared/tools/gpu-wheels.sh's header says; fetch them beforehand on a machine with internet,
# from the project root:   bash ../shared/tools/gpu-wheels.sh      (and carry .whl/ along).
#
#     bash benchmarks/gpu_pipeline.sh            # or: OUT=/some/folder bash benchmarks/gpu_pipeline.sh
set -eo pipefail
OUT=${OUT:-${1:-benchmarks/results/gpu-pipeline}}
PY=${PYTHON:-python3}
CACHE=${CACHE:-/tmp/avlegrad_pipeline_speed}
mkdir -p "$OUT"
if ! $PY -c "import open_clip, av, soundfile" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "open_clip / PyAV missing and no wheels in .whl/: run bash ../shared/tools/gpu-wheels.sh first" >&2
    exit 2
  fi
  $PY -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl
fi
export PYTHONPATH=$PWD/.site:$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
{ nproc; grep -m1 "model name" /proc/cpuinfo; $PY -c "import av, torch; print('PyAV', av.__version__, 'torch', torch.__version__)"; } \
  | tee -a "$OUT/gpu.txt"
start=$SECONDS
# the real pair: models alone, eval on 512 clips (16 workers), localize on a 10 s 640x360 clip
timeout 300 $PY benchmarks/pipeline_speed.py --device cuda --dtype bf16 --model ViT-H-14 --batch 64 \
  --clips 512 --workers "${WORKERS:-16}" --min-seconds 3 --cache "$CACHE" --json "$OUT/pipeline_cuda_ViT-H-14.json" \
  2>&1 | grep -v -e "it/s\]" -e "clip/s\]" | tee "$OUT/pipeline_cuda_ViT-H-14.txt" || echo "ViT-H-14 run failed or timed out"
echo "# $((SECONDS - start)) s so far" | tee -a "$OUT/gpu.txt"
# tiny models: what the CPU side (decoding, encoding, scoring) allows at most
timeout 75 $PY benchmarks/pipeline_speed.py --device cuda --dtype bf16 --small --batch 64 --clips 512 \
  --workers "${WORKERS:-16}" --cache "$CACHE" --json "$OUT/pipeline_cuda_small.json" \
  2>&1 | grep -v -e "it/s\]" -e "clip/s\]" | tee "$OUT/pipeline_cuda_small.txt" || echo "small run failed or timed out"
# before/after, same run: one-thread frame conversion (tiny models), queues of a batch (the real pair)
timeout 45 $PY benchmarks/pipeline_speed.py --device cuda --dtype bf16 --small --batch 64 --compare reformat-threads \
  --cache "$CACHE" --json "$OUT/compare_reformat_threads_cuda.json" 2>&1 | tail -12 \
  | tee "$OUT/compare_reformat_threads_cuda.txt" || echo "comparison failed or timed out"
timeout 90 $PY benchmarks/pipeline_speed.py --device cuda --dtype bf16 --model ViT-H-14 --batch 64 --compare queues \
  --min-seconds 1 --cache "$CACHE" --json "$OUT/compare_queues_cuda.json" 2>&1 | tail -10 \
  | tee "$OUT/compare_queues_cuda.txt" || echo "comparison failed or timed out"
# issue 18: perturbation metrics batched vs one image and one step per forward (ViT-B-16, same run)
timeout 30 $PY benchmarks/faithfulness_speed.py --model ViT-B-16 --images 8 --device cuda --dtype bf16 \
  2>&1 | tee "$OUT/faithfulness_speed_cuda.txt" || echo "faithfulness speed failed or timed out"
echo "# $((SECONDS - start)) s in all" | tee -a "$OUT/gpu.txt"
