"""`hf-vit train`: train a ViT from a preset, or fine-tune a checkpoint, on an image data set with `Trainer`, and
leave a complete model folder (weights, config, code, processor, metrics, curves, confusion matrix, model card).

Options are parsed with `HfArgumentParser`, so every `TrainingArguments` option works as in transformers'
examples. Each built-in data set has a default recipe, and a checkpoint the fine-tuning recipe (`finetuning.py`);
options given on the command line win over them. Checkpoints of any ViT format are loaded by `sources.py`."""

import argparse
import difflib
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from datasets import DatasetDict
from transformers import BaseImageProcessor, HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.hf_argparser import string_to_bool
from transformers.utils import logging

from . import speedups
from .augment import AugmentationArguments, MixingCollator, collate, eval_transform_fn, train_transform_fn
from .configuration_hf_vit import HfViTConfig
from .data import DataArguments, dataset_slug, load_image_dataset_with_skip_counts
from .distributed import FullyShardedTrainerMixin, check_launch, launch_defaults
from .finetuning import (
    DEFAULT_LORA_TARGETS,
    FINETUNE_LEARNING_RATE_PER_256,
    FINETUNE_LEARNING_RATE_RANGE,
    FINETUNE_RECIPE,
    PEFT_MISSING,
    apply_lora,
    finetuning_learning_rate,
    freeze_backbone,
    is_lora_model,
    layer_decay_parameter_groups,
    log_trainable_parameters,
    merged_copy,
    peft_is_installed,
)
from .hub import push_model
from .input_pipeline import loader_defaults
from .metrics import load_metric
from .model_card import build_model_card, require_template
from .modeling_hf_vit import HfViTForImageClassification
from .plots import plot_confusion_matrix, plot_training_curves
from .preflight import (
    TRAINER_STATE_FILE,
    check_free_space,
    check_output_dir_writable,
    check_resume_learning_rate,
    last_complete_checkpoint,
    resolve_resume_checkpoint,
    warn_if_resume_is_not_exact,
)
from .presets import PRESETS, preset_config
from .processing import build_image_processor, save_model_folder
from .sources import (
    Lineage,
    PretrainedViT,
    check_image_size,
    check_overrides_fit,
    config_label_names,
    finetuning_config,
    finetuning_model,
    finetuning_processor,
    head_rows,
    load_pretrained,
    parse_image_size,
)
from .streaming import load_streaming_splits, split_size, streaming_defaults, train_images, with_batch_transform

logger = logging.get_logger("hf_vit")


@dataclass
class ModelArguments:
    """Which model to train: a preset from scratch, or a checkpoint to fine-tune."""

    preset: str | None = field(
        default=None,
        metadata={"help": f"Train from scratch from this preset (default per data set). One of: {', '.join(PRESETS)}."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Fine-tune this checkpoint instead of training a preset: an hf_vit, transformers ViT or DeiT, or "
            "timm (timm/...) model folder or Hub repo; other formats than hf_vit's are converted in memory, exactly."
        },
    )
    image_size: str | None = field(
        default=None,
        metadata={
            "help": "Train at this input size, SIZE or HEIGHTxWIDTH (e.g. 384 or 384x256): a checkpoint's position "
            "embeddings are resampled once (bicubic, antialiased) and the model folder is saved at the new size."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Config fields to override, e.g. 'hidden_size=64,num_hidden_layers=2,drop_path_rate=0.1'."},
    )
    layer_decay: float | None = field(
        default=None,
        metadata={
            "help": "Layer-wise learning-rate decay (BEiT/MAE/timm fine-tuning), e.g. 0.75: the head learns at "
            "--learning_rate, each block below at this factor times the one above, the embeddings lowest. Off by "
            "default."
        },
    )
    freeze_backbone: bool = field(
        default=False,
        metadata={"help": "Train the classification head only (a linear probe on the checkpoint's features)."},
    )
    lora_r: int = field(
        default=0,
        metadata={
            "help": "Fine-tune LoRA adapters of this rank (PEFT: pip install 'hf_vit[peft]') instead of all weights; "
            "the head trains in full. The run leaves a PEFT adapter folder, or with --merge_lora a complete model."
        },
    )
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA scaling alpha (default: --lora_r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA adapters' input."})
    lora_target_modules: str = field(
        default=DEFAULT_LORA_TARGETS,
        metadata={"help": "Comma-separated linear layers that get adapters: hf_vit's qkv, proj, fc1, fc2."},
    )
    merge_lora: bool = field(
        default=False,
        metadata={"help": "Merge the trained LoRA adapters into the weights and save a complete hf_vit model folder."},
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": "Fine-tune a checkpoint whose classification head has another number of labels than the data "
            "set: its head is re-initialised for the data set's labels (without it, a different count is an error)."
        },
    )

    def __post_init__(self):
        if self.preset is not None and self.model_name_or_path is not None:
            raise ValueError("Give --preset (train from scratch) or --model_name_or_path (fine-tune), not both.")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"--preset {self.preset!r} is unknown; choose one of: {', '.join(PRESETS)}.")
        parse_image_size(self.image_size)  # a malformed size fails here, before anything is loaded
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"--layer_decay {self.layer_decay} must be in (0, 1], e.g. 0.75 (1 is no decay).")
        self._check_partial_finetuning()

    def _check_partial_finetuning(self):
        """LoRA and --freeze_backbone need a checkpoint, PEFT (for LoRA) and each other's absence."""
        defaults = {"lora_alpha": None, "lora_dropout": 0.0, "lora_target_modules": DEFAULT_LORA_TARGETS,
                    "merge_lora": False}  # fmt: skip
        lora_options = [f"--{name}" for name, default in defaults.items() if getattr(self, name) != default]
        if self.lora_r < 0:
            raise ValueError(f"--lora_r {self.lora_r} must be a positive rank (e.g. 8 or 16), or 0 for no LoRA.")
        if self.lora_r == 0 and lora_options:
            raise ValueError(f"{', '.join(lora_options)} configure LoRA, which --lora_r turns on: add --lora_r 16.")
        if self.model_name_or_path is None and (self.lora_r or self.freeze_backbone):
            option = "--lora_r" if self.lora_r else "--freeze_backbone"
            raise ValueError(
                f"{option} adapts a pretrained model: give the checkpoint with --model_name_or_path (a preset starts "
                "from random weights, which only full training can use)."
            )
        if self.lora_r and self.freeze_backbone:
            raise ValueError("--lora_r and --freeze_backbone: give one (LoRA already keeps the pretrained weights).")
        if self.lora_r and not peft_is_installed():
            raise ValueError(PEFT_MISSING)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"--lora_dropout {self.lora_dropout} is a probability in [0, 1).")


