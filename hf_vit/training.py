"""`hf-vit train`: train a ViT from a preset, or fine-tune a checkpoint, on an image data set with `Trainer`, and
leave a complete model folder (weights, config, code, processor, metrics, curves, confusion matrix, model card).

One run, top-down, as transformers' `run_image_classification.py`: arguments over the data set's recipe
(`recipes.py`), the checks that need no data, the data (`streaming.load_splits`), the model (`model_setup.py`), the
Trainer (`trainer.py`); then train, save, evaluate, and the outputs (plots, model card, Hub push)."""

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import DatasetDict
from transformers import BaseImageProcessor, TrainingArguments, set_seed
from transformers.trainer_utils import PredictionOutput
from transformers.utils import logging

from . import speedups
from .augment import AugmentationArguments, MixingCollator, collate, eval_transform_fn, train_transform_fn
from .data import DataArguments
from .distributed import check_launch
from .explain import save_attention_grid
from .metrics import build_compute_metrics
from .model_card import build_model_card, require_template
from .model_setup import ModelArguments, build_config, build_model, choose_trained_weights, load_checkpoint
from .plots import plot_confusion_matrix, plot_training_curves
from .preflight import (
    check_free_space,
    check_output_dir_writable,
    check_resume_learning_rate,
    resolve_resume_checkpoint,
    warn_if_resume_is_not_exact,
)
from .recipes import parse_args
from .sources import Lineage
from .streaming import load_splits, split_size, train_images, with_batch_transform
from .trainer import ImageClassificationTrainer

logger = logging.get_logger("hf_vit")


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


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    augmentation_args: AugmentationArguments,
    training_args: TrainingArguments,
    raw_dataset: DatasetDict | None = None,
    command: str = "hf-vit train",
) -> dict[str, float]:
    """Train, save the model folder, evaluate on validation and test, and write the outputs (plots, model card, Hub
    push). `raw_dataset` (an in-memory `DatasetDict`) replaces loading `data_args.dataset`. Returns all_results (on
    the main process; {} on the others)."""
    setup = prepare_training(model_args, data_args, augmentation_args, training_args, raw_dataset)
    trainer = setup.trainer
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.write_model_folder(setup.processor, merge_lora=model_args.merge_lora)

    metrics = {"train": train_result.metrics}
    if data_args.skip_bad_images:
        metrics["train"]["skipped_bad_images"] = setup.skipped_bad_images
    trainer.log_metrics("train", metrics["train"])
    trainer.save_metrics("train", metrics["train"])
    metrics["eval"] = trainer.evaluate(setup.eval_sets["validation"], metric_key_prefix="eval")
    trainer.log_metrics("eval", metrics["eval"])
    trainer.save_metrics("eval", metrics["eval"])
    test_output = trainer.predict(setup.eval_sets["test"], metric_key_prefix="test")
    metrics["test"] = test_output.metrics
    trainer.log_metrics("test", metrics["test"])
    trainer.save_metrics("test", metrics["test"])
    trainer.save_state()
    if not trainer.is_world_process_zero():
        return {}

    write_outputs(setup, model_args, data_args, augmentation_args, metrics, test_output, command)
    if training_args.push_to_hub:
        print(f"hf_vit: pushed to {trainer.hub_model_id}: {trainer.push_to_hub()}")
    return json.loads((Path(training_args.output_dir) / "all_results.json").read_text())


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
    """Everything before `trainer.train()`, cheapest checks first: the arguments and the checkpoint to resume from
    before the data is loaded, the disk space before the model is built."""
    check_run(model_args, augmentation_args, training_args)
    set_seed(training_args.seed)
    pretrained = load_checkpoint(model_args)
    splits, skipped_bad_images = load_splits(data_args, training_args.seed, raw_dataset)
    label_names = splits["train"].features["label"].names
    logger.warning(f"data: {', '.join(f'{name} {split_size(split)}' for name, split in splits.items())} images, "
                   f"{len(label_names)} labels")  # fmt: skip

    config = build_config(model_args, label_names, pretrained)
    check_free_space(
        Path(training_args.output_dir), config, training_args, train_images(splits["train"], training_args)
    )
    model, processor = build_model(model_args, label_names, config, pretrained)
    speedups.apply_and_log(model, logger.warning)  # before LoRA, which wraps the (sped-up) linears as they are
    model = choose_trained_weights(model, model_args)

    train_set = with_batch_transform(splits["train"], train_transform_fn(processor, augmentation_args))
    eval_sets = {name: splits[name].with_transform(eval_transform_fn(processor)) for name in ("validation", "test")}
    collator = train_collator(augmentation_args, training_args, len(label_names))  # may move label smoothing into it
    trainer = ImageClassificationTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_sets["validation"],
        data_collator=collate,
        train_data_collator=collator,
        compute_metrics=build_compute_metrics(len(label_names)),
        layer_decay=model_args.layer_decay,
    )
    lineage = pretrained.lineage if pretrained is not None else Lineage()
    return TrainingSetup(trainer, processor, splits, eval_sets, label_names, sum(skipped_bad_images.values()), lineage)


