"""`hf-vit predict`: the top-k labels and scores of a saved model for image files, through transformers' pipeline,
exactly as users of the model folder get them."""

import json
import sys
from pathlib import Path

from transformers import AutoImageProcessor, pipeline
from transformers.utils import logging

from . import speedups
from .cli_args import CommandParser
from .images import read_image_file
from .modeling_hf_vit import HfViTForImageClassification

logger = logging.get_logger(__name__)


def predict(model: str, images: list[str], top_k: int = 5) -> list[list[dict]]:
    """Top-k labels and scores per image file. Files are decoded and converted as in training (`read_image_file`:
    any PIL mode, 16-bit gray scaled to 8 bits), all before the model loads, so that a bad file fails fast."""
    missing = [image for image in images if not Path(image).is_file()]
    if missing:
        raise FileNotFoundError(f"Image files not found: {missing}; give paths of existing image files.")
    pictures = [read_image_file(image) for image in images]
    # hf_vit's own classes, not the folder's code files: predicting never runs code that came with a checkpoint.
    classifier = pipeline(
        "image-classification",
        model=speedups.apply_and_log(HfViTForImageClassification.from_pretrained(model), logger.warning),
        image_processor=AutoImageProcessor.from_pretrained(model),
    )
    top_k = min(top_k, classifier.model.config.num_labels)
    return [classifier(picture, top_k=top_k) for picture in pictures]


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="hf-vit predict", description=__doc__)
    parser.add_argument("--model", required=True, help="an hf_vit model folder or Hub repo id")
    parser.add_argument("--top_k", type=int, default=5, help="labels to show per image")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")
    parser.add_argument("images", nargs="+", help="image files")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.top_k < 1:
        parser.error(f"--top_k {args.top_k} must be 1 or more.")
    for image, scores in zip(args.images, predict(args.model, args.images, args.top_k), strict=True):
        if args.json:
            print(json.dumps({"image": image, "predictions": scores}))
        else:
            print(image)
            for entry in scores:
                print(f"  {entry['score']:.4f}  {entry['label']}")
    return 0
