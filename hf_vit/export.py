"""`hf-vit export`: an hf_vit model folder or Hub repo as a plain transformers ViT folder, a timm folder or ONNX.

- `transformers`: `ViTForImageClassification` config and weights plus the model's image processor, for
  `pipeline("image-classification", model=DIR)` without remote code; options ViT lacks are refused by name.
- `timm`: timm's state dict and its Hub `config.json` (`architecture`, `model_args`, `pretrained_cfg`), for
  `timm.create_model("local-dir:DIR", pretrained=True)`.
- `onnx`: `torch.onnx.export` (Dynamo), dynamic batch, height and width, with the processor and labels beside it.

Each export is loaded back by its own library (onnxruntime for ONNX) and compared with hf_vit's logits before its
folder, written under a temporary name beside the output, is renamed into place: nothing is left half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cli_args import CommandParser
from .configuration_hf_vit import HfViTConfig
from .modeling_hf_vit import HfViTForImageClassification
from .processing import fsync_path, processor_output_size, size_fields
from .sources import locate

TARGETS = ("transformers", "timm", "onnx")
# Max |logit difference| against hf_vit, scaled by the largest logit when that exceeds 1: transformers and timm run
# the same float32 maths in another order; onnxruntime also fuses operations, which moves the rounding further.
EXACT_TOLERANCE = 1e-5
ONNX_TOLERANCE = 1e-4
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
ONNX_INSTALL = "pip install 'hf_vit[onnx]'"
TIMM_INSTALL = "pip install 'hf_vit[convert]'"
# timm's config.json names the norm layer but cannot hold its epsilon: VisionTransformer's LayerNorm has this one.
TIMM_LAYER_NORM_EPS = 1e-6
TIMM_ACTIVATIONS = {"gelu": None, "gelu_pytorch_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}  # None: timm's default
TIMM_SIZES = {192: "tiny", 384: "small", 512: "medium", 768: "base", 1024: "large", 1280: "huge"}


@dataclass
class Exported:
    """What `export` wrote: the folder, the measured max |logit difference| against hf_vit, notes for the user."""

    target: str
    output: Path
    max_abs_diff: float
    notes: list[str] = field(default_factory=list)


def _fail(source, message: str):
    raise ValueError(f"--model {source!r}: {message}")


def load_model(source: str, revision: str | None = None):
    """An hf_vit model (installed classes, never the folder's code files) and its image processor."""
    from transformers import AutoImageProcessor

    folder, _ = locate(source, revision, option="--model")
    if (folder / "adapter_config.json").is_file():
        _fail(
            source,
            "is a PEFT adapter (adapter_config.json), not a model. Merge it into its base model first "
            "(`hf-vit train ... --lora_r R --merge_lora True`, or PeftModel.from_pretrained(base, adapter)"
            ".merge_and_unload().save_pretrained(DIR) with the processor saved beside it), then export "
            "the merged folder.",
        )
    if not (folder / "config.json").is_file():
        _fail(source, "has no config.json: it is not a model folder. Give an hf_vit model folder or Hub repo.")
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type != HfViTConfig.model_type:
        _fail(
            source,
            f"is not an hf_vit model (config.json: model_type={model_type!r}). `hf-vit export` takes hf_vit "
            "folders: convert a transformers ViT/DeiT or timm checkpoint first (`hf-vit convert --from ... "
            "--source ... --output DIR`), then export DIR.",
        )
    if not (folder / "preprocessor_config.json").is_file():
        _fail(
            source,
            "has no preprocessor_config.json, and every export carries the model's preprocessing. Save the "
            "processor the model was trained with into the folder (processor.save_pretrained(DIR); hf_vit's "
            "default is hf_vit.build_image_processor(config)), then export again.",
        )
    model = HfViTForImageClassification.from_pretrained(folder).eval()
    return model, AutoImageProcessor.from_pretrained(folder)


def _inference_only(model: HfViTForImageClassification) -> list[str]:
    """Stochastic depth acts in training only: the exports are for inference and leave it out, saying so."""
    rate = model.config.drop_path_rate
    if not rate:
        return []
    model.config.drop_path_rate = 0.0
    return [f"drop_path_rate={rate} (stochastic depth, training only) is left out: the export is for inference."]


def _max_difference(model, run, shapes, tolerance: float, what: str) -> float:
    """Max |logit difference| between hf_vit and `run` on random pixels of each shape; above tolerance, an error."""
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for shape in shapes:
        pixels = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            reference = model(pixel_values=pixels).logits
            difference = (torch.as_tensor(run(pixels)) - reference).abs().max().item()
        if not reference.isfinite().all():
            raise ValueError(
                f"hf_vit's own logits on random images of shape {tuple(shape)} are NaN or inf: the "
                "model's weights are broken. Nothing was exported."
            )
        if not difference <= tolerance * max(1.0, reference.abs().max().item()):  # NaN fails too
            raise ValueError(
                f"the {what} export differs from hf_vit by {difference:.2e} on images of shape {tuple(shape)} (more "
                f"than {tolerance:g}); nothing was written. Please report it with the model's config.json."
            )
        worst = max(worst, difference)
    return worst


def _own_size_shapes(config: HfViTConfig, batch_sizes=(2,)) -> list[tuple[int, ...]]:
    return [(batch, config.num_channels, *config.image_hw) for batch in batch_sizes]


# ----------------------------------------------------------------------------------------------------------------------
# transformers
# ----------------------------------------------------------------------------------------------------------------------


def write_transformers(model, processor, folder: Path) -> tuple[float, list[str]]:
    from .convert import export_transformers

    try:
        vit = export_transformers(model, folder).eval()
    except ValueError as error:  # names each option ViT has no counterpart for
        raise ValueError(
            f"cannot export to transformers: {error} Export with --to onnx, which holds every hf_vit "
            "option, or --to timm."
        ) from error
    processor.save_pretrained(folder)
    notes = []
    if model.config.position_embedding == "sincos":
        notes.append(
            "The fixed sin-cos position table is saved as ViT's (learned) position embeddings: the same "
            "at the model's own size."
        )
    shapes = _own_size_shapes(model.config)
    return _max_difference(model, lambda x: vit(pixel_values=x).logits, shapes, EXACT_TOLERANCE, "transformers"), notes


# ----------------------------------------------------------------------------------------------------------------------
# timm
# ----------------------------------------------------------------------------------------------------------------------


def timm_model_args(config: HfViTConfig) -> dict:
    """`timm.create_model` arguments for the network, all JSON (what timm's config.json `model_args` holds)."""
    from .convert.from_timm import to_timm_kwargs

    kwargs = to_timm_kwargs(config)  # refuses, by name, what timm's VisionTransformer lacks
    if config.layer_norm_eps != TIMM_LAYER_NORM_EPS:
        raise ValueError(
            f"layer_norm_eps={config.layer_norm_eps:g}: timm's config.json can name a norm layer but not its epsilon, "
            f"and timm's ViT LayerNorm has {TIMM_LAYER_NORM_EPS:g}. Export with --to transformers or --to onnx, or "
            "in Python build the timm model with hf_vit.convert.export_timm(model) (the exact epsilon)."
        )
    for name in ("norm_layer", "act_layer", "drop_path_rate"):  # objects, or training-only
        kwargs.pop(name)
    kwargs = {key: value for key, value in kwargs.items() if not key.endswith("drop_rate")}
    activation = TIMM_ACTIVATIONS[config.hidden_act]
    if activation is not None:
        kwargs["act_layer"] = activation
    return {key: list(value) if isinstance(value, tuple) else value for key, value in kwargs.items()}


def timm_pretrained_cfg(processor, config: HfViTConfig) -> dict:
    """timm's eval preprocessing settings for the image processor's: resize (keeping the aspect ratio or not),
    center crop, interpolation, mean and std; an error for a processor timm's eval transform cannot reproduce."""
    from transformers.image_utils import PILImageResampling

    def refuse(reason):
        raise ValueError(
            f"the image processor ({type(processor).__name__}) {reason}; timm's pretrained_cfg cannot "
            "describe it. Export with --to transformers or --to onnx, which carry the processor as is."
        )

    height, width = processor_output_size(processor)
    if (height, width) != tuple(config.image_hw):
        refuse(f"makes {height}x{width} images but the model's image_size is {config.image_hw}")
    if not getattr(processor, "do_rescale", True) or abs(processor.rescale_factor - 1 / 255) > 1e-12:
        refuse("does not scale pixels by 1/255 as timm's ToTensor does")
    size = size_fields(processor.size)
    crop = getattr(processor, "do_center_crop", False)
    if size.get("shortest_edge"):  # resize the short side, then crop: timm's "center" mode
        if not crop:
            refuse("keeps each image's aspect ratio without a crop")
        crop_mode, resized = "center", (size["shortest_edge"], size["shortest_edge"])
    else:  # resize to height x width regardless of aspect ratio: timm's "squash"
        crop_mode, resized = "squash", (size["height"], size["width"])
    crop_pct = height / resized[0]
    if abs(width / resized[1] - crop_pct) > 1e-6 or crop_pct > 1:
        refuse(f"crops {height}x{width} out of {resized[0]}x{resized[1]} (timm crops one fraction of both sides)")
    interpolation = PILImageResampling(processor.resample).name.lower()
    if interpolation not in ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"):
        refuse(f"resamples with {interpolation}")
    normalize = getattr(processor, "do_normalize", True)
    return {
        "input_size": [config.num_channels, height, width],
        "fixed_input_size": True,
        "interpolation": interpolation,
        "crop_pct": crop_pct,
        "crop_mode": crop_mode,
        "mean": list(processor.image_mean) if normalize else [0.0] * config.num_channels,
        "std": list(processor.image_std) if normalize else [1.0] * config.num_channels,
        "num_classes": config.num_labels,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "custom_load": False,  # native timm state dict, not a .npz
    }


def write_timm(model, processor, folder: Path) -> tuple[float, list[str]]:
    import timm
    from safetensors.torch import save_file

    from .convert.from_timm import to_timm_state_dict

    config = model.config
    try:
        model_args = timm_model_args(config)
        pretrained_cfg = timm_pretrained_cfg(processor, config)
    except ValueError as error:
        raise ValueError(f"cannot export to timm: {error}") from error
    # Any vit_* entry builds VisionTransformer and model_args sets every size: the name only helps a reader.
    name = f"vit_{TIMM_SIZES.get(config.hidden_size)}_patch{config.patch_hw[0]}_{config.image_hw[0]}"
    architecture = name if timm.is_model(name) else "vit_base_patch16_224"
    timm_config = {
        "architecture": architecture,
        "num_classes": config.num_labels,
        "num_features": config.hidden_size,
        "global_pool": model_args["global_pool"],
        "model_args": model_args,
        "pretrained_cfg": pretrained_cfg,
    }
    if config.num_labels:
        timm_config["label_names"] = [config.id2label[index] for index in range(config.num_labels)]
    save_file(to_timm_state_dict(model), folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(timm_config, indent=2) + "\n")
    timm_model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    difference = _max_difference(model, timm_model, _own_size_shapes(config), EXACT_TOLERANCE, "timm")
    return difference, [f"timm architecture {architecture} with model_args setting every size."]


# ----------------------------------------------------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------------------------------------------------


class _Logits(torch.nn.Module):
    """The classifier with one tensor in and one out: ONNX inputs and outputs are plain tensors."""

    def __init__(self, model: HfViTForImageClassification):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def onnx_dynamic_shapes(config: HfViTConfig) -> dict:
    """Batch, height and width dynamic; height and width as multiples of the patch size (what the model accepts;
    a convolutional stem pads, so any size)."""
    from torch.export import Dim

    patch_h, patch_w = config.patch_hw
    if config.stem_channels:
        height, width = Dim("height", min=1), Dim("width", min=1)
    else:
        height, width = patch_h * Dim("grid_height", min=1), patch_w * Dim("grid_width", min=1)
    return {"pixel_values": {0: Dim("batch", min=1), 2: height, 3: width}}


def check_onnx_installed() -> None:
    """Before the model loads: each package the ONNX export and its check import."""
    import importlib

    missing = []
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"--to onnx needs {', '.join(missing)} (not installed): {ONNX_INSTALL}.")


