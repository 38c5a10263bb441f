"""A Hub Space that serves `hf-vit demo` for a model repository: `hf-vit push --space NAMESPACE/NAME`, or
`write_space_folder` to look at (or run) the files first.

The Space loads the model with transformers and the repository's own code (`trust_remote_code=True`), so it needs no
hf_vit install: it carries hf_vit's two self-contained demo files (`attention_maps.py`, `demo_app.py`) as a small
package `hf_vit_demo/`, and its `app.py` builds the same Gradio app as `hf-vit demo`.
"""

import json
import os
import shutil
from pathlib import Path

from .demo_app import example_files
from .images import read_image_file

PACKAGE = "hf_vit_demo"
CARRIED_FILES = ("attention_maps.py", "demo_app.py")
# The Space's own installs; Gradio itself comes from the Space's `sdk_version`.
REQUIREMENTS = ("torch", "transformers>=4.57", "matplotlib", "numpy", "pillow")

APP = '''"""Gradio demo of the image classifier {model_id} (an hf_vit model): top-5 labels and the attention rollout.
Written by `hf-vit push --space`; the model loads through transformers with its repository's own code."""

from pathlib import Path

from transformers import AutoImageProcessor, AutoModelForImageClassification

from hf_vit_demo.attention_maps import explained_queries
from hf_vit_demo.demo_app import build_demo, example_files, make_classifier

MODEL_ID = {model_id!r}

model = AutoModelForImageClassification.from_pretrained(MODEL_ID, trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained(MODEL_ID)
classify = make_classifier(model, processor)
demo = build_demo(
    classify,
    examples=example_files(Path(__file__).parent / "examples"),
    title={title!r},
    queries=explained_queries(model.config)[1],
)

if __name__ == "__main__":
    demo.launch()
'''

README = """---
title: {title_yaml}
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
models:
- {model_id}
---

# {title}

Top-5 labels and the attention rollout (Abnar & Zuidema 2020) of the image classifier
[{model_id}](https://huggingface.co/{model_id}), an hf_vit Vision Transformer. Upload an image or pick an example.
"""


def gradio_version() -> str:
    """The installed Gradio's version, which the Space will run (its `sdk_version`)."""
    try:
        import gradio
    except ImportError as error:
        raise ImportError(
            "A Space runs the Gradio version it names; hf_vit names the installed one, and Gradio is not installed: "
            "pip install 'hf_vit[demo]' (or pip install gradio)."
        ) from error
    return gradio.__version__


def space_files(model_id: str, examples: str | os.PathLike | None = None, title: str | None = None) -> dict[str, bytes]:
    """path in the Space -> content: app.py, requirements.txt, README.md with the Space metadata, the demo package,
    and the image files of `examples` under examples/."""
    if examples is not None and not Path(examples).is_dir():
        raise ValueError(f"--examples {examples}: no such folder; give a folder of image files.")
    title = title or f"{model_id.split('/')[-1]} (hf_vit)"
    version = gradio_version()
    here = Path(__file__).parent
    files = {
        "app.py": APP.format(model_id=model_id, title=title),
        "requirements.txt": "\n".join(REQUIREMENTS) + "\n",
        "README.md": README.format(
            title=title, title_yaml=json.dumps(title), model_id=model_id, gradio_version=version
        ),
        f"{PACKAGE}/__init__.py": '"""hf_vit\'s demo files (attention maps, the Gradio app), for this Space."""\n',
    }
    files = {name: text.encode("utf-8") for name, text in files.items()}
    for name in CARRIED_FILES:
        files[f"{PACKAGE}/{name}"] = (here / name).read_bytes()
    for path in example_files(examples):
        read_image_file(path)  # a file the Space could not show is named now, not after the upload
        files[f"examples/{Path(path).name}"] = Path(path).read_bytes()
    return files


def write_space_folder(folder: str | os.PathLike, model_id: str, examples=None, title: str | None = None) -> Path:
    """The Space's files in `folder` (which must not exist yet), written in a temporary folder beside it and renamed
    into place: `python app.py` in it serves the demo."""
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} exists; give a new folder for the Space's files.")
    files = space_files(model_id, examples, title)
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for name, content in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(content)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
