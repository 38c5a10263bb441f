"""`hf-vit demo` (the Gradio app), the Space files that serve it on the Hub, and the app in a real browser."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import last_json_line, run_without_hf_vit, tiny_config
from PIL import Image as PILImage

from hf_vit import HfViTForImageClassification, build_image_processor, save_model_folder
from hf_vit.demo import main as demo_main
from hf_vit.prediction import predict

pytest.importorskip("gradio", reason="the demo needs Gradio: pip install -e '.[demo]' (or '.[dev]')")

LABELS = {0: "cat", 1: "dog", 2: "bird", 3: "fish", 4: "frog"}
CHROMIUM = "/usr/bin/chromium"
BROWSER_SETUP = "apt-get install -y chromium (Debian's) and pip install playwright (it drives the system browser)"


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    """A tiny model folder whose predictions differ from image to image (a large random head), with register
    tokens; and an examples/ folder of solid-colour images beside it."""
    folder = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    model = HfViTForImageClassification(tiny_config(num_labels=5, id2label=LABELS, num_register_tokens=1)).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 5.0)
    save_model_folder(model, build_image_processor(model.config), folder / "model")
    (folder / "examples").mkdir()
    for name, color in {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230), "gray": (90,) * 3}.items():
        PILImage.new("RGB", (32, 32), color).save(folder / "examples" / f"{name}.png")
    return folder


def example_images(demo_model: Path) -> list[str]:
    return sorted(str(path) for path in (demo_model / "examples").iterdir())


def two_images_with_different_labels(demo_model: Path) -> tuple[list[str], list[str]]:
    images = example_images(demo_model)
    labels = [scores[0]["label"] for scores in predict(str(demo_model / "model"), images, top_k=1)]
    for index in range(1, len(images)):
        if labels[index] != labels[0]:
            return [images[0], images[index]], [labels[0], labels[index]]
    raise AssertionError(f"the test model gives one label to every example: {labels}")


def test_classifier_gives_the_labels_of_predict_and_an_overlay(demo_model):
    from hf_vit.demo_app import make_classifier
    from hf_vit.explain import load_model_and_processor

    classify = make_classifier(*load_model_and_processor(str(demo_model / "model")))
    images = example_images(demo_model)
    for image, expected in zip(images, predict(str(demo_model / "model"), images, top_k=5), strict=True):
        labels, overlay = classify(PILImage.open(image))
        assert list(labels) == [entry["label"] for entry in expected]
        np.testing.assert_allclose(list(labels.values()), [entry["score"] for entry in expected], atol=1e-5)
        assert overlay.mode == "RGB" and min(overlay.size) >= 384


def test_bad_examples_and_a_missing_gradio_are_named_with_the_fix(demo_model, tmp_path, capsys):
    model = str(demo_model / "model")
    broken = tmp_path / "examples" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"not an image")
    assert demo_main(["--model", model, "--examples", str(broken.parent)]) == 1
    assert str(broken) in capsys.readouterr().err
    assert demo_main(["--model", model, "--examples", str(tmp_path / "nowhere")]) == 1
    assert "no such folder" in capsys.readouterr().err

    block_gradio = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'gradio':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from hf_vit.cli import main\n"
        f"sys.exit(main(['demo', '--model', {model!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", block_gradio], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "needs Gradio" in result.stderr and "pip install 'hf_vit[demo]'" in result.stderr


def test_space_files_serve_the_same_demo_without_hf_vit(demo_model, tmp_path):
    from hf_vit.space import write_space_folder

    model = str(demo_model / "model")
    space = write_space_folder(tmp_path / "space", model_id=model, examples=demo_model / "examples")
    names = {str(path.relative_to(space)) for path in space.rglob("*") if path.is_file()}
    assert {"app.py", "requirements.txt", "README.md", "hf_vit_demo/attention_maps.py", "hf_vit_demo/demo_app.py",
            "examples/red.png"} <= names  # fmt: skip
    assert "sdk: gradio" in (space / "README.md").read_text()
    images = example_images(demo_model)
    code = f"""
import json, sys
sys.path.insert(0, {str(space)!r})
from PIL import Image
import app  # builds the model and the Gradio app as the Space does, through transformers' remote code

assert type(app.model).__module__.startswith("transformers_modules"), type(app.model).__module__
results = [app.classify(Image.open(path)) for path in {images!r}]
print(json.dumps({{"labels": [list(labels.items()) for labels, _ in results], "demo": type(app.demo).__name__,
                   "examples": len(app.demo.examples)}}))
"""
    result = last_json_line(run_without_hf_vit(code, tmp_path).stdout)
    assert result["demo"] == "Interface" and result["examples"] == len(images)
    for labels, expected in zip(result["labels"], predict(model, images, top_k=5), strict=True):
        assert [label for label, _ in labels] == [entry["label"] for entry in expected]
        np.testing.assert_allclose([score for _, score in labels], [entry["score"] for entry in expected], atol=1e-5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_page(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"hf-vit demo exited ({server.returncode}):\n{server.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"hf-vit demo did not serve {url} within {seconds} s")


def test_demo_in_a_real_browser(demo_model, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: {BROWSER_SETUP}")
    playwright = pytest.importorskip("playwright.sync_api", reason=f"playwright is not installed: {BROWSER_SETUP}")
    images, labels = two_images_with_different_labels(demo_model)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-m", "hf_vit.cli", "demo", "--model", str(demo_model / "model"), "--port", str(port),
               "--examples", str(demo_model / "examples")]  # fmt: skip
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)  # fmt: skip
    try:
        wait_for_page(url, server)
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url)
            shown = []
            for image in images:
                page.set_input_files("input[type=file]", image)
                page.get_by_role("button", name="Submit").click()
                label = page.locator("#top-labels [data-testid='label-output-value']")
                label.wait_for(timeout=60_000)
                shown.append(label.inner_text())
                page.get_by_role("button", name="Clear").click()
                playwright.expect(label).to_have_count(0)  # the next label read is the next image's
            page.set_input_files("input[type=file]", images[0])
            page.get_by_role("button", name="Submit").click()
            page.locator("#attention-overlay img").wait_for(timeout=60_000)
            page.screenshot(path=tmp_path / "demo.png", full_page=True)
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    assert shown == labels
    with PILImage.open(tmp_path / "demo.png") as screenshot:
        assert screenshot.size[0] == 1200 and screenshot.getextrema() != ((255, 255),) * 3  # a page, not blank
