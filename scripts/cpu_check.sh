#!/usr/bin/env bash
# The CPU inference checks, as one prepared run (about 15 minutes on 2 cores), for the machine kinds this project
# runs on: meant for an Intel Xeon with AVX-512 and AMX, where the targets are (docs/performance.md, "Against the CPU
# targets"): ViT-S/16 float32 inference >= 1.10x transformers' sdpa model and >= 75% of the matmul rate, in the
# installed path. It runs anywhere and says which CPU it ran on.
#  1. float32, eager: hf_vit with `hf_vit.speedups` forced onto oneDNN (--onednn-linear on) beside hf_vit-plain
#     (torch's default BLAS: what `auto` keeps on Intel CPUs), transformers (sdpa) and timm.
#  2. float32, compiled, inference with frozen weights (--freeze: inductor folds the weights in as constants,
#     prepacks them for the BLAS and fuses the epilogues), every contender alike.
#  3. bfloat16 autocast (AMX where the CPU has it), eager and compiled with frozen weights, every contender alike.
# Each is `hf-vit benchmark` with interleaved rounds; the tables go to $OUT/*.md and are printed last.
#
# Usage, from the repository root with the venv active:  bash scripts/cpu_check.sh
# Environment: THREADS (2), REPEATS (10), OUT (default outputs/cpu_check).
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT="${OUT:-outputs/cpu_check}"
mkdir -p "$OUT"

{
    lscpu | grep -E '^(Model name|Vendor ID|CPU\(s\)|Thread)'
    grep -o -w -E 'amx_(bf16|tile|int8)|avx512_bf16|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' '
    echo
    uptime
} | tee "$OUT/cpu.txt"

common=(--preset vit-small-patch16-224 --batch-size 16 --threads "${THREADS:-2}" --repeats "${REPEATS:-10}"
    --warmup 3 --modes inference --no-memory)
peers=(--contenders hf_vit hf_vit-plain transformers-sdpa timm)
status=0
benchmark() {
    local name=$1
    shift
    local started=$SECONDS
    timeout 600 python -m hf_vit.benchmark "${common[@]}" "$@" --json "$OUT/$name.json" >"$OUT/$name.md" \
        2>"$OUT/$name.log"
    local code=$?
    echo "$name: exit $code after $((SECONDS - started)) s (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    [ $code = 0 ] || status=$code
}

benchmark float32_eager "${peers[@]}" --onednn-linear on
benchmark float32_frozen "${peers[@]}" --freeze
benchmark bfloat16_eager "${peers[@]}" --dtype bfloat16
benchmark bfloat16_frozen "${peers[@]}" --dtype bfloat16 --freeze

for name in float32_eager float32_frozen bfloat16_eager bfloat16_frozen; do
    echo
    cat "$OUT/$name.md"
done
exit $status
