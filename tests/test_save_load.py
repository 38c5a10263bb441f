"""Saving and loading through every door transformers offers, including remote code without hf_vit installed."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import last_json_line, randomize_head, run_without_hf_vit, tiny_config
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification, pipeline

from hf_vit import HfViTForImageClassification, HfViTModel, build_image_processor, save_model_folder

LABELS = {0: "apple", 1: "bus", 2: "cat", 3: "dog", 4: "eel"}


def sample_images():
    """One PIL image of each mode a user may hand to the pipeline, of odd sizes."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 23, 3), dtype=np.uint8), "RGB")
    return {
        "RGB": rgb,
        "L": rgb.convert("L"),
        "RGBA": rgb.convert("RGBA"),
        "P": rgb.convert("P"),
        "tiny": rgb.resize((1, 1)),
    }


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = randomize_head(
        HfViTForImageClassification(tiny_config(num_labels=5, id2label=LABELS, num_register_tokens=1))
    )
    save_model_folder(model.eval(), build_image_processor(model.config), folder)
    return model, folder


def test_saved_folder_is_complete_and_pickle_free(saved_model):
    model, folder = saved_model
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "configuration_hf_vit.py", "modeling_hf_vit.py",
            "preprocessor_config.json"} <= names  # fmt: skip
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "hf_vit"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_hf_vit.HfViTConfig",
        "AutoModel": "modeling_hf_vit.HfViTModel",
        "AutoModelForImageClassification": "modeling_hf_vit.HfViTForImageClassification",
    }
    assert config["id2label"]["2"] == "cat"
    weights = load_file(folder / "model.safetensors")
    torch.testing.assert_close(weights["classifier.weight"], model.classifier.weight.detach())
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 16, "width": 16} and processor["do_convert_rgb"] is True


def test_from_pretrained_reproduces_logits(saved_model):
    model, folder = saved_model
    pixels = torch.randn(3, 3, 16, 16)
    loaded = HfViTForImageClassification.from_pretrained(folder).eval()
    assert torch.equal(loaded(pixels).logits, model(pixels).logits)
    auto = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert type(auto) is HfViTForImageClassification
    assert torch.equal(auto(pixels).logits, model(pixels).logits)
    # The encoder alone loads from the classifier's folder (base_model_prefix "vit").
    encoder = HfViTModel.from_pretrained(folder).eval()
    torch.testing.assert_close(encoder(pixels).pooler_output, model.vit(pixels).pooler_output)


def test_in_process_pipeline_accepts_every_pil_mode(saved_model):
    model, folder = saved_model
    classify = pipeline("image-classification", model=str(folder))
    for mode, image in sample_images().items():
        top = classify(image, top_k=5)
        assert len(top) == 5 and {r["label"] for r in top} == set(LABELS.values()), mode
        assert abs(sum(r["score"] for r in top) - 1) < 1e-4


def test_remote_code_loading_without_hf_vit(saved_model, tmp_path):
    """A user with only transformers: Auto class and pipeline with trust_remote_code reproduce our logits."""
    model, folder = saved_model
    images = sample_images()
    for mode, image in images.items():
        image.save(tmp_path / f"{mode}.png")
    processor = build_image_processor(model.config)
    pixels = processor([images["RGB"]], return_tensors="pt")["pixel_values"]
    expected = model(pixels).logits[0].tolist()
    code = f"""
import json
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

folder = {str(folder)!r}
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
processor = AutoImageProcessor.from_pretrained(folder)
pixels = processor([Image.open("RGB.png")], return_tensors="pt")["pixel_values"]
with torch.no_grad():
    logits = model(pixels).logits[0].tolist()
encoder = AutoModel.from_pretrained(folder, trust_remote_code=True)
classify = pipeline("image-classification", model=folder, trust_remote_code=True)
tops = {{mode: classify(Image.open(mode + ".png"), top_k=1)[0]["label"] for mode in {list(images)!r}}}
print(json.dumps({{"logits": logits, "encoder": type(encoder).__name__, "tops": tops}}))
"""
    result = last_json_line(run_without_hf_vit(code, tmp_path).stdout)
    np.testing.assert_allclose(result["logits"], expected, atol=1e-5)
    assert result["encoder"] == "HfViTModel"
    assert result["tops"]["RGB"] == LABELS[int(np.argmax(expected))]
    assert set(result["tops"].values()) <= set(LABELS.values())


def test_hf_vit_info_command():
    result = subprocess.run(
        [sys.executable, "-m", "hf_vit.cli", "info"], capture_output=True, text=True, timeout=120, check=True
    )
    assert "| vit-base-patch16-224 | 224 | 16 | 768 | 12 | 12 | 86.57 | 35.128 |" in result.stdout
    assert "transformers" in result.stdout and "Device: CPU" in result.stdout
    assert "hf_vit.speedups.apply here: float32 CPU block linears on" in result.stdout
    unknown = subprocess.run([sys.executable, "-m", "hf_vit.cli", "nope"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "unknown command 'nope'" in unknown.stderr


def test_remote_code_loads_a_conv_stem_model_with_its_batchnorm_statistics(tmp_path):
    torch.manual_seed(0)
    model = randomize_head(HfViTForImageClassification(tiny_config(stem_channels=[8, 16])))
    pixels = torch.randn(2, 3, 16, 16)
    model.train()(pixels * 2 + 1)  # running statistics away from their initial 0 and 1
    model.eval()
    save_model_folder(model, build_image_processor(model.config), tmp_path / "model")
    torch.save(pixels, tmp_path / "pixels.pt")
    code = f"""
import json, torch
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
with torch.no_grad():
    print(json.dumps(model(torch.load({str(tmp_path / "pixels.pt")!r})).logits.tolist()))
"""
    logits = last_json_line(run_without_hf_vit(code, tmp_path).stdout)
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(pixels).logits.numpy(), atol=1e-5)


def test_fixed_sincos_positions_are_recomputed_when_a_model_is_loaded(tmp_path):
    # They are a buffer left out of the weights file, so loading must compute them again, not leave memory as found.
    torch.manual_seed(0)
    model = randomize_head(HfViTForImageClassification(tiny_config(position_embedding="sincos"))).eval()
    save_model_folder(model, build_image_processor(model.config), tmp_path / "model")
    pixels = torch.randn(2, 3, 16, 16)
    loaded = HfViTForImageClassification.from_pretrained(tmp_path / "model").eval()
    assert torch.equal(loaded.vit.embeddings.position_embeddings, model.vit.embeddings.position_embeddings)
    assert torch.equal(loaded(pixels).logits, model(pixels).logits)
    # Remote code (transformers 4.57 and the installed one): tests/test_portability.py.
