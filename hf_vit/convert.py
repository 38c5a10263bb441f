"""Convert the ViT checkpoints people already have into hf_vit models with the same predictions.

One function per source, each returning a `Converted` (the model, its image processor, a note of the source):

- `convert_transformers`: transformers `ViTForImageClassification` / `ViTModel` folders, repo ids or instances.
- `convert_deit`: transformers `DeiTForImageClassification(WithTeacher)` / `DeiTModel` (distillation token, and the
  averaged logits of the two heads).
- `convert_timm`: timm `VisionTransformer` / `VisionTransformerDistilled` instances, `timm.create_model` names (with a
  local checkpoint file), timm Hub folders.
- `convert_npz`: JAX `.npz` files (google-research/vision_transformer and big_vision layouts).

Weights are read as tensors only (safetensors, `torch.load(weights_only=True)`, `numpy.load(allow_pickle=False)`):
no code from a checkpoint runs. A weight or an option without an exact hf_vit counterpart is a `ValueError` naming
it; the only weights ever left out are those a caller drops by name (`drop_pooler`). timm is imported lazily, inside
the timm functions (it is in the `dev` and `convert` extras).

`hf-vit convert --from {transformers,deit,timm,npz} --source PATH_OR_NAME --output DIR` writes a complete model folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .configuration_hf_vit import HfViTConfig
from .modeling_hf_vit import HfViTForImageClassification
from .processing import build_image_processor, build_timm_eval_processor, save_model_folder

logger = logging.getLogger(__name__)

SOURCES = ("transformers", "deit", "timm", "npz")


# ----------------------------------------------------------------------------------------------------------------------
# Shared machinery
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Converted:
    """A converted model with its preprocessing, and what the model card should say about where it came from."""

    model: HfViTForImageClassification
    image_processor: object
    source: str
    source_kind: str
    notes: list[str] = field(default_factory=list)
    # The source library's forward pass on pixel values, returning what `model(...).logits` must equal.
    reference: Callable[[torch.Tensor], torch.Tensor] | None = None
    max_abs_diff: float | None = None

    def check(self, num_images: int = 2, seed: int = 0) -> float:
        """Max |logit difference| against the source library on random images (float32); also kept for the card."""
        if self.reference is None:
            raise ValueError(f"no reference model to check against for a {self.source_kind} source")
        height, width = self.model.config.image_hw
        generator = torch.Generator().manual_seed(seed)
        pixels = torch.randn(num_images, self.model.config.num_channels, height, width, generator=generator)
        self.model.eval()
        with torch.no_grad():
            ours = self.model(pixel_values=pixels).logits
            theirs = self.reference(pixels)
        self.max_abs_diff = (ours - theirs).abs().max().item()
        return self.max_abs_diff

    def save(self, output_dir: str | os.PathLike) -> None:
        """A complete hf_vit folder (weights, config with labels, processor, code files) plus a short model card."""
        save_model_folder(self.model, self.image_processor, output_dir)
        Path(output_dir, "README.md").write_text(model_card(self))


class _Weights:
    """Source tensors consumed by name, so that anything left over is reported instead of silently dropped."""

    def __init__(self, tensors: dict, what: str):
        self.tensors = dict(tensors)
        self.what = what

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def take(self, key: str) -> torch.Tensor:
        if key not in self.tensors:
            raise ValueError(f"{self.what}: expected weight {key!r} is missing; is this a ViT checkpoint?")
        return torch.as_tensor(self.tensors.pop(key)).float()

    def take_optional(self, key: str) -> torch.Tensor | None:
        return self.take(key) if key in self.tensors else None

    def drop(self, prefix: str) -> list[str]:
        dropped = sorted(k for k in self.tensors if k.startswith(prefix))
        for key in dropped:
            del self.tensors[key]
        return dropped

    def finish(self) -> None:
        if self.tensors:
            left = sorted(self.tensors)
            shown = ", ".join(left[:8]) + (f", ... ({len(left)} in all)" if len(left) > 8 else "")
            raise ValueError(
                f"{self.what}: hf_vit has no counterpart for these weights, so it cannot convert exactly: {shown}"
            )


def _zeros_if_none(tensor: torch.Tensor | None, size: int) -> torch.Tensor:
    # A bias-less linear or convolution equals one with a zero bias: exact.
    return torch.zeros(size) if tensor is None else tensor


def _build(config: HfViTConfig, state_dict: dict[str, torch.Tensor]) -> HfViTForImageClassification:
    # Built without random initialisation (on the meta device), then every weight is taken from the source.
    with torch.device("meta"):
        model = HfViTForImageClassification(config)
    state_dict = {key: value.detach().to(torch.float32).contiguous() for key, value in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)
    left_on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left_on_meta:
        raise RuntimeError(f"hf_vit converter bug: {left_on_meta} not set from the source.")
    return model.eval()


def _split_positions(positions: torch.Tensor, num_prefix: int, grid: tuple[int, int], key: str):
    """Split a [1, prefix + grid_h * grid_w, D] table into the prefix slots and the patch table."""
    expected = num_prefix + grid[0] * grid[1]
    if positions.shape[1] != expected:
        raise ValueError(
            f"{key} has {positions.shape[1]} positions, expected {expected} ({num_prefix} prefix + "
            f"{grid[0]}x{grid[1]} patches); the image size or the number of prefix tokens does not match the weights."
        )
    return positions[:, :num_prefix], positions[:, num_prefix:]


def _square_grid(num_positions: int, key: str) -> int:
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise ValueError(
            f"{key}: {num_positions} patch positions do not form a square grid; pass image_size=(height, width)."
        )
    return side


def _load_tensor_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """safetensors, or a pickled state dict read with weights_only=True (tensors and plain containers only)."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unpickling error names the disallowed global
        raise ValueError(f"{path} is not a plain tensor checkpoint (loaded with weights_only=True): {error}") from error
    if isinstance(checkpoint, dict):
        for wrapper in ("model", "state_dict", "module"):
            if wrapper in checkpoint and isinstance(checkpoint[wrapper], dict):
                logger.info("using the %r entry of %s", wrapper, path)
                checkpoint = checkpoint[wrapper]
                break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors).")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def _vit_config(**fields) -> HfViTConfig:
    labels = fields.pop("id2label", None)
    if labels:
        fields["id2label"] = {int(i): str(name) for i, name in labels.items()}
        fields["label2id"] = {name: i for i, name in fields["id2label"].items()}
    return HfViTConfig(**fields)


