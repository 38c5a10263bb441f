"""`hf-vit evaluate`: metrics (accuracy, macro F1, top-5 accuracy) of a saved model on a split of an image set,
with the same data loading and splits as `hf-vit train`."""

import json
import sys
from dataclasses import dataclass, field

import torch
from transformers import AutoImageProcessor, HfArgumentParser, Trainer, TrainingArguments
from transformers.utils import logging

from . import speedups
from .augment import collate, eval_transform_fn
from .cli_args import HelpFormatter
from .data import LABEL_COLUMN, DataArguments
from .metrics import build_compute_metrics
from .modeling_hf_vit import HfViTForImageClassification
from .streaming import load_splits

logger = logging.get_logger(__name__)


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "An hf_vit model folder or Hub repo id."})
    split: str = field(
        default="test", metadata={"help": "'train', 'validation' or 'test', the splits `hf-vit train` makes."}
    )
    batch_size: int = field(default=256, metadata={"help": "Images per forward pass."})


def align_labels(dataset, model_label2id: dict[str, int], model: str):
    """Renumber the set's labels to the model's ids by name; a label the model does not know is an error."""
    names = dataset.features[LABEL_COLUMN].names
    unknown = [name for name in names if name not in model_label2id]
    if unknown:
        raise ValueError(
            f"The data set's labels {unknown} are not labels of {model} (it knows {sorted(model_label2id)}); "
            "evaluate on a set with the model's labels."
        )
    mapping = [model_label2id[name] for name in names]
    return dataset.map(lambda batch: {LABEL_COLUMN: [mapping[label] for label in batch[LABEL_COLUMN]]}, batched=True)


def evaluate_model(args: EvaluateArguments, data_args: DataArguments, raw_dataset=None) -> dict[str, float]:
    if data_args.streaming and args.split == "train":
        raise ValueError(
            "--split train is a stream of unknown length under --streaming: evaluate validation or test (the "
            "first --max_eval_samples images, as `hf-vit train --streaming` held them out)."
        )
    splits, skipped_bad_images = load_splits(data_args, seed=0, raw=raw_dataset)
    if args.split not in splits:
        raise ValueError(f"--split {args.split!r} must be one of {list(splits)}.")
    model = speedups.apply_and_log(HfViTForImageClassification.from_pretrained(args.model), logger.warning)
    # The folder's own processor class: a fine-tuned timm or DeiT source keeps its resize-and-crop processor.
    processor = AutoImageProcessor.from_pretrained(args.model)
    dataset = align_labels(splits[args.split], model.config.label2id, args.model)
    training_args = TrainingArguments(
        output_dir="/tmp/hf_vit_evaluate",  # unused: nothing is saved
        per_device_eval_batch_size=args.batch_size,
        remove_unused_columns=False,  # the transform needs the `image` column
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        data_collator=collate,
        compute_metrics=build_compute_metrics(model.config.num_labels),
    )
    metrics = trainer.evaluate(dataset.with_transform(eval_transform_fn(processor)), metric_key_prefix=args.split)
    metrics[f"{args.split}_samples"] = len(dataset)
    if data_args.skip_bad_images:
        # Counted over the set's own splits, before validation and test are carved from train where they are.
        metrics["skipped_bad_images"] = sum(skipped_bad_images.values())
    return metrics


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.set_verbosity_warning()
    parser = HfArgumentParser(
        (EvaluateArguments, DataArguments),
        prog="hf-vit evaluate",
        description="Metrics of a saved model on a split of an image set, made as `hf-vit train` makes its splits.",
        formatter_class=HelpFormatter,
    )
    args, data_args = parser.parse_args_into_dataclasses(args=argv)
    metrics = evaluate_model(args, data_args)
    print(json.dumps({key: round(value, 4) for key, value in metrics.items()}, indent=2))
    return 0
