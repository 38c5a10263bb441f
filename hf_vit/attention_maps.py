"""Where a ViT looks: attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers") and the
last layer's attention per head, over the patch grid, and their overlays on the image the model saw.

This file imports no other hf_vit module (torch, numpy, PIL and matplotlib only), so that a Hub Space carries it as a
file beside its `app.py` and computes the same maps with the model loaded through transformers' remote code.

Which tokens' attention is shown depends on what the classifier reads (`explained_queries`):

- class-token pooling: the class token's row;
- DeiT with a distillation head (two heads, on the class and the distillation token): the mean of those two rows;
- mean pooling: there is no class-token map; the classifier reads the mean of the patch tokens' final states, so the
  rows of all patch tokens are averaged (for rollout, a linear map, this is exactly the rollout of the pooled token).

Register tokens, the class token and the distillation token are not image positions: their columns are left out
of the maps, and `AttentionMaps.prefix_share` says how much of the rollout went to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

# The heat map's colours: dark is the map's lowest value, bright its highest.
COLORMAP = "inferno"


@dataclass
class AttentionMaps:
    """One batch's explanation. Maps are over the patch grid, as float32 numpy arrays."""

    probabilities: np.ndarray  # (batch, num_labels) softmax of the logits; (batch, 0) for a model without a head
    rollout: np.ndarray  # (batch, grid_h, grid_w)
    last_layer_heads: np.ndarray  # (batch, heads, grid_h, grid_w)
    prefix_share: np.ndarray  # (batch,) share of the explained rollout row on class/distillation/register tokens
    queries: str  # which tokens' attention the maps show, in words
    prefix_tokens: str  # the non-patch tokens, in words ("class, register")


def explained_queries(config) -> tuple[list[int] | None, str]:
    """The token indices whose attention rows explain the prediction (None: all patch tokens), and a description."""
    if config.pooling == "mean":
        return None, "patch tokens (averaged: mean pooling, no class token)"
    if getattr(config, "distillation_head", False):
        return [0, 1], "class and distillation tokens (averaged: DeiT's two heads read them)"
    return [0], "class token"


def num_prefix_tokens(config) -> int:
    """Tokens before the patches: class, distillation (DeiT), registers."""
    return (
        int(config.use_class_token) + int(getattr(config, "use_distillation_token", False)) + config.num_register_tokens
    )


def prefix_token_names(config) -> str:
    names = [("class", config.use_class_token), ("distillation", getattr(config, "use_distillation_token", False)),
             ("register", config.num_register_tokens > 0)]  # fmt: skip
    return ", ".join(name for name, present in names if present)


