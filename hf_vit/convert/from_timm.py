"""timm `VisionTransformer` checkpoints -> hf_vit, and hf_vit -> timm `VisionTransformer`, from the same key tables."""

from __future__ import annotations

import json
import math
import os
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..configuration_hf_vit import HfViTConfig
from ..modeling_hf_vit import HfViTForImageClassification
from ..processing import build_timm_eval_processor
from ..sources import Lineage, download_repo, is_hub_repo_id, read_lineage
from . import (
    Converted,
    _build,
    _labels_for,
    _load_tensor_file,
    _split_positions,
    _square_grid,
    _vit_config,
    _Weights,
    _zeros_if_none,
)

# hf_vit module -> timm module: inside a block, and at the top level.
_TIMM_LAYER = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.qkv": "attn.qkv",
    "attention.q_norm": "attn.q_norm",
    "attention.k_norm": "attn.k_norm",
    "attention.proj": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "layer_scale1": "ls1",
    "layer_scale2": "ls2",
}
_TIMM_TOP = {
    "vit.embeddings.patch_embeddings": "patch_embed.proj",
    "vit.norm": "norm",
    "vit.fc_norm": "fc_norm",
    "classifier": "head",
    "distillation_classifier": "head_dist",
}
# hf_vit prefix token -> timm parameter, in timm's token order.
_TIMM_TOKENS = {
    "vit.embeddings.cls_token": "cls_token",
    "vit.embeddings.distillation_token": "dist_token",
    "vit.embeddings.register_tokens": "reg_token",
}
_TIMM_ACTIVATIONS = {("GELU", "none"): "gelu", ("GELU", "tanh"): "gelu_pytorch_tanh", ("QuickGELU", None): "quick_gelu"}


def _timm_model(source, model_name: str | None, **create_kwargs):
    """A timm model with its weights: an instance, a timm Hub folder, a name (weights from timm's cache), or a name
    with a checkpoint file. timm reads files with weights_only=True; local files here are read the same way."""
    import timm

    if isinstance(source, nn.Module):
        return source, f"an in-memory timm {type(source).__name__}"
    source = os.fspath(source)
    if not Path(source).exists() and model_name is None and is_hub_repo_id(source):
        # A timm Hub repo (timm/...): its files through huggingface_hub's cache, then as a folder.
        return _timm_model(download_repo(source), None, **create_kwargs)[0], source
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
        for ours, size in (
            ("norm1", width),
            ("norm2", width),
            ("attention.proj", width),
            ("mlp.fc1", intermediate),
            ("mlp.fc2", width),
        ):
            theirs = _TIMM_LAYER[ours]
            sd[f"{target}{ours}.weight"] = weights.take(f"{source_block}{theirs}.weight")
            sd[f"{target}{ours}.bias"] = _zeros_if_none(weights.take_optional(f"{source_block}{theirs}.bias"), size)
        qkv = _TIMM_LAYER["attention.qkv"]
        sd[f"{target}attention.qkv.weight"] = weights.take(f"{source_block}{qkv}.weight")
        if qkv_bias:
            sd[f"{target}attention.qkv.bias"] = weights.take(f"{source_block}{qkv}.bias")
        if qk_norm:
            for name in ("attention.q_norm", "attention.k_norm"):
                for kind in ("weight", "bias"):
                    sd[f"{target}{name}.{kind}"] = weights.take(f"{source_block}{_TIMM_LAYER[name]}.{kind}")
        if layerscale_init is not None:
            for name in ("layer_scale1", "layer_scale2"):
                sd[f"{target}{name}.gamma"] = weights.take(f"{source_block}{_TIMM_LAYER[name]}.gamma")
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

    return Converted(converted_model, image_processor, description, "timm", notes, reference,
                     lineage=_timm_lineage(source, model))  # fmt: skip


def _timm_lineage(source, model) -> Lineage:
    """A Hub repo id, a folder that knows its repo (see `read_lineage`), or a timm name whose pretrained weights
    timm fetched (its `hf_hub_id`); nothing for an instance or a checkpoint file."""
    if isinstance(source, nn.Module):
        return Lineage()
    source = os.fspath(source)
    if Path(source).is_dir():
        return read_lineage(Path(source), None, "timm")
    if Path(source).exists():
        return Lineage()
    if is_hub_repo_id(source):
        return read_lineage(download_repo(source), source, "timm")  # a cache hit: the card's licence
    pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
    repo_id = pretrained_cfg.get("hf_hub_id")
    licence = pretrained_cfg.get("license")
    return Lineage(repo_id if is_hub_repo_id(repo_id) else None, licence if isinstance(licence, str) else None)


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
# hf_vit -> timm (to run timm with exactly an hf_vit model's weights, e.g. in the benchmark)
# ----------------------------------------------------------------------------------------------------------------------


