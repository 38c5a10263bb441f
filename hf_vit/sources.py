"""The pretrained ViT a fine-tuning run starts from, wherever a user has it: an hf_vit folder or Hub repo, a
transformers ViT or DeiT folder or Hub repo, a timm folder or Hub repo (`timm/...`). Other formats than hf_vit's are
converted in memory by `hf_vit.convert` (exactly, and checked against the source library, as `hf-vit convert` does),
with the source's own preprocessing. `finetuning_model` then gives the model the data set's labels, the config
overrides and a new input size (position embeddings resampled once), and `Lineage` keeps where the weights came from
(a Hub repo id, never a local path) and their licence, for the model card."""

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .configuration_hf_vit import HfViTConfig
from .modeling_hf_vit import HfViTForImageClassification
from .processing import build_image_processor, describe_processor, processor_for_size

logger = logging.getLogger("hf_vit")

# What a fine-tuning run needs from a Hub repo: configs, the processor, safetensors weights and the card (licence,
# lineage); pickled weights only from repos that have no safetensors (read with weights_only=True).
HUB_FILES = ["*.json", "*.safetensors", "README.md"]
LEGACY_HUB_FILES = ["pytorch_model*.bin"]
# Where huggingface_hub keeps a downloaded repo: .../models--{namespace}--{name}/snapshots/{commit}.
CACHE_SNAPSHOT = re.compile(r"models--([^/]+?)--([^/]+)/snapshots/[0-9a-f]{40}/?$")
# The most a converted model may differ from its source library (the `hf-vit convert` threshold).
CONVERSION_TOLERANCE = 1e-4
HEAD_PREFIXES = ("classifier.", "distillation_classifier.")
# transformers' names for labels nobody named (`PretrainedConfig` fills id2label with them).
UNNAMED_LABEL = re.compile(r"LABEL_\d+")
POSITIONS_KEY = "vit.embeddings.position_embeddings"


@dataclass
class Lineage:
    """Where a model's weights come from, for the card's metadata: `base_model` is a Hub repo id or None."""

    base_model: str | None = None
    license: str | None = None
    # The checkpoint's format when it was converted in memory ("transformers", "deit", "timm"), for the card's text.
    converted_from: str | None = None


@dataclass
class PretrainedViT:
    """A pretrained model ready to be adapted for fine-tuning (see `finetuning_model`)."""

    model: HfViTForImageClassification
    processor: object | None  # the source's image processor; None when the source has none
    kind: str  # "hf_vit", "transformers", "deit" or "timm"
    source: str  # as the user gave it
    lineage: Lineage


def is_hub_repo_id(text: str | None) -> bool:
    """A `namespace/name` Hub repo id, and not a path that exists here."""
    if not text or os.path.exists(text) or text.startswith(("/", ".", "~")):
        return False
    return re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None and ".." not in text


def download_repo(repo_id: str, revision: str | None = None, option: str = "--model_name_or_path") -> Path:
    """The files of a Hub repo that fine-tuning reads (HUB_FILES), through huggingface_hub's cache; `option` is the
    command-line option that named the repo, for the error messages."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES + LEGACY_HUB_FILES))
    except LocalEntryNotFoundError as error:
        raise ValueError(
            f"{option} {repo_id!r} is not a local folder, and the Hub repo of that name could not be "
            f"fetched ({error}). Check the path, or go online (unset HF_HUB_OFFLINE) to download it once."
        ) from error
    except HfHubHTTPError as error:
        raise ValueError(
            f"{option} {repo_id!r} is not a local folder, and the Hub answered: {error}. Check the "
            "spelling (a Hub repo id is namespace/name, e.g. google/vit-base-patch16-224-in21k), or log in for a "
            "private repo."
        ) from error
    return folder


def locate(source: str, revision: str | None = None, option: str = "--model_name_or_path") -> tuple[Path, str | None]:
    """The local folder of `source`, and its Hub repo id when it came from the Hub; `option` names it in errors."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path, None
    if path.exists():
        raise ValueError(
            f"{option} {source!r} is a file; give the folder that holds the checkpoint with its "
            "config.json (a bare timm checkpoint file needs `hf-vit convert --from timm --timm-model NAME` first)."
        )
    if not is_hub_repo_id(source):
        raise ValueError(
            f"{option} {source!r}: no such folder, and not a Hub repo id (namespace/name). Give a model "
            "folder or a Hub repo id."
        )
    return download_repo(source, revision, option), source


