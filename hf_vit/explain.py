"""`hf-vit explain`: where a saved model looks. For each image, one PNG: the image as the model saw it with the top
labels, the attention rollout (Abnar & Zuidema 2020) and the last layer's attention per head, over the image; and
`explanations.json` with the predictions. The maths is in `hf_vit.attention_maps`.

`save_attention_grid` draws the training card's picture: test images with true and predicted labels over their
rollout maps.
"""

import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only

import matplotlib.pyplot as plt  # noqa: E402
from transformers import AutoImageProcessor  # noqa: E402

from .attention_maps import enlarged, explain_pixels, model_input_image, overlay, top_labels  # noqa: E402
from .cli_args import CommandParser  # noqa: E402
from .images import read_image_file, to_rgb  # noqa: E402
from .modeling_hf_vit import HfViTForImageClassification  # noqa: E402

RESULTS_FILE = "explanations.json"
PANEL_INCHES = 2.4


def load_model_and_processor(model: str):
    """An hf_vit model folder or Hub repo as (model in eval mode, image processor), through hf_vit's own classes (the
    folder's code files are never run). A folder without an image processor is an error saying how to add one."""
    try:
        loaded = HfViTForImageClassification.from_pretrained(model).eval()
    except OSError as error:
        if Path(model).is_dir():
            raise
        raise OSError(f"--model {model} is no folder here, and no Hub repo could be read: {error}") from error
    fix = (
        "Save one beside the weights, e.g. `hf_vit.build_image_processor(config).save_pretrained(FOLDER)` (the "
        "processor used in training), or write the folder with `hf_vit.save_model_folder`."
    )
    if Path(model).is_dir() and not (Path(model) / "preprocessor_config.json").is_file():
        raise ValueError(f"--model {model} has no image processor (no preprocessor_config.json). {fix}")
    try:
        processor = AutoImageProcessor.from_pretrained(model)
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0]
        raise ValueError(f"--model {model}: its image processor cannot be loaded ({reason}). {fix}") from error
    return loaded, processor


def _label_lines(predictions: list[tuple[str, float]]) -> str:
    return "\n".join(f"{score:.3f}  {label}" for label, score in predictions) or "no classification head"


def render_explanation(image, maps, index: int, id2label: dict, path: Path, title: str, top_k: int = 5) -> list:
    """One image's PNG: [input | top labels | rollout] on the first row, the last layer's heads below."""
    predictions = top_labels(maps.probabilities[index], id2label, top_k) if maps.probabilities.shape[1] else []
    heads = maps.last_layer_heads[index]
    columns = max(3, min(6, len(heads)))
    rows = 1 + -(-len(heads) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows + 0.6))
    for axis in axes.flat:
        axis.axis("off")
    axes[0, 0].imshow(enlarged(image))
    axes[0, 0].set_title("model input", fontsize=9)
    axes[0, 1].text(0.0, 0.5, _label_lines(predictions), family="monospace", fontsize=9, va="center")
    axes[0, 1].set_title("top labels", fontsize=9)
    axes[0, 2].imshow(overlay(image, maps.rollout[index]))
    axes[0, 2].set_title("attention rollout", fontsize=9)
    for head, axis in enumerate(axes.flat[columns : columns + len(heads)]):
        axis.imshow(overlay(image, heads[head]))
        axis.set_title(f"last layer, head {head}", fontsize=9)
    share = (f"; {maps.prefix_share[index]:.0%} of the rollout goes to the {maps.prefix_tokens} token(s), not drawn"
             if maps.prefix_tokens else "")  # fmt: skip
    figure.suptitle(textwrap.fill(f"{title}: attention of the {maps.queries}{share}", 18 * columns), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return predictions


def _output_names(images: list[str]) -> list[str]:
    """`<stem>.png` per image; a repeated stem gets `-2`, `-3`, ... in the order given."""
    names, seen = [], {}
    for image in images:
        stem = Path(image).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}.png" if seen[stem] == 1 else f"{stem}-{seen[stem]}.png")
    return names