def _labels_for(num_labels: int, id2label: dict | None) -> dict:
    """config fields for the head: explicit labels when they fit the head, else transformers' LABEL_i."""
    if id2label and len(id2label) == num_labels:
        return {"id2label": id2label}
    return {"num_labels": num_labels}


# ----------------------------------------------------------------------------------------------------------------------
# transformers ViT and DeiT
# ----------------------------------------------------------------------------------------------------------------------

# hf_vit layer module -> (name on disk, name in memory in transformers >= 5.9), under the layer prefix.
_TRANSFORMERS_LAYER = {
    "norm1": ("layernorm_before", "layernorm_before"),
    "query": ("attention.attention.query", "attention.q_proj"),
    "key": ("attention.attention.key", "attention.k_proj"),
    "value": ("attention.attention.value", "attention.v_proj"),
    "attention.proj": ("attention.output.dense", "attention.o_proj"),
    "norm2": ("layernorm_after", "layernorm_after"),
    "mlp.fc1": ("intermediate.dense", "mlp.fc1"),
    "mlp.fc2": ("output.dense", "mlp.fc2"),
}
_TRANSFORMERS_FILES = [
    "config.json",
    "preprocessor_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
]


def _transformers_folder(source: str, revision: str | None) -> Path:
    if Path(source).is_dir():
        return Path(source)
    if Path(source).exists() or source.startswith(("/", ".", "~")):
        raise ValueError(f"{source} is not a model folder (a transformers checkpoint is a folder with config.json).")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, revision=revision, allow_patterns=_TRANSFORMERS_FILES))