def source_kind(folder: Path, source: str) -> str:
    """'hf_vit', 'transformers', 'deit' or 'timm', from the folder's config.json; a clear error for anything else."""
    if (folder / "adapter_config.json").is_file():
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        raise ValueError(
            f"--model_name_or_path {source!r} is a PEFT adapter (adapter_config.json), not a model. Fine-tune its "
            f"base model ({base!r}) with --lora_r to train a new adapter, or merge the adapter into its base first "
            "(PeftModel.from_pretrained(base, adapter).merge_and_unload(), or a run with --merge_lora True)."
        )
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"--model_name_or_path {source!r} has no config.json: it is not a model folder. Give an hf_vit, "
            "transformers ViT/DeiT or timm model folder or Hub repo."
        )
    config = json.loads(config_file.read_text())
    model_type = config.get("model_type")
    if model_type == HfViTConfig.model_type:
        return "hf_vit"
    if model_type in ("vit", "deit"):
        return "transformers" if model_type == "vit" else "deit"
    if model_type is None and "architecture" in config:  # timm's config.json (`save_for_hf`, timm Hub repos)
        return "timm"
    raise ValueError(
        f"--model_name_or_path {source!r} is not a ViT checkpoint (config.json: model_type={model_type!r}"
        f"{', architectures=' + str(config.get('architectures')) if config.get('architectures') else ''}). "
        "hf_vit fine-tunes hf_vit models, transformers ViT and DeiT, and timm VisionTransformer checkpoints."
    )


def read_lineage(folder: Path, repo_id: str | None, kind: str) -> Lineage:
    """The Hub repo the weights come from and their licence: the repo itself when downloaded; for a local folder
    what it knows of itself: huggingface_hub's cache layout, or, for an hf_vit folder, the `base_model` of its card
    (a conversion holds its source's weights). Never a local path. A timm folder's own `hf_hub_id` is not taken:
    `save_for_hf` writes the architecture's default one whatever the weights are."""
    card_data = {}
    if (folder / "README.md").is_file():
        from huggingface_hub import ModelCard

        try:
            card_data = ModelCard.load(folder / "README.md").data.to_dict()
        except Exception as error:  # a card without YAML metadata, or unparsable: the lineage is then unknown
            logger.info(f"{folder / 'README.md'}: no card metadata read ({error})")
    candidates = [repo_id]
    cached = CACHE_SNAPSHOT.search(Path(os.path.abspath(folder)).as_posix())
    candidates.append(f"{cached.group(1)}/{cached.group(2)}" if cached else None)
    if kind == "hf_vit":
        base_of_card = card_data.get("base_model")
        candidates.append(
            base_of_card[0] if isinstance(base_of_card, list) and len(base_of_card) == 1 else base_of_card
        )
    base_model = next((name for name in candidates if isinstance(name, str) and is_hub_repo_id(name)), None)
    licence = card_data.get("license")
    if licence is None and kind == "timm" and base_model is not None:
        licence = (json.loads((folder / "config.json").read_text()).get("pretrained_cfg") or {}).get("license")
    return Lineage(base_model=base_model, license=licence if isinstance(licence, str) else None)


def _converted(kind: str, folder: Path, source: str):
    """A transformers, DeiT or timm folder through `hf_vit.convert`, checked against the source library."""
    from .convert import convert

    options = {}
    if kind in ("transformers", "deit"):
        # ViTModel's tanh pooler is not used by image classification (transformers' own classifier drops it too).
        options["drop_pooler"] = True
    try:
        converted = convert(kind, os.fspath(folder), **options)
    except ImportError as error:
        raise ValueError(
            f"--model_name_or_path {source!r} is a {kind} checkpoint; converting it needs {error.name or 'timm'}: "
            "pip install 'hf_vit[convert]'."
        ) from error
    except ValueError as error:  # the converter names the weight or option hf_vit has no counterpart for
        raise ValueError(f"--model_name_or_path {source!r} cannot be fine-tuned: {error}") from error
    difference = converted.check(num_images=1)
    if difference > CONVERSION_TOLERANCE:
        raise ValueError(
            f"--model_name_or_path {source!r}: the converted model differs from the {kind} model by "
            f"{difference:.2e} (more than {CONVERSION_TOLERANCE:g}); please report it with the checkpoint."
        )
    return converted, difference