def write_onnx(model, processor, folder: Path) -> tuple[float, list[str]]:
    import onnxruntime

    config = model.config
    channels, (height, width), (patch_h, patch_w) = config.num_channels, config.image_hw, config.patch_hw
    # Traced at another size than the model's own, so that the graph holds the position resampling that serves every
    # size (at the model's own size it gives the stored table back).
    example = torch.randn(2, channels, height + patch_h, width + patch_w)
    program = torch.onnx.export(
        _Logits(model).eval(),
        (example,),
        dynamo=True,
        input_names=["pixel_values"],
        output_names=["logits"],
        dynamic_shapes=onnx_dynamic_shapes(config),
        verbose=False,
    )
    program.save(folder / "model.onnx")
    processor.save_pretrained(folder)
    fields = json.loads(config.to_json_string(use_diff=True))  # what save_pretrained writes
    fields.pop("auto_map", None)  # the code files are not in an ONNX folder
    (folder / "config.json").write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")

    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])

    def run(pixels):
        return session.run(["logits"], {"pixel_values": pixels.numpy()})[0]

    shapes = _own_size_shapes(config, (1, 3)) + [(2, channels, height + 2 * patch_h, width)]
    difference = _max_difference(model, run, shapes, ONNX_TOLERANCE, "ONNX")
    step = "any size" if config.stem_channels else f"multiples of {patch_h}x{patch_w}"
    return difference, [f"Dynamic axes: batch, height and width ({step}; the model's own size is {height}x{width})."]


