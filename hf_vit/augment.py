"""Image transforms (torchvision.transforms.v2) applied on the fly through `Dataset.with_transform`, and the batch
collators, where MixUp / CutMix mix whole training batches."""

from dataclasses import dataclass, field

import torch
from torchvision.transforms import InterpolationMode, v2
from transformers import ViTImageProcessor
from transformers.image_utils import PILImageResampling

from .data import IMAGE_COLUMN, LABEL_COLUMN
from .images import to_rgb
from .processing import processor_output_size

# Below this side length, RandomResizedCrop throws away too much of a tiny image: pad and crop instead (CIFAR style).
SMALL_IMAGE_SIDE = 64


@dataclass
class AugmentationArguments:
    """Training-time augmentation; evaluation always uses the saved image processor's resize and normalisation."""

    random_crop: bool = field(
        default=True,
        metadata={"help": f"RandomResizedCrop, or pad-and-crop for images under {SMALL_IMAGE_SIDE} px."},
    )
    crop_scale_min: float = field(default=0.25, metadata={"help": "Smallest area share of RandomResizedCrop."})
    horizontal_flip: bool = field(default=True, metadata={"help": "Random left-right flips (off for digits)."})
    auto_augment: str = field(
        default="none", metadata={"help": "'none', 'trivial' (TrivialAugmentWide) or 'rand' (RandAugment)."}
    )
    random_erasing: float = field(default=0.0, metadata={"help": "Probability of RandomErasing per image."})
    mixup_alpha: float = field(default=0.0, metadata={"help": "MixUp's Beta(alpha, alpha); 0 turns it off."})
    cutmix_alpha: float = field(default=0.0, metadata={"help": "CutMix's Beta(alpha, alpha); 0 turns it off."})

    @property
    def is_random(self) -> bool:
        """Whether any training transform draws random numbers; kept beside the fields, so a new one is added here."""
        return (
            self.random_crop
            or self.horizontal_flip
            or self.auto_augment != "none"
            or self.random_erasing > 0
            or self.mixup_alpha > 0
            or self.cutmix_alpha > 0
        )

    def __post_init__(self):
        if self.auto_augment not in ("none", "trivial", "rand"):
            raise ValueError(f"--auto_augment {self.auto_augment!r} must be 'none', 'trivial' or 'rand'.")
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ValueError(f"--crop_scale_min {self.crop_scale_min} must be in (0, 1].")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ValueError(f"--random_erasing {self.random_erasing} is a probability: use a value in [0, 1].")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} {getattr(self, name)} must be 0 (off) or positive (e.g. 0.8 or 1.0).")


def _size_and_normalize(processor: ViTImageProcessor) -> tuple[tuple[int, int], v2.Normalize]:
    # The processor's own resize rule (a timm-style processor resizes the shortest edge, then crops).
    normalize = v2.Normalize(mean=list(processor.image_mean), std=list(processor.image_std))
    return processor_output_size(processor), normalize


def _interpolation(processor: ViTImageProcessor) -> InterpolationMode:
    """The processor's resampling filter (timm sources: bicubic), for the training crops and resizes."""
    resample = getattr(processor, "resample", None)
    names = {
        PILImageResampling.BICUBIC: InterpolationMode.BICUBIC,
        PILImageResampling.NEAREST: InterpolationMode.NEAREST,
        PILImageResampling.LANCZOS: InterpolationMode.LANCZOS,
    }
    return names.get(resample, InterpolationMode.BILINEAR)


