"""The README.md of a trained model folder: a huggingface_hub `ModelCard` filled from `model_cards/template.md`,
with Hub metadata (library, pipeline tag, datasets, metrics and model-index results) the Hub renders and indexes."""

import json
import os
from dataclasses import asdict
from enum import Enum
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .data import FASHION_MNIST_HUB_ID
from .flops import count_parameters
from .info import device_description, versions

# A link to model_cards/template.md in the repository; a regular file in an installed wheel.
TEMPLATE_PATH = Path(__file__).parent / "model_card_template.md"
METRIC_NAMES = {"accuracy": "Accuracy", "top5_accuracy": "Top-5 accuracy", "macro_f1": "Macro F1"}
DATASET_DESCRIPTIONS = {
    "digits": "scikit-learn's `load_digits`: 1,797 grayscale 8x8 images of handwritten digits (UCI ML hand-written "
    "digits), split into train / validation / test with seeded stratified splits.",
    "fashion_mnist": "Fashion-MNIST (Xiao et al., 2017): 70,000 grayscale 28x28 images of Zalando articles in 10 "
    "classes, its own 60k train / 10k test splits, validation carved from train.",
}
SHOWN_TRAINING_ARGUMENTS = (
    "num_train_epochs", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "world_size",
    "weight_decay", "lr_scheduler_type", "warmup_steps", "label_smoothing_factor", "max_grad_norm", "optim", "seed",
    "bf16", "fp16",
)  # fmt: skip
SHOWN_CONFIG_FIELDS = (
    "image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "stem_channels", "pooling", "drop_path_rate", "position_embedding",
)  # fmt: skip


USAGE = """## Usage

```python
from transformers import pipeline

classifier = pipeline("image-classification", model="{model_id}", trust_remote_code=True)
print(classifier("image.png", top_k=3))
```

or with the model classes:

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

processor = AutoImageProcessor.from_pretrained("{model_id}")
model = AutoModelForImageClassification.from_pretrained("{model_id}", trust_remote_code=True)
inputs = processor(Image.open("image.png"), return_tensors="pt")
with torch.no_grad():
    label_id = model(**inputs).logits.argmax(-1).item()
print(model.config.id2label[label_id])
```

`trust_remote_code=True` loads the model code stored with the weights (`modeling_hf_vit.py`,
`configuration_hf_vit.py`): plain torch + transformers, tested to load with the same logits under transformers 4.57
(the oldest supported) and 5.x, with torch 2.4 or newer. With the `hf_vit` package installed and imported it is not
needed, and `hf_vit.speedups.apply(model)` adds hf_vit's CPU speed-ups."""
ATTENTION_CAPTION = (
    "Test images, each with its true and predicted label (green: right, red: wrong), over the model's attention "
    "rollout (Abnar & Zuidema 2020): bright patches are those the prediction drew most from. Drawn by "
    "`hf_vit.explain.save_attention_grid`; `hf-vit explain` draws it for any image, with each head's attention."
)
CARD_TAGS = ["hf_vit", "vision-transformer", "image-classification", "custom_code"]


ADAPTER_USAGE = """## Usage

A LoRA adapter (PEFT) for the hf_vit model `{base}`, with its classification head:

```python
import torch
from PIL import Image
from peft import PeftModel
from transformers import AutoImageProcessor

from hf_vit import HfViTForImageClassification

id2label = {id2label}
base = HfViTForImageClassification.from_pretrained("{base}", id2label=id2label, ignore_mismatched_sizes=True)
model = PeftModel.from_pretrained(base, "{model_id}").eval()
processor = AutoImageProcessor.from_pretrained("{model_id}")
with torch.no_grad():
    logits = model(**processor(Image.open("image.png"), return_tensors="pt")).logits
print(id2label[logits.argmax(-1).item()])
```

`model.merge_and_unload()` gives a plain hf_vit model; `hf-vit train ... --merge_lora True` saves one directly.
A base that is not an hf_vit folder or repo (a transformers or timm checkpoint) is loaded once converted: `hf-vit
convert --from transformers|deit|timm --source {base} --output BASE_DIR`, then `from_pretrained("BASE_DIR", ...)`."""


