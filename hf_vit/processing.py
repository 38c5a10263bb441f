"""Image preprocessing settings saved beside every model, and the one function that writes a model folder."""

import fnmatch
import math
import os
import shutil
from pathlib import Path

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


# A save is written here first, inside the target (same filesystem, so that moving files in is a rename).
STAGING_DIR_NAME = ".hf_vit-saving"
# Files that make `from_pretrained` load weights: the single file or the index of shards, and the shards; the legacy
# pickle names too, because transformers falls back to them when model.safetensors is absent.
WEIGHTS_ENTRY_POINTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json")  # fmt: skip
WEIGHTS_SHARDS = ("model-*-of-*.safetensors", "pytorch_model-*-of-*.bin")


def _is_weights_file(name: str) -> bool:
    return name in WEIGHTS_ENTRY_POINTS or any(fnmatch.fnmatch(name, pattern) for pattern in WEIGHTS_SHARDS)


def fsync_path(path: Path) -> None:
    # Written data reaches the disk before the rename that publishes it, so that a power cut cannot leave a
    # published file empty; a killed process alone would not need it (the page cache survives it).
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_model_folder(
    model, image_processor: ViTImageProcessor, output_dir: str | os.PathLike, extra_files: dict[str, str] | None = None
) -> None:
    """Write a complete model folder: model.safetensors, config.json with auto_map, the two code files,
    preprocessor_config.json, and `extra_files` (name -> text, e.g. the model card). Everything hf_vit saves goes
    through here.

    Interrupted at any moment (killed, disk full), the folder is either the old complete folder, or a folder without
    weights (which `from_pretrained` refuses with an error), or the new complete folder; never new files with old
    weights or the reverse. Everything is written into a staging folder first; then the old weights are deleted, the
    other files moved in, and the weights moved in last. Other files in the folder (checkpoints, results) stay."""
    target = Path(output_dir)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is a file, not a folder: save the model to another path.")
    staging = target / STAGING_DIR_NAME
    target.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted save left
    staging.mkdir()
    try:
        model.save_pretrained(staging)
        image_processor.save_pretrained(staging)
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        staged = sorted(path.name for path in staging.iterdir())
        for name in staged:
            fsync_path(staging / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # e.g. a full disk: give the space back; the old folder is whole
        raise
    # The entry points go first, so that from here on the folder loads nothing until the new weights are in.
    old_weights = sorted((path.name for path in target.iterdir() if _is_weights_file(path.name)),
                         key=lambda name: name not in WEIGHTS_ENTRY_POINTS)  # fmt: skip
    for name in old_weights:
        (target / name).unlink()
    entry_points = [name for name in staged if name in WEIGHTS_ENTRY_POINTS]
    for name in [name for name in staged if name not in entry_points] + entry_points:
        os.replace(staging / name, target / name)
    try:
        fsync_path(target)  # the renames themselves
    except OSError:
        pass  # some filesystems cannot sync a directory; the folder is complete either way
    staging.rmdir()


def size_fields(size) -> dict:
    """A processor's size as a plain dict of the fields it sets (transformers 5 holds a `SizeDict`)."""
    if size is None:
        return {}
    items = size.items() if isinstance(size, dict) else vars(size).items()
    return {key: value for key, value in items if value is not None}


def processor_output_size(processor) -> tuple[int, int]:
    """(height, width) of the pixel values `processor` makes, read from its own resize rule: the crop when it crops,
    else the resize target. A shortest-edge resize without a crop keeps each image's aspect ratio: no fixed size."""
    crop = size_fields(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else {}
    size = crop or size_fields(getattr(processor, "size", None))
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    raise ValueError(
        f"{type(processor).__name__} with size {size} makes images of varying size (no center crop); hf_vit trains "
        "at a fixed size: give the processor a crop_size (do_center_crop=True) or a size with height and width."
    )


def processor_for_size(processor, image_size: tuple[int, int]):
    """The same processor (class, resample, mean, std, crop ratio) making `image_size` (height, width) images:
    the crop becomes `image_size` and the resize before it scales with it; without a crop the resize target is
    `image_size` itself."""
    old_height, old_width = processor_output_size(processor)
    height, width = image_size
    if (old_height, old_width) == (height, width):
        return processor
    fields = processor.to_dict()
    size = size_fields(getattr(processor, "size", None))
    if getattr(processor, "do_center_crop", False):
        fields["crop_size"] = {"height": height, "width": width}
        if "shortest_edge" in size:  # large enough for the crop on both sides, at the same resize-to-crop ratio
            ratio = max(height / old_height, width / old_width)
            fields["size"] = {"shortest_edge": math.ceil(size["shortest_edge"] * ratio)}
        else:
            fields["size"] = {"height": math.ceil(size["height"] * height / old_height),
                              "width": math.ceil(size["width"] * width / old_width)}  # fmt: skip
    else:
        fields["size"] = {"height": height, "width": width}
    fields.pop("image_processor_type", None)
    return type(processor)(**fields)


def describe_processor(processor) -> str:
    """One line for logs and cards: class, resize rule, crop, resample, mean and std."""
    size = size_fields(getattr(processor, "size", None))
    crop = size_fields(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else {}
    resample = getattr(processor, "resample", None)
    resample = PILImageResampling(resample).name.lower() if resample is not None else "default"
    return (f"{type(processor).__name__}, resize {size}" + (f", center crop {crop}" if crop else "")
            + f", {resample}, mean {list(processor.image_mean)}, std {list(processor.image_std)}")  # fmt: skip
