#!/usr/bin/env bash
# The GPU's measurements in one run, under 8 minutes (each step has its own time limit; the limits
# add up to 460 s, so one slow step still leaves the others' results):
#   the CUDA tests (SDPA, uint8 views, pinned copies on the device);
#   the bf16 GEMM rate at ViT-L/14's shapes (benchmarks/gpu_report.py --gemm);
#   ViT-L-14 and ViT-B-32 evaluation and training rows of run.py: the present paths (fp32, bf16
#   autocast, bf16 image weights) and the "lean" rows of --levers (SDPA, bf16 image weights,
#   fused AdamW, the loss kept on the device);
#   ViT-L-14 with regional torch.compile (run.py --phases compile --levers);
#   the report: per row img/s, TFLOP/s, the fraction of the GPU's peak and of the measured GEMM rate.
#
#     bash benchmarks/cuda.sh OUT_DIR
#
# OUT_DIR gets log.txt (everything printed), gemm.json, one JSON per run.py run and report.md.
set -u
out=${1:?usage: bash benchmarks/cuda.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
log="$out/log.txt"
step() {  # step SECONDS TITLE COMMAND...: run with a limit, everything to the log and the screen
    local limit=$1 title=$2
    shift 2
    echo "=== $title ($(date -u +%T), limit ${limit} s)" | tee -a "$log"
    local started=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    echo "=== $title: exit ${PIPESTATUS[0]}, $((SECONDS - started)) s" | tee -a "$log"
}
# the present paths worth a denominator (the baseline and "ours fp32" always run: scores are compared
# with them), then the lean rows that --levers adds
rows='^(ours fp32|ours bf16 autocast|ours bf16 image weights, texts fp32|image encoder alone bf16 weights|train: ours bf16 autocast)$'

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$log"
python3 -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__)" 2>&1 | tee -a "$log"
step 40 "CUDA tests" python3 -m pytest -q -p no:cacheprovider tests/test_performance_options.py \
    tests/test_attention.py tests/test_feed.py -k cuda
step 20 "bf16 GEMM rate" python3 benchmarks/gpu_report.py --gemm "$out/gemm.json"
step 140 "ViT-L-14 eval + train" python3 benchmarks/run.py --device cuda --backbone ViT-L-14 --repeats 3 \
    --no-memory --no-compile --phases eval,train --levers --rows "$rows" --json "$out/ViT-L-14.json"
step 100 "ViT-B-32 eval + train" python3 benchmarks/run.py --device cuda --backbone ViT-B-32 --repeats 3 \
    --no-memory --no-compile --phases eval,train --levers --rows "$rows" --json "$out/ViT-B-32.json"
step 150 "ViT-L-14 regional torch.compile" python3 benchmarks/run.py --device cuda --backbone ViT-L-14 \
    --repeats 3 --no-memory --compile --phases compile --levers --json "$out/ViT-L-14-regional.json"
reports=()
for name in ViT-L-14 ViT-B-32 ViT-L-14-regional; do
    [ -s "$out/$name.json" ] && reports+=("$out/$name.json")
done
step 10 "report" bash -c "python3 benchmarks/gpu_report.py ${reports[*]} --gemm-json '$out/gemm.json' | tee '$out/report.md'"
