"""Configuration of hf_vit, a Vision Transformer for image classification.

This file travels with every saved model as Hub remote code, beside `modeling_hf_vit.py`. It imports only
transformers and runs on the loader's transformers: 4.57 (the last 4.x) and 5.x, with torch 2.4 or newer. It is
written in the classic style (`__init__` with keyword defaults, then `super().__init__(**kwargs)`), which both lines
accept, and it keeps config keys it does not know, as `PretrainedConfig` does: newer transformers releases and users
write keys into config.json, and a repository must keep loading after them. Only hf_vit's own fields are validated.
"""

from __future__ import annotations  # annotations such as `int | None` stay unevaluated on Python 3.9

from transformers import PretrainedConfig

# Every saved config names all three entry points, so a Hub repository answers AutoConfig, AutoModel and
# AutoModelForImageClassification with trust_remote_code=True (save_pretrained alone adds only the class it saves).
AUTO_MAP = {
    "AutoConfig": "configuration_hf_vit.HfViTConfig",
    "AutoModel": "modeling_hf_vit.HfViTModel",
    "AutoModelForImageClassification": "modeling_hf_vit.HfViTForImageClassification",
}


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def grid_for_image(config: HfViTConfig, height: int, width: int) -> tuple[int, int]:
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

    - `fc_norm`: the final LayerNorm moves after pooling (timm's `fc_norm`, the default of its avg-pool models).
    - `use_distillation_token`: DeiT's distillation token, placed right after the class token.
    - `distillation_head`: DeiT's "with teacher" classifier: a second linear head (`distillation_classifier`) on the
      distillation token; the logits (and the loss) are the average of the two heads' logits.
    """

    model_type = "hf_vit"

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        num_channels=3,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
        layer_norm_eps=1e-6,
        qkv_bias=True,
        qk_norm=False,
        layerscale_init=None,
        num_register_tokens=0,
        use_class_token=True,
        pooling="cls",
        position_embedding="learned",
        stem_channels=None,
        initializer_range=0.02,
        fc_norm=False,
        use_distillation_token=False,
        distillation_head=False,
        **kwargs,
    ):
        # JSON has no tuples: sizes are kept as lists so that a saved and reloaded config compares equal.
        self.image_size = image_size if isinstance(image_size, int) else list(image_size)
        self.patch_size = patch_size if isinstance(patch_size, int) else list(patch_size)
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.layer_norm_eps = layer_norm_eps
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        self.layerscale_init = layerscale_init
        self.num_register_tokens = num_register_tokens
        self.use_class_token = use_class_token
        self.pooling = pooling
        self.position_embedding = position_embedding
        self.stem_channels = list(stem_channels) if isinstance(stem_channels, (list, tuple)) else stem_channels
        self.initializer_range = initializer_range
        self.fc_norm = fc_norm
        self.use_distillation_token = use_distillation_token
        self.distillation_head = distillation_head
        super().__init__(**kwargs)
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        if self.id2label is not None and not self.label2id:  # transformers 5 leaves it unset; 4.x fills it
            self.label2id = {label: index for index, label in self.id2label.items()}
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
        for image, patch, axis in zip(self.image_hw, self.patch_hw, ("height", "width")):  # noqa: B905 (Python 3.9)
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
    def from_dict(cls, config_dict: dict, **kwargs) -> HfViTConfig:
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


__all__ = ["HfViTConfig", "grid_for_image"]
