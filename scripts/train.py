"""Same as `hf-vit train` (and `accelerate launch scripts/train.py ...`): see `hf_vit/training.py`."""

import sys

from hf_vit.training import main

if __name__ == "__main__":
    sys.exit(main())