def to_timm_kwargs(config: HfViTConfig) -> dict:
    """`timm.models.vision_transformer.VisionTransformer` arguments for the same network."""
    from timm.layers import QuickGELU

    if config.use_distillation_token:
        raise ValueError("export to timm's VisionTransformerDistilled (distillation token) is not implemented.")
    if config.stem_channels:
        raise ValueError("export of a convolutional stem (stem_channels) to timm is not implemented.")
    if config.intermediate_size % config.hidden_size:
        raise ValueError(f"timm needs intermediate_size a multiple of hidden_size, got {config.intermediate_size}.")
    activations = {"gelu": nn.GELU, "gelu_pytorch_tanh": partial(nn.GELU, approximate="tanh"), "quick_gelu": QuickGELU}
    if config.hidden_act not in activations:
        raise ValueError(f"timm has no counterpart for hidden_act={config.hidden_act!r}.")
    return {
        "img_size": tuple(config.image_hw),
        "patch_size": tuple(config.patch_hw),
        "in_chans": config.num_channels,
        "num_classes": config.num_labels,
        "global_pool": "token" if config.pooling == "cls" else "avg",
        "embed_dim": config.hidden_size,
        "depth": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "mlp_ratio": config.intermediate_size // config.hidden_size,
        "qkv_bias": config.qkv_bias,
        "qk_norm": config.qk_norm,
        "init_values": config.layerscale_init,
        "class_token": config.use_class_token,
        "reg_tokens": config.num_register_tokens,
        "fc_norm": config.fc_norm,
        "pos_drop_rate": config.hidden_dropout_prob,
        "proj_drop_rate": config.hidden_dropout_prob,
        "attn_drop_rate": config.attention_probs_dropout_prob,
        "drop_path_rate": config.drop_path_rate,
        "norm_layer": partial(nn.LayerNorm, eps=config.layer_norm_eps),
        "act_layer": activations[config.hidden_act],
    }


def to_timm_state_dict(model: HfViTForImageClassification) -> dict[str, torch.Tensor]:
    """hf_vit weights in timm's `VisionTransformer` layout (`no_embed_class=False`, timm's default): the prefix
    tokens' own position slots are zero, since hf_vit's tokens already hold theirs and registers have none."""
    to_timm_kwargs(model.config)  # fails early on options timm's VisionTransformer lacks here
    ours = {key: value.detach() for key, value in model.state_dict().items()}
    embeddings = model.vit.embeddings
    ours.pop("vit.embeddings.position_embeddings", None)  # a sin-cos table is a buffer, not in the state dict
    positions = embeddings.position_embeddings.detach()
    theirs = {"pos_embed": torch.cat([positions.new_zeros(1, model.config.num_prefix_tokens, positions.shape[-1]),
                                      positions], dim=1)}  # fmt: skip
    for token, their_token in _TIMM_TOKENS.items():
        if token in ours:
            theirs[their_token] = ours.pop(token)
    for key in list(ours):
        module, kind = key.rsplit(".", 1)
        if module in _TIMM_TOP:
            theirs[f"{_TIMM_TOP[module]}.{kind}"] = ours.pop(key)
        elif module.startswith("vit.layers."):
            index, layer_module = module.removeprefix("vit.layers.").split(".", 1)
            theirs[f"blocks.{index}.{_TIMM_LAYER[layer_module]}.{kind}"] = ours.pop(key)
    if ours:
        raise RuntimeError(f"to_timm_state_dict bug: {sorted(ours)} not mapped.")
    return {key: value.contiguous() for key, value in theirs.items()}


def export_timm(model: HfViTForImageClassification):
    """A timm `VisionTransformer` holding exactly `model`'s weights (same logits)."""
    from timm.models.vision_transformer import VisionTransformer

    timm_model = VisionTransformer(**to_timm_kwargs(model.config), weight_init="skip")
    timm_model.load_state_dict(to_timm_state_dict(model), strict=True)
    return timm_model.train(model.training)