def usage_section(model_id: str) -> str:
    """The card's usage snippets, for a folder path or a Hub repo id; they work when pasted."""
    return USAGE.format(model_id=model_id)


def adapter_usage_section(model_id: str, base: str, id2label: dict) -> str:
    """Usage of a LoRA adapter folder: its base model, then `PeftModel.from_pretrained`."""
    labels = {int(index): label for index, label in id2label.items()}
    return ADAPTER_USAGE.format(model_id=model_id, base=base, id2label=labels)


def build_folder_card(config, *, model_id: str, title: str, description: str, details: list[str]) -> ModelCard:
    """A short card for a folder that was not trained by `hf-vit train` (converted, or saved from Python)."""
    card_data = ModelCardData(
        model_name=model_id, library_name="transformers", pipeline_tag="image-classification", tags=CARD_TAGS
    )
    labels = [config.id2label[i] for i in range(config.num_labels)] if config.num_labels > 0 else []
    shown = ", ".join(f"`{label}`" for label in labels[:10]) + (", ..." if len(labels) > 10 else "")
    details = [
        f"Architecture: ViT, width {config.hidden_size}, depth {config.num_hidden_layers}, "
        f"{config.num_attention_heads} heads, patch {config.patch_size}, image {config.image_size}, "
        + (f"convolutional stem {config.stem_channels}, " if config.stem_channels else "")
        + f"{config.pooling} pooling.",
        f"Labels ({config.num_labels}): {shown}"
        if labels
        else "No classification head: the logits are the pooled features.",
        *details,
    ]
    body = "\n".join(f"- {line}" for line in details)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n# {title}\n\n{description}\n\n{usage_section(model_id)}\n\n"
                     f"## Model\n\n{body}\n")  # fmt: skip


def build_card_for_folder(folder: str | os.PathLike, model_id: str) -> ModelCard:
    """The card `hf-vit push` uploads for a folder that has none: what its config and result files say."""
    from .configuration_hf_vit import HfViTConfig

    folder = Path(folder)
    config = HfViTConfig.from_pretrained(folder)
    details = []
    results_file = folder / "all_results.json"
    if results_file.is_file():
        results = json.loads(results_file.read_text())
        details += [f"{key}: {value:.4f}" for key, value in sorted(results.items()) if "accuracy" in key or "f1" in key]
    return build_folder_card(config, model_id=model_id, title=model_id,
                             description="A Vision Transformer for image classification, an `hf_vit` model.",
                             details=details)  # fmt: skip


def retarget_card(card: ModelCard, model_id: str) -> ModelCard:
    """The same card, its usage snippets and model name pointing at `model_id` (the repo it is pushed to)."""
    old = card.data.model_name
    text = card.text.replace(f'"{old}"', f'"{model_id}"') if old else card.text
    card.data.model_name = model_id
    return ModelCard(f"---\n{card.data.to_yaml()}\n---\n{text}")


def require_template() -> None:
    """Checked before training starts, so that a run never ends without its card."""
    if not TEMPLATE_PATH.is_file():
        raise FileNotFoundError(
            f"Model card template {TEMPLATE_PATH} is missing; reinstall hf_vit (pip install -e . from its repository)."
        )


def hub_dataset_id(dataset: str) -> str | None:
    """The Hub id of a data set for the card's metadata; None for local sets."""
    if dataset == "fashion_mnist":
        return FASHION_MNIST_HUB_ID
    if dataset == "digits" or os.path.exists(dataset):
        return None
    return dataset


def _plain(value):
    return value.value if isinstance(value, Enum) else value  # "cosine", not "SchedulerType.COSINE"


def _table(rows: dict) -> str:
    return "\n".join(["| name | value |", "|---|---|"] + [f"| {key} | {value} |" for key, value in rows.items()])


def _versions() -> str:
    return "\n".join(f"- {name} {version}" for name, version in versions().items())