# Options every run gets unless given on the command line: per-epoch evaluation, the best checkpoint by validation
# accuracy, a cosine schedule with warmup (a float below 1 in warmup_steps is a ratio in transformers 5).
COMMON_DEFAULTS = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "accuracy",
    "save_total_limit": 1,
    "report_to": "none",
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "weight_decay": 0.05,
    "label_smoothing_factor": 0.1,
    "per_device_eval_batch_size": 256,
    # Data loading (workers, persistent workers, pinned memory): per training device, see input_pipeline.py.
    # With --push_to_hub, push once, at the end, the complete folder (checkpoint pushes would carry Trainer's files).
    "hub_strategy": "end",
}
# A recipe's "bf16": True where the training device computes bfloat16 natively, otherwise False (see native_bf16).
NATIVE_BF16 = "native"
# Recipes per built-in data set (how each value was chosen, with the measured runs: docs/training.md); other sets get
# the "default" recipe.
RECIPES = {
    "digits": {
        "preset": "vit-digits-patch2-8",
        "horizontal_flip": False,  # digits are not mirror-symmetric
        "random_crop": False,  # a 1-pixel shift of an 8-pixel digit is a large distortion: it cost accuracy
        "num_train_epochs": 40,
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 32,
    },
    "fashion_mnist": {
        "preset": "vit-mnist-convstem-patch8-28",
        # Batch, rate, epochs, stem and flips-only were chosen by the probes in docs/training.md: pad-and-crop slowed
        # learning more than it helped, and past 24 epochs validation accuracy stops rising.
        "random_crop": False,
        # bfloat16 autocast where the device computes it natively (NATIVE_BF16), float32 elsewhere; the log says which.
        "bf16": NATIVE_BF16,
        "num_train_epochs": 24,
        "learning_rate": 1.5e-3,
        "per_device_train_batch_size": 64,
    },
    "default": {
        "preset": "vit-tiny-patch16-224",
        "num_train_epochs": 10,
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 64,
    },
}
PARSED_TYPES = (ModelArguments, DataArguments, AugmentationArguments, TrainingArguments)


def cpu_computes_bf16() -> bool:
    """Whether this CPU has AVX512-BF16 or AMX, where oneDNN runs bfloat16 products in hardware (without them it
    emulates them, slower than float32). Private, but torch's own test of the flags oneDNN reads (there is no public
    one); absent means not known to exist."""
    return (
        getattr(torch.cpu, "_is_avx512_bf16_supported", bool)() or getattr(torch.cpu, "_is_amx_tile_supported", bool)()
    )


