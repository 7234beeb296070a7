#!/usr/bin/env bash
# The CUDA rows of benchmarks/README.md in one run: ViT-B-32 and ViT-L-14, fp32 / bf16, ViT-B-32
# also with torch.compile; the CUDA-only test; and one real `ipce train` on CUDA (loader workers,
# pinned memory, bf16) over a generated dataset. Every step has its own time limit so that one
# slow step still leaves the others' results (the limits add up to under 10 minutes).
#
#     bash benchmarks/cuda.sh OUT_DIR
#
# OUT_DIR gets log.txt (everything printed) and one JSON per benchmark run.
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

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$log"
python3 -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__)" 2>&1 | tee -a "$log"
step 45 "CUDA test" python3 -m pytest -q -p no:cacheprovider tests/test_performance_options.py -k cuda
for backbone in ViT-B-32 ViT-L-14; do  # measured on an H200: 47 s and 90 s
    step $([ $backbone = ViT-B-32 ] && echo 90 || echo 150) "$backbone eval + train" python3 benchmarks/run.py \
        --device cuda --backbone "$backbone" --repeats 3 --no-memory --no-compile --phases eval,train \
        --json "$out/$backbone.json"
done
# ViT-B-32 only: its compile phase took 117 s (warm-ups 6 + 17 + 69 s); ViT-L-14's did not fit 100 s
step 150 "ViT-B-32 torch.compile" python3 benchmarks/run.py --device cuda --backbone ViT-B-32 --repeats 3 \
    --no-memory --compile --phases compile --json "$out/ViT-B-32-compile.json"
step 30 "synthetic dataset" python3 -c "from ipce.demo.synthetic import SyntheticConfig, generate; \
generate('/tmp/ipce-syn', SyntheticConfig(n=320, seed=0), progress=False, workers=8)"
step 90 "ipce train ViT-L-14 bf16 on CUDA" python3 -m ipce train --annotations /tmp/ipce-syn/annotations.csv \
    --images /tmp/ipce-syn/images --backbone random:ViT-L-14 --device cuda --precision bf16 --epochs 2 \
    --splits 1 --batch-size 16 --workers 8 --out /tmp/ipce-run