def _transformers_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The on-disk tensors (never a loaded model's renamed state_dict): safetensors, sharded or not, else .bin."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            tensors = {}
            for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                tensors.update(_load_tensor_file(folder / shard))
            return tensors
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return _load_tensor_file(folder / name)
    raise ValueError(f"{folder} has no model.safetensors or pytorch_model.bin.")


def convert_transformers(
    source,
    *,
    drop_pooler: bool = False,
    revision: str | None = None,
    expect: str | None = None,
) -> Converted:
    """Convert a transformers ViT or DeiT checkpoint: a folder, a Hub repo id, or a model instance.

    Carried: weights (class and distillation position slots folded into their tokens), `layer_norm_eps`,
    `hidden_act`, `qkv_bias`, image and patch size, dropouts, labels, and the folder's `preprocessor_config.json`.
    `ViTModel`/`DeiTModel` checkpoints become a headless model (`num_labels=0`, logits = final-norm class token);
    their tanh pooler has no hf_vit counterpart and needs `drop_pooler=True`.
    """
    from transformers import AutoConfig, AutoImageProcessor, PreTrainedModel

    image_processor = None
    if isinstance(source, PreTrainedModel):
        source_config, tensors = source.config, source.state_dict()
        description = f"an in-memory transformers {type(source).__name__}"
    else:
        folder = _transformers_folder(os.fspath(source), revision)
        source_config = AutoConfig.from_pretrained(folder)
        tensors = _transformers_weights(folder)
        description = os.fspath(source)
        if (folder / "preprocessor_config.json").exists():
            image_processor = AutoImageProcessor.from_pretrained(folder)
    model_type = source_config.model_type
    if model_type not in ("vit", "deit"):
        raise ValueError(f"{description}: model_type={model_type!r} is not a transformers ViT or DeiT.")
    if expect is not None and model_type != expect:
        raise ValueError(
            f"{description}: expected model_type={expect!r}, found {model_type!r}; use --from "
            f"{'deit' if model_type == 'deit' else 'transformers'}."
        )
    weights = _Weights(tensors, f"transformers {model_type} checkpoint {description}")
    deit = model_type == "deit"

    prefix = next((p for p in ("vit.", "deit.", "") if f"{p}embeddings.cls_token" in weights), None)
    if prefix is None:
        raise ValueError(f"{description}: no embeddings.cls_token; not a ViT/DeiT state dict.")
    if f"{prefix}embeddings.mask_token" in weights:
        raise ValueError(
            f"{description}: {prefix}embeddings.mask_token belongs to a masked-image-modeling model "
            "(ViTForMaskedImageModeling), which is not an image classifier."
        )
    head_dim = getattr(source_config, "head_dim", None)
    if head_dim is not None and head_dim * source_config.num_attention_heads != source_config.hidden_size:
        raise ValueError(
            f"{description}: head_dim={head_dim} x {source_config.num_attention_heads} heads != "
            f"hidden_size={source_config.hidden_size}; hf_vit needs heads x head_dim = hidden_size."
        )

    on_disk = any(k.startswith(f"{prefix}encoder.layer.") for k in weights.tensors)
    layer_prefix = f"{prefix}encoder.layer." if on_disk else f"{prefix}layers."
    num_layers = source_config.num_hidden_layers
    sd: dict[str, torch.Tensor] = {}

    # Embeddings: the class (and distillation) token's own position slot is a constant: fold it into the token.
    positions = weights.take(f"{prefix}embeddings.position_embeddings")
    config_probe = HfViTConfig(
        image_size=source_config.image_size,
        patch_size=source_config.patch_size,
        num_channels=source_config.num_channels,
    )
    num_prefix = 2 if deit else 1
    prefix_positions, sd["vit.embeddings.position_embeddings"] = _split_positions(
        positions, num_prefix, config_probe.grid_size, f"{prefix}embeddings.position_embeddings"
    )
    sd["vit.embeddings.cls_token"] = weights.take(f"{prefix}embeddings.cls_token") + prefix_positions[:, :1]
    if deit:
        distillation = weights.take(f"{prefix}embeddings.distillation_token")
        sd["vit.embeddings.distillation_token"] = distillation + prefix_positions[:, 1:2]
    sd["vit.embeddings.patch_embeddings.weight"] = weights.take(
        f"{prefix}embeddings.patch_embeddings.projection.weight"
    )
    sd["vit.embeddings.patch_embeddings.bias"] = weights.take(f"{prefix}embeddings.patch_embeddings.projection.bias")

    qkv_bias = bool(source_config.qkv_bias)
    for i in range(num_layers):
        source_layer, target = f"{layer_prefix}{i}.", f"vit.layers.{i}."

        def name(part, kind, source_layer=source_layer):
            return f"{source_layer}{_TRANSFORMERS_LAYER[part][0 if on_disk else 1]}.{kind}"

        for part, ours in (
            ("norm1", "norm1"),
            ("norm2", "norm2"),
            ("attention.proj", "attention.proj"),
            ("mlp.fc1", "mlp.fc1"),
            ("mlp.fc2", "mlp.fc2"),
        ):
            sd[f"{target}{ours}.weight"] = weights.take(name(part, "weight"))
            sd[f"{target}{ours}.bias"] = weights.take(name(part, "bias"))
        sd[f"{target}attention.qkv.weight"] = torch.cat(
            [weights.take(name(p, "weight")) for p in ("query", "key", "value")]
        )
        if qkv_bias:
            sd[f"{target}attention.qkv.bias"] = torch.cat(
                [weights.take(name(p, "bias")) for p in ("query", "key", "value")]
            )
    if f"{layer_prefix}{num_layers}.layernorm_before.weight" in weights:
        raise ValueError(f"{description}: the weights have more layers than num_hidden_layers={num_layers}.")
    sd["vit.norm.weight"] = weights.take(f"{prefix}layernorm.weight")
    sd["vit.norm.bias"] = weights.take(f"{prefix}layernorm.bias")

    notes = []
    if f"{prefix}pooler.dense.weight" in weights:
        if not drop_pooler:
            raise ValueError(
                f"{description}: {prefix}pooler.dense (the tanh pooler of ViTModel/DeiTModel) has no hf_vit "
                "counterpart. Pass drop_pooler=True (--drop-pooler) to convert without it: the features are then the "
                "final-norm class token, as transformers' ViTForImageClassification uses."
            )
        dropped = weights.drop(f"{prefix}pooler.")
        notes.append(f"Dropped on request: {', '.join(dropped)} (tanh pooler; unused by image classification).")
        logger.warning("dropped the pooler on request: %s", ", ".join(dropped))

    # Heads: ViT/DeiT `classifier`, DeiT-with-teacher `cls_classifier` + `distillation_classifier`.
    distillation_head = "distillation_classifier.weight" in weights
    head_key = "cls_classifier" if distillation_head else "classifier"
    num_labels = 0
    if f"{head_key}.weight" in weights:
        sd["classifier.weight"] = weights.take(f"{head_key}.weight")
        sd["classifier.bias"] = weights.take(f"{head_key}.bias")
        num_labels = sd["classifier.weight"].shape[0]
    if distillation_head:
        sd["distillation_classifier.weight"] = weights.take("distillation_classifier.weight")
        sd["distillation_classifier.bias"] = weights.take("distillation_classifier.bias")
    weights.finish()

    config = _vit_config(
        image_size=source_config.image_size,
        patch_size=source_config.patch_size,
        num_channels=source_config.num_channels,
        hidden_size=source_config.hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=source_config.num_attention_heads,
        intermediate_size=source_config.intermediate_size,
        hidden_act=source_config.hidden_act,
        hidden_dropout_prob=source_config.hidden_dropout_prob,
        attention_probs_dropout_prob=source_config.attention_probs_dropout_prob,
        layer_norm_eps=source_config.layer_norm_eps,
        qkv_bias=qkv_bias,
        use_distillation_token=deit,
        distillation_head=distillation_head,
        problem_type=source_config.problem_type,
        **_labels_for(num_labels, source_config.id2label),
    )
    model = _build(config, sd)
    if image_processor is None:
        image_processor = _default_transformers_processor(config, deit)
        notes.append(
            "The source had no preprocessor_config.json: the processor has transformers' defaults for "
            f"{'DeiT' if deit else 'ViT'}."
        )

    architecture = _transformers_architecture(deit, num_labels, distillation_head)

    def reference(pixels):
        reference_model = source if not isinstance(source, (str, os.PathLike)) else None
        if reference_model is None:
            import transformers

            cls = getattr(transformers, architecture)
            kwargs = {"add_pooling_layer": False} if architecture in ("ViTModel", "DeiTModel") else {}
            reference_model = cls.from_pretrained(folder, **kwargs)
        reference_model.eval()
        outputs = reference_model(pixel_values=pixels)
        return outputs.logits if num_labels or distillation_head else outputs.last_hidden_state[:, 0]

    return Converted(model, image_processor, description, "deit" if deit else "transformers", notes, reference)


def _transformers_architecture(deit: bool, num_labels: int, distillation_head: bool) -> str:
    family = "DeiT" if deit else "ViT"
    if distillation_head:
        return "DeiTForImageClassificationWithTeacher"
    return f"{family}ForImageClassification" if num_labels else f"{family}Model"


def _default_transformers_processor(config: HfViTConfig, deit: bool):
    if not deit:
        return build_image_processor(config)  # = transformers' ViTImageProcessor defaults at the model's size
    from transformers import DeiTImageProcessor

    # DeiT's defaults (resize to 256, crop 224, bicubic, ImageNet mean/std), scaled to the model's size.
    height, width = config.image_hw
    return DeiTImageProcessor(
        size={"height": height * 256 // 224, "width": width * 256 // 224},
        crop_size={"height": height, "width": width},
    )


def convert_deit(source, *, drop_pooler: bool = False, revision: str | None = None) -> Converted:
    """Convert a transformers DeiT checkpoint (`DeiTForImageClassification`, `...WithTeacher`, `DeiTModel`): the
    distillation token is carried; "with teacher" checkpoints keep both heads and average their logits."""
    return convert_transformers(source, drop_pooler=drop_pooler, revision=revision, expect="deit")


# ----------------------------------------------------------------------------------------------------------------------
# timm
# ----------------------------------------------------------------------------------------------------------------------

_TIMM_ACTIVATIONS = {("GELU", "none"): "gelu", ("GELU", "tanh"): "gelu_pytorch_tanh", ("QuickGELU", None): "quick_gelu"}


def _timm_model(source, model_name: str | None, **create_kwargs):
    """A timm model with its weights: an instance, a timm Hub folder, a name (weights from timm's cache), or a name
    with a checkpoint file. timm reads files with weights_only=True; local files here are read the same way."""
    import timm

    if isinstance(source, nn.Module):
        return source, f"an in-memory timm {type(source).__name__}"
    source = os.fspath(source)
    if Path(source).is_dir():
        if not (Path(source) / "config.json").exists():
            raise ValueError(
                f"{source} is a folder without timm's config.json; pass a checkpoint file and --timm-model."
            )
        return timm.create_model(f"local-dir:{source}", pretrained=True, **create_kwargs), source
    if not Path(source).exists():
        if model_name is not None:
            raise ValueError(f"checkpoint file {source} does not exist.")
        return timm.create_model(source, pretrained=True, **create_kwargs), f"timm:{source}"
    if model_name is None:
        raise ValueError(
            f"{source}: a state dict does not record the number of heads, the pooling or the other options of a "
            "timm model; name the architecture with --timm-model (e.g. vit_base_patch16_224)."
        )
    state_dict = _load_tensor_file(source)
    kwargs = {"weight_init": "skip", **create_kwargs}  # all weights come from the file
    head = state_dict.get("head.weight")
    kwargs.setdefault("num_classes", head.shape[0] if head is not None else 0)
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    stored = state_dict.get("pos_embed")
    if stored is not None and model.pos_embed is not None and stored.shape != model.pos_embed.shape:
        # The checkpoint was trained at another resolution: build the model at the checkpoint's grid.
        num_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        side = _square_grid(stored.shape[1] - num_prefix, f"{source}: pos_embed")
        patch_h, patch_w = model.patch_embed.patch_size
        kwargs.setdefault("img_size", (side * patch_h, side * patch_w))
        model = timm.create_model(model_name, pretrained=False, **kwargs)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{source} does not match timm's {model_name}: {error}") from error
    return model.eval(), f"{source} ({model_name})"


def _timm_layernorm_eps(norms: dict[str, nn.Module]) -> float:
    epsilons = {}
    for where, norm in norms.items():
        if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine or norm.bias is None:
            raise ValueError(
                f"timm model: {where} is {type(norm).__name__}; hf_vit has affine LayerNorm with bias only."
            )
        if len(norm.normalized_shape) != 1:
            raise ValueError(f"timm model: {where} normalises over {norm.normalized_shape}.")
        epsilons[where] = norm.eps
    if len(set(epsilons.values())) > 1:
        raise ValueError(f"timm model: LayerNorm epsilons differ ({epsilons}); hf_vit uses one layer_norm_eps.")
    return next(iter(epsilons.values()))


def _timm_activation(act: nn.Module) -> str:
    key = (type(act).__name__, getattr(act, "approximate", None))
    if key not in _TIMM_ACTIVATIONS:
        raise ValueError(
            f"timm model: MLP activation {act!r} (act_layer) has no hf_vit counterpart; "
            f"supported: {', '.join(a for a, _ in _TIMM_ACTIVATIONS)}."
        )
    return _TIMM_ACTIVATIONS[key]


def convert_timm(source, model_name: str | None = None, **create_kwargs) -> Converted:
    """Convert a timm `VisionTransformer` (or DeiT's `VisionTransformerDistilled`).

    `source`: a model instance, a timm Hub folder (config.json + weights), a `timm.create_model` name whose weights
    are in timm's cache, or a checkpoint file with `model_name` naming the architecture (`create_kwargs` go to
    `timm.create_model`). Covered: class token or none, `global_pool` "token"/"avg", `fc_norm`, `reg_tokens`,
    `no_embed_class`, LayerScale (`init_values`), `qk_norm`, `qkv_bias`, bias-less projections, GELU/QuickGELU,
    any LayerNorm epsilon. timm's eval preprocessing (input size, interpolation, crop_pct, mean, std) goes into a
    `BitImageProcessor`.
    """
    import timm.data
    from timm.models.vision_transformer import VisionTransformer

    model, description = _timm_model(source, model_name, **create_kwargs)
    model.eval()
    distilled = hasattr(model, "dist_token") and hasattr(model, "head_dist")
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"{description}: {type(model).__name__} is not a timm VisionTransformer.")
    if type(model).__name__ not in ("VisionTransformer", "VisionTransformerDistilled"):
        raise ValueError(
            f"{description}: timm {type(model).__name__} changes VisionTransformer's forward; "
            "hf_vit converts VisionTransformer and VisionTransformerDistilled only."
        )

    # Options without weights of their own: checked one by one.
    def fail(option, detail):
        raise ValueError(f"{description}: timm option {option} is not supported by hf_vit ({detail}).")

    if model.pos_embed is None:
        fail("pos_embed='none'", "hf_vit has learned or sin-cos position embeddings")
    if not isinstance(model.norm_pre, nn.Identity):
        fail("pre_norm=True", "a LayerNorm before the blocks (CLIP-style norm_pre)")
    if getattr(model, "attn_pool", None) is not None:
        fail(f"global_pool={model.global_pool!r}", "attention pooling")
    if model.global_pool not in ("token", "avg"):
        fail(f"global_pool={model.global_pool!r}", "hf_vit pools with the class token or the patch mean")
    if getattr(model, "pool_include_prefix", False):
        fail("pool_include_prefix=True", "hf_vit's mean pooling averages patch tokens only")
    if distilled and model.num_reg_tokens:
        fail("reg_tokens with a distillation token", "timm's distilled model ignores them")
    if distilled and getattr(model, "distilled_training", False):
        fail("distilled_training=True", "call set_distilled_training(False) for the averaged eval logits")
    patch_embed = model.patch_embed
    if type(patch_embed).__name__ != "PatchEmbed" or not isinstance(patch_embed.proj, nn.Conv2d):
        fail(f"embed_layer={type(patch_embed).__name__}", "hf_vit embeds patches with one convolution")
    if not isinstance(getattr(patch_embed, "norm", nn.Identity()), nn.Identity):
        fail("embed_norm_layer", "a norm after the patch embedding")
    proj = patch_embed.proj
    if tuple(proj.kernel_size) != tuple(proj.stride) or any(proj.padding) or proj.groups != 1:
        fail("patch_embed.proj", f"kernel {proj.kernel_size}, stride {proj.stride}, padding {proj.padding}")

    norms: dict[str, nn.Module] = {}
    blocks = list(model.blocks)
    width = model.embed_dim
    num_heads = blocks[0].attn.num_heads if blocks else 1
    activation = None
    layerscale_init = None
    qk_norm = False
    for i, block in enumerate(blocks):
        where = f"blocks.{i}"
        if type(block).__name__ != "Block":
            fail(f"block_fn={type(block).__name__}", "hf_vit has the pre-norm Block")
        attn, mlp = block.attn, block.mlp
        if type(attn).__name__ != "Attention":
            fail(f"attn_layer={type(attn).__name__}", where)
        if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
            fail("scale_attn_norm=True", f"{where}.attn.norm")
        if attn.num_heads != num_heads or attn.head_dim * attn.num_heads != width:
            fail("num_heads / head_dim", f"{where}: {attn.num_heads} heads x {attn.head_dim} != {width}")
        if not math.isclose(attn.scale, attn.head_dim**-0.5, rel_tol=1e-6):
            fail("attention scale", f"{where}: {attn.scale}")
        if type(mlp).__name__ != "Mlp" or not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity):
            fail(f"mlp_layer={type(mlp).__name__} / scale_mlp_norm", where)
        act = _timm_activation(mlp.act)
        if activation not in (None, act):
            fail("act_layer", f"{where} uses {act}, earlier blocks {activation}")
        activation = act
        norms[f"{where}.norm1"], norms[f"{where}.norm2"] = block.norm1, block.norm2
        has_qk_norm = [not isinstance(getattr(attn, name), nn.Identity) for name in ("q_norm", "k_norm")]
        has_layerscale = [not isinstance(getattr(block, name), nn.Identity) for name in ("ls1", "ls2")]
        if i == 0:
            qk_norm = has_qk_norm[0]
            layerscale_init = getattr(block.ls1, "init_values", 1e-5) if has_layerscale[0] else None
        if has_qk_norm != [qk_norm] * 2 or has_layerscale != [layerscale_init is not None] * 2:
            fail(
                "qk_norm / init_values",
                f"{where} has q_norm/k_norm {has_qk_norm}, ls1/ls2 {has_layerscale}; "
                "hf_vit needs the same in every block",
            )
        if qk_norm:
            norms[f"{where}.attn.q_norm"], norms[f"{where}.attn.k_norm"] = attn.q_norm, attn.k_norm
    norm_is_layer = not isinstance(model.norm, nn.Identity)
    fc_norm_is_layer = not isinstance(model.fc_norm, nn.Identity)
    if norm_is_layer == fc_norm_is_layer:
        fail("final_norm=False", "hf_vit has one final LayerNorm, on all tokens or after pooling (fc_norm)")
    norms["norm" if norm_is_layer else "fc_norm"] = model.norm if norm_is_layer else model.fc_norm
    layer_norm_eps = _timm_layernorm_eps(norms)

    # Weights, consumed by name.
    weights = _Weights(model.state_dict(), f"timm model {description}")
    sd: dict[str, torch.Tensor] = {}
    grid = tuple(patch_embed.grid_size)
    num_prefix = model.num_prefix_tokens
    positions = weights.take("pos_embed")
    if model.no_embed_class:
        prefix_positions = torch.zeros(1, num_prefix, width)
        _, sd["vit.embeddings.position_embeddings"] = _split_positions(positions, 0, grid, "pos_embed")
    else:  # the prefix tokens' own slots are constants: fold them into the tokens (exact)
        prefix_positions, sd["vit.embeddings.position_embeddings"] = _split_positions(
            positions, num_prefix, grid, "pos_embed"
        )
    slot = 0
    if model.cls_token is not None:
        sd["vit.embeddings.cls_token"] = weights.take("cls_token") + prefix_positions[:, slot : slot + 1]
        slot += 1
    if distilled:
        sd["vit.embeddings.distillation_token"] = weights.take("dist_token") + prefix_positions[:, slot : slot + 1]
        slot += 1
    if model.reg_token is not None:
        registers = model.num_reg_tokens
        sd["vit.embeddings.register_tokens"] = weights.take("reg_token") + prefix_positions[:, slot : slot + registers]
    sd["vit.embeddings.patch_embeddings.weight"] = weights.take("patch_embed.proj.weight")
    sd["vit.embeddings.patch_embeddings.bias"] = _zeros_if_none(weights.take_optional("patch_embed.proj.bias"), width)

    qkv_bias = blocks[0].attn.qkv.bias is not None if blocks else True
    intermediate = blocks[0].mlp.fc1.out_features if blocks else 4 * width
    for i, block in enumerate(blocks):
        source_block, target = f"blocks.{i}.", f"vit.layers.{i}."
        if (block.attn.qkv.bias is not None) != qkv_bias or block.mlp.fc1.out_features != intermediate:
            fail("qkv_bias / mlp_ratio", f"blocks.{i} differs from blocks.0")
        for theirs, ours, size in (
            ("norm1", "norm1", width),
            ("norm2", "norm2", width),
            ("attn.proj", "attention.proj", width),
            ("mlp.fc1", "mlp.fc1", intermediate),
            ("mlp.fc2", "mlp.fc2", width),
        ):
            sd[f"{target}{ours}.weight"] = weights.take(f"{source_block}{theirs}.weight")
            sd[f"{target}{ours}.bias"] = _zeros_if_none(weights.take_optional(f"{source_block}{theirs}.bias"), size)
        sd[f"{target}attention.qkv.weight"] = weights.take(f"{source_block}attn.qkv.weight")
        if qkv_bias:
            sd[f"{target}attention.qkv.bias"] = weights.take(f"{source_block}attn.qkv.bias")
        if qk_norm:
            for name in ("q_norm", "k_norm"):
                for kind in ("weight", "bias"):
                    sd[f"{target}attention.{name}.{kind}"] = weights.take(f"{source_block}attn.{name}.{kind}")
        if layerscale_init is not None:
            sd[f"{target}layer_scale1.gamma"] = weights.take(f"{source_block}ls1.gamma")
            sd[f"{target}layer_scale2.gamma"] = weights.take(f"{source_block}ls2.gamma")
    final = "norm" if norm_is_layer else "fc_norm"
    for kind in ("weight", "bias"):
        sd[f"vit.{final}.{kind}"] = weights.take(f"{final}.{kind}")
    num_labels = 0
    if isinstance(model.head, nn.Linear):
        sd["classifier.weight"] = weights.take("head.weight")
        sd["classifier.bias"] = _zeros_if_none(weights.take_optional("head.bias"), model.head.out_features)
        num_labels = model.head.out_features
    if distilled and isinstance(model.head_dist, nn.Linear):
        sd["distillation_classifier.weight"] = weights.take("head_dist.weight")
        sd["distillation_classifier.bias"] = _zeros_if_none(weights.take_optional("head_dist.bias"), num_labels)
    weights.finish()

    config = _vit_config(
        image_size=list(patch_embed.img_size),
        patch_size=list(patch_embed.patch_size),
        num_channels=proj.in_channels,
        hidden_size=width,
        num_hidden_layers=len(blocks),
        num_attention_heads=num_heads,
        intermediate_size=intermediate,
        hidden_act=activation or "gelu",
        layer_norm_eps=layer_norm_eps,
        qkv_bias=qkv_bias,
        qk_norm=qk_norm,
        layerscale_init=layerscale_init,
        num_register_tokens=model.num_reg_tokens,
        use_class_token=model.cls_token is not None,
        pooling="cls" if model.global_pool == "token" else "mean",
        fc_norm=not norm_is_layer,
        use_distillation_token=distilled,
        distillation_head=distilled,
        **_labels_for(num_labels, _timm_labels(model, num_labels)),
    )
    converted_model = _build(config, sd)
    notes = []
    if model.patch_embed.proj.bias is None:
        notes.append("The source patch embedding has no bias: hf_vit's is zero.")

    data_config = timm.data.resolve_model_data_config(model)
    image_processor = _timm_processor(data_config, description)
    notes.append(f"timm eval preprocessing carried: {json.dumps(_jsonable(data_config))}.")

    def reference(pixels):
        return model(pixels)

    return Converted(converted_model, image_processor, description, "timm", notes, reference)


