"""Full fine-tuning against `--freeze_backbone` and LoRA: trainable parameters, training step time and peak memory.

    python scripts/finetune_modes.py [--preset vit-small-patch16-224] [--batch 32] [--steps 8] [--lora_r 8]

Each mode runs in its own process (peak resident memory is per process), on random 224 px images, with the training
step `hf-vit train` takes (forward, backward, AdamW) and the same functions it uses to freeze or to add adapters.
Prints one JSON line per mode and a Markdown table."""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

MODES = ("full", "freeze_backbone", "lora")


def run_mode(mode: str, preset: str, batch: int, steps: int, lora_r: int) -> dict:
    import torch

    from hf_vit import HfViTForImageClassification, preset_config
    from hf_vit.finetuning import apply_lora, freeze_backbone

    torch.manual_seed(0)
    model = HfViTForImageClassification(preset_config(preset, num_labels=10))
    if mode == "freeze_backbone":
        freeze_backbone(model)
    elif mode == "lora":
        model = apply_lora(model, r=lora_r, alpha=None, dropout=0.0, target_modules="qkv,proj,fc1,fc2", base_model=None)
    model.train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    height, width = model.config.image_hw
    pixels = torch.randn(batch, 3, height, width)
    labels = torch.randint(0, 10, (batch,))
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(steps + 2):  # two warm-up steps
        start = time.perf_counter()
        loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {
        "mode": mode,
        "trainable_parameters": sum(parameter.numel() for parameter in trainable),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "median_step_s": statistics.median(times[2:]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "training_rss_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kib) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="vit-small-patch16-224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--mode", choices=MODES, help="run one mode in this process (used by the parent)")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.preset, args.batch, args.steps, args.lora_r)))
        return
    rows = []
    for mode in MODES:
        command = [sys.executable, __file__, "--mode", mode, "--preset", args.preset, "--batch", str(args.batch),
                   "--steps", str(args.steps), "--lora_r", str(args.lora_r)]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.preset}, batch {args.batch}, {args.steps} steps after 2 warm-up steps, LoRA rank {args.lora_r}\n")
    print("| mode | trainable parameters | median step | peak memory (process) | grown during training |")
    print("|---|---|---|---|---|")
    for row in rows:
        share = row["trainable_parameters"] / row["parameters"]
        print(f"| {row['mode']} | {row['trainable_parameters']:,} ({share:.1%}) | {row['median_step_s']:.2f} s | "
              f"{row['peak_rss_mib']:,.0f} MiB | {row['training_rss_mib']:,.0f} MiB |")  # fmt: skip


if __name__ == "__main__":
    main()
