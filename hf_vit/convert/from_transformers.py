"""transformers ViT and DeiT checkpoints -> hf_vit, and hf_vit -> transformers ViT, from the same key tables."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from ..configuration_hf_vit import HfViTConfig
from ..modeling_hf_vit import HfViTForImageClassification
from ..processing import build_image_processor
from ..sources import Lineage, read_lineage
from . import Converted, _build, _labels_for, _load_tensor_file, _split_positions, _vit_config, _Weights

logger = logging.getLogger(__name__)


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
# hf_vit module -> transformers module on disk, under the model prefix ("vit." / "deit.").
_TRANSFORMERS_TOP = {
    "vit.embeddings.patch_embeddings": "embeddings.patch_embeddings.projection",
    "vit.norm": "layernorm",
}
_TRANSFORMERS_FILES = [
    "README.md",  # the card: licence
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
    lineage = Lineage()
    if isinstance(source, PreTrainedModel):
        source_config, tensors = source.config, source.state_dict()
        description = f"an in-memory transformers {type(source).__name__}"
    else:
        folder = _transformers_folder(os.fspath(source), revision)
        repo_id = None if Path(os.fspath(source)).is_dir() else os.fspath(source)
        lineage = read_lineage(folder, repo_id, "deit" if expect == "deit" else "transformers")
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
    patches = _TRANSFORMERS_TOP["vit.embeddings.patch_embeddings"]
    sd["vit.embeddings.patch_embeddings.weight"] = weights.take(f"{prefix}{patches}.weight")
    sd["vit.embeddings.patch_embeddings.bias"] = weights.take(f"{prefix}{patches}.bias")

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
    sd["vit.norm.weight"] = weights.take(f"{prefix}{_TRANSFORMERS_TOP['vit.norm']}.weight")
    sd["vit.norm.bias"] = weights.take(f"{prefix}{_TRANSFORMERS_TOP['vit.norm']}.bias")

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

    return Converted(model, image_processor, description, "deit" if deit else "transformers", notes, reference,
                     lineage=lineage)  # fmt: skip


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
# hf_vit -> transformers ViT (to run transformers with exactly an hf_vit model's weights, e.g. in the benchmark)
# ----------------------------------------------------------------------------------------------------------------------


def to_transformers_config(config: HfViTConfig):
    """The transformers `ViTConfig` of the same network; a `ValueError` names any hf_vit option ViT lacks."""
    from transformers import ViTConfig

    missing = {
        "use_distillation_token": config.use_distillation_token,
        "num_register_tokens": config.num_register_tokens,
        "qk_norm": config.qk_norm,
        "layerscale_init": config.layerscale_init is not None,
        "fc_norm": config.fc_norm,
        "drop_path_rate": config.drop_path_rate > 0,
        "pooling='mean'": config.pooling != "cls",
        "use_class_token=False": not config.use_class_token,
        "stem_channels (convolutional stem)": bool(config.stem_channels),
    }
    unsupported = [name for name, used in missing.items() if used]
    if unsupported:
        raise ValueError(f"transformers' ViT has no counterpart for hf_vit's {', '.join(unsupported)}.")
    return ViTConfig(
        image_size=list(config.image_hw),
        patch_size=config.patch_hw[0] if config.patch_hw[0] == config.patch_hw[1] else list(config.patch_hw),
        num_channels=config.num_channels,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        layer_norm_eps=config.layer_norm_eps,
        qkv_bias=config.qkv_bias,
        id2label=dict(config.id2label),
        label2id=dict(config.label2id),
        problem_type=config.problem_type,  # the pipeline picks softmax or sigmoid from it
        architectures=["ViTForImageClassification"],
    )


def to_transformers_state_dict(model: HfViTForImageClassification) -> dict[str, torch.Tensor]:
    """hf_vit weights in transformers' on-disk ViT layout (what `ViTForImageClassification.save_pretrained`
    writes). The class token's own position slot is zero: hf_vit's class token already holds its position."""
    to_transformers_config(model.config)  # fails early on options ViT lacks
    ours = {key: value.detach() for key, value in model.state_dict().items()}
    ours.pop("vit.embeddings.position_embeddings", None)  # a sin-cos table is a buffer, not in the state dict
    positions = model.vit.embeddings.position_embeddings.detach()
    theirs = {
        "vit.embeddings.cls_token": ours.pop("vit.embeddings.cls_token"),
        "vit.embeddings.position_embeddings": torch.cat([positions.new_zeros(1, 1, positions.shape[-1]), positions], 1),
    }
    for module, their_module in _TRANSFORMERS_TOP.items():
        for kind in ("weight", "bias"):
            theirs[f"vit.{their_module}.{kind}"] = ours.pop(f"{module}.{kind}")
    for i in range(model.config.num_hidden_layers):
        source, target = f"vit.layers.{i}.", f"vit.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            if f"{source}attention.qkv.{kind}" in ours:
                parts = ours.pop(f"{source}attention.qkv.{kind}").chunk(3)  # rows ordered q, k, v
                for part, tensor in zip(("query", "key", "value"), parts, strict=True):
                    theirs[f"{target}{_TRANSFORMERS_LAYER[part][0]}.{kind}"] = tensor
            for module in ("norm1", "norm2", "attention.proj", "mlp.fc1", "mlp.fc2"):
                theirs[f"{target}{_TRANSFORMERS_LAYER[module][0]}.{kind}"] = ours.pop(f"{source}{module}.{kind}")
    for kind in ("weight", "bias"):
        if f"classifier.{kind}" in ours:
            theirs[f"classifier.{kind}"] = ours.pop(f"classifier.{kind}")
    if ours:
        raise RuntimeError(f"to_transformers_state_dict bug: {sorted(ours)} not mapped.")
    return {key: value.contiguous() for key, value in theirs.items()}


def export_transformers(model: HfViTForImageClassification, folder: str | os.PathLike, **from_pretrained_kwargs):
    """Write `model` as a transformers ViT folder and load it back as `ViTForImageClassification` (e.g. with
    `attn_implementation="sdpa"`). Through a file, because transformers >= 5.9 renames ViT's modules in memory and
    maps the on-disk names only when loading."""
    from safetensors.torch import save_file
    from transformers import ViTForImageClassification

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    to_transformers_config(model.config).save_pretrained(folder)
    save_file(to_transformers_state_dict(model), folder / "model.safetensors", metadata={"format": "pt"})
    return ViTForImageClassification.from_pretrained(folder, **from_pretrained_kwargs)
