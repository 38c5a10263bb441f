"""Image preprocessing settings saved beside every model, and the one function that writes a model folder."""

import math
import os

from transformers import BitImageProcessor, ViTImageProcessor
from transformers.image_utils import PILImageResampling

from .configuration_hf_vit import HfViTConfig

# The ViT paper's and timm's AugReg normalisation: maps [0, 1] to [-1, 1].
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


def build_image_processor(
    config: HfViTConfig,
    image_mean=DEFAULT_MEAN,
    image_std=DEFAULT_STD,
    resample: PILImageResampling = PILImageResampling.BILINEAR,
) -> ViTImageProcessor:
    """A `ViTImageProcessor` that turns any PIL image (RGB, grayscale, RGBA, palette, ...) into the model's input:
    converted to RGB, resized to `config.image_size`, scaled to [0, 1] and normalised."""
    if config.num_channels != 3:
        raise ValueError(
            f"build_image_processor makes RGB input, but the config has num_channels={config.num_channels}; "
            "use num_channels=3 (grayscale images are converted to RGB) or preprocess the images yourself."
        )
    height, width = config.image_hw
    return ViTImageProcessor(
        do_convert_rgb=True,
        do_resize=True,
        size={"height": height, "width": width},
        resample=resample,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(image_mean),
        image_std=list(image_std),
    )


def build_timm_eval_processor(
    image_size: int,
    crop_pct: float,
    image_mean,
    image_std,
    resample: PILImageResampling = PILImageResampling.BICUBIC,
) -> BitImageProcessor:
    """timm's eval transform as a `BitImageProcessor`: resize the shortest edge to floor(image_size / crop_pct),
    center crop image_size x image_size, scale to [0, 1], normalise.

    With `AutoImageProcessor.from_pretrained(folder, backend="pil")` the pixels equal timm's on PIL images, except
    that transformers crops at floor((W - w) / 2) where torchvision rounds (half to even): a one-pixel shift when that
    margin is k + 0.5 with k odd. The default torchvision backend resizes tensors and differs by up to one 8-bit level.
    """
    scale_size = math.floor(image_size / crop_pct)
    return BitImageProcessor(
        do_convert_rgb=True,
        do_resize=True,
        size={"shortest_edge": scale_size},
        resample=resample,
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(image_mean),
        image_std=list(image_std),
    )


def save_model_folder(model, image_processor: ViTImageProcessor, output_dir: str | os.PathLike) -> None:
    """Write a complete model folder: model.safetensors, config.json with auto_map, the two code files and
    preprocessor_config.json. Everything hf_vit saves goes through here."""
    model.save_pretrained(output_dir)
    image_processor.save_pretrained(output_dir)