def patch_grid(config, height: int, width: int) -> tuple[int, int]:
    """The token grid of an input; the same rule as `configuration_hf_vit.grid_for_image` (repeated here so this
    file needs no hf_vit module): plain patches tile the image, a convolutional stem pads, rounding up."""
    patch = config.patch_size
    patch_h, patch_w = (patch, patch) if isinstance(patch, int) else patch
    if getattr(config, "stem_channels", None):
        return -(-height // patch_h), -(-width // patch_w)
    return height // patch_h, width // patch_w


def attention_rollout(attentions) -> torch.Tensor:
    """Abnar & Zuidema's rollout: per layer, heads averaged and the residual connection added as an identity
    (0.5 A + 0.5 I, rows summing to 1), then the layers multiplied from the first: entry (i, j) of the result says how
    much of token i's final state flows from input token j. `attentions`: per layer (batch, heads, tokens, tokens)."""
    rollout = None
    for weights in attentions:
        fused = weights.float().mean(dim=1)
        identity = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        mixed = 0.5 * fused + 0.5 * identity
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout


def _rows(matrix: torch.Tensor, queries: list[int] | None, prefix: int) -> torch.Tensor:
    """The mean of the explained query rows of (..., tokens, tokens) matrices."""
    rows = matrix[..., prefix:, :] if queries is None else matrix[..., queries, :]
    return rows.mean(dim=-2)


@torch.no_grad()
def explain_pixels(model, pixel_values: torch.Tensor) -> AttentionMaps:
    """Run `model` once on a batch of processed images, with the attention weights returned. hf_vit's attention
    computes them eagerly whenever they are requested, whatever `attn_implementation` the model was loaded with
    (sdpa, flash, flex never materialise them), so the maps do not depend on it."""
    config = model.config
    parameter = next(model.parameters())
    outputs = model(pixel_values=pixel_values.to(parameter.device, parameter.dtype), output_attentions=True)
    if not outputs.attentions:
        raise ValueError(f"{type(model).__name__} returned no attention weights; explain needs an hf_vit model.")
    queries, description = explained_queries(config)
    prefix = num_prefix_tokens(config)
    grid_h, grid_w = patch_grid(config, *pixel_values.shape[-2:])
    batch = pixel_values.shape[0]

    rollout = _rows(attention_rollout(outputs.attentions), queries, prefix)  # (batch, tokens)
    heads = _rows(outputs.attentions[-1].float(), queries, prefix)  # (batch, heads, tokens)
    has_head = getattr(config, "num_labels", 0) > 0
    return AttentionMaps(
        probabilities=outputs.logits.float().softmax(-1).cpu().numpy() if has_head else np.zeros((batch, 0)),
        rollout=rollout[:, prefix:].reshape(batch, grid_h, grid_w).cpu().numpy(),
        last_layer_heads=heads[..., prefix:].reshape(batch, -1, grid_h, grid_w).cpu().numpy(),
        prefix_share=rollout[:, :prefix].sum(-1).cpu().numpy(),
        queries=description,
        prefix_tokens=prefix_token_names(config),
    )


def top_labels(probabilities: np.ndarray, id2label: dict, k: int = 5) -> list[tuple[str, float]]:
    """The `k` most probable (label, probability) pairs of one image."""
    order = np.argsort(-probabilities)[:k]
    return [(id2label[int(index)], float(probabilities[index])) for index in order]


def model_input_image(pixel_values: torch.Tensor, processor) -> Image.Image:
    """One processed image (channels, height, width) back as 8-bit RGB: what the model saw after resizing and
    cropping, so that the maps line up with it exactly."""
    pixels = pixel_values.detach().float().cpu().numpy().transpose(1, 2, 0)
    if getattr(processor, "do_normalize", False):
        pixels = pixels * np.asarray(processor.image_std) + np.asarray(processor.image_mean)
    if getattr(processor, "do_rescale", False):
        pixels = pixels / processor.rescale_factor
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "RGB")


def enlarged(image: Image.Image, min_side: int = 224) -> Image.Image:
    """`image` enlarged by a whole factor (nearest pixel) to at least `min_side` pixels a side, so that an 8x8 digit
    stays visible; larger images are kept as they are."""
    scale = max(1, -(-min_side // min(image.size)))
    return image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.55, min_side: int = 224) -> Image.Image:
    """`heatmap` (grid_h, grid_w) stretched from its lowest value (dark) to its highest (bright), resized bilinearly
    onto `enlarged(image, min_side)` and blended."""
    base = enlarged(image, min_side)
    size = base.size
    values = np.asarray(heatmap, dtype=np.float32)
    spread = float(values.max() - values.min())
    stretched = (values - values.min()) / spread if spread > 0 else np.zeros_like(values)
    heat = np.asarray(Image.fromarray(stretched).resize(size, Image.Resampling.BILINEAR))
    colored = (colormaps[COLORMAP](np.clip(heat, 0.0, 1.0))[..., :3] * 255).round().astype(np.uint8)
    return Image.blend(base, Image.fromarray(colored, "RGB"), alpha)


__all__ = [
    "AttentionMaps",
    "attention_rollout",
    "enlarged",
    "explain_pixels",
    "explained_queries",
    "model_input_image",
    "overlay",
    "top_labels",
]
