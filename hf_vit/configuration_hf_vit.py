"""Configuration of hf_vit, a Vision Transformer for image classification.

Loaded as Hub remote code next to `modeling_hf_vit.py`: imports only transformers and the standard library.
"""

import dataclasses
import difflib

from transformers import PretrainedConfig

# Standard sizes (ViT paper / DeiT / timm) and small-data recipes. Each value holds the fields that differ from the
# defaults of `HfViTConfig`; `HfViTConfig.from_preset(name, **overrides)` builds one.
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
    # small patches, and training from scratch then sits at chance for many epochs (measured on digits).
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
    # The patch-7 model's 16 tokens, made by a convolutional stem (28 -> 14 -> 7 -> 4): with channels 32, 64, 128 it
    # reached 0.855-0.868 Fashion-MNIST validation accuracy after 2 epochs on half the set, against 0.833 for patch
    # 7, and 0.916 test accuracy with the full 16-epoch recipe against 0.892. Channels 64, 128, 256 raised the
    # 24-epoch recipe from 0.917-0.919 to 0.920 test accuracy (27 minutes on 2 CPU threads, README).
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


# Every saved config names all three entry points, so a Hub repository answers AutoConfig, AutoModel and
# AutoModelForImageClassification with trust_remote_code=True (save_pretrained alone adds only the class it saves).
AUTO_MAP = {
    "AutoConfig": "configuration_hf_vit.HfViTConfig",
    "AutoModel": "modeling_hf_vit.HfViTModel",
    "AutoModelForImageClassification": "modeling_hf_vit.HfViTForImageClassification",
}


