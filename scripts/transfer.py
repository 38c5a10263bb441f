"""Does pretraining help? Fine-tune a pretrained hf_vit model on a data set, train the same architecture from scratch
on it with the same epochs and batch (the same compute: the models are identical), and record both in the fine-tuned
model's card and on stdout.

    python scripts/transfer.py --pretrained fmnist --dataset digits --output_dir transfer [--epochs 5] \
        [--finetune_args "--learning_rate 1e-4"]

Each run is a real `hf-vit train` in its own process; the runs go one after the other, so their wall times are
comparable on an otherwise idle machine. The fine-tuned folder is `OUTPUT_DIR/finetuned`, the other `scratch`."""

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from huggingface_hub import ModelCard

SECTION_TITLE = "## Compared with training from scratch"


def train(arguments: list[str]) -> dict:
    """One `hf-vit train` run; its all_results.json and learning rate (from the log the run writes)."""
    command = [sys.executable, "-m", "hf_vit.cli", "train", *arguments]
    print("+", shlex.join(["hf-vit", "train", *arguments]), flush=True)
    subprocess.run(command, check=True)
    output_dir = Path(arguments[arguments.index("--output_dir") + 1])
    results = json.loads((output_dir / "all_results.json").read_text())
    state = json.loads((output_dir / "trainer_state.json").read_text())
    # The rate the run used (recipe or given), as its card's hyperparameter table records it.
    card = (output_dir / "README.md").read_text()
    results["learning_rate"] = float(re.search(r"\| learning_rate \| ([^|]+) \|", card).group(1))
    results["validation_curve"] = [
        round(entry["eval_accuracy"], 3) for entry in state["log_history"] if "eval_accuracy" in entry
    ][: int(float(arguments[arguments.index("--num_train_epochs") + 1]))]
    return results


def architecture_preset(folder: Path) -> str:
    """The preset whose architecture the pretrained folder has (the from-scratch side trains that preset)."""
    config = json.loads((folder / "config.json").read_text())
    from hf_vit.presets import PRESETS, preset_config

    fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size", "stem_channels")
    for name in PRESETS:
        preset = preset_config(name).to_dict()
        if all(preset.get(key) == config.get(key) for key in fields):
            return name
    raise SystemExit(f"{folder}: its architecture matches no preset; train the from-scratch side by hand.")


def machine() -> str:
    """The CPU model and core count (the wall times depend on them), and the versions that trained."""
    import os

    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")  # fmt: skip
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, transformers {transformers.__version__}"


def table(runs: dict[str, dict], commands: dict[str, str]) -> str:
    rows = [
        "| run | learning rate | train time | validation accuracy per epoch | test accuracy |",
        "|---|---|---|---|---|",
    ]
    for name, results in runs.items():
        curve = ", ".join(f"{value:.3f}" for value in results["validation_curve"])
        rows.append(
            f"| {name} | {results['learning_rate']:.3g} | {results['train_runtime']:.0f} s | {curve} | "
            f"**{results['test_accuracy']:.3f}** |"
        )
    rows += ["", "```bash", *commands.values(), "```"]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, type=Path, help="an hf_vit model folder")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--finetune_args", default="", help="extra `hf-vit train` options of the fine-tuning run")
    parser.add_argument("--scratch_args", default="", help="extra `hf-vit train` options of the from-scratch run")
    args = parser.parse_args()

    common = ["--dataset", args.dataset, "--num_train_epochs", str(args.epochs),
              "--per_device_train_batch_size", str(args.batch)]  # fmt: skip
    arguments = {
        "fine-tuned": [*common, "--model_name_or_path", str(args.pretrained),
                       "--output_dir", str(args.output_dir / "finetuned"), *shlex.split(args.finetune_args)],
        "from scratch": [*common, "--preset", architecture_preset(args.pretrained),
                         "--output_dir", str(args.output_dir / "scratch"), *shlex.split(args.scratch_args)],
    }  # fmt: skip
    runs = {name: train(argv) for name, argv in arguments.items()}
    commands = {name: shlex.join(["hf-vit", "train", *argv]) for name, argv in arguments.items()}
    text = table(runs, commands)
    print(text)

    pretraining = re.search(r"^hf-vit train .*$", (args.pretrained / "README.md").read_text(), re.MULTILINE)
    if pretraining:
        text = f"The pretrained model `{args.pretrained}`: `{pretraining.group(0)}`.\n\n{text}"
    card_path = args.output_dir / "finetuned" / "README.md"
    card = ModelCard.load(card_path)
    section = (
        f"{SECTION_TITLE}\n\nThe same architecture trained from scratch on {args.dataset} with the same epochs and "
        f"batch, run after the fine-tuning on the same machine ({machine()}; "
        f"`python {' '.join(map(shlex.quote, sys.argv))}`):"
        f"\n\n{text}\n"
    )
    card.text = card.text.split(SECTION_TITLE)[0].rstrip() + "\n\n" + section
    card.save(card_path)
    print(f"written to {card_path}")


if __name__ == "__main__":
    main()