def native_bf16(on_cpu: bool) -> tuple[bool, str]:
    """Whether the device Trainer trains on (the CPU, or else the accelerator) computes bfloat16 in hardware, and why:
    a CPU with AVX512-BF16 or AMX (where oneDNN runs bfloat16 products; without them it emulates them, slower than
    float32), or a CUDA GPU of compute capability 8.0 or newer. Other accelerators (MPS, XPU, ...) are not judged
    here: they train in float32."""
    if on_cpu:
        if cpu_computes_bf16():
            return True, "this CPU computes bfloat16 natively (AVX512-BF16 or AMX)"
        return False, "this CPU has no native bfloat16 (no AVX512-BF16, no AMX)"
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"{torch.cuda.get_device_name()} computes bfloat16 natively"
        return False, f"{torch.cuda.get_device_name()} has no native bfloat16"
    return False, f"bfloat16 is not judged on {torch.accelerator.current_accelerator().type}"


def _resolve_native_bf16(recipe: dict, argv: list[str], given: set[str]) -> None:
    """Turn the recipe's `bf16: NATIVE_BF16` into True or False for this machine, and say which and why."""
    if recipe.get("bf16") != NATIVE_BF16:
        return
    if given & {"bf16", "fp16"}:
        del recipe["bf16"]  # a given precision wins (and Trainer refuses --fp16 True beside --bf16 True)
        return
    # --use_cpu as TrainingArguments reads it (bare flag, a value, or the dashed spelling), before the full parse.
    reader = argparse.ArgumentParser(add_help=False)
    reader.add_argument("--use_cpu", "--use-cpu", type=string_to_bool, nargs="?", const=True, default=False)
    use_cpu = reader.parse_known_args(argv)[0].use_cpu
    on_cpu = use_cpu or not torch.accelerator.is_available()
    switch = "--bf16 True to train in bfloat16 anyway"
    if on_cpu and "use_cpu" in given and not use_cpu:
        recipe["bf16"] = False  # Trainer takes --bf16 on a CPU only with --use_cpu True
        reason, switch = "--use_cpu False was given", "--use_cpu True --bf16 True for bfloat16"
    else:
        recipe["bf16"], reason = native_bf16(on_cpu)
    if recipe["bf16"]:
        switch = "--bf16 False for float32"
        if on_cpu:
            recipe["use_cpu"] = True  # TrainingArguments refuses --bf16 on a CPU without it
    precision = "bfloat16 mixed precision" if recipe["bf16"] else "float32"
    logger.warning(f"recipe: {precision}, as {reason}; give {switch}.")


def _given_options(argv: list[str]) -> set[str]:
    """Names of the options on the command line (`--name value`, `--name=value`, `--no_name`)."""
    names = set()
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            names.update({name, name.removeprefix("no_")})
    return names


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, AugmentationArguments, TrainingArguments]:
    """Parse the command line over the run's recipe: the recipe's values are the parser's defaults (so `--help` shows
    them), an option given on the command line wins, and a recipe value that would contradict it gives way."""
    dataset = _argument_value(argv, "dataset", DataArguments.dataset)
    given = _given_options(argv)
    recipe = {**COMMON_DEFAULTS, **RECIPES.get(dataset, RECIPES["default"])}
    _resolve_native_bf16(recipe, argv, given)
    argv = launch_defaults(recipe, argv, given)
    streaming_defaults(recipe, argv, given)
    loader_defaults(recipe, argv, given)
    if "model_name_or_path" in given:
        recipe.pop("preset")
        _use_finetuning_recipe(recipe, argv, given)
    if "output_dir" not in given:
        name = recipe.get("preset") or _argument_value(argv, "model_name_or_path")
        recipe["output_dir"] = f"outputs/{dataset_slug(dataset)}-{dataset_slug(name)}"
    _settle_best_model_strategies(recipe, argv, given)
    parser = HfArgumentParser(
        PARSED_TYPES,
        prog="hf-vit train",
        description=f"Train or fine-tune a ViT on --dataset {dataset}. The defaults shown are the values this run uses "
        "(its recipe, for the data set and the other options given); an option given wins.",
    )
    parser.set_defaults(**recipe)
    model_args, data_args, augmentation_args, training_args = parser.parse_args_into_dataclasses(args=list(argv))
    # Images are transformed on the fly from the `image` column, which Trainer would otherwise drop as "unused".
    training_args.remove_unused_columns = False
    return model_args, data_args, augmentation_args, training_args


def _use_finetuning_recipe(recipe: dict, argv: list[str], given: set[str]) -> None:
    """A pretrained checkpoint gets the fine-tuning recipe (the data set's augmentation settings stay) and a learning
    rate for its total batch, and the log says which."""
    recipe.update(FINETUNE_RECIPE)
    if "learning_rate" in given:
        return
    # The total batch as Trainer will form it: per device, accumulated, times the processes a launcher started.
    batch = int(_argument_value(argv, "per_device_train_batch_size", recipe["per_device_train_batch_size"]))
    accumulation = int(_argument_value(argv, "gradient_accumulation_steps", 1))
    total_batch = batch * accumulation * int(os.environ.get("WORLD_SIZE", 1))
    recipe["learning_rate"] = finetuning_learning_rate(total_batch)
    low, high = FINETUNE_LEARNING_RATE_RANGE
    logger.warning(
        f"recipe: fine-tuning at learning rate {recipe['learning_rate']:.3g} for a total batch of {total_batch} "
        f"({FINETUNE_LEARNING_RATE_PER_256:g} per 256 images, within {low:g}..{high:g}), "
        f"{recipe['num_train_epochs']} epochs, {recipe['warmup_steps']:.0%} warmup; give --learning_rate to change it."
    )


