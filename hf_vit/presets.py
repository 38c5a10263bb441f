"""Named model sizes: the standard ViT sizes (ViT paper, DeiT, timm) and small-data models for CPU training.

Presets belong to the hf_vit package, not to the Hub files: a saved config.json holds every field, so a repository
never needs them. Each value holds the fields that differ from `HfViTConfig`'s defaults.
"""

from .configuration_hf_vit import HfViTConfig

_TINY = {"hidden_size": 192, "num_hidden_layers": 12, "num_attention_heads": 3, "intermediate_size": 768}
_SMALL = {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536}
_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
_HUGE = {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16, "intermediate_size": 5120}

PRESETS: dict[str, dict] = {
    "vit-tiny-patch16-224": {**_TINY, "patch_size": 16},
    "vit-small-patch16-224": {**_SMALL, "patch_size": 16},
    "vit-small-patch32-224": {**_SMALL, "patch_size": 32},
    "vit-small-patch14-224": {**_SMALL, "patch_size": 14},
    "vit-base-patch16-224": {**_BASE, "patch_size": 16},
    "vit-base-patch32-224": {**_BASE, "patch_size": 32},
    "vit-base-patch14-224": {**_BASE, "patch_size": 14},
    "vit-large-patch16-224": {**_LARGE, "patch_size": 16},
    "vit-large-patch32-224": {**_LARGE, "patch_size": 32},
    "vit-large-patch14-224": {**_LARGE, "patch_size": 14},
    "vit-huge-patch14-224": {**_HUGE, "patch_size": 14},
    # Small data sets: few tokens, narrow and shallow, so that training from scratch on a CPU takes minutes.
    # initializer_range 0.1 (about 1/sqrt(width)): ViT-B's 0.02 is far below 1/sqrt(fan_in) for a narrow model on
    # small patches, and training from scratch then sits at chance for many epochs (docs/training.md).
    "vit-digits-patch2-8": {
        "image_size": 8, "patch_size": 2, "hidden_size": 128, "num_hidden_layers": 4,
        "num_attention_heads": 4, "intermediate_size": 256, "pooling": "mean", "drop_path_rate": 0.05,
        "initializer_range": 0.1,
    },
    "vit-mnist-patch4-28": {
        "image_size": 28, "patch_size": 4, "hidden_size": 192, "num_hidden_layers": 6,
        "num_attention_heads": 3, "intermediate_size": 384, "pooling": "mean", "drop_path_rate": 0.1,
        "initializer_range": 0.1,
    },
    # 16 tokens instead of 49: on a CPU it reaches a given Fashion-MNIST accuracy in less time than patch 4.
    "vit-mnist-patch7-28": {
        "image_size": 28, "patch_size": 7, "hidden_size": 128, "num_hidden_layers": 6,
        "num_attention_heads": 4, "intermediate_size": 256, "pooling": "mean", "drop_path_rate": 0.0,
        "initializer_range": 0.1,
    },
    # The patch-7 model's 16 tokens, made by a convolutional stem (28 -> 14 -> 7 -> 4), which learns small images in
    # fewer epochs than one big-stride patch filter (how the channels were chosen: docs/training.md).
    "vit-mnist-convstem-patch8-28": {
        "image_size": 28, "patch_size": 8, "stem_channels": [64, 128, 256], "hidden_size": 128,
        "num_hidden_layers": 6, "num_attention_heads": 4, "intermediate_size": 256, "pooling": "mean",
        "drop_path_rate": 0.0, "initializer_range": 0.1,
    },
    "vit-cifar-patch4-32": {
        "image_size": 32, "patch_size": 4, "hidden_size": 256, "num_hidden_layers": 7,
        "num_attention_heads": 4, "intermediate_size": 512, "pooling": "mean", "drop_path_rate": 0.1,
    },
}  # fmt: skip


def preset_config(name: str, **overrides) -> HfViTConfig:
    """Build a named preset (see `PRESETS`), with any field overridden, e.g. `num_labels=10`."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    return HfViTConfig(**{**PRESETS[name], **overrides})


__all__ = ["PRESETS", "preset_config"]
