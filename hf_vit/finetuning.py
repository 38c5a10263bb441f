"""What fine-tuning a pretrained checkpoint changes in a run: its recipe (a learning rate in the usual range for the
batch, warmup, a short schedule), and layer-wise learning-rate decay (BEiT, MAE and timm fine-tuning), given to
Trainer as the optimizer's parameter groups."""

import os
import re

import torch

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
    # On a CPU, loader workers compete with the model's own threads (measured on the Fashion-MNIST recipe); with an
    # accelerator, decoding and augmenting full-size images in parallel keeps it fed.
    "dataloader_num_workers": min(8, (os.cpu_count() or 1) // 2) if torch.accelerator.is_available() else 0,
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


__all__ = [
    "FINETUNE_RECIPE",
    "finetuning_learning_rate",
    "layer_decay_parameter_groups",
    "layer_index",
]
