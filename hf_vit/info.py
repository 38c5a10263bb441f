"""`hf-vit info`: what can be built here, and on what."""

import importlib.metadata
import os
import platform

import torch

from .cli_args import CommandParser
from .flops import count_parameters, forward_flops
from .presets import PRESETS, preset_config
from .speedups import onednn_is_faster

PACKAGES = ("hf_vit", "torch", "torchvision", "transformers", "datasets", "accelerate", "evaluate", "huggingface_hub",
            "safetensors", "timm")  # fmt: skip


def preset_table(num_labels: int = 1000) -> str:
    rows = [
        "| preset | image | patch | width | depth | heads | params (M) | GFLOPs / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in PRESETS:
        config = preset_config(name, num_labels=num_labels)
        rows.append(
            f"| {name} | {config.image_size} | {config.patch_size} | {config.hidden_size} | {config.num_hidden_layers} "
            f"| {config.num_attention_heads} | {count_parameters(config) / 1e6:.2f} "
            f"| {forward_flops(config) / 1e9:.3f} |"
        )
    return "\n".join(rows)


def versions() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    if found.get("hf_vit") == "not installed":  # run from a source checkout on PYTHONPATH
        from . import __version__

        found["hf_vit"] = f"{__version__} (source checkout)"
    return found


def device_description() -> str:
    """Where hf_vit computes by default, for `hf-vit info` and model cards."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    if torch.backends.mps.is_available():
        return "Apple MPS"
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="hf-vit info", description=__doc__)
    parser.add_argument("--num-labels", type=int, default=1000, help="head size used for the parameter counts")
    args = parser.parse_args(argv)
    print(f"Presets (parameters and forward FLOPs with a {args.num_labels}-class head):\n")
    print(preset_table(args.num_labels))
    print("\nInstalled:")
    for package, version in versions().items():
        print(f"  {package:<16} {version}")
    print(f"  {'python':<16} {platform.python_version()}")
    print(f"\nDevice: {device_description()}")
    linears = "oneDNN" if onednn_is_faster() else "torch's default BLAS (F.linear)"
    print(f"hf_vit.speedups.apply here: float32 CPU block linears on {linears}; short-sequence attention for sdpa")
    return 0
