"""The arguments of `hf-vit train`, over its recipe: each built-in data set has one (`RECIPES`; other sets get the
default), a checkpoint to fine-tune gets the fine-tuning recipe (`finetuning.py`), and every run `COMMON_DEFAULTS`.
A recipe is data, applied as the parser's defaults: `--help` shows the values the run will use, and an option given
on the command line wins (a recipe value that would contradict it gives way, and the log says so).

Options are parsed with `HfArgumentParser`, so every `TrainingArguments` option works as in transformers' examples,
in both spellings (`--learning_rate`, `--learning-rate`)."""

import os
from dataclasses import fields

import torch
from transformers import HfArgumentParser, TrainingArguments
from transformers.utils import logging

from .augment import AugmentationArguments
from .cli_args import HelpFormatter
from .data import DataArguments, dataset_slug
from .distributed import fsdp_switch, launch_defaults
from .finetuning import (
    FINETUNE_LEARNING_RATE_PER_256,
    FINETUNE_LEARNING_RATE_RANGE,
    FINETUNE_RECIPE,
    finetuning_learning_rate,
)
from .input_pipeline import loader_defaults
from .model_setup import ModelArguments
from .streaming import streaming_defaults

logger = logging.get_logger("hf_vit")

# Options every run gets unless given on the command line: per-epoch evaluation, the best checkpoint by validation
# accuracy, a cosine schedule with warmup (a float below 1 in warmup_steps and logging_steps is a ratio of the run's
# steps in transformers 5), the training loss logged 50 times a run whatever the epoch length.
COMMON_DEFAULTS = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_strategy": "steps",
    "logging_steps": 0.02,
    # The experiment trackers' project (trackio's, W&B's) when --report_to names one.
    "project": "hf_vit",
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


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, AugmentationArguments, TrainingArguments]:
    """The four argument groups of a run: the command line parsed over the run's recipe."""
    given = given_options(argv)
    dataset = given.get("dataset", DataArguments.dataset)
    parser = RunArgumentParser(
        description=f"Train or fine-tune a ViT on --dataset {dataset}. The defaults shown are the values this run uses "
        "(its recipe, for the data set and the other options given); an option given wins.",
    )
    parser.set_defaults(**recipe_defaults(given))
    model_args, data_args, augmentation_args, training_args = parser.parse_args_into_dataclasses(args=list(argv))
    training_args.report_to = _checked_trackers(training_args.report_to)
    # Images are transformed on the fly from the `image` column, which Trainer would otherwise drop as "unused".
    training_args.remove_unused_columns = False
    return model_args, data_args, augmentation_args, training_args


def _checked_trackers(report_to: list[str]) -> list[str]:
    """--report_to's integrations, given space- or comma-separated, each known to transformers and installed: checked
    here, before any data is loaded, rather than by Trainer once the model is built."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = [name.strip() for entry in report_to for name in entry.split(",") if name.strip()]
    if names in (["none"], ["all"]):
        return [] if names == ["none"] else get_available_reporting_integrations()
    unknown = [name for name in names if name not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise ValueError(
            f"--report_to {' '.join(unknown)}: not an integration transformers knows; choose among "
            f"{', '.join(INTEGRATION_TO_CALLBACK)} (or none, all)."
        )
    missing = [name for name in names if name not in get_available_reporting_integrations()]
    if missing:
        raise ValueError(f"--report_to {' '.join(missing)}: not installed; pip install {' '.join(missing)}.")
    return names


def recipe_defaults(given: dict) -> dict:
    """The parser defaults of a run with the options `given` (`given_options`): the common defaults, the data set's
    recipe or the fine-tuning one, and what the machine, the launch and the other options settle."""
    dataset = given.get("dataset", DataArguments.dataset)
    recipe = {**COMMON_DEFAULTS, **RECIPES.get(dataset, RECIPES["default"])}
    _resolve_native_bf16(recipe, given)
    launch_defaults(recipe, given)
    streaming_defaults(recipe, given)
    loader_defaults(recipe, given)
    if "model_name_or_path" in given:
        recipe.pop("preset")
        _use_finetuning_recipe(recipe, given)
    if "output_dir" not in given:
        name = given.get("preset") or recipe.get("preset") or given["model_name_or_path"]
        recipe["output_dir"] = f"outputs/{dataset_slug(dataset)}-{dataset_slug(name)}"
    _settle_best_model_strategies(recipe, given)
    return recipe


class RunArgumentParser(HfArgumentParser):
    """transformers' parser of the four argument groups, whose --fsdp also takes `True` and `False` (`fsdp_switch`)
    and whose --report_to takes several integrations."""

    def __init__(self, **kwargs):
        super().__init__(PARSED_TYPES, prog="hf-vit train", formatter_class=HelpFormatter, **kwargs)

    def add_argument(self, *names, **kwargs):
        if "--fsdp" in names:
            kwargs["type"] = fsdp_switch
        if "--report_to" in names:  # several trackers, as in transformers 4 (`--report_to tensorboard trackio`)
            kwargs["nargs"] = "+"
        return super().add_argument(*names, **kwargs)


def given_options(argv: list[str]) -> dict:
    """The options on the command line and their values, read by the run's own parser (either spelling,
    `--name=value`, a bare flag, `--no_name`) with a marker for its defaults: the recipe gives way to these."""
    not_given = object()  # not a string, so argparse leaves it unconverted
    reader = RunArgumentParser(add_help=False)
    reader.set_defaults(**{field.name: not_given for dtype in PARSED_TYPES for field in fields(dtype)})
    namespace, _ = reader.parse_known_args(argv)
    return {name: value for name, value in vars(namespace).items() if value is not not_given}


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


def _resolve_native_bf16(recipe: dict, given: dict) -> None:
    """Turn the recipe's `bf16: NATIVE_BF16` into True or False for this machine, and say which and why."""
    if recipe.get("bf16") != NATIVE_BF16:
        return
    if given.keys() & {"bf16", "fp16"}:
        del recipe["bf16"]  # a given precision wins (and Trainer refuses --fp16 True beside --bf16 True)
        return
    use_cpu = bool(given.get("use_cpu", False))
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


