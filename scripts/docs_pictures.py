"""Draw the pictures of docs/inference.md from a trained model folder:

    hf-vit train --dataset digits --num_train_epochs 10 --output_dir digits-vit
    python scripts/docs_pictures.py --model digits-vit --dataset digits --output docs/images

- attention.png: `hf-vit explain` of the first test image (input, top labels, rollout, last layer's heads);
- attention_grid.png: `hf_vit.explain.save_attention_grid` of the first 8 test images (the training card's picture);
- demo.png: `hf-vit demo` in headless Chromium (Debian's `chromium`, driven by playwright) after one upload.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

from hf_vit.data import DataArguments, load_image_dataset
from hf_vit.explain import explain, load_model_and_processor, save_attention_grid

CHROMIUM = "/usr/bin/chromium"


def enlarged_copies(images, folder: Path, names: list[str]) -> list[str]:
    """Test images as PNG files, enlarged (nearest pixel) to about 128 px so that a person sees them on the page."""
    paths = []
    for image, name in zip(images, names, strict=True):
        factor = max(1, 128 // max(image.size))
        path = folder / f"{name}.png"
        image.convert("RGB").resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST).save(path)
        paths.append(str(path))
    return paths


def demo_screenshot(model: str, examples: Path, upload: str, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "hf_vit.cli", "demo", "--model", model, "--port", str(port), "--examples",
               str(examples), "--title", "hf_vit demo: handwritten digits"]  # fmt: skip
    server = subprocess.Popen(command, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(url)
            page.set_input_files("input[type=file]", upload)
            page.get_by_role("button", name="Submit").click()
            page.locator("#attention-overlay img").wait_for(timeout=120_000)
            page.screenshot(path=path, full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--output", default="docs/images")
    args = parser.parse_args()
    args.model = os.path.abspath(args.model)
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)

    test = load_image_dataset(DataArguments(dataset=args.dataset))["test"]
    label_names = test.features["label"].names
    rows = test.select(range(8))
    images, labels = list(rows["image"]), [label_names[index] for index in rows["label"]]

    network, processor = load_model_and_processor(args.model)
    save_attention_grid(network, processor, images, labels, output / "attention_grid.png")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "examples").mkdir()
        names = [f"test-{index}-label-{label}" for index, label in enumerate(labels)]
        files = enlarged_copies(images, scratch / "examples", names)
        os.chdir(scratch)  # the picture's title names the image as given: examples/NAME.png
        explain(args.model, [os.path.relpath(files[0])], scratch / "explained")
        shutil.copy(scratch / "explained" / f"{names[0]}.png", output / "attention.png")
        for extra in files[4:]:
            os.remove(extra)  # four examples on the page
        demo_screenshot(args.model, scratch / "examples", files[0], output / "demo.png")
    print(f"wrote {', '.join(str(output / name) for name in ('attention.png', 'attention_grid.png', 'demo.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