def load_pretrained(source: str, revision: str | None = None) -> PretrainedViT:
    """Load (and, for other formats, convert) the model `source` names, without adapting it yet."""
    folder, repo_id = locate(source, revision)
    kind = source_kind(folder, source)
    lineage = read_lineage(folder, repo_id, kind)
    if kind == "hf_vit":
        model = HfViTForImageClassification.from_pretrained(folder)
        processor = None
        if (folder / "preprocessor_config.json").is_file():
            from transformers import AutoImageProcessor

            # The processor's own class (a converted timm folder holds a BitImageProcessor), not ViT's by force.
            processor = AutoImageProcessor.from_pretrained(folder)
        return PretrainedViT(model, processor, kind, source, lineage)
    converted, difference = _converted(kind, folder, source)
    message = (
        f"--model_name_or_path {source}: converted in memory from a {kind} checkpoint ({converted.source}) by "
        f"hf_vit.convert, max |logit difference| against {kind if kind != 'deit' else 'transformers'}: "
        f"{difference:.1e}; preprocessing carried: {describe_processor(converted.image_processor)}"
    )
    logger.warning(message)
    lineage.converted_from = kind
    return PretrainedViT(converted.model, converted.image_processor, kind, source, lineage)


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """'384' -> (384, 384); '384x256' or '384,256' -> (384, 256) (height, width)."""
    if text is None:
        return None
    parts = re.split(r"[x,]", str(text).strip().lower())
    if not 1 <= len(parts) <= 2 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise ValueError(
            f"--image_size {text!r} is not a size: give SIZE or HEIGHTxWIDTH in pixels, e.g. 384 or 384x256."
        )
    height, width = (int(parts[0]), int(parts[-1]))
    return height, width


def check_image_size(config: HfViTConfig, image_size: tuple[int, int], source: str) -> None:
    """Patches must tile the image (a convolutional stem pads, so any size works with one)."""
    if config.stem_channels:
        return
    patch_h, patch_w = config.patch_hw
    if image_size[0] % patch_h or image_size[1] % patch_w:
        fit = f"{image_size[0] // patch_h * patch_h or patch_h}x{image_size[1] // patch_w * patch_w or patch_w}"
        raise ValueError(
            f"--image_size {image_size[0]}x{image_size[1]}: the patch size {patch_h}x{patch_w} of "
            f"{source} does not divide it; use multiples of the patch size, e.g. {fit}."
        )


def finetuning_config(pretrained: PretrainedViT, changes: dict) -> HfViTConfig:
    """The pretrained model's config with `changes` (labels, overrides, image_size), built anew so that it is
    validated like any config."""
    fields = pretrained.model.config.to_dict()
    for key in ("num_labels", "architectures", "transformers_version"):  # written anew on save
        fields.pop(key, None)
    if "id2label" in changes:
        fields.pop("label2id", None)  # follows from the new id2label
    return HfViTConfig.from_dict({**fields, **changes})


def _body_shapes(model: HfViTForImageClassification) -> dict[str, tuple]:
    """Shapes of the weights that carry over (the head may start anew, the positions are resampled)."""
    state = model.state_dict()
    return {key: tuple(state[key].shape) for key in state if not key.startswith(HEAD_PREFIXES) and key != POSITIONS_KEY}


