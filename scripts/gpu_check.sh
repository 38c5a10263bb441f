#!/usr/bin/env bash
# The GPU checks, as one prepared run for a lent H100/H200 (the `device` tool), in about 8 minutes:
#  1. issue 6: vit-base-patch16-224, bfloat16 autocast, torch.compile, batch 256, hf_vit against transformers' ViT
#     (sdpa) and timm with the same weights, plus each contender's torch.profiler table. Targets: inference >= 10,000
#     images/s, training >= 3,000 images/s, hf_vit >= 1.0x timm and >= 1.3x transformers (sdpa and eager).
#  2. issue 3: `hf-vit train` (digits, its default recipe) with --bf16 on the GPU, through Trainer (issue 17: its log
#     names the loader workers hf_vit chose for the GPU).
#  3. issue 17: the input pipeline's images/s per core of this machine's CPU (docs/scaling.md, "The input pipeline").
# The benchmark's table is printed last.
#
# It installs nothing from the network (the machine reaches none). The image's python3 has torch, transformers and
# timm; to pin the versions used on CPU, carry their wheels in .whl/ (see /work/.library/device/README.md), e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl transformers==5.24.0 timm==1.0.31 \
#       regex datasets==5.2.0 evaluate==0.4.6 dill multiprocess fsspec
# and they are installed into /tmp/site first. hf_vit runs from this checkout (PYTHONPATH), not installed.
#
# Usage, from the repository root:  bash scripts/gpu_check.sh
# Environment: BATCH (256), REPEATS (10), OUT (where the results go; default outputs/gpu_check).
set -uo pipefail
cd "$(dirname "$0")/.."

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT="${OUT:-outputs/gpu_check}"
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, timm; print('torch', torch.__version__, '| transformers', transformers.__version__, '| timm', timm.__version__)" \
    | tee -a "$OUT/gpu.txt"

started=$SECONDS
timeout 400 python3 -m hf_vit.benchmark --device cuda --dtype bfloat16 --compile \
    --preset vit-base-patch16-224 --batch-size "${BATCH:-256}" --repeats "${REPEATS:-10}" --warmup 3 \
    --profile "$OUT/profile.txt" \
    --json "$OUT/gpu_benchmark.json" >"$OUT/table.md" 2> >(tee "$OUT/log.txt" >&2)
benchmark_status=$?
echo "benchmark: exit $benchmark_status after $((SECONDS - started)) s"

started=$SECONDS
timeout 120 python3 -m hf_vit.cli train --bf16 True --output_dir /tmp/digits-gpu --report_to none \
    >"$OUT/train_log.txt" 2>&1
echo "hf-vit train (digits, --bf16, GPU): exit $? after $((SECONDS - started)) s"
tail -5 "$OUT/train_log.txt"
cp /tmp/digits-gpu/all_results.json "$OUT/train_all_results.json" 2>/dev/null && cat "$OUT/train_all_results.json"
grep "data loading:" "$OUT/train_log.txt"

started=$SECONDS
timeout 150 python3 scripts/benchmark_input_pipeline.py --pipeline_only --num_images 1000 --repeats 5 \
    >"$OUT/input_pipeline.md" 2>&1
echo "input pipeline per core: exit $? after $((SECONDS - started)) s"
tail -6 "$OUT/input_pipeline.md"

echo
cat "$OUT/table.md"
exit $benchmark_status
