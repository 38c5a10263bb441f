"""Shared test helpers: tiny configs and a Python subprocess in which hf_vit cannot be imported."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Prepended to code run by `run_without_hf_vit`: any import of hf_vit fails, however it is installed (editable or
# not), so the code can only reach the model through transformers' remote-code loading.
_BLOCK_HF_VIT = """
import importlib.abc
import sys


class _BlockHfVit(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_vit" or name.startswith("hf_vit."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _BlockHfVit())
try:
    import hf_vit  # noqa: F401
    raise SystemExit("hf_vit is importable in the subprocess; the remote-code test would prove nothing")
except ModuleNotFoundError:
    pass
"""


def run_without_hf_vit(code: str, cwd, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (isolated mode, cwd outside the repo, empty HF_HOME) where hf_vit is not
    importable. Raises with the subprocess's output when it fails."""
    cwd = os.fspath(cwd)
    # `env`, when given, is the whole environment (e.g. one that talks to the local Hub server); else offline.
    full_env = dict(env) if env is not None else {**os.environ, "HF_HUB_OFFLINE": "1"}
    full_env.setdefault("HF_HOME", os.path.join(cwd, "hf_home"))
    result = subprocess.run(
        [sys.executable, "-I", "-c", _BLOCK_HF_VIT + code],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def last_json_line(text: str):
    """The subprocess protocol: the last stdout line is a JSON document."""
    return json.loads(text.strip().splitlines()[-1])


def float32_tolerance(reference) -> float:
    """Max |difference| allowed between two float32 computations of the same function (a conversion against its
    source, remote code against the installed model). Libraries and CPU kinds sum products in different orders and
    round each step to float32 (eps 1.2e-7); through a few layers that compounds to about 1e-6 of the values' size.
    So: 1e-5 of the largest reference magnitude, and at least 1e-5. A misplaced weight moves the logits by a large
    fraction of their size (test_convert.py shows it is caught)."""
    return 1e-5 * max(1.0, float(abs(reference).max()))


def assert_float32_close(ours, reference) -> None:
    ours, reference = torch.as_tensor(ours), torch.as_tensor(reference)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    difference = (ours - reference).abs().max().item()
    assert difference <= float32_tolerance(reference), (
        f"max |difference| {difference:.3g} over {reference.abs().max():.3g}"
    )


def shapes_images(count: int, size: int = 16, seed: int = 0) -> tuple[list, list[str]]:
    """Two easy string-labelled classes: a bright square in the top-left or in the bottom-right corner."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index in range(count):
        label = ["top_left", "bottom_right"][index % 2]
        pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        half = size // 2
        if label == "top_left":
            pixels[:half, :half] = 230
        else:
            pixels[half:, half:] = 230
        images.append(PILImage.fromarray(pixels, "RGB"))
        labels.append(label)
    return images, labels


def photo(width: int, height: int, seed: int, mode: str = "RGB") -> PILImage.Image:
    """Smooth colour fields with noise: like a photo to a JPEG encoder, unlike flat colours or pure noise."""
    rng = np.random.default_rng(seed)
    field = PILImage.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((width, height), 3)
    noisy = np.asarray(field).astype(np.int16) + rng.integers(-8, 9, (height, width, 3), dtype=np.int16)
    return PILImage.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).convert(mode)


def tiny_config(**overrides):
    from hf_vit import HfViTConfig

    fields = dict(
        image_size=16,
        patch_size=4,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
    )
    return HfViTConfig(**{**fields, **overrides})


def randomize_head(model):
    """The head starts at zero by design; tests need logits that differ between classes and inputs."""
    if not isinstance(model.classifier, torch.nn.Linear):
        return model
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5)
        model.classifier.bias.normal_(0, 0.5)
    return model


def save_tiny_classifier(folder, id2label: dict):
    """A tiny classifier with a random head for `id2label`, saved with its processor (seeded): a model folder to
    classify with."""
    from hf_vit import HfViTForImageClassification, build_image_processor, save_model_folder

    torch.manual_seed(0)
    model = randomize_head(HfViTForImageClassification(tiny_config(num_labels=len(id2label), id2label=id2label)))
    save_model_folder(model.eval(), build_image_processor(model.config), folder)
    return folder


@pytest.fixture
def tiny_model():
    from hf_vit import HfViTForImageClassification

    torch.manual_seed(0)
    return randomize_head(HfViTForImageClassification(tiny_config())).eval()