def check_overrides_fit(pretrained: PretrainedViT, overrides: dict) -> None:
    """Config overrides that would change the shape of a pretrained weight are an error, found on a weightless
    (meta device) model before any data is loaded."""
    if not overrides:
        return
    with torch.device("meta"):
        target = HfViTForImageClassification(finetuning_config(pretrained, overrides))
    wanted, present = _body_shapes(target), _body_shapes(pretrained.model)
    wrong = sorted(key for key in wanted.keys() | present.keys() if wanted.get(key) != present.get(key))
    if wrong:
        shown = "; ".join(
            f"{key}: {present.get(key)} in the checkpoint, {wanted.get(key)} configured" for key in wrong[:4]
        )
        raise ValueError(
            f"--model_name_or_path {pretrained.source!r}: weights do not fit the configured shapes ({shown}). Only "
            "the classification head can start anew and --image_size resamples the positions; drop the "
            "--config_overrides that change the body's shapes."
        )


def config_label_names(config: HfViTConfig) -> list[str]:
    return [str(name) for _, name in sorted(config.id2label.items(), key=lambda item: int(item[0]))]


def head_rows(checkpoint_labels: list[str], dataset_labels: list[str]) -> list[int] | None:
    """Which row of the checkpoint's head serves each of the data set's labels, or None when the head cannot serve
    them and starts anew: another count, or other names (a head for shirts predicts nothing about digits, and
    starting from it is worse than starting from zero). The same names in another order are reordered; a checkpoint
    whose labels have no names (LABEL_0, ...) is taken to be in the data set's order."""
    if len(checkpoint_labels) != len(dataset_labels):
        return None
    if all(UNNAMED_LABEL.fullmatch(name) for name in checkpoint_labels):
        return list(range(len(dataset_labels)))
    if sorted(checkpoint_labels) != sorted(dataset_labels):
        return None
    return [checkpoint_labels.index(name) for name in dataset_labels]


def finetuning_model(pretrained: PretrainedViT, config: HfViTConfig) -> HfViTForImageClassification:
    """A model of `config` holding the pretrained weights: the head kept for the same labels (its rows reordered
    to the data set's order), started anew (hf_vit's zero init) for other labels (see `head_rows`), and position
    embeddings for another grid resampled once (bicubic, antialiased: what the model does at run time for another
    input size). Any other weight that does not fit is an error."""
    source_model = pretrained.model
    state = {key: value.detach().clone() for key, value in source_model.state_dict().items()}
    rows = head_rows(config_label_names(source_model.config), config_label_names(config))
    if rows is None:
        state = {key: value for key, value in state.items() if not key.startswith(HEAD_PREFIXES)}
    else:
        state.update({key: value[rows] for key, value in state.items() if key.startswith(HEAD_PREFIXES)})
    if POSITIONS_KEY in state and tuple(config.grid_size) != tuple(source_model.config.grid_size):
        with torch.no_grad():
            state[POSITIONS_KEY] = source_model.vit.embeddings.positions_for_grid(*config.grid_size).detach().clone()
    model = HfViTForImageClassification(config)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a shape changed by an override
        shapes = "; ".join(line.strip() for line in str(error).splitlines() if "size mismatch" in line)
        raise ValueError(
            f"--model_name_or_path {pretrained.source!r}: weights do not fit the configured shapes ({shapes}). Only "
            "the classification head can start anew and --image_size resamples the positions; drop the "
            "--config_overrides that change the body's shapes."
        ) from error
    missing = [key for key in missing if not key.startswith(HEAD_PREFIXES)]
    if missing or unexpected:
        raise ValueError(
            f"--model_name_or_path {pretrained.source!r}: the configured model lacks {unexpected[:6]} or the "
            f"checkpoint lacks {missing[:6]}; drop the --config_overrides that change the architecture."
        )
    return model


def finetuning_processor(pretrained: PretrainedViT, config: HfViTConfig):
    """The source's processor at the config's input size (its resize rule, crop, resample, mean and std kept), or
    hf_vit's default processor when the source has none."""
    if pretrained.processor is None:
        logger.warning(f"{pretrained.source} has no preprocessor_config.json: using hf_vit's default processor.")
        return build_image_processor(config)
    return processor_for_size(pretrained.processor, config.image_hw)


__all__ = [
    "Lineage",
    "PretrainedViT",
    "check_image_size",
    "check_overrides_fit",
    "config_label_names",
    "finetuning_config",
    "finetuning_model",
    "finetuning_processor",
    "head_rows",
    "is_hub_repo_id",
    "load_pretrained",
    "parse_image_size",
]