def _jsonable(data_config: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}


def _timm_labels(model, num_labels: int) -> dict | None:
    """Label names from the pretrained config, else ImageNet's when the head has an ImageNet size (as timm guesses)."""
    if not num_labels:
        return None
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if names and len(names) == num_labels:
        return dict(enumerate(names))
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if subset is None:
        return None
    info = ImageNetInfo(subset)
    return {i: info.index_to_description(i) for i in range(num_labels)}


def _timm_processor(data_config: dict, description: str):
    from transformers.image_utils import PILImageResampling

    _, height, width = data_config["input_size"]
    crop_mode = data_config.get("crop_mode", "center")
    if height != width or crop_mode != "center":
        raise ValueError(
            f"{description}: timm eval preprocessing with input_size {height}x{width} and crop_mode="
            f"{crop_mode!r} has no transformers processor equivalent; hf_vit reproduces square center "
            "crops."
        )
    resample = getattr(PILImageResampling, str(data_config["interpolation"]).upper(), None)
    if resample is None:
        raise ValueError(f"{description}: timm interpolation {data_config['interpolation']!r} is not supported.")
    return build_timm_eval_processor(
        height, data_config["crop_pct"], data_config["mean"], data_config["std"], resample=resample
    )


# ----------------------------------------------------------------------------------------------------------------------
# JAX / big_vision .npz
# ----------------------------------------------------------------------------------------------------------------------

