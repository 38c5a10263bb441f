#!/usr/bin/env bash
# The GPU checks, as one prepared run for a lent H100/H200 (the `device` tool), in about 10 minutes:
#  1. issue 6: vit-base-patch16-224, bfloat16 autocast, torch.compile, batch 256, hf_vit against transformers' ViT
#     (sdpa) and timm with the same weights, plus each contender's torch.profiler table. Targets: inference >= 10,000
#     images/s, training >= 3,000 images/s, hf_vit >= 1.0x timm and >= 1.3x transformers (sdpa and eager).
#  2. issue 3: `hf-vit train` (digits, its default recipe) with --bf16 on the GPU, through Trainer (issue 17: its log
#     names the loader workers hf_vit chose for the GPU).
#  3. issue 17: the input pipeline's images/s per core of this machine's CPU (docs/scaling.md, "The input pipeline").
#  4. issue 19: end to end from JPEG files (scripts/benchmark_end_to_end.py): vit-base-patch16-224 (random weights),
#     bfloat16, compiled, batch 256, `hf-vit predict`'s classifier over 3,000 generated JPEGs (224 px thumbnails to
#     4-megapixel photos) with its default workers (one per core but one), decoding on the host (`hf_vit`) and with
#     `--decode device` (`hf_vit-device-decode`: nvJPEG on the GPU, the workers only read the files), beside its model
#     alone and its input side alone with each decoding (where the ceiling is), and nvJPEG's decoding rate on this GPU
#     for baseline and progressive files. Target: >= 3,000 images/s end to end. About 3 minutes; E2E_ONLY=1 runs this
#     step alone.
# The benchmark's table is printed last (the end-to-end table alone with E2E_ONLY=1).
#
# It installs nothing from the network (the machine reaches none). The image's python3 has torch, transformers and
# timm; to pin the versions used on CPU, carry their wheels in .whl/ (see /work/.library/device/README.md), e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl transformers==5.24.0 timm==1.0.31 \
#       regex datasets==5.2.0 evaluate==0.4.6 dill multiprocess fsspec
# and they are installed into /tmp/site first. hf_vit runs from this checkout (PYTHONPATH), not installed.
#
# Usage, from the repository root:  bash scripts/gpu_check.sh
# Environment: BATCH (256), REPEATS (10), OUT (where the results go; default outputs/gpu_check), E2E_IMAGES (3000),
# E2E_ONLY (1: step 4 alone).
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

if ! python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check.sh: python3 here has no torch that sees a CUDA device; run it on the lent GPU machine." >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, timm; print('torch', torch.__version__, '| transformers', transformers.__version__, '| timm', timm.__version__)" \
    | tee -a "$OUT/gpu.txt"

end_to_end() {
    local started=$SECONDS
    timeout 360 python3 scripts/benchmark_end_to_end.py --device cuda --dtype bfloat16 --compile \
        --preset vit-base-patch16-224 --batch_size 256 --num_images "${E2E_IMAGES:-3000}" --rounds 3 \
        --images /tmp/end_to_end_jpegs --contenders hf_vit hf_vit-device-decode --gpu_decode_probe \
        --json "$OUT/end_to_end.json" \
        >"$OUT/end_to_end.md" 2>"$OUT/end_to_end_log.txt"
    local status=$?
    echo "end to end from JPEG files: exit $status after $((SECONDS - started)) s"
    tail -3 "$OUT/end_to_end_log.txt"
    return $status
}
if [ "${E2E_ONLY:-0}" = 1 ]; then
    end_to_end
    status=$?
    cat "$OUT/end_to_end.md"
    exit $status
fi

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

end_to_end
echo
cat "$OUT/end_to_end.md"

echo
cat "$OUT/table.md"
exit $benchmark_status