# Keyword arguments that transformers itself passes to a config besides its fields (from_pretrained, from_dict).
_TRANSFORMERS_KWARGS = {
    "num_labels", "auto_map", "model_type", "name_or_path", "_name_or_path", "attn_implementation",
    "experts_implementation", "output_attentions", "torch_dtype", "_commit_hash", "per_layer_config",
    "_attn_implementation_internal", "_experts_implementation_internal",
    "use_cache",  # Trainer sets config.use_cache on every model it trains, so trained folders carry it
}  # fmt: skip


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def grid_for_image(config: "HfViTConfig", height: int, width: int) -> tuple[int, int]:
    """The token grid of an image: patches tile it exactly; a convolutional stem pads at each stride-2 step, so its
    grid is the size divided by the patch size, rounded up (28 px at patch 8 gives 4)."""
    patch_h, patch_w = config.patch_hw
    if config.stem_channels:
        return -(-height // patch_h), -(-width // patch_w)
    return height // patch_h, width // patch_w


class HfViTConfig(PretrainedConfig):
    r"""Configuration of [`HfViTModel`] and [`HfViTForImageClassification`].

    Field names follow transformers' `ViTConfig` where it has one; the defaults build ViT-Base/16 at 224 px with
    timm's LayerNorm epsilon (1e-6). Options beyond transformers' ViT:

    - `drop_path_rate`: stochastic depth, rising linearly from 0 at the first block to this value at the last.
    - `qk_norm`: LayerNorm on queries and keys per head (ViT-22B style).
    - `layerscale_init`: initial value of LayerScale's per-channel gains; `None` turns LayerScale off.
    - `num_register_tokens`: learned tokens without position embedding ("Vision Transformers Need Registers").
    - `use_class_token` / `pooling`: "cls" classifies from the class token, "mean" from the average of patch tokens.
    - `position_embedding`: "learned" (resampled bicubically for other resolutions) or "sincos" (fixed 2-D).
    - `stem_channels`: a convolutional stem instead of the patchify convolution (Xiao et al. 2021, "Early
      Convolutions Help Transformers See Better"): one 3x3 convolution of stride 2 with BatchNorm and ReLU per entry,
      with that many output channels, then a 1x1 convolution to `hidden_size`. Its total stride, 2 ** len(entries),
      must equal the (square) patch size. Each convolution pads, so any image size works: the grid is the size
      divided by the patch size, rounded up (28x28 at patch 8: 4x4 tokens). `None` (default): plain patches.

    Options that converted checkpoints need (`hf_vit.convert`):

    - `fc_norm`: the final LayerNorm moves after pooling (timm's `fc_norm`, the default of its avg-pool models):
      `vit.norm` is then the identity and `vit.fc_norm` normalises the pooled embedding.
    - `use_distillation_token`: DeiT's distillation token, placed right after the class token.
    - `distillation_head`: DeiT's "with teacher" classifier: a second linear head (`distillation_classifier`) on the
      distillation token; the logits (and the loss) are the average of the two heads' logits.
    """

    model_type = "hf_vit"

    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int | list[int] | tuple[int, int] = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    qk_norm: bool = False
    layerscale_init: float | None = None
    num_register_tokens: int = 0
    use_class_token: bool = True
    pooling: str = "cls"
    position_embedding: str = "learned"
    stem_channels: list[int] | None = None
    initializer_range: float = 0.02
    fc_norm: bool = False
    use_distillation_token: bool = False
    distillation_head: bool = False

    def __post_init__(self, **kwargs):
        unknown = sorted(set(kwargs) - _TRANSFORMERS_KWARGS)
        if unknown:
            # transformers would store unknown fields silently; a misspelt field would then be ignored by the model.
            known = [f.name for f in dataclasses.fields(self)]
            hints = [f"{name!r}" + "".join(f" (did you mean {m!r}?)" for m in difflib.get_close_matches(name, known, 1))
                     for name in unknown]  # fmt: skip
            raise ValueError(f"HfViTConfig: unknown field(s) {', '.join(hints)}; fix the spelling or remove them.")
        num_labels = kwargs.get("num_labels")
        if num_labels is not None and self.id2label is not None and num_labels != len(self.id2label):
            raise ValueError(
                f"HfViTConfig: num_labels={num_labels} contradicts id2label, which names {len(self.id2label)} labels; "
                "pass only id2label (num_labels follows from it) or make them agree."
            )
        super().__post_init__(**kwargs)
        if self.id2label is not None:
            implied = {label: index for index, label in self.id2label.items()}
            if self.label2id is None:
                self.label2id = implied
            elif {label: int(index) for label, index in self.label2id.items()} != implied:
                raise ValueError(
                    "HfViTConfig: label2id is not the inverse of id2label; pass only id2label, or make them agree."
                )
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        # JSON has no tuples: keep sizes as lists so that a saved and reloaded config compares equal.
        if not isinstance(self.image_size, int):
            self.image_size = list(self.image_size)
        if not isinstance(self.patch_size, int):
            self.patch_size = list(self.patch_size)
        if self.stem_channels is not None and not isinstance(self.stem_channels, (int, str)):
            self.stem_channels = list(self.stem_channels)
        self._validate()

    @property
    def image_hw(self) -> tuple[int, int]:
        return _pair(self.image_size)

    @property
    def patch_hw(self) -> tuple[int, int]:
        return _pair(self.patch_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        return grid_for_image(self, *self.image_hw)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.use_class_token) + int(self.use_distillation_token) + self.num_register_tokens

    def _validate(self):
        def fail(message):
            raise ValueError(f"HfViTConfig: {message}")

        for name in ("image_size", "patch_size"):
            value = getattr(self, name)
            sizes = [value] if isinstance(value, int) else list(value)
            if len(sizes) not in (1, 2) or not all(isinstance(s, int) and s > 0 for s in sizes):
                fail(f"{name}={value!r} must be a positive int or a (height, width) pair of positive ints.")
        for name in ("num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                fail(f"{name}={value!r} must be a positive integer.")
        if self.num_register_tokens < 0:
            fail(f"num_register_tokens={self.num_register_tokens} must be 0 or more.")
        if self.hidden_size % self.num_attention_heads:
            fail(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}; "
                "choose a head count that divides the width (e.g. 64 channels per head)."
            )
        for image, patch, axis in zip(self.image_hw, self.patch_hw, ("height", "width"), strict=True):
            if image % patch and not self.stem_channels:
                fail(
                    f"image {axis} {image} is not a multiple of the patch {axis} {patch}; "
                    "change image_size or patch_size so that patches tile the image."
                )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                fail(f"{name}={value} must be in [0, 1).")
        if self.layer_norm_eps <= 0:
            fail(f"layer_norm_eps={self.layer_norm_eps} must be positive.")
        if self.pooling not in ("cls", "mean"):
            fail(f"pooling={self.pooling!r} must be 'cls' or 'mean'.")
        if self.pooling == "cls" and not self.use_class_token:
            fail("pooling='cls' needs use_class_token=True; set pooling='mean' to classify without a class token.")
        if self.position_embedding not in ("learned", "sincos"):
            fail(f"position_embedding={self.position_embedding!r} must be 'learned' or 'sincos'.")
        if self.position_embedding == "sincos" and self.hidden_size % 4:
            fail(f"position_embedding='sincos' needs hidden_size divisible by 4, got {self.hidden_size}.")
        if self.stem_channels is not None:
            self._validate_stem(fail)
        if self.layerscale_init is not None and self.layerscale_init <= 0:
            fail(f"layerscale_init={self.layerscale_init} must be positive, or None to turn LayerScale off.")
        if self.use_distillation_token and not self.use_class_token:
            fail("use_distillation_token=True needs use_class_token=True (DeiT places it right after the class token).")
        if self.distillation_head and not self.use_distillation_token:
            fail("distillation_head=True needs use_distillation_token=True: the second head reads that token.")
        if self.distillation_head and (self.pooling != "cls" or self.fc_norm):
            fail(
                "distillation_head=True needs pooling='cls' and fc_norm=False: DeiT's two heads read the final-norm "
                "class and distillation tokens."
            )

    def _validate_stem(self, fail):
        channels = self.stem_channels
        if not isinstance(channels, list) or not channels or not all(isinstance(c, int) and c > 0 for c in channels):
            fail(f"stem_channels={channels!r} must be a non-empty list of positive ints (e.g. [32, 64, 128]), or None.")
        patch_h, patch_w = self.patch_hw
        stride = 2 ** len(channels)
        if (patch_h, patch_w) != (stride, stride):
            fail(
                f"stem_channels={channels} makes {len(channels)} convolutions of stride 2 (total stride {stride}), but "
                f"patch_size is {self.patch_size}; the stem needs log2(patch size) entries: use patch_size={stride}, "
                "or one entry per halving of a power-of-two patch size (e.g. 4 entries for patch 16)."
            )

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "HfViTConfig":
        # A transformers ViT/DeiT folder would otherwise load with a warning and random weights: say what to do.
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            source = {"vit": "transformers", "deit": "deit"}.get(model_type)
            hint = (
                f"convert it into an hf_vit folder first: `hf-vit convert --from {source} --source PATH_OR_REPO "
                "--output DIR`."
                if source
                else "hf_vit converts transformers ViT/DeiT, timm and JAX .npz checkpoints (`hf-vit convert`)."
            )
            raise ValueError(f"HfViTConfig: this config has model_type={model_type!r}, not {cls.model_type!r}; {hint}")
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "HfViTConfig":
        """Build a named preset (see `PRESETS`), with any field overridden, e.g. `num_labels=10`."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})


__all__ = ["HfViTConfig", "PRESETS", "grid_for_image"]