# Sub-module names inside an encoder block: original vision_transformer vs big_vision.
_NPZ_BLOCK_NAMES = {
    "vision_transformer": {
        "norm1": "LayerNorm_0",
        "attention": "MultiHeadDotProductAttention_1",
        "norm2": "LayerNorm_2",
        "mlp": "MlpBlock_3",
    },
    "big_vision": {
        "norm1": "LayerNorm_0",
        "attention": "MultiHeadDotProductAttention_0",
        "norm2": "LayerNorm_1",
        "mlp": "MlpBlock_0",
    },
}
_NPZ_PREFIXES = ("opt/target/", "params/img/", "params/")


def convert_npz(
    path: str | os.PathLike,
    *,
    image_size: int | tuple[int, int] | None = None,
    pooling: str | None = None,
    layer_norm_eps: float = 1e-6,
    hidden_act: str = "gelu",
    id2label: dict | None = None,
    drop_pooler: bool = False,
) -> Converted:
    """Convert a JAX ViT `.npz` (google-research/vision_transformer or big_vision, per-block or scanned).

    Position embeddings: `Transformer/posembed_input/pos_embedding` (with a class slot, folded into `cls`) or
    big_vision's top-level `pos_embedding` (patches only). A square patch grid is assumed unless `image_size` is
    given. Pooling: the class token when `cls` exists, else the mean of the final-norm patch tokens (big_vision
    "gap"); `pooling` overrides. Preprocessing: (x - 127.5) / 127.5 after a resize to the model's size.
    """
    path = os.fspath(path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    prefix = next((p for p in _NPZ_PREFIXES if f"{p}embedding/kernel" in arrays), "")
    if f"{prefix}embedding/kernel" not in arrays:
        raise ValueError(f"{path}: no embedding/kernel; not a JAX ViT checkpoint.")
    outside = sorted(k for k in arrays if not k.startswith(prefix))
    notes = []
    if outside:
        # e.g. optimizer state next to opt/target/: not model weights.
        notes.append(f"Ignored {len(outside)} arrays outside {prefix!r} (not model parameters), e.g. {outside[0]}.")
        logger.warning(notes[-1])
    for key, array in arrays.items():
        if key.startswith(prefix) and array.dtype.kind != "f":
            raise ValueError(
                f"{path}: {key} has dtype {array.dtype}; hf_vit reads float arrays (bfloat16 npz files "
                "store raw bytes; convert them to float32 first)."
            )
    weights = _Weights(
        {k[len(prefix) :]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix)},
        f"JAX checkpoint {path}",
    )

    for unsupported, option in (
        ("MAPHead_0/", "MAP attention pooling (pool_type='map')"),
        ("Transformer/posembed_input/cls", "a class token under posembed_input"),
        ("img/", "a multimodal (SigLIP/LiT) tower"),
    ):
        if any(k.startswith(unsupported) for k in weights.tensors):
            raise ValueError(f"{path}: {option} ({unsupported}*) has no hf_vit counterpart.")

    kernel = weights.take("embedding/kernel")  # HWIO
    patch_h, patch_w, num_channels, width = kernel.shape
    sd: dict[str, torch.Tensor] = {
        "vit.embeddings.patch_embeddings.weight": kernel.permute(3, 2, 0, 1).contiguous(),
        "vit.embeddings.patch_embeddings.bias": weights.take("embedding/bias"),
    }
    cls = weights.take_optional("cls")
    original_key, big_vision_key = "Transformer/posembed_input/pos_embedding", "pos_embedding"
    position_key = original_key if original_key in weights else big_vision_key
    positions = weights.take(position_key).reshape(1, -1, width)
    total = positions.shape[1]
    if image_size is not None:
        config_probe = HfViTConfig(image_size=image_size, patch_size=[patch_h, patch_w])
        grid = config_probe.grid_size
        num_slots = total - grid[0] * grid[1]
    elif math.isqrt(total) ** 2 == total:
        num_slots, side = 0, math.isqrt(total)
        grid = (side, side)
    else:
        num_slots = 1
        side = _square_grid(total - 1, position_key)
        grid = (side, side)
    if num_slots not in (0, 1) or (num_slots == 1 and cls is None):
        raise ValueError(
            f"{path}: {position_key} has {total} positions, which does not fit a {grid[0]}x{grid[1]} "
            f"grid{' plus a class slot' if cls is not None else ''}; pass image_size."
        )
    slots, sd["vit.embeddings.position_embeddings"] = _split_positions(positions, num_slots, grid, position_key)
    if cls is not None:
        sd["vit.embeddings.cls_token"] = cls.reshape(1, 1, width) + (slots if num_slots else 0)

    scanned = "Transformer/encoderblock/LayerNorm_0/scale" in weights
    num_layers = (
        weights.tensors["Transformer/encoderblock/LayerNorm_0/scale"].shape[0]
        if scanned
        else sum(
            1 for k in weights.tensors if k.startswith("Transformer/encoderblock_") and k.endswith("/LayerNorm_0/scale")
        )
    )
    if num_layers == 0:
        raise ValueError(f"{path}: no Transformer/encoderblock_* weights.")

    def block_prefix(i):
        return "Transformer/encoderblock/" if scanned else f"Transformer/encoderblock_{i}/"

    style = "vision_transformer" if f"{block_prefix(0)}MlpBlock_3/Dense_0/kernel" in weights else "big_vision"
    names = _NPZ_BLOCK_NAMES[style]

    def take(i, key):
        full_key = f"{block_prefix(i)}{key}"
        if not scanned or full_key not in weights:
            return weights.take(full_key)  # a missing key raises, naming it
        tensor = torch.as_tensor(weights.tensors[full_key][i]).float()  # scanned: layer i of a stacked array
        if i == num_layers - 1:
            weights.take(full_key)
        return tensor

    num_heads = head_dim = intermediate = None
    for i in range(num_layers):
        target = f"vit.layers.{i}."
        attention = names["attention"]
        for norm in ("norm1", "norm2"):
            sd[f"{target}{norm}.weight"] = take(i, f"{names[norm]}/scale")
            sd[f"{target}{norm}.bias"] = take(i, f"{names[norm]}/bias")
        qkv_weights, qkv_biases = [], []
        for part in ("query", "key", "value"):
            part_kernel = take(i, f"{attention}/{part}/kernel")  # [D, heads, head_dim]
            num_heads, head_dim = part_kernel.shape[1], part_kernel.shape[2]
            qkv_weights.append(part_kernel.reshape(width, -1).T)
            qkv_biases.append(take(i, f"{attention}/{part}/bias").reshape(-1))
        sd[f"{target}attention.qkv.weight"] = torch.cat(qkv_weights)
        sd[f"{target}attention.qkv.bias"] = torch.cat(qkv_biases)
        sd[f"{target}attention.proj.weight"] = take(i, f"{attention}/out/kernel").reshape(-1, width).T  # [H, Dh, D]
        sd[f"{target}attention.proj.bias"] = take(i, f"{attention}/out/bias")
        for j, fc in enumerate(("fc1", "fc2")):
            sd[f"{target}mlp.{fc}.weight"] = take(i, f"{names['mlp']}/Dense_{j}/kernel").T
            sd[f"{target}mlp.{fc}.bias"] = take(i, f"{names['mlp']}/Dense_{j}/bias")
        intermediate = sd[f"{target}mlp.fc1.weight"].shape[0]
    if num_heads * head_dim != width:
        raise ValueError(f"{path}: {num_heads} heads x {head_dim} != width {width}.")
    sd["vit.norm.weight"] = weights.take("Transformer/encoder_norm/scale")
    sd["vit.norm.bias"] = weights.take("Transformer/encoder_norm/bias")

    head_kernel = weights.take_optional("head/kernel")
    head_bias = weights.take_optional("head/bias")
    if "pre_logits/kernel" in weights:
        if not drop_pooler:
            raise ValueError(
                f"{path}: pre_logits (the tanh representation layer of the original in21k checkpoints) "
                "has no hf_vit counterpart. Pass drop_pooler=True (--drop-pooler) to convert the "
                "features without it and without the head that reads it."
            )
        dropped = weights.drop("pre_logits/") + (["head/kernel", "head/bias"] if head_kernel is not None else [])
        head_kernel = head_bias = None
        notes.append(f"Dropped on request: {', '.join(dropped)} (pre-logits layer, and the head on top of it).")
        logger.warning(notes[-1])
    num_labels = 0
    if head_kernel is not None:
        sd["classifier.weight"] = head_kernel.T
        sd["classifier.bias"] = _zeros_if_none(head_bias, head_kernel.shape[1])
        num_labels = head_kernel.shape[1]
    weights.finish()

    pooling = pooling or ("cls" if cls is not None else "mean")
    config = _vit_config(
        image_size=list(image_size)
        if isinstance(image_size, (tuple, list))
        else [grid[0] * patch_h, grid[1] * patch_w],
        patch_size=[patch_h, patch_w],
        num_channels=num_channels,
        hidden_size=width,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate,
        hidden_act=hidden_act,
        layer_norm_eps=layer_norm_eps,
        use_class_token=cls is not None,
        pooling=pooling,
        **_labels_for(num_labels, id2label),
    )
    model = _build(config, sd)
    notes.append(f"Layout: {style}{', scanned layers' if scanned else ''}; position table {position_key}.")
    processor = build_image_processor(config) if num_channels == 3 else None
    if processor is None:
        raise ValueError(f"{path}: {num_channels} input channels; hf_vit's image processor makes RGB input.")
    return Converted(model, processor, path, "npz", notes)


