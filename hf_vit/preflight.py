"""Checks that fail before any training starts, so that no training time is spent on a run that cannot finish or
save: the output folder is writable, its disk holds the run, and the checkpoint to resume from is complete and
resumable as asked."""

import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .augment import AugmentationArguments
from .configuration_hf_vit import HfViTConfig
from .flops import count_parameters

logger = logging.get_logger("hf_vit")


# AdamW keeps two float32 moments per parameter, so a Trainer checkpoint (weights + optimizer.pt) is about three times
# the weights; scheduler, RNG and trainer state files are tiny.
CHECKPOINT_SIZE_IN_WEIGHTS = 3
# Plots, metrics, the model card and logs, plus slack for the estimate: a fixed allowance and a tenth on top.
SPACE_ALLOWANCE_BYTES = 64 * 2**20
TRAINER_STATE_FILE = "trainer_state.json"


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"


def check_output_dir_writable(output_dir: Path) -> None:
    """Create --output_dir and write and delete a probe file in it, so that an unwritable folder fails now rather
    than at the first checkpoint, after the training time is spent."""
    probe = output_dir / f".hf_vit-write-probe-{os.getpid()}"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"hf_vit")
        probe.unlink()
    except OSError as error:
        raise OSError(
            f"--output_dir {output_dir} cannot be written ({type(error).__name__}: {error.strerror or error}), so "
            "the run could save neither checkpoints nor the model. Give --output_dir a folder you can write to."
        ) from error


def _saves_in_run(args: TrainingArguments, num_train_images: int) -> int:
    """How many checkpoints Trainer saves over the whole run, from the schedule alone."""
    if args.save_strategy == "no":
        return 0
    batches_per_epoch = math.ceil(num_train_images / (args.per_device_train_batch_size * max(1, args.world_size)))
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / args.gradient_accumulation_steps))
    total_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    # "best" saves at most at every evaluation; the evaluation schedule is given like the save schedule.
    strategy, every = (
        (args.eval_strategy, args.eval_steps or args.logging_steps)
        if args.save_strategy == "best"
        else (args.save_strategy, args.save_steps)
    )
    if strategy == "epoch":
        return math.ceil(total_steps / steps_per_epoch)
    if strategy == "steps":
        every = math.ceil(every * total_steps) if every < 1 else int(every)  # a float below 1 is a ratio
        every = max(1, every)
        return total_steps // every + (1 if total_steps % every else 0)  # and at the end, if not a save step
    return 0


def estimate_output_bytes(config: HfViTConfig, args: TrainingArguments, num_train_images: int) -> tuple[int, str]:
    """Upper estimate of the bytes a run writes into --output_dir at its peak, and how it was reckoned: the final
    weights plus the checkpoints on disk at once (all of them, or with --save_total_limit the kept ones, the best
    one with --load_best_model_at_end, and the one being written before the oldest is deleted)."""
    parameters = count_parameters(config)
    weights = 4 * parameters  # float32: mixed precision (--bf16/--fp16) keeps parameters, and saved weights, in it
    checkpoints = _saves_in_run(args, num_train_images)
    if args.save_total_limit and args.save_total_limit > 0:
        checkpoints = min(checkpoints, max(args.save_total_limit, 2 if args.load_best_model_at_end else 1) + 1)
    checkpoint_bytes = weights * (1 if args.save_only_model else CHECKPOINT_SIZE_IN_WEIGHTS)
    total = weights + checkpoints * checkpoint_bytes
    total += total // 10 + SPACE_ALLOWANCE_BYTES
    how = (
        f"{parameters:,} float32 parameters make {_gib(weights)} of final weights, plus up to {checkpoints} "
        f"checkpoint(s) of {_gib(checkpoint_bytes)} each (weights and optimizer state), plus a margin"
    )
    return total, how


def check_free_space(output_dir: Path, config: HfViTConfig, args: TrainingArguments, num_train_images: int) -> None:
    """Fail now, not at the first checkpoint or the final save, when --output_dir's disk cannot hold the run."""
    needed, how = estimate_output_bytes(config, args, num_train_images)
    free = shutil.disk_usage(output_dir).free
    if needed > free:
        raise OSError(
            f"--output_dir {output_dir}: this run needs about {_gib(needed)} and its disk has {_gib(free)} free "
            f"({needed:,} bytes needed, {free:,} free; the estimate: {how}). Point --output_dir at a disk with more "
            f"space, keep fewer checkpoints with --save_total_limit (now {args.save_total_limit}) or smaller ones with "
            "--save_only_model True (weights only: they cannot be resumed from), or free some space."
        )


