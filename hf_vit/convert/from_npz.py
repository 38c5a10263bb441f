"""JAX `.npz` checkpoints (google-research/vision_transformer and big_vision) -> hf_vit."""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch

from ..configuration_hf_vit import HfViTConfig
from ..processing import build_image_processor
from . import Converted, _build, _labels_for, _split_positions, _square_grid, _vit_config, _Weights, _zeros_if_none

logger = logging.getLogger(__name__)


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