def check_run(
    model_args: ModelArguments, augmentation_args: AugmentationArguments, training_args: TrainingArguments
) -> None:
    """The checks that need no data, each made once, before anything is loaded: the card template is installed, the
    launch shards, the output folder is writable, the checkpoint to resume from is complete and has this learning
    rate (--resume_from_checkpoint True becomes its path), and the options fit together."""
    require_template()
    check_launch(training_args)
    check_output_dir_writable(Path(training_args.output_dir))
    checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    training_args.resume_from_checkpoint = checkpoint
    check_resume_learning_rate(checkpoint, training_args)
    warn_if_resume_is_not_exact(checkpoint, augmentation_args)
    if training_args.push_to_hub and model_args.lora_r and not model_args.merge_lora:
        raise ValueError(
            "--push_to_hub uploads a complete hf_vit model folder, and --lora_r without --merge_lora leaves a PEFT "
            "adapter: add --merge_lora True, or push the adapter folder after the run (huggingface_hub's "
            "upload_folder)."
        )


def train_collator(augmentation_args: AugmentationArguments, training_args: TrainingArguments, num_labels: int):
    """The training batches' collator: MixUp/CutMix's when either is on, which then smooths the labels itself (on
    the mixed soft targets: Trainer's smoother takes integer labels only), else the evaluation batches' one."""
    if augmentation_args.mixup_alpha <= 0 and augmentation_args.cutmix_alpha <= 0:
        return collate
    collator = MixingCollator(num_labels, augmentation_args.mixup_alpha, augmentation_args.cutmix_alpha,
                              label_smoothing=training_args.label_smoothing_factor)  # fmt: skip
    training_args.label_smoothing_factor = 0.0
    return collator


def write_outputs(
    setup: TrainingSetup,
    model_args: ModelArguments,
    data_args: DataArguments,
    augmentation_args: AugmentationArguments,
    metrics: dict[str, dict[str, float]],
    test_output: PredictionOutput,
    command: str,
) -> None:
    """The pictures of the run and the model card, beside the saved model (main process only). `metrics` are the
    train, eval and test metrics as Trainer returned them; `test_output` holds the test set's predictions."""
    trainer, training_args = setup.trainer, setup.trainer.args
    output_dir = Path(training_args.output_dir)
    plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png")
    predictions = test_output.predictions.argmax(-1)
    plot_confusion_matrix(test_output.label_ids, predictions, setup.label_names, output_dir / "confusion_matrix.png")
    attention_picture = _save_attention_maps(setup, output_dir / "attention_maps.png")

    results = {
        split: {key.removeprefix(f"{prefix}_"): value for key, value in metrics[prefix].items()}
        for split, prefix in (("validation", "eval"), ("test", "test"))
    }
    adapter_of = model_args.model_name_or_path if model_args.lora_r and not model_args.merge_lora else None
    card = build_model_card(
        model_name=trainer.hub_model_id if training_args.push_to_hub else output_dir.name,
        dataset=data_args.dataset,
        config=trainer.model.config,
        results=results,
        split_sizes={name: split_size(split) for name, split in setup.splits.items()},
        training_args=training_args,
        augmentation_args=augmentation_args,
        train_runtime_s=metrics["train"]["train_runtime"],
        base_model=setup.lineage.base_model,
        base_model_relation="adapter" if adapter_of else "finetune",
        source_model=model_args.model_name_or_path,
        converted_from=setup.lineage.converted_from,
        license=setup.lineage.license,
        adapter_of=adapter_of,
        command=command,
        attention_picture=attention_picture,
    )
    card.save(output_dir / "README.md")


def _save_attention_maps(setup: TrainingSetup, path: Path, count: int = 8) -> str | None:
    """The card's grid of test images with their true and predicted labels and attention rollout; its file name, or
    None under FSDP, whose sharded model runs only on all processes together (the log says so)."""
    trainer = setup.trainer
    if trainer.is_fsdp_enabled:
        logger.warning("FSDP: the model card has no attention maps (run `hf-vit explain` on the saved model).")
        return None
    rows = list(setup.splits["test"].take(count))  # a Dataset and a streamed IterableDataset both take
    images, labels = [row["image"] for row in rows], [setup.label_names[row["label"]] for row in rows]
    save_attention_grid(trainer.accelerator.unwrap_model(trainer.model), setup.processor, images, labels, path)
    return path.name


__all__ = ["main", "run_training", "prepare_training", "TrainingSetup", "check_run", "write_outputs"]