def build_model_card(
    *,
    model_name: str,
    dataset: str,
    config,
    results: dict[str, dict],
    split_sizes: dict[str, int],
    training_args,
    augmentation_args,
    train_runtime_s: float,
    base_model: str | None = None,
    base_model_relation: str | None = None,
    source_model: str | None = None,
    license: str | None = None,
    adapter_of: str | None = None,
    converted_from: str | None = None,
    attention_picture: str | None = None,
    command: str,
) -> ModelCard:
    """`results` maps split ('validation', 'test') -> metric name (without prefix) -> value. `base_model` is the
    Hub repo id of the checkpoint fine-tuned (metadata: the Hub's model tree), `source_model` what the user gave
    (a folder, a repo id; for the text), `license` the source's licence (default apache-2.0, hf_vit's own);
    `adapter_of` the base model of a LoRA adapter folder (the card is then PEFT's), `converted_from` the format of a
    source converted in memory; `attention_picture` the file name, in the folder, of the picture of
    `hf_vit.explain.save_attention_grid` (shown under the confusion matrix when given)."""
    require_template()
    dataset_id = hub_dataset_id(dataset)
    metric_keys = [key for key in METRIC_NAMES if any(key in metrics for metrics in results.values())]
    eval_results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset_id or dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=key,
            metric_name=METRIC_NAMES[key],
            metric_value=round(float(metrics[key]), 4),
        )
        for split, metrics in results.items()
        if split == "test"
        for key in metric_keys
        if key in metrics
    ]
    card_data = ModelCardData(
        model_name=model_name,
        library_name="peft" if adapter_of else "transformers",
        pipeline_tag="image-classification",
        license=license or "apache-2.0",
        tags=CARD_TAGS,
        datasets=[dataset_id] if dataset_id else None,
        metrics=["accuracy", "f1"],
        base_model=base_model,
        base_model_relation=base_model_relation if base_model else None,
        eval_results=eval_results or None,
    )
    results_rows = "\n".join(
        f"| {split} | {split_sizes.get(split, '')} | "
        + " | ".join(f"{metrics[key]:.4f}" if key in metrics else "" for key in metric_keys)
        + " |"
        for split, metrics in results.items()
    )
    shown = {name: _plain(getattr(training_args, name)) for name in SHOWN_TRAINING_ARGUMENTS}
    shown["total_train_batch_size"] = (
        training_args.train_batch_size * training_args.gradient_accumulation_steps * training_args.world_size
    )
    shown.update({f"augmentation: {key}": value for key, value in asdict(augmentation_args).items()})
    config_rows = {name: getattr(config, name) for name in SHOWN_CONFIG_FIELDS}
    config_rows["parameters"] = f"{count_parameters(config):,}"
    source_model = source_model or base_model
    origin = f"fine-tuned from `{source_model}`" if source_model else "trained from scratch"
    if source_model and base_model and source_model != base_model:
        origin += f" (weights of `{base_model}`)"
    if converted_from:
        origin += f", a {converted_from} checkpoint converted exactly by `hf_vit.convert`,"
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        usage=adapter_usage_section(model_name, adapter_of, config.id2label)
        if adapter_of
        else usage_section(model_name),
        model_description=f"A Vision Transformer (an `hf_vit` model) {origin} on `{dataset}` for image classification.",
        dataset_description=DATASET_DESCRIPTIONS.get(dataset, f"`{dataset}`."),
        num_labels=config.num_labels,
        label_names=", ".join(f"`{config.id2label[i]}`" for i in range(config.num_labels)),
        metric_header=" | ".join(METRIC_NAMES[key] for key in metric_keys),
        metric_rule="---|" * len(metric_keys),
        results_rows=results_rows,
        attention_picture=attention_picture,
        attention_caption=ATTENTION_CAPTION,
        command=command,
        model_table=_table(config_rows),
        hyperparameters_table=_table(shown),
        train_runtime=f"{train_runtime_s / 60:.1f} minutes",
        device=device_description(),
        versions=_versions(),
    )