# ----------------------------------------------------------------------------------------------------------------------
# Writing the folder
# ----------------------------------------------------------------------------------------------------------------------

WRITERS = {"transformers": write_transformers, "timm": write_timm, "onnx": write_onnx}


def _check_output(output: Path, overwrite: bool, source: str) -> None:
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; give a folder path.")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ValueError(f"--output {output} is not empty; choose a new folder, or pass --overwrite to replace it.")
    if Path(source).is_dir() and output.exists() and output.resolve() == Path(source).resolve():
        raise ValueError(f"--output {output} is the model folder itself; export into another folder.")


def _publish(staging: Path, output: Path) -> None:
    """Move the complete export into place: files synced first, then one rename (the old folder set aside first
    when --overwrite replaces it)."""
    for path in staging.iterdir():
        fsync_path(path)
    if output.exists():
        replaced = output.with_name(f".{output.name}.hf_vit-replaced")
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(output, replaced)
        try:
            os.replace(staging, output)
        except BaseException:
            os.replace(replaced, output)  # the old folder back, whole
            raise
        shutil.rmtree(replaced)
    else:
        os.replace(staging, output)


def export(model_path: str, to: str, output, *, overwrite: bool = False, revision: str | None = None) -> Exported:
    """Export the hf_vit model at `model_path` (folder or Hub repo id) `to` "transformers", "timm" or "onnx", into
    the folder `output`; checked against hf_vit's logits before the folder appears."""
    if to not in TARGETS:
        raise ValueError(f"--to {to!r}: choose one of {', '.join(TARGETS)}.")
    if to == "onnx":
        check_onnx_installed()
    if to == "timm":
        try:
            import timm  # noqa: F401
        except ImportError as error:
            raise ImportError(f"--to timm needs timm (not installed): {TIMM_INSTALL}.") from error
    model_path, output = os.fspath(model_path), Path(output).expanduser().absolute()  # absolute: "." has a name
    _check_output(output, overwrite, model_path)
    model, processor = load_model(model_path, revision)
    notes = _inference_only(model)
    output.parent.mkdir(parents=True, exist_ok=True)
    # A fixed name beside the output (same filesystem, so publishing is a rename): a rerun clears what an
    # interrupted export left.
    staging = output.with_name(f".{output.name}.hf_vit-export")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        difference, more_notes = WRITERS[to](model, processor, staging)
        _publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Exported(to, output, difference, notes + more_notes)


LOAD_WITH = {
    "transformers": 'pipeline("image-classification", model="{output}")',
    "timm": 'timm.create_model("local-dir:{output}", pretrained=True)',
    "onnx": 'onnxruntime.InferenceSession("{output}/model.onnx")',
}


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="hf-vit export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an hf_vit model folder or Hub repo id")
    parser.add_argument("--to", required=True, choices=TARGETS, help="the format to write")
    parser.add_argument("--output", required=True, help="the folder to write (new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    parser.add_argument("--revision", help="Hub revision of --model")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        exported = export(args.model, args.to, args.output, overwrite=args.overwrite, revision=args.revision)
    except (ValueError, ImportError, OSError) as error:
        print(f"hf-vit export: {error}", file=sys.stderr)
        return 1
    tolerance = ONNX_TOLERANCE if args.to == "onnx" else EXACT_TOLERANCE
    print(
        f"wrote {exported.output} ({args.to}): max |logit difference| against hf_vit {exported.max_abs_diff:.2e} "
        f"(allowed {tolerance:g})"
    )
    for note in exported.notes:
        print(f"  {note}")
    print(f"load it with: {LOAD_WITH[args.to].format(output=exported.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