def _checkpoint_folders(folder: Path) -> list[tuple[int, Path]]:
    """Trainer's checkpoint-<step> folders in `folder`, oldest step first."""
    found = []
    for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if folder.is_dir() else ():
        step = path.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
        if step.isdigit() and path.is_dir():
            found.append((int(step), path))
    return sorted(found)


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from, or None when it is a complete Trainer checkpoint.

    Trainer (transformers 5) does not write checkpoints atomically: `_save_checkpoint` writes into the final
    checkpoint-<step> folder, in this order: weights, optimizer and scheduler, RNG state, and trainer_state.json last.
    A run killed while saving leaves a folder without (or with a cut-short) trainer_state.json, and Trainer would
    load whatever weights it holds. So a parseable trainer_state.json is the sign of a finished save."""
    if not folder.is_dir():
        return "it is not a folder"
    state_file = folder / TRAINER_STATE_FILE
    if not state_file.is_file():
        return (
            f"it has no {TRAINER_STATE_FILE}, which Trainer writes last: the save was interrupted (killed, or out of "
            "disk)"
        )
    try:
        int(json.loads(state_file.read_text(encoding="utf-8"))["global_step"])
    except (ValueError, KeyError, TypeError):
        return f"its {TRAINER_STATE_FILE} is cut short or is not Trainer's: the save was interrupted"
    weights = folder / "model.safetensors"
    if weights.is_file():
        try:
            with safe_open(weights, framework="pt"):
                pass
        except Exception as error:  # safetensors raises its own SafetensorError (and OSError) for bad files
            return f"its model.safetensors is truncated or corrupt ({error})"
    # Without optimizer and scheduler state Trainer resumes silently with a fresh optimizer and a restarted
    # learning-rate schedule. DeepSpeed keeps its states in global_step* sub-folders instead.
    if not any(folder.glob("global_step*")):
        has_optimizer = any(path.name.startswith("optimizer") for path in folder.iterdir())
        if not has_optimizer or not (folder / "scheduler.pt").is_file():
            return (
                "it has no optimizer or scheduler state (saved with --save_only_model?), so resuming would restart "
                "the optimizer and the learning-rate schedule; fine-tune from it with --model_name_or_path instead"
            )
    return None


def last_complete_checkpoint(folder: Path) -> Path | None:
    complete = [path for _, path in _checkpoint_folders(folder) if checkpoint_problem(path) is None]
    return complete[-1] if complete else None


def resolve_resume_checkpoint(value: str | bool | None, output_dir: str | os.PathLike) -> str | None:
    """--resume_from_checkpoint as a complete checkpoint folder: a path is checked, and True (Trainer's "the last
    checkpoint in --output_dir") picks the last complete one, skipping interrupted ones with a warning. An
    incomplete checkpoint is an error naming what is wrong and the complete checkpoints there are."""
    if value is None or value is False or str(value).lower() in ("", "false", "none"):
        return None
    output_dir = Path(output_dir)
    if value is True or str(value).lower() == "true":
        checkpoints = _checkpoint_folders(output_dir)
        for _, path in reversed(checkpoints):
            problem = checkpoint_problem(path)
            if problem is None:
                return str(path)
            logger.warning(f"--resume_from_checkpoint True: skipping {path}: {problem}.")
        raise ValueError(
            f"--resume_from_checkpoint True: no complete checkpoint in --output_dir {output_dir} "
            f"({len(checkpoints)} incomplete). Start the run without --resume_from_checkpoint, or give a checkpoint "
            "folder."
        )
    folder = Path(value)
    problem = checkpoint_problem(folder)
    if problem is None:
        return str(folder)
    others = [str(path) for _, path in _checkpoint_folders(folder.parent) if checkpoint_problem(path) is None]
    alternative = (
        f"Resume from a complete one instead: {', '.join(others)}"
        if others
        else f"There is no complete checkpoint beside it in {folder.parent}: start the run again"
    )
    raise ValueError(f"--resume_from_checkpoint {folder} cannot be resumed: {problem}. {alternative}.")


def check_resume_learning_rate(checkpoint: str | None, args: TrainingArguments) -> None:
    """Resuming restores the checkpoint's optimizer and scheduler, learning rate included: Trainer would silently
    train on at the old rate whatever --learning_rate says. A different --learning_rate is therefore an error."""
    scheduler_file = Path(checkpoint or "", "scheduler.pt")
    if checkpoint is None or not scheduler_file.is_file():
        return
    base_lrs = torch.load(scheduler_file, weights_only=True).get("base_lrs") or []
    if base_lrs and not math.isclose(base_lrs[0], args.learning_rate, rel_tol=1e-6):
        raise ValueError(
            f"--learning_rate {args.learning_rate:g} differs from the {base_lrs[0]:g} of --resume_from_checkpoint "
            f"{checkpoint}: resuming continues that checkpoint's learning-rate schedule and would not apply it. Resume "
            f"with --learning_rate {base_lrs[0]:g}, or start a new run that fine-tunes the checkpoint's weights with "
            f"--model_name_or_path {checkpoint} at the new rate."
        )


def warn_if_resume_is_not_exact(checkpoint: str | None, augmentation_args: AugmentationArguments) -> None:
    """Resuming from an epoch-end checkpoint repeats an uninterrupted run exactly: Trainer restores the weights,
    optimizer, scheduler and RNG states, and the seeded sampler's order follows the epoch. From a mid-epoch checkpoint
    it restores the RNG only after drawing the first resumed batches, so random augmentation draws differ from there
    on (measured: weights equal without random augmentation, different with it)."""
    if checkpoint is None or not augmentation_args.is_random:
        return
    epoch = json.loads(Path(checkpoint, TRAINER_STATE_FILE).read_text(encoding="utf-8")).get("epoch") or 0
    if not float(epoch).is_integer():
        logger.warning(
            f"{checkpoint} was saved in the middle of epoch {math.ceil(epoch)}: the rest of the run draws other random "
            "augmentations than an uninterrupted run would (as likely, not the same), so its result will differ "
            "slightly. Checkpoints saved at epoch ends (--save_strategy epoch) resume exactly."
        )
