"""Benchmark hf_vit against transformers' ViT (sdpa, eager) and timm with the same weights.

Same as `hf-vit benchmark`; see `python scripts/benchmark.py --help` and docs/performance.md.
"""

import sys

from hf_vit.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