# ----------------------------------------------------------------------------------------------------------------------
# Fine-tuning, the model card and the command line
# ----------------------------------------------------------------------------------------------------------------------


def load_for_finetuning(folder: str | os.PathLike, labels: list[str], **kwargs) -> HfViTForImageClassification:
    """Load a converted folder with a new label set: with a different number of labels the head (and DeiT's
    distillation head) is re-initialised (`ignore_mismatched_sizes`), everything else is kept; logged either way."""
    from transformers import AutoConfig

    old = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    id2label = dict(enumerate(labels))
    model = HfViTForImageClassification.from_pretrained(
        folder,
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        ignore_mismatched_sizes=True,
        **kwargs,
    )
    if old.num_labels != len(labels):
        heads = "classifier" + (" and distillation_classifier" if model.config.distillation_head else "")
        logger.warning(
            "%s re-initialised for %d labels (the checkpoint's head had %d); all other weights kept.",
            heads,
            len(labels),
            old.num_labels,
        )
    else:
        logger.info("head kept: the checkpoint already has %d labels (only their names change).", len(labels))
    return model


def model_card(converted: Converted) -> str:
    config = converted.model.config
    tokens = ["class token"] if config.use_class_token else []
    tokens += ["distillation token"] if config.use_distillation_token else []
    tokens += [f"{config.num_register_tokens} register tokens"] if config.num_register_tokens else []
    labels = list(config.id2label.values()) if config.num_labels else []
    shown = ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "")
    equivalence = (
        f"max |logit difference| against the source library on random float32 images: {converted.max_abs_diff:.2e}"
        if converted.max_abs_diff is not None
        else "not measured at conversion (the hf_vit test-suite checks this converter on synthetic checkpoints)"
    )
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-classification",
        "tags: [hf_vit, vision-transformer, converted]",
        "---",
        "",
        f"# hf_vit conversion of `{converted.source}`",
        "",
        f"Converted by `hf-vit convert --from {converted.source_kind}` from `{converted.source}`. The source "
        "checkpoint's license and terms apply.",
        "",
        f"- Architecture: ViT, width {config.hidden_size}, depth {config.num_hidden_layers}, "
        f"{config.num_attention_heads} heads, patch {config.patch_size}, image {config.image_size}, "
        f"{', '.join(tokens) or 'no prefix tokens'}, {config.pooling} pooling"
        f"{' then fc_norm' if config.fc_norm else ''}, LayerNorm eps {config.layer_norm_eps}.",
        f"- Labels: {config.num_labels}" + (f" ({shown})" if labels else " (headless: logits are the pooled features)"),
        f"- Preprocessing: `{type(converted.image_processor).__name__}` in preprocessor_config.json.",
        f"- Equivalence: {equivalence}.",
        *[f"- {note}" for note in converted.notes],
        "",
        "```python",
        "from transformers import AutoImageProcessor, AutoModelForImageClassification",
        "",
        'processor = AutoImageProcessor.from_pretrained("PATH")',
        'model = AutoModelForImageClassification.from_pretrained("PATH", trust_remote_code=True)',
        "```",
        "",
    ]
    return "\n".join(lines)