def _argument_value(argv: list[str], name: str, default: str | None = None) -> str:
    """The value of `--name value` or `--name=value` (the last one given, as argparse takes it), else `default`."""
    value = default
    for index, arg in enumerate(argv):
        if arg == f"--{name}" and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    if value is None:
        raise ValueError(f"--{name} needs a value.")
    return value


def _settle_best_model_strategies(recipe: dict, argv: list[str], given: set[str]) -> None:
    """The recipe's `load_best_model_at_end` needs an evaluation at every save (Trainer refuses it otherwise). When
    the given options decide the evaluation and save moments, the recipe's side follows them: a strategy not given
    takes the given one (with its steps), and where they cannot match (`no` on either side, both given and
    different), keeping the best checkpoint gives way. The log says which."""
    if not recipe.get("load_best_model_at_end") or "load_best_model_at_end" in given:
        return

    def value(name):
        return str(_argument_value(argv, name) if name in given else recipe.get(name)).lower()

    def give_way(reason: str) -> None:
        recipe["load_best_model_at_end"] = False
        logger.warning(
            f"recipe: {reason}, so the model saved is the last one, not the best by validation "
            f"{recipe['metric_for_best_model']} (the recipe's --load_best_model_at_end gives way)."
        )

    eval_strategy, save_strategy = value("eval_strategy"), value("save_strategy")
    if save_strategy == "best":
        return
    if "no" in (eval_strategy, save_strategy):
        side = "eval" if eval_strategy == "no" else "save"
        return give_way(f"--{side}_strategy no was given")
    if eval_strategy != save_strategy:
        if {"eval_strategy", "save_strategy"} <= given:
            return give_way(f"--eval_strategy {eval_strategy} and --save_strategy {save_strategy} differ")
        leader, follower = ("eval", "save") if "eval_strategy" in given else ("save", "eval")
        recipe[f"{follower}_strategy"] = value(f"{leader}_strategy")
        if f"{leader}_steps" in given and f"{follower}_steps" not in given:
            recipe[f"{follower}_steps"] = float(_argument_value(argv, f"{leader}_steps"))
        logger.warning(
            f"recipe: --{follower}_strategy follows the given --{leader}_strategy {recipe[follower + '_strategy']} "
            "(keeping the best checkpoint needs an evaluation at every save)."
        )
    if value("eval_strategy") == "steps":
        # Trainer evaluates every --eval_steps, or every --logging_steps without it; a save must fall on an evaluation.
        defaults = {field.name: field.default for field in fields(TrainingArguments)}
        save_steps = float(
            value("save_steps") if "save_steps" in given else recipe.get("save_steps", defaults["save_steps"])
        )
        eval_steps = value("eval_steps") if "eval_steps" in given else recipe.get("eval_steps")
        if eval_steps is None:
            eval_steps = value("logging_steps") if "logging_steps" in given else defaults["logging_steps"]
        if save_steps % float(eval_steps) == 0:
            return
        if "eval_steps" not in given:
            recipe["eval_steps"] = save_steps
        elif "save_steps" not in given:
            recipe["save_steps"] = float(eval_steps)
        else:
            give_way(f"--save_steps {save_steps:g} is not a multiple of --eval_steps {eval_steps}")


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=0.1,c=mean,d=true,e=[8,16]' -> {'a': 1, 'b': 0.1, 'c': 'mean', 'd': True, 'e': [8, 16]}: values read
    as JSON if they can be; commas inside [...] belong to a list value."""
    overrides = {}
    for item in filter(None, re.split(r",(?![^\[]*\])", text or "")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--config_overrides item {item!r} is not NAME=VALUE, e.g. 'hidden_size=64'.")
        try:
            overrides[key.strip()] = json.loads(value.strip().lower() if value.strip() in ("True", "False") else value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value.strip()
    # A config keeps keys it does not know (as transformers' do), so a misspelt field would be ignored silently:
    # names a person types are checked here, with a spelling hint.
    known = set(HfViTConfig().to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:
        hints = [f"{name!r}" + "".join(f" (did you mean {m!r}?)" for m in difflib.get_close_matches(name, known, 1))
                 for name in unknown]  # fmt: skip
        raise ValueError(f"--config_overrides: {', '.join(hints)} are not HfViTConfig fields; fix the spelling.")
    return overrides


def _label_fields(label_names: list[str]) -> dict:
    id2label = dict(enumerate(label_names))
    return {
        "id2label": id2label,  # num_labels follows from it
        "label2id": {name: index for index, name in id2label.items()},
        # Explicit, so that MixUp/CutMix soft targets [B, C] go through the cross-entropy loss.
        "problem_type": "single_label_classification",
    }


def load_checkpoint(model_args: ModelArguments) -> PretrainedViT | None:
    """The checkpoint to fine-tune (None for a preset), loaded and converted, its --image_size checked: before the
    data set is loaded, so that a bad checkpoint or size costs no data loading."""
    if model_args.model_name_or_path is None:
        return None
    pretrained = load_pretrained(model_args.model_name_or_path)
    overrides = parse_overrides(model_args.config_overrides)
    image_size = _requested_image_size(model_args)
    if image_size is not None:
        check_image_size(pretrained.model.config, image_size, model_args.model_name_or_path)
        overrides["image_size"] = list(image_size)
    check_overrides_fit(pretrained, overrides)
    return pretrained


def _requested_image_size(model_args: ModelArguments) -> tuple[int, int] | None:
    """--image_size, or an image_size among --config_overrides (the same request)."""
    image_size = parse_image_size(model_args.image_size)
    override = parse_overrides(model_args.config_overrides).get("image_size")
    if image_size is None and override is not None:
        image_size = parse_image_size("x".join(map(str, override)) if isinstance(override, list) else str(override))
    return image_size


def build_config(
    model_args: ModelArguments, label_names: list[str], pretrained: PretrainedViT | None = None
) -> HfViTConfig:
    """The config of the model to train, without building the model: the preset's, or the checkpoint's, with the
    data set's labels, --config_overrides and --image_size. A checkpoint whose head has another label count is an
    error unless --ignore_mismatched_sizes (transformers' convention); a headless checkpoint gets a new head."""
    overrides = parse_overrides(model_args.config_overrides)
    image_size = _requested_image_size(model_args)
    if image_size is not None:
        overrides["image_size"] = list(image_size)
    if model_args.model_name_or_path is None:
        return preset_config(model_args.preset, **overrides, **_label_fields(label_names))
    source = model_args.model_name_or_path
    pretrained = pretrained or load_checkpoint(model_args)
    base_config = pretrained.model.config
    if base_config.num_labels == 0:
        logger.warning(f"{source} has no classification head: a new one is trained for {len(label_names)} labels.")
    elif base_config.num_labels != len(label_names):
        if not model_args.ignore_mismatched_sizes:
            raise ValueError(
                f"--model_name_or_path {source!r} has a classification head for {base_config.num_labels} labels, "
                f"the data set has {len(label_names)} labels. Pass --ignore_mismatched_sizes True to fine-tune it "
                "with a new, re-initialised head for the data set's labels, or train on a set with the checkpoint's "
                "labels."
            )
        logger.warning(
            f"--ignore_mismatched_sizes: the classification head of {source} ({base_config.num_labels} labels) is "
            f"re-initialised for the data set's {len(label_names)} labels; every other weight is fine-tuned."
        )
    else:
        checkpoint_labels = config_label_names(base_config)
        rows = head_rows(checkpoint_labels, list(label_names))
        if rows is None:
            logger.warning(
                f"{source} has a head for other labels ({', '.join(checkpoint_labels[:4])}, ...) than the data set's "
                f"({', '.join(label_names[:4])}, ...): a new head is trained from zero; every other weight is "
                "fine-tuned."
            )
        elif rows != list(range(len(rows))):
            logger.warning(f"{source} has a head for the data set's labels in another order: its rows are reordered.")
    config = finetuning_config(pretrained, {**overrides, **_label_fields(label_names)})
    if tuple(config.image_hw) != tuple(base_config.image_hw):
        logger.warning(
            f"--image_size: {source} was trained at {'x'.join(map(str, base_config.image_hw))} px; its position "
            f"embeddings are resampled once from a {'x'.join(map(str, base_config.grid_size))} to a "
            f"{'x'.join(map(str, config.grid_size))} grid (bicubic, antialiased) for "
            f"{'x'.join(map(str, config.image_hw))} px, and the model folder is saved at that size."
        )
    return config


def build_model(
    model_args: ModelArguments,
    label_names: list[str],
    config: HfViTConfig | None = None,
    pretrained: PretrainedViT | None = None,
) -> tuple[HfViTForImageClassification, BaseImageProcessor]:
    """A fresh model from a preset, or a checkpoint (see `build_config`) with its own preprocessing at the model's
    input size; `config` and `pretrained` are `build_config`'s and `load_checkpoint`'s results when the caller has
    them already."""
    if model_args.model_name_or_path is None:
        config = config or build_config(model_args, label_names)
        return HfViTForImageClassification(config), build_image_processor(config)
    pretrained = pretrained or load_checkpoint(model_args)
    config = config or build_config(model_args, label_names, pretrained)
    return finetuning_model(pretrained, config), finetuning_processor(pretrained, config)


def _choose_trained_weights(model, model_args: ModelArguments, pretrained: PretrainedViT | None):
    """All weights (the default), the head only (--freeze_backbone), or LoRA adapters and the head (--lora_r)."""
    if model_args.freeze_backbone:
        freeze_backbone(model)
        log_trainable_parameters(model, "--freeze_backbone: the head only")
    elif model_args.lora_r:
        model = apply_lora(model, r=model_args.lora_r, alpha=model_args.lora_alpha, dropout=model_args.lora_dropout,
                           target_modules=model_args.lora_target_modules,
                           base_model=model_args.model_name_or_path)  # fmt: skip
        log_trainable_parameters(
            model, f"LoRA rank {model_args.lora_r} on {model_args.lora_target_modules}, the head in full"
        )
    elif model_args.model_name_or_path is not None:
        log_trainable_parameters(model, "full fine-tuning")
    return model


def build_compute_metrics(num_labels: int):
    """Accuracy and macro F1, plus top-5 accuracy when there are more than 5 classes, from evaluate modules."""
    accuracy, macro_f1 = load_metric("accuracy"), load_metric("macro_f1")
    top_k = load_metric("top_k_accuracy") if num_labels > 5 else None

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits, references = eval_prediction.predictions, eval_prediction.label_ids
        predictions = logits.argmax(-1)
        results = accuracy.compute(predictions=predictions, references=references)
        results |= macro_f1.compute(predictions=predictions, references=references, labels=list(range(num_labels)))
        if top_k is not None:
            results |= top_k.compute(predictions=logits, references=references, k=5)
        return results

    return compute_metrics


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stopped before the optimizer step of that batch."""


class ImageClassificationTrainer(FullyShardedTrainerMixin, Trainer):
    """Trainer whose training batches go through their own collator (MixUp/CutMix), while evaluation batches keep
    their integer labels; that stops at a non-finite loss; and that resumes only from complete checkpoints."""

    def __init__(self, *args, train_data_collator=None, layer_decay: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_data_collator = train_data_collator or self.data_collator
        self.layer_decay = layer_decay
        self.resumed_from: str | None = None

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """Trainer's optimizer (--optim, its arguments), with --layer_decay's parameter groups when it is given."""
        if self.layer_decay is None or self.optimizer is not None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        if {"params", "model", "optimizer_dict"} & set(optimizer_kwargs):
            raise ValueError(
                f"--layer_decay sets the learning rate per parameter group, which --optim {self.args.optim} does not "
                "take (it groups the parameters itself); use --optim adamw_torch, or leave out --layer_decay."
            )
        groups = layer_decay_parameter_groups(model, self.args.learning_rate, self.args.weight_decay,
                                              self.layer_decay, set(self.get_decay_parameter_names(model)))  # fmt: skip
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True, token=None,
                    revision: str | None = None, **kwargs) -> str | None:  # fmt: skip
        """Trainer's push, with hf_vit's folder and card: Trainer's own would upload its generic card and the pickled
        training_args.bin. The model folder must already be written (run_training does it)."""
        if not self.is_world_process_zero():
            return None
        return push_model(self.args.output_dir, self.hub_model_id, private=bool(self.args.hub_private_repo),
                          revision=revision or self.args.hub_revision, commit_message=commit_message,
                          token=token or self.args.hub_token)  # fmt: skip

    def get_train_dataloader(self):
        eval_collator, self.data_collator = self.data_collator, self.train_data_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = eval_collator

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        # prepare_training checks this before loading data; checked again here (a file header and a JSON read) for
        # code that builds this trainer itself.
        self.resumed_from = resolve_resume_checkpoint(resume_from_checkpoint, self.args.output_dir)
        check_resume_learning_rate(self.resumed_from, self.args)
        return super().train(resume_from_checkpoint=self.resumed_from, trial=trial, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        """Trainer's step (forward and backward), then a stop at a NaN or infinite loss, before the optimizer step
        of the batch: Trainer's own `logging_nan_inf_filter` would only leave the loss out of the logs and step on.
        Trainer turns this loss into a Python bool right after anyway (that filter), so the check adds no device
        sync; with several processes the losses are gathered so that every process stops at the same step."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        losses = loss.detach().reshape(1)
        if self.accelerator.num_processes > 1:
            losses = self.accelerator.gather(losses)
        if not torch.isfinite(losses).all():
            raise NonFiniteLossError(self._non_finite_loss_message(losses))
        return loss

    def _non_finite_loss_message(self, losses: torch.Tensor) -> str:
        args = self.args
        values = ", ".join(f"{value:g}" for value in losses.float().tolist())
        precision = "fp16" if args.fp16 else "bf16" if args.bf16 else "float32"
        clipping = (
            f"a smaller --max_grad_norm (now {args.max_grad_norm:g})"
            if args.max_grad_norm and args.max_grad_norm > 0
            else "--max_grad_norm 1.0 (gradient clipping is off)"
        )
        message = (
            f"Training stopped at step {self.state.global_step + 1} (epoch {self.state.epoch or 0:.2f}): the loss is "
            f"{values}, not a finite number. The optimizer step of this batch was not taken. Likely fixes: a lower "
            f"--learning_rate (now {args.learning_rate:g}; {self._get_learning_rate():g} at this step) or a longer "
            f"--warmup_steps; {clipping}; and with --fp16 or --bf16, half-precision overflow: train in float32, or "
            f"prefer --bf16 to --fp16 (this run: {precision})."
        )
        checkpoint = self._last_checkpoint()
        if checkpoint is None:
            return f"{message} No checkpoint was saved before this step: start the run again with the fix."
        return (
            f"{message} The last checkpoint saved before it, {checkpoint}, is untouched: start again with the fix, "
            f"or continue from it with --resume_from_checkpoint {checkpoint} (with its learning rate: resuming "
            "continues its schedule) and a gradient or precision fix."
        )

    def _last_checkpoint(self) -> Path | None:
        candidates = [last_complete_checkpoint(Path(self.args.output_dir))]
        candidates.append(Path(self.resumed_from) if self.resumed_from else None)
        candidates = [path for path in candidates if path is not None]

        def step(path: Path) -> int:
            return json.loads((path / TRAINER_STATE_FILE).read_text(encoding="utf-8"))["global_step"]

        return max(candidates, key=step, default=None)


@dataclass
class TrainingSetup:
    """What `prepare_training` builds: the trainer, ready for `train()`, and what the steps after training need."""

    trainer: ImageClassificationTrainer
    processor: BaseImageProcessor
    splits: DatasetDict
    eval_sets: dict
    label_names: list[str]
    # Images --skip_bad_images left out of the set's splits (0 without it: then a bad image stops the run).
    skipped_bad_images: int = 0
    # Where a fine-tuned checkpoint came from (Hub repo id, licence), for the model card.
    lineage: Lineage = field(default_factory=Lineage)


def prepare_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    augmentation_args: AugmentationArguments,
    training_args: TrainingArguments,
    raw_dataset: DatasetDict | None = None,
) -> TrainingSetup:
    """Everything before `trainer.train()`, cheapest checks first: the output folder is writable and the checkpoint
    to resume from complete (before the data is loaded), the disk holds the run (before the model is built)."""
    require_template()
    check_launch(training_args)
    output_dir = Path(training_args.output_dir)
    check_output_dir_writable(output_dir)
    training_args.resume_from_checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, output_dir)
    check_resume_learning_rate(training_args.resume_from_checkpoint, training_args)
    warn_if_resume_is_not_exact(training_args.resume_from_checkpoint, augmentation_args)
    if training_args.push_to_hub and model_args.lora_r and not model_args.merge_lora:
        raise ValueError(
            "--push_to_hub uploads a complete hf_vit model folder, and --lora_r without --merge_lora leaves a PEFT "
            "adapter: add --merge_lora True, or push the adapter folder after the run (huggingface_hub's "
            "upload_folder)."
        )
    set_seed(training_args.seed)
    pretrained = load_checkpoint(model_args)
    if data_args.streaming:
        splits, skipped_bad_images = load_streaming_splits(data_args, training_args.seed), {}
    else:
        splits, skipped_bad_images = load_image_dataset_with_skip_counts(data_args, raw_dataset)
    label_names = splits["train"].features["label"].names
    logger.warning(f"data: {', '.join(f'{name} {split_size(split)}' for name, split in splits.items())} images, "
                   f"{len(label_names)} labels")  # fmt: skip
    config = build_config(model_args, label_names, pretrained)
    check_free_space(output_dir, config, training_args, train_images(splits["train"], training_args))
    model, processor = build_model(model_args, label_names, config, pretrained)
    speedups.apply_and_log(model, logger.warning)  # before LoRA, which wraps the (sped-up) linears as they are
    model = _choose_trained_weights(model, model_args, pretrained)

    train_set = with_batch_transform(splits["train"], train_transform_fn(processor, augmentation_args))
    eval_sets = {name: splits[name].with_transform(eval_transform_fn(processor)) for name in ("validation", "test")}
    train_collator = collate
    if augmentation_args.mixup_alpha > 0 or augmentation_args.cutmix_alpha > 0:
        train_collator = MixingCollator(
            len(label_names),
            augmentation_args.mixup_alpha,
            augmentation_args.cutmix_alpha,
            label_smoothing=training_args.label_smoothing_factor,
        )
        # Smoothing now happens on the mixed soft targets in the collator; Trainer's smoother takes integer labels.
        training_args.label_smoothing_factor = 0.0

    trainer = ImageClassificationTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_sets["validation"],
        data_collator=collate,
        train_data_collator=train_collator,
        compute_metrics=build_compute_metrics(len(label_names)),
        layer_decay=model_args.layer_decay,
    )
    lineage = pretrained.lineage if pretrained is not None else Lineage()
    return TrainingSetup(trainer, processor, splits, eval_sets, label_names, sum(skipped_bad_images.values()), lineage)


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    augmentation_args: AugmentationArguments,
    training_args: TrainingArguments,
    raw_dataset: DatasetDict | None = None,
    command: str = "hf-vit train",
) -> dict[str, float]:
    """Train, save the model folder, evaluate on validation and test, and write the plots and the model card.
    `raw_dataset` (an in-memory `DatasetDict`) replaces loading `data_args.dataset`. Returns all_results."""
    setup = prepare_training(model_args, data_args, augmentation_args, training_args, raw_dataset)
    trainer = setup.trainer
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    output_dir = Path(training_args.output_dir)
    _save_model(trainer, setup.processor, output_dir, merge_lora=model_args.merge_lora)

    if data_args.skip_bad_images:
        train_result.metrics["skipped_bad_images"] = setup.skipped_bad_images
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    eval_metrics = trainer.evaluate(setup.eval_sets["validation"], metric_key_prefix="eval")
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)
    test_output = trainer.predict(setup.eval_sets["test"], metric_key_prefix="test")
    trainer.log_metrics("test", test_output.metrics)
    trainer.save_metrics("test", test_output.metrics)
    trainer.save_state()

    if trainer.is_world_process_zero():
        plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png")
        plot_confusion_matrix(
            test_output.label_ids,
            test_output.predictions.argmax(-1),
            setup.label_names,
            output_dir / "confusion_matrix.png",
        )
        results = {
            split: {key.removeprefix(f"{prefix}_"): value for key, value in metrics.items()}
            for split, prefix, metrics in (("validation", "eval", eval_metrics), ("test", "test", test_output.metrics))
        }
        card = build_model_card(
            model_name=trainer.hub_model_id if training_args.push_to_hub else output_dir.name,
            dataset=data_args.dataset,
            config=trainer.model.config,
            results=results,
            split_sizes={name: split_size(split) for name, split in setup.splits.items()},
            training_args=training_args,
            augmentation_args=augmentation_args,
            train_runtime_s=train_result.metrics["train_runtime"],
            base_model=setup.lineage.base_model,
            base_model_relation="adapter" if model_args.lora_r and not model_args.merge_lora else "finetune",
            source_model=model_args.model_name_or_path,
            converted_from=setup.lineage.converted_from,
            license=setup.lineage.license,
            adapter_of=model_args.model_name_or_path if model_args.lora_r and not model_args.merge_lora else None,
            command=command,
        )
        card.save(output_dir / "README.md")
        if training_args.push_to_hub:
            print(f"hf_vit: pushed to {trainer.hub_model_id}: {trainer.push_to_hub()}")
    return json.loads((output_dir / "all_results.json").read_text()) if trainer.is_world_process_zero() else {}


