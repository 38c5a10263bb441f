"""The Gradio app of `hf-vit demo` and of the Hub Spaces `hf-vit push --space` writes: an image (uploaded or an
example) -> its top-5 labels with scores and the attention rollout over it.

Like `attention_maps.py`, this file imports no other hf_vit module except that one (a Space carries both files in
a small package beside `app.py`), and Gradio only when the app is built: Gradio is an optional extra of hf_vit.
"""

from __future__ import annotations

import os
from pathlib import Path

from .attention_maps import explain_pixels, model_input_image, overlay, top_labels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TOP_K = 5


def make_classifier(model, processor, top_k: int = TOP_K):
    """A function: PIL image -> ({label: probability} of the top `top_k` labels, the rollout overlay as PIL)."""
    model.eval()

    def classify(image):
        if image is None:
            raise ValueError("No image: upload one or pick an example.")
        pixel_values = processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        maps = explain_pixels(model, pixel_values)
        labels = dict(top_labels(maps.probabilities[0], model.config.id2label, top_k))
        return labels, overlay(model_input_image(pixel_values[0], processor), maps.rollout[0], min_side=384)

    return classify


def example_files(folder: str | os.PathLike | None) -> list[str]:
    """The image files directly in `folder`, sorted by name; none when it is None or missing."""
    if folder is None or not Path(folder).is_dir():
        return []
    return [str(path) for path in sorted(Path(folder).iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]


def build_demo(classify, examples: list[str] = (), title: str = "hf_vit image classifier", queries: str = ""):
    """The Gradio interface around `classify` (from `make_classifier`); `queries` describes what the map shows."""
    import gradio as gr

    shown = f" from the {queries}" if queries else ""
    description = (
        f"Upload an image (or pick an example): the model's top-{TOP_K} labels, and its attention rollout{shown} "
        "(Abnar & Zuidema 2020) over the image the model saw: bright patches contributed most."
    )
    return gr.Interface(
        fn=classify,
        inputs=gr.Image(type="pil", image_mode="RGB", label="image"),
        outputs=[
            gr.Label(num_top_classes=TOP_K, label="top labels", elem_id="top-labels"),
            gr.Image(type="pil", label="attention rollout", elem_id="attention-overlay"),
        ],
        examples=[[path] for path in examples] or None,
        title=title,
        description=description,
        flagging_mode="never",
    )


__all__ = ["build_demo", "example_files", "make_classifier"]
