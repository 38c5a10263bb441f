"""Throughput of hf_vit's training input pipeline (decode + augment + collate) per CPU core, beside the model's
training step on this CPU, for generated image sets:

    python scripts/benchmark_input_pipeline.py --repeats 5

Cases (--cases): `jpeg224`, 224x224 colour JPEGs with the default recipe's augmentation and preset
(vit-tiny-patch16-224); `png28`, 28x28 grayscale PNGs with the fashion_mnist recipe's (vit-mnist-convstem-patch8-28,
bfloat16 autocast where the CPU computes it natively, as the recipe does); `jpeg500`, 500x375 colour JPEGs (the usual
size of an ImageNet photo) resized to 224, pipeline only (no model step: a ViT-B/16 step takes minutes on a small CPU).

The pipeline runs as Trainer runs it in the main process (`--dataloader_num_workers 0`): a `DataLoader` over the set
with hf_vit's train transform (`train_transform_fn`) and collator (`collate`), shuffled, at the recipe's batch size,
with one torch thread (one core). The model step (forward, backward, AdamW step) runs on random pixels with every core
this process may use, or --model_threads. With --end_to_end, whole training steps (loader and model) are also timed
with 0 and with 1 loader worker. Every measurement is repeated --repeats times, the cases and measurements interleaved
within each round (other jobs on a shared machine then slow all of them alike), and the medians are printed."""

import argparse
import io
import os
import statistics
import time
from itertools import islice

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from torch.utils.data import DataLoader

from hf_vit import preset_config, speedups
from hf_vit.augment import AugmentationArguments, collate, train_transform_fn
from hf_vit.configuration_hf_vit import HfViTConfig
from hf_vit.modeling_hf_vit import HfViTForImageClassification
from hf_vit.processing import build_image_processor
from hf_vit.recipes import RECIPES, native_bf16

# Per case: the stored images (width, height, PIL mode, format), the recipe whose preset, batch and augmentation it
# uses, and whether the model step is timed.
CASES = {
    "jpeg224": {"size": (224, 224), "mode": "RGB", "format": "JPEG", "recipe": "default", "model": True},
    "png28": {"size": (28, 28), "mode": "L", "format": "PNG", "recipe": "fashion_mnist", "model": True},
    "jpeg500": {"size": (500, 375), "mode": "RGB", "format": "JPEG", "recipe": "default", "model": False},
}
NUM_LABELS = 10


def generate(case: dict, num_images: int) -> Dataset:
    """`num_images` images stored as encoded bytes in the table, as a Hub parquet set holds them. JPEGs: a smooth
    colour gradient with noise at quality 90 (photo-like file sizes); PNGs: noise (Fashion-MNIST's are grayscale)."""
    rng = np.random.default_rng(0)
    width, height = case["size"]
    entries = []
    for _ in range(num_images):
        if case["mode"] == "RGB":
            ramp = np.linspace(0, 200, width)[None, :, None] + rng.normal(0, 20, (height, width, 3))
            pixels = np.clip(ramp, 0, 255).astype(np.uint8)
        else:
            pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
        buffer = io.BytesIO()
        options = {"quality": 90} if case["format"] == "JPEG" else {}
        PILImage.fromarray(pixels, case["mode"]).save(buffer, case["format"], **options)
        entries.append({"bytes": buffer.getvalue(), "path": None})
    features = Features({"image": Image(), "label": ClassLabel(num_classes=NUM_LABELS)})
    return Dataset.from_dict({"image": entries, "label": [i % NUM_LABELS for i in range(num_images)]}, features)


def recipe_parts(case: dict) -> tuple[HfViTConfig, AugmentationArguments, int, bool]:
    recipe = {**RECIPES["default"], **RECIPES[case["recipe"]]}
    config = preset_config(recipe["preset"], num_labels=NUM_LABELS)
    augmentation_fields = set(AugmentationArguments.__dataclass_fields__)
    augmentation = AugmentationArguments(**{key: value for key, value in recipe.items() if key in augmentation_fields})
    bf16 = recipe.get("bf16") == "native" and native_bf16(on_cpu=True)[0]
    return config, augmentation, recipe["per_device_train_batch_size"], bf16


def loader(dataset: Dataset, config: HfViTConfig, augmentation, batch_size: int, workers: int) -> DataLoader:
    transformed = dataset.with_transform(train_transform_fn(build_image_processor(config), augmentation))
    return DataLoader(transformed, batch_size, shuffle=True, collate_fn=collate, num_workers=workers, drop_last=True)