def _save_model(trainer: Trainer, processor: BaseImageProcessor, output_dir: Path, merge_lora: bool = False) -> None:
    """Write the model folder once, from the main process. Under FSDP the full weights are gathered first
    (a collective: every process takes part) and loaded into an unsharded copy of the model."""
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if not trainer.is_world_process_zero():
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    if state_dict is not None:
        model = HfViTForImageClassification(model.config)
        model.load_state_dict(state_dict)
    what = "model folder"
    if is_lora_model(model):  # the adapter (adapter_config.json, adapter_model.safetensors), or merged: a full model
        model, what = (merged_copy(model), "model folder (LoRA merged)") if merge_lora else (model, "PEFT adapter")
    save_model_folder(model, processor, output_dir)
    print(f"hf_vit: {what} written to {output_dir}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.set_verbosity_warning()
    model_args, data_args, augmentation_args, training_args = parse_args(argv)
    results = run_training(
        model_args, data_args, augmentation_args, training_args, command=shlex.join(["hf-vit", "train", *argv])
    )
    if results:
        summary = {key: round(value, 4) for key, value in results.items() if "accuracy" in key or "runtime" in key}
        print(f"model folder: {training_args.output_dir}\n{json.dumps(summary, indent=2)}")
    return 0


__all__ = ["ModelArguments", "parse_args", "prepare_training", "run_training", "build_config", "build_model", "main"]