def explain(model: str, images: list[str], output: str | os.PathLike, top_k: int = 5) -> list[dict]:
    """Write one PNG per image and `explanations.json` into `output`; return the JSON's entries. Every image is
    decoded before the model loads, and the files are written into a temporary folder beside `output` and moved in
    at the end, so a bad image or a failure leaves `output` as it was."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; give a folder (created if missing).")
    missing = [image for image in images if not Path(image).is_file()]
    if missing:
        raise FileNotFoundError(f"Image files not found: {missing}; give paths of existing image files.")
    pictures = [read_image_file(image) for image in images]
    network, processor = load_model_and_processor(model)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-explaining-", dir=output.parent))
    try:
        entries = []
        for image, picture, name in zip(images, pictures, _output_names(images), strict=True):
            pixel_values = processor(images=picture, return_tensors="pt")["pixel_values"]
            maps = explain_pixels(network, pixel_values)
            seen = model_input_image(pixel_values[0], processor)
            predictions = render_explanation(seen, maps, 0, network.config.id2label, staging / name, image, top_k)
            entries.append({
                "image": image, "picture": name, "shown": f"attention of the {maps.queries}",
                "non_patch_share": round(float(maps.prefix_share[0]), 4),
                "predictions": [{"label": label, "score": score} for label, score in predictions],
            })  # fmt: skip
        (staging / RESULTS_FILE).write_text(json.dumps({"model": str(model), "images": entries}, indent=2) + "\n")
        output.mkdir(exist_ok=True)
        for path in staging.iterdir():
            os.replace(path, output / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entries


def save_attention_grid(model, processor, images, true_labels: list[str], path: str | os.PathLike) -> None:
    """The training card's picture: each image (a column) with its true and predicted label (green when they agree,
    red otherwise) above its attention rollout. `images` are PIL images as the data set holds them (any mode, converted
    as in training); `model` is any hf_vit model (a LoRA `PeftModel` too). Written to a temporary name first, then
    renamed into `path`."""
    path = Path(path)
    pixel_values = processor(images=[to_rgb(image) for image in images], return_tensors="pt")["pixel_values"]
    was_training = model.training
    model.eval()
    try:
        maps = explain_pixels(model, pixel_values)
    finally:
        model.train(was_training)
    figure, axes = plt.subplots(2, len(images), figsize=(1.9 * len(images), 4.4), squeeze=False)
    for column, true_label in enumerate(true_labels):
        seen = model_input_image(pixel_values[column], processor)
        predicted = top_labels(maps.probabilities[column], model.config.id2label, 1)[0][0]
        axes[0, column].imshow(enlarged(seen))
        axes[0, column].set_title(f"true: {true_label}\npredicted: {predicted}", fontsize=9,
                                  color="green" if predicted == true_label else "red")  # fmt: skip
        axes[1, column].imshow(overlay(seen, maps.rollout[column]))
    for axis in axes.flat:
        axis.axis("off")
    text = f"Attention rollout (Abnar & Zuidema 2020) of the {maps.queries}; bright: most used"
    figure.suptitle(textwrap.fill(text, 25 * len(images)), fontsize=9)
    figure.tight_layout()
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, dpi=100, format="png")
    plt.close(figure)
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="hf-vit explain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an hf_vit model folder or Hub repo id")
    parser.add_argument("--output", required=True, help="folder for the PNGs and explanations.json (created)")
    parser.add_argument("--top_k", type=int, default=5, help="labels to show per image")
    parser.add_argument("images", nargs="+", help="image files")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.top_k < 1:
        parser.error(f"--top_k {args.top_k} must be 1 or more.")
    try:
        entries = explain(args.model, args.images, args.output, args.top_k)
    except (ValueError, OSError) as error:
        print(f"hf-vit explain: {error}", file=sys.stderr)
        return 1
    for entry in entries:
        best = entry["predictions"][0] if entry["predictions"] else {"label": "-", "score": float("nan")}
        print(f"{entry['image']}: {best['label']} ({best['score']:.4f}) -> {Path(args.output) / entry['picture']}")
    print(f"shown: {entries[0]['shown']}")
    return 0
