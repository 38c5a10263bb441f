#!/usr/bin/env bash
# Issue 6's GPU check, as one prepared run for a lent H100/H200 (the `device` tool): vit-base-patch16-224, bfloat16
# autocast, torch.compile, batch 256, hf_vit against transformers' ViT (sdpa, eager) and timm with the same weights.
# Targets: inference >= 10,000 images/s, training >= 3,000 images/s, hf_vit >= 1.0x timm and >= 1.3x transformers.
#
# It installs nothing from the network (the machine reaches none). The image's python3 has torch, transformers and
# timm; to pin the versions used on CPU, carry their wheels in .whl/ (see /work/.library/device/README.md), e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl transformers==5.24.0 timm==1.0.31
# and they are installed into /tmp/site first. hf_vit runs from this checkout (PYTHONPATH), not installed.
#
# Usage, from the repository root:  bash scripts/gpu_check.sh   (about 5-7 minutes: 8 compilations, then 10 rounds)
# Environment: BATCH (256), REPEATS (10), OUT (where the JSON, table and log go; default outputs/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT="${OUT:-outputs/gpu_check}"
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, timm; print('torch', torch.__version__, '| transformers', transformers.__version__, '| timm', timm.__version__)"

# The whole run must end inside 8 minutes; the table is printed last.
timeout 460 python3 -m hf_vit.benchmark --device cuda --dtype bfloat16 --compile \
    --preset vit-base-patch16-224 --batch-size "${BATCH:-256}" --repeats "${REPEATS:-10}" --warmup 3 \
    --json "$OUT/gpu_benchmark.json" >"$OUT/table.md" 2>"$OUT/log.txt" || { tail -40 "$OUT/log.txt"; exit 1; }
echo
cat "$OUT/table.md"
