"""`hf-vit demo`: a Gradio web app of a saved model, served locally: upload an image (or pick an example) and see its
top-5 labels with scores and the attention rollout over it. `--share` asks Gradio for a public link (its own
service). The app itself is `hf_vit.demo_app`, the same one `hf-vit push --space` puts in a Hub Space.

Gradio is an optional extra: `pip install 'hf_vit[demo]'`.
"""

import sys
from pathlib import Path

from .attention_maps import explained_queries
from .cli_args import CommandParser
from .demo_app import build_demo, example_files, make_classifier
from .explain import load_model_and_processor
from .images import read_image_file

INSTALL_HINT = "pip install 'hf_vit[demo]' (or pip install gradio)"


def require_gradio() -> None:
    """Gradio is importable, or an ImportError that says how to install it."""
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise ImportError(f"hf-vit demo needs Gradio, an optional extra of hf_vit: {INSTALL_HINT}.") from error


def checked_examples(folder: str | None) -> list[str]:
    """The image files of `--examples`, each decoded once so that a bad one is named before the app starts."""
    if folder is None:
        return []
    if not Path(folder).is_dir():
        raise ValueError(f"--examples {folder}: no such folder; give a folder of image files.")
    files = example_files(folder)
    if not files:
        raise ValueError(f"--examples {folder} holds no image files (.png, .jpg, ...); add some or leave it out.")
    for path in files:
        read_image_file(path)
    return files


def build(model: str, examples: str | None = None, title: str | None = None):
    """The Gradio app for a model folder or Hub repo (not yet launched)."""
    require_gradio()
    example_paths = checked_examples(examples)
    network, processor = load_model_and_processor(model)
    if network.config.num_labels < 1:
        raise ValueError(f"--model {model} has no classification head (num_labels=0); fine-tune it first.")
    return build_demo(
        make_classifier(network, processor),
        examples=example_paths,
        title=title or f"hf_vit: {Path(model).name}",
        queries=explained_queries(network.config)[1],
    )


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="hf-vit demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an hf_vit model folder or Hub repo id")
    parser.add_argument("--examples", help="a folder of example images shown under the upload box")
    parser.add_argument("--title", help="the page title; when not given, 'hf_vit: ' and the model's name")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    parser.add_argument("--share", action="store_true", help="also a public gradio.live link (Gradio's service)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        demo = build(args.model, args.examples, args.title)
    except (ImportError, ValueError, OSError) as error:
        print(f"hf-vit demo: {error}", file=sys.stderr)
        return 1
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0