def time_pipeline(batches: DataLoader, num_batches: int) -> float:
    """Images per second of `num_batches` batches from the loader, in this process on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        count = sum(len(batch["labels"]) for batch in islice(batches, num_batches))
        return count / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


class ModelStep:
    """One training step (forward, backward, AdamW step) of the case's model, on the CPU."""

    def __init__(self, config: HfViTConfig, bf16: bool):
        torch.manual_seed(0)
        self.model = HfViTForImageClassification(config).train()
        speedups.apply(self.model)  # as `hf-vit train` runs it
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.bf16 = bf16

    def __call__(self, batch: dict) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def time_model(step: ModelStep, config: HfViTConfig, batch_size: int, num_steps: int) -> float:
    size = config.image_size
    batch = {"pixel_values": torch.randn(batch_size, 3, size, size), "labels": torch.arange(batch_size) % NUM_LABELS}
    step(batch)  # warm-up: first-call allocations and kernel choices
    start = time.perf_counter()
    for _ in range(num_steps):
        step(batch)
    return num_steps * batch_size / (time.perf_counter() - start)


def time_end_to_end(step: ModelStep, batches: DataLoader, num_steps: int) -> float:
    """Images per second of whole training steps: the next batch from the loader, then the model step."""
    iterator = iter(batches)
    step(next(iterator))  # warm-up, and the workers' start
    start = time.perf_counter()
    count = 0
    for batch in islice(iterator, num_steps):
        step(batch)
        count += len(batch["labels"])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--num_images", type=int, default=2000, help="images generated per case")
    parser.add_argument("--pipeline_images", type=int, default=640, help="images through the pipeline per repeat")
    parser.add_argument("--model_steps", type=int, default=3, help="timed model steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model_threads", type=int, default=None, help="torch threads of the model step (all cores)")
    parser.add_argument("--pipeline_only", action="store_true", help="no model step (e.g. on a GPU host's CPU)")
    parser.add_argument("--end_to_end", action="store_true", help="also time loader + model with 0 and 1 worker")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.model_threads:
        torch.set_num_threads(args.model_threads)
    print(f"{cores} cores, torch {torch.__version__}, {torch.get_num_threads()} threads for the model step")

    setups = {}
    for name in args.cases:
        case = CASES[name]
        start = time.perf_counter()
        dataset = generate(case, args.num_images)
        config, augmentation, batch_size, bf16 = recipe_parts(case)
        setups[name] = {
            "config": config,
            "batch_size": batch_size,
            "loader": loader(dataset, config, augmentation, batch_size, workers=0),
            "step": ModelStep(config, bf16) if case["model"] and not args.pipeline_only else None,
            "dataset": dataset,
            "augmentation": augmentation,
        }
        print(f"{name}: {args.num_images} images generated in {time.perf_counter() - start:.1f} s; batch "
              f"{batch_size}, {config.image_size} px, augmentation {augmentation}, bf16 {bf16}")  # fmt: skip

    results = {}
    for round_index in range(args.repeats):
        for name, setup in setups.items():
            num_batches = max(1, args.pipeline_images // setup["batch_size"])
            results.setdefault((name, "pipeline, 1 core"), []).append(time_pipeline(setup["loader"], num_batches))
            if setup["step"] is not None:
                rate = time_model(setup["step"], setup["config"], setup["batch_size"], args.model_steps)
                results.setdefault((name, f"model step, {torch.get_num_threads()} threads"), []).append(rate)
            if args.end_to_end and setup["step"] is not None:
                for workers in (0, 1):
                    batches = loader(setup["dataset"], setup["config"], setup["augmentation"], setup["batch_size"],
                                     workers)  # fmt: skip
                    rate = time_end_to_end(setup["step"], batches, args.model_steps)
                    results.setdefault((name, f"end to end, {workers} worker(s)"), []).append(rate)
        print(f"round {round_index + 1}/{args.repeats} done (load average {os.getloadavg()[0]:.1f})", flush=True)

    print("\n| case | measurement | median images/s | min | max |\n|---|---|---:|---:|---:|")
    for (name, measurement), rates in results.items():
        print(f"| {name} | {measurement} | {statistics.median(rates):,.0f} | {min(rates):,.0f} | {max(rates):,.0f} |")


if __name__ == "__main__":
    main()