def _train_steps(processor: ViTImageProcessor, args: AugmentationArguments) -> tuple[list, list, list]:
    """The train transform in three parts: random steps per image (PIL image -> uint8 tensor [3, H, W] at the
    processor's size), the float conversion and normalisation, then random steps on the normalised image."""
    size, normalize = _size_and_normalize(processor)
    interpolation = _interpolation(processor)
    per_image = [to_rgb, v2.ToImage()]  # to_rgb, as in evaluation and prediction: the same pixels for every mode
    if args.random_crop and min(size) < SMALL_IMAGE_SIDE:
        # Pad by an eighth of the side (4 px at 32, 1 px at 8) with black pixels, then crop back at random.
        per_image += [
            v2.Resize(size, interpolation, antialias=True),
            v2.RandomCrop(size, padding=max(1, min(size) // 8), fill=0),
        ]
    elif args.random_crop:
        per_image.append(
            v2.RandomResizedCrop(size, scale=(args.crop_scale_min, 1.0), interpolation=interpolation, antialias=True)
        )
    else:
        per_image.append(v2.Resize(size, interpolation, antialias=True))
    if args.horizontal_flip:
        per_image.append(v2.RandomHorizontalFlip())
    if args.auto_augment == "trivial":
        per_image.append(v2.TrivialAugmentWide(interpolation=InterpolationMode.BILINEAR))
    elif args.auto_augment == "rand":
        per_image.append(v2.RandAugment(interpolation=InterpolationMode.BILINEAR))
    to_float = [v2.ToDtype(torch.float32, scale=True), normalize]
    normalised = [v2.RandomErasing(p=args.random_erasing, value=0)] if args.random_erasing > 0 else []
    return per_image, to_float, normalised


def build_train_transform(processor: ViTImageProcessor, args: AugmentationArguments) -> v2.Compose:
    """PIL image of any mode and size -> augmented, normalised float tensor [3, H, W] at the processor's size."""
    per_image, to_float, normalised = _train_steps(processor, args)
    return v2.Compose([*per_image, *to_float, *normalised])


def train_transform_fn(processor: ViTImageProcessor, args: AugmentationArguments):
    """The `with_transform` function of the training split: the pixels of `build_train_transform` (the same random
    draws; with RandomErasing on, in another order), but the float conversion and normalisation run once on the whole
    batch: on small images, v2's per-call dispatch, not the arithmetic, is most of these two steps' cost (figures in
    docs/training.md)."""
    per_image, to_float, normalised = _train_steps(processor, args)
    per_image, to_float = v2.Compose(per_image), v2.Compose(to_float)
    normalised = v2.Compose(normalised) if normalised else None

    def apply(batch):
        pixel_values = list(to_float(torch.stack([per_image(image) for image in batch[IMAGE_COLUMN]])))
        if normalised is not None:
            pixel_values = [normalised(image) for image in pixel_values]
        return {"pixel_values": pixel_values, "labels": batch[LABEL_COLUMN]}

    return apply


def eval_transform_fn(processor: ViTImageProcessor):
    """The `with_transform` function of evaluation splits: the saved processor itself, so that reported metrics are
    what users of the model folder (and `pipeline`) get."""

    def apply(batch):
        # to_rgb first, as in training and `hf-vit predict`: the processor's own RGB conversion clips 16-bit images.
        images = [to_rgb(image) for image in batch[IMAGE_COLUMN]]
        pixel_values = processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": list(pixel_values), "labels": batch[LABEL_COLUMN]}

    return apply


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([example["labels"] for example in examples], dtype=torch.long),
    }


class MixingCollator:
    """Training collator: MixUp and/or CutMix (one of the two per batch when both are on) turn integer labels into
    soft targets [B, C]; label smoothing is applied here too, because Trainer's label smoother takes integer labels
    only."""

    def __init__(self, num_labels: int, mixup_alpha: float, cutmix_alpha: float, label_smoothing: float = 0.0):
        mixers = []
        if mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_labels))
        if cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_labels))
        if not mixers:
            raise ValueError("MixingCollator needs mixup_alpha > 0 or cutmix_alpha > 0.")
        self.mix = mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
        self.num_labels = num_labels
        self.label_smoothing = label_smoothing

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = collate(examples)
        pixel_values, targets = self.mix(batch["pixel_values"], batch["labels"])
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / self.num_labels
        return {"pixel_values": pixel_values, "labels": targets}