def _use_finetuning_recipe(recipe: dict, given: dict) -> None:
    """A pretrained checkpoint gets the fine-tuning recipe (the data set's augmentation settings stay) and a learning
    rate for its total batch, and the log says which."""
    recipe.update(FINETUNE_RECIPE)
    if "learning_rate" in given:
        return
    # The total batch as Trainer will form it: per device, accumulated, times the processes a launcher started.
    batch = given.get("per_device_train_batch_size", recipe["per_device_train_batch_size"])
    accumulation = given.get("gradient_accumulation_steps", 1)
    total_batch = batch * accumulation * int(os.environ.get("WORLD_SIZE", 1))
    recipe["learning_rate"] = finetuning_learning_rate(total_batch)
    low, high = FINETUNE_LEARNING_RATE_RANGE
    logger.warning(
        f"recipe: fine-tuning at learning rate {recipe['learning_rate']:.3g} for a total batch of {total_batch} "
        f"({FINETUNE_LEARNING_RATE_PER_256:g} per 256 images, within {low:g}..{high:g}), "
        f"{recipe['num_train_epochs']} epochs, {recipe['warmup_steps']:.0%} warmup; give --learning_rate to change it."
    )


def _settle_best_model_strategies(recipe: dict, given: dict) -> None:
    """The recipe's `load_best_model_at_end` needs an evaluation at every save (Trainer refuses it otherwise). When
    the given options decide the evaluation and save moments, the recipe's side follows them: a strategy not given
    takes the given one (with its steps), and where they cannot match (`no` on either side, both given and
    different), keeping the best checkpoint gives way. The log says which."""
    if not recipe.get("load_best_model_at_end") or "load_best_model_at_end" in given:
        return

    def value(name):
        return str(given[name] if name in given else recipe.get(name)).lower()

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
        if {"eval_strategy", "save_strategy"} <= given.keys():
            return give_way(f"--eval_strategy {eval_strategy} and --save_strategy {save_strategy} differ")
        leader, follower = ("eval", "save") if "eval_strategy" in given else ("save", "eval")
        recipe[f"{follower}_strategy"] = value(f"{leader}_strategy")
        if f"{leader}_steps" in given and f"{follower}_steps" not in given:
            recipe[f"{follower}_steps"] = float(given[f"{leader}_steps"])
        logger.warning(
            f"recipe: --{follower}_strategy follows the given --{leader}_strategy {recipe[follower + '_strategy']} "
            "(keeping the best checkpoint needs an evaluation at every save)."
        )
    if value("eval_strategy") == "steps":
        # Trainer evaluates every --eval_steps, or every --logging_steps without it; a save must fall on an evaluation.
        defaults = {field.name: field.default for field in fields(TrainingArguments)}
        save_steps = float(given.get("save_steps", recipe.get("save_steps", defaults["save_steps"])))
        eval_steps = given.get("eval_steps", recipe.get("eval_steps"))
        if eval_steps is None:
            eval_steps = given.get("logging_steps", recipe.get("logging_steps", defaults["logging_steps"]))
        if save_steps % float(eval_steps) == 0:
            return
        if "eval_steps" not in given:
            recipe["eval_steps"] = save_steps
        elif "save_steps" not in given:
            recipe["save_steps"] = float(eval_steps)
        else:
            give_way(f"--save_steps {save_steps:g} is not a multiple of --eval_steps {float(eval_steps):g}")
