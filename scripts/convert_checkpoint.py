"""Convert a transformers ViT/DeiT, timm or JAX .npz checkpoint into an hf_vit model folder.

Same as `hf-vit convert`; see `python scripts/convert_checkpoint.py --help`.
"""

import sys

from hf_vit.convert import main

if __name__ == "__main__":
    sys.exit(main())
