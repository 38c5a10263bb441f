"""How many processes decode and augment the images while the model trains (`--dataloader_num_workers`), and the
`DataLoader` settings that go with them, per training device. The figures behind the rule are measured in
docs/scaling.md ("The input pipeline"), with scripts/benchmark_input_pipeline.py."""

import math
import os

import torch
from transformers.utils import logging

from .distributed import trains_on_cpu

logger = logging.get_logger("hf_vit")

# The GPU training rate the workers must keep up with: ViT-B/16 in bfloat16, measured (docs/performance.md, "GPU").
REFERENCE_GPU_IMAGES_PER_S = 3_350
# Images one core decodes, augments (RandomResizedCrop to 224, flip) and collates per second, for ImageNet-size
# (500 x 375) JPEGs: the slowest of the measured cases (docs/scaling.md, "The input pipeline").
IMAGES_PER_S_PER_CORE = 260
# Workers that keep the reference GPU fed: more cost memory (each holds its batches, and with persistent workers
# the evaluation loader keeps its own) without a faster run of that model. Smaller models train faster and can use
# more: give --dataloader_num_workers.
WORKERS_TO_FEED_A_GPU = math.ceil(REFERENCE_GPU_IMAGES_PER_S / IMAGES_PER_S_PER_CORE)


def usable_cores() -> int:
    """The cores this process may run on, shared between the processes a launcher started on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


def loader_settings(device_type: str, cores: int) -> dict:
    """`TrainingArguments` data loading defaults for training on `device_type` ('cpu', 'cuda', 'mps', ...) with
    `cores` cores for this process.

    - On the CPU, no worker: images are decoded in the training process. Per core, the model step takes several
      times (28 px images) to tens of times (224 px) as long as decoding its batch, so a worker could save a small
      share of the time at most, and it takes a core from the model's threads (measured not faster in
      docs/scaling.md).
    - On an accelerator, one worker per core but one (the training process drives the device), at least one (it
      decodes while the device computes), and at most WORKERS_TO_FEED_A_GPU. Workers stay alive between epochs and
      evaluations (`persistent_workers`: no restart of every worker at each evaluation); each prefetches torch's
      default of 2 batches. Pinned memory on CUDA only (it speeds host-to-GPU copies; elsewhere it only warns)."""
    if device_type == "cpu":
        return {"dataloader_num_workers": 0, "dataloader_persistent_workers": False, "dataloader_pin_memory": False}
    workers = max(1, min(cores - 1, WORKERS_TO_FEED_A_GPU))
    return {
        "dataloader_num_workers": workers,
        "dataloader_persistent_workers": True,
        "dataloader_pin_memory": device_type == "cuda",
    }


def training_device_type(use_cpu: bool) -> str:
    """'cpu' when Trainer trains on the CPU, else the accelerator's type ('cuda', 'mps', 'xpu', ...)."""
    return "cpu" if trains_on_cpu(use_cpu) else torch.accelerator.current_accelerator().type


def loader_defaults(recipe: dict, given: dict) -> None:
    """Fill the recipe with `loader_settings` for the device this command trains on; `given`, the options on the
    command line, win. With a given --dataloader_num_workers, persistent workers follow it (on above 0 workers, off
    at 0, where torch refuses them). Logs the default worker count and how to change it."""
    device_type = training_device_type(bool(given.get("use_cpu", recipe.get("use_cpu", False))))
    cores = usable_cores()
    settings = loader_settings(device_type, cores)
    if "dataloader_num_workers" in given:
        workers = given["dataloader_num_workers"]
        settings["dataloader_num_workers"] = workers
        settings["dataloader_persistent_workers"] = workers > 0
    else:
        workers = settings["dataloader_num_workers"]
        logger.warning(
            f"data loading: {workers} worker process(es) on {device_type} with {cores} core(s) for this process"
            f"{' (decoding in the training process)' if workers == 0 else ''}; give --dataloader_num_workers N to "
            "change it."
        )
    if given.get("dataloader_persistent_workers") and workers == 0:
        raise ValueError(
            "--dataloader_persistent_workers True keeps worker processes alive, and this run has none "
            "(--dataloader_num_workers 0, the default on a CPU): give --dataloader_num_workers 1 or more, or leave "
            "--dataloader_persistent_workers out."
        )
    for name, value in settings.items():
        if name not in given:
            recipe[name] = value