def convert(source_kind: str, source, **options) -> Converted:
    """Dispatch on the source kind: "transformers", "deit", "timm" or "npz"."""
    functions = {"transformers": convert_transformers, "deit": convert_deit, "timm": convert_timm, "npz": convert_npz}
    if source_kind not in functions:
        raise ValueError(f"unknown source {source_kind!r}; choose one of {', '.join(SOURCES)}.")
    return functions[source_kind](source, **options)


def _read_labels(path: str) -> dict[int, str]:
    text = Path(path).read_text()
    names = json.loads(text) if path.endswith(".json") else [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(names, dict):
        return {int(k): v for k, v in names.items()}
    return dict(enumerate(names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-vit convert", description="Convert a ViT checkpoint into an hf_vit model folder with the same logits."
    )
    parser.add_argument(
        "--from", dest="source_kind", required=True, choices=SOURCES, help="where the checkpoint is from"
    )
    parser.add_argument("--source", required=True, help="folder, Hub repo id, timm model name, or checkpoint file")
    parser.add_argument("--output", required=True, help="model folder to write")
    parser.add_argument(
        "--timm-model", help="timm architecture name for a timm checkpoint file (e.g. vit_base_patch16_224)"
    )
    parser.add_argument(
        "--drop-pooler",
        action="store_true",
        help="leave out ViTModel's tanh pooler / the JAX pre_logits layer (and its head)",
    )
    parser.add_argument("--image-size", type=int, nargs="+", help="npz: height [width], when the grid is not square")
    parser.add_argument("--pooling", choices=("cls", "mean"), help="npz: override the pooling guessed from `cls`")
    parser.add_argument("--labels", help="npz: label names, one per line or a JSON list/object")
    parser.add_argument("--revision", help="Hub revision of a transformers/DeiT repo")
    parser.add_argument("--no-check", action="store_true", help="skip the logit comparison with the source library")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    options: dict = {}
    if args.source_kind in ("transformers", "deit"):
        options = {"drop_pooler": args.drop_pooler, "revision": args.revision}
    elif args.source_kind == "timm":
        options = {"model_name": args.timm_model}
    else:
        image_size = args.image_size[0] if args.image_size and len(args.image_size) == 1 else args.image_size
        options = {
            "image_size": image_size,
            "pooling": args.pooling,
            "drop_pooler": args.drop_pooler,
            "id2label": _read_labels(args.labels) if args.labels else None,
        }
    try:
        converted = convert(args.source_kind, args.source, **options)
        if converted.reference is not None and not args.no_check:
            difference = converted.check()
            print(f"max |logit difference| against the source library: {difference:.2e}")
            if difference > 1e-4:
                raise ValueError(f"the converted model differs from the source by {difference:.2e}; not saved.")
    except (ValueError, OSError) as error:
        print(f"hf-vit convert: {error}", file=sys.stderr)
        return 1
    converted.save(args.output)
    config = converted.model.config
    print(
        f"wrote {args.output}: {config.num_hidden_layers} layers, width {config.hidden_size}, "
        f"{config.num_labels} labels, from {converted.source}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
