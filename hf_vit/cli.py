"""The `hf-vit` command. Each subcommand lives in its own module and parses its own arguments, so that
`accelerate launch -m hf_vit.cli train ...` and `scripts/*.py` reach the same code."""

import importlib
import sys

# subcommand -> (module with a `main(argv)` function, one-line help)
COMMANDS = {
    "info": ("hf_vit.info", "list the presets with their size and cost, the installed versions and the device"),
    "convert": ("hf_vit.convert", "convert a transformers ViT/DeiT, timm or JAX .npz checkpoint to an hf_vit folder"),
    "train": ("hf_vit.training", "train from a preset or fine-tune a checkpoint on an image set, into a model folder"),
    "evaluate": ("hf_vit.evaluation", "metrics of a saved model on a split of an image set"),
    "predict": ("hf_vit.prediction", "top-k labels of a saved model for files, folders, globs, URLs or a data set"),
    "explain": ("hf_vit.explain", "where a saved model looks: attention rollout and per-head maps as PNG overlays"),
    "demo": ("hf_vit.demo", "a local Gradio web demo of a saved model: top-5 labels and the attention overlay"),
    "benchmark": ("hf_vit.benchmark", "hf_vit against transformers' ViT and timm with the same weights: speed, memory"),
    "export": ("hf_vit.export", "a model as a plain transformers ViT, timm or ONNX folder, checked against hf_vit"),
    "push": ("hf_vit.hub", "upload a model folder to the Hub in one commit (weights, config, code, processor, card)"),
}


def usage() -> str:
    lines = ["usage: hf-vit COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "`hf-vit COMMAND --help` describes a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hf-vit: unknown command {name!r}.\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
