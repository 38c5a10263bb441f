"""The model a run trains: `ModelArguments` (a preset from scratch, or a checkpoint to fine-tune, and which of its
weights train), and the config, model and image processor built from them for the data set's labels. Checkpoints of
any ViT format are loaded, and converted exactly, by `sources.py`."""

import difflib
import json
import re
from dataclasses import dataclass, field

from transformers import BaseImageProcessor
from transformers.utils import logging

from .configuration_hf_vit import HfViTConfig
from .finetuning import (
    DEFAULT_LORA_TARGETS,
    PEFT_MISSING,
    apply_lora,
    freeze_backbone,
    log_trainable_parameters,
    peft_is_installed,
)
from .modeling_hf_vit import HfViTForImageClassification
from .presets import PRESETS, preset_config
from .processing import build_image_processor
from .sources import (
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

    # Not options: what __post_init__ reads from them, once, for load_checkpoint and build_config. The config fields
    # of --config_overrides, and the input size asked for by --image_size or by an image_size override.
    config_changes: dict = field(init=False, repr=False, default_factory=dict)
    requested_image_size: tuple[int, int] | None = field(init=False, repr=False, default=None)

    def __post_init__(self):
        if self.preset is not None and self.model_name_or_path is not None:
            raise ValueError("Give --preset (train from scratch) or --model_name_or_path (fine-tune), not both.")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"--preset {self.preset!r} is unknown; choose one of: {', '.join(PRESETS)}.")
        self.config_changes = parse_overrides(self.config_overrides)  # malformed overrides and sizes fail here
        self.requested_image_size = _requested_image_size(self.image_size, self.config_changes.get("image_size"))
        if self.requested_image_size is not None:
            self.config_changes["image_size"] = list(self.requested_image_size)
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


def _requested_image_size(image_size: str | None, override) -> tuple[int, int] | None:
    """--image_size, or an image_size among --config_overrides (the same request)."""
    requested = parse_image_size(image_size)
    if requested is None and override is not None:
        requested = parse_image_size("x".join(map(str, override)) if isinstance(override, list) else str(override))
    return requested


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
    if model_args.requested_image_size is not None:
        check_image_size(pretrained.model.config, model_args.requested_image_size, model_args.model_name_or_path)
    check_overrides_fit(pretrained, model_args.config_changes)
    return pretrained


def build_config(
    model_args: ModelArguments, label_names: list[str], pretrained: PretrainedViT | None = None
) -> HfViTConfig:
    """The config of the model to train, without building the model: the preset's, or the checkpoint's, with the
    data set's labels, --config_overrides and --image_size. A checkpoint whose head has another label count is an
    error unless --ignore_mismatched_sizes (transformers' convention); a headless checkpoint gets a new head."""
    overrides = model_args.config_changes
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


def choose_trained_weights(model, model_args: ModelArguments):
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
