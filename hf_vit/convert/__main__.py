"""`python -m hf_vit.convert`: the same as `hf-vit convert`."""

import sys

from . import main

sys.exit(main())
