"""Convert the ViT checkpoints people already have into hf_vit models with the same predictions.

One module per source, each function returning a `Converted` (the model, its image processor, a note of the source):

- `from_transformers.convert_transformers`: transformers `ViTForImageClassification` / `ViTModel` folders, repo ids
  or instances; `convert_deit`: transformers DeiT (distillation token, and the averaged logits of the two heads).
- `from_timm.convert_timm`: timm `VisionTransformer` / `VisionTransformerDistilled` instances, `timm.create_model`
  names (with a local checkpoint file), timm Hub folders.
- `from_npz.convert_npz`: JAX `.npz` files (google-research/vision_transformer and big_vision layouts).

The transformers and timm modules also export the other way (`to_transformers_state_dict`, `to_timm_state_dict`),
from the same key tables, so that a peer implementation can run with exactly an hf_vit model's weights.

This package holds what the sources share: `Converted`, the consume-by-name `_Weights`, the helpers, `convert()`
(dispatch on the source kind), `load_for_finetuning`, the conversion model card and the command line.

Weights are read as tensors only (safetensors, `torch.load(weights_only=True)`, `numpy.load(allow_pickle=False)`):
no code from a checkpoint runs. A weight or an option without an exact hf_vit counterpart is a `ValueError` naming
it; the only weights ever left out are those a caller drops by name (`drop_pooler`). timm is imported lazily, inside
the timm functions (it is in the `dev` and `convert` extras).

`hf-vit convert --from {transformers,deit,timm,npz} --source PATH_OR_NAME --output DIR` writes a complete model folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..cli_args import CommandParser
from ..configuration_hf_vit import HfViTConfig
from ..modeling_hf_vit import HfViTForImageClassification
from ..processing import save_model_folder
from ..sources import Lineage

logger = logging.getLogger(__name__)

SOURCES = ("transformers", "deit", "timm", "npz")


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
    # The Hub repo the weights come from (never a local path) and their licence, for the card's metadata.
    lineage: Lineage = field(default_factory=Lineage)

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
        # The card goes in with the weights, so that an interrupted save never leaves a card describing other weights.
        save_model_folder(self.model, self.image_processor, output_dir, extra_files={"README.md": model_card(self)})


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
        # label2id follows from id2label in HfViTConfig itself.
        fields["id2label"] = {int(i): str(name) for i, name in labels.items()}
    return HfViTConfig(**fields)


def _labels_for(num_labels: int, id2label: dict | None) -> dict:
    """config fields for the head: explicit labels when they fit the head, else transformers' LABEL_i."""
    if id2label and len(id2label) == num_labels:
        return {"id2label": id2label}
    return {"num_labels": num_labels}


# The per-source modules import the shared machinery above from this package, so they come after it.
from .from_npz import convert_npz  # noqa: E402
from .from_timm import convert_timm, export_timm, to_timm_state_dict  # noqa: E402
from .from_transformers import (  # noqa: E402
    convert_deit,
    convert_transformers,
    export_transformers,
    to_transformers_state_dict,
)

__all__ = [
    "SOURCES",
    "Converted",
    "convert",
    "convert_deit",
    "convert_npz",
    "convert_timm",
    "convert_transformers",
    "export_timm",
    "export_transformers",
    "load_for_finetuning",
    "main",
    "model_card",
    "to_timm_state_dict",
    "to_transformers_state_dict",
]


def load_for_finetuning(folder: str | os.PathLike, labels: list[str], **kwargs) -> HfViTForImageClassification:
    """Load a converted folder with a new label set: with a different number of labels the head (and DeiT's
    distillation head) is re-initialised (`ignore_mismatched_sizes`), everything else is kept; logged either way."""
    old = HfViTConfig.from_pretrained(folder)
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


# The Hub's base_model_relation values are adapter, merge, quantized and finetune; none is "converted". Format
# conversions of the same weights (GGUF, ONNX, MLX) are listed under "quantized", which keeps a conversion out of the
# base model's fine-tunes.
CONVERSION_RELATION = "quantized"


def model_card(converted: Converted) -> str:
    """The converted folder's card, built with huggingface_hub's `ModelCardData`: its lineage (`base_model` the
    source's Hub repo id when known, `base_model_relation`), the source's licence, and what was carried."""
    from huggingface_hub import ModelCardData

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
    lineage = converted.lineage
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["hf_vit", "vision-transformer", "converted"],
        license=lineage.license,
        base_model=lineage.base_model,
        base_model_relation=CONVERSION_RELATION if lineage.base_model else None,
    )
    licence = f"Licence: {lineage.license}, the source's." if lineage.license else "The source checkpoint's licence"
    lines = [
        "---",
        card_data.to_yaml(),
        "---",
        "",
        f"# hf_vit conversion of `{converted.source}`",
        "",
        f"Converted by `hf-vit convert --from {converted.source_kind}` from `{converted.source}`"
        + (
            f" (Hub repo `{lineage.base_model}`)"
            if lineage.base_model and lineage.base_model != converted.source
            else ""
        )
        + f". {licence}{'' if lineage.license else ' and terms apply'}.",
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
    parser = CommandParser(
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
