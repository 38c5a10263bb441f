"""What fine-tuning a pretrained checkpoint changes in a run: its recipe (a learning rate in the usual range for the
batch, warmup, a short schedule); layer-wise learning-rate decay (BEiT, MAE and timm fine-tuning), given to Trainer
as the optimizer's parameter groups; and which weights train: all, the head only (`--freeze_backbone`, a linear
probe), or LoRA adapters through PEFT with the head trained in full."""

import copy
import importlib.util
import logging
import re

import torch

logger = logging.getLogger("hf_vit")

# The head modules: trained in full under LoRA (PEFT's modules_to_save) and with --freeze_backbone.
HEAD_MODULES = ("classifier", "distillation_classifier")
# hf_vit's fused attention input and output projections and its MLP: every linear of the blocks.
DEFAULT_LORA_TARGETS = "qkv,proj,fc1,fc2"
PEFT_MISSING = "LoRA needs PEFT, an optional extra of hf_vit: pip install 'hf_vit[peft]' (or pip install peft)."

# Full fine-tuning of a pretrained ViT with AdamW is usually run at 1e-5 to 1e-4 (DeiT / BEiT / MAE recipes, the
# transformers image-classification example at 5e-5 for batch 32..64). The rate follows the total batch linearly
# (the rule those recipes state per 256 images), kept inside that range.
FINETUNE_LEARNING_RATE_PER_256 = 2e-4
FINETUNE_LEARNING_RATE_RANGE = (1e-5, 1e-4)
# Used whenever --model_name_or_path is given, over the data set's recipe (whose augmentation settings stay).
FINETUNE_RECIPE = {
    "num_train_epochs": 5,
    "per_device_train_batch_size": 32,
    "warmup_steps": 0.1,  # a float below 1 is a ratio of the training steps in transformers 5
    "lr_scheduler_type": "cosine",
    "weight_decay": 0.05,
    # Loader workers follow the training device as for every run (hf_vit/input_pipeline.py).
}


def finetuning_learning_rate(total_batch_size: int) -> float:
    """FINETUNE_LEARNING_RATE_PER_256 scaled to the total batch, within FINETUNE_LEARNING_RATE_RANGE."""
    low, high = FINETUNE_LEARNING_RATE_RANGE
    return min(high, max(low, FINETUNE_LEARNING_RATE_PER_256 * total_batch_size / 256))


def layer_index(parameter_name: str, num_layers: int) -> int:
    """0 for the embeddings (patch and stem, tokens, positions), i + 1 for block i, num_layers + 1 for what follows
    the blocks (final norm, heads). Names may carry a wrapper's prefix (PEFT's `base_model.model.`)."""
    block = re.search(r"(?:^|\.)vit\.layers\.(\d+)\.", parameter_name)
    if block:
        return int(block.group(1)) + 1
    if re.search(r"(?:^|\.)vit\.embeddings\.", parameter_name):
        return 0
    return num_layers + 1


def layer_decay_parameter_groups(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_decay: float, decay_names: set[str]
) -> list[dict]:
    """Optimizer parameter groups in which layer l learns at learning_rate * layer_decay ** (num_layers + 1 - l):
    the head at the full rate, each block below at `layer_decay` times the one above, the embeddings lowest. Weight
    decay only for `decay_names` (Trainer's choice: not biases, not norms). The group of the full rate comes first,
    so that Trainer's logged learning rate is the head's."""
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        layer = layer_index(name, num_layers)
        decays = name in decay_names
        group = groups.setdefault((layer, decays), {
            "params": [],
            "lr": learning_rate * layer_decay ** (num_layers + 1 - layer),
            "weight_decay": weight_decay if decays else 0.0,
        })  # fmt: skip
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups, key=lambda key: (-key[0], not key[1]))]


def peft_is_installed() -> bool:
    return importlib.util.find_spec("peft") is not None


def head_modules(model) -> list[str]:
    return [name for name in HEAD_MODULES if isinstance(getattr(model, name, None), torch.nn.Module)]


def freeze_backbone(model) -> None:
    """Train the classification head(s) only: a linear probe on the pretrained features."""
    heads = tuple(f"{name}." for name in head_modules(model))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(heads))


def apply_lora(model, *, r: int, alpha: float | None, dropout: float, target_modules: str, base_model: str | None):
    """`model` wrapped by PEFT with LoRA adapters of rank `r` on `target_modules` (comma-separated module names;
    hf_vit's are `qkv`, `proj`, `fc1`, `fc2`), the head(s) trained in full. `base_model` goes into the adapter's
    config (`base_model_name_or_path`): what `PeftModel.from_pretrained` users load it on."""
    if not peft_is_installed():
        raise ValueError(PEFT_MISSING)
    from peft import LoraConfig, get_peft_model

    targets = [name.strip() for name in target_modules.split(",") if name.strip()]
    present = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    unknown = sorted(set(targets) - present)
    if unknown or not targets:
        raise ValueError(
            f"--lora_target_modules {target_modules!r}: {unknown or 'nothing'} names no linear layer of the model; "
            f"hf_vit's are {', '.join(sorted(present))} (default {DEFAULT_LORA_TARGETS})."
        )
    config = LoraConfig(
        r=r,
        lora_alpha=alpha if alpha is not None else r,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=head_modules(model),
        base_model_name_or_path=base_model,
    )
    return get_peft_model(model, config)


def is_lora_model(model) -> bool:
    return peft_is_installed() and type(model).__module__.startswith("peft.")


def merged_copy(peft_model):
    """The adapted model with its LoRA weights merged in: a plain hf_vit model (the trained one stays as it is)."""
    return copy.deepcopy(peft_model).merge_and_unload()


def log_trainable_parameters(model, how: str) -> None:
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    total = sum(parameter.numel() for parameter in model.parameters())
    logger.warning(f"{how}: {trainable:,} of {total:,} parameters trained ({trainable / total:.2%}).")


__all__ = [
    "DEFAULT_LORA_TARGETS",
    "FINETUNE_RECIPE",
    "apply_lora",
    "freeze_backbone",
    "is_lora_model",
    "merged_copy",
    "peft_is_installed",
    "finetuning_learning_rate",
    "layer_decay_parameter_groups",
    "layer_index",
]
