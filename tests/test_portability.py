"""The Hub files load anywhere: a folder saved by hf_vit loads as remote code, with no hf_vit, under transformers
4.57 (the last 4.x, installed beside the suite on first use) and under the installed 5.x, with the same logits;
configs keep keys they do not know; `num_labels` + `ignore_mismatched_sizes` put a new head on a checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_float32_close, last_json_line, randomize_head, run_without_hf_vit, tiny_config

from hf_vit import HfViTConfig, HfViTForImageClassification, build_image_processor, save_model_folder

OLDEST_TRANSFORMERS = "4.57"
LABELS = {0: "cat", 1: "dog", 2: "fox", 3: "owl"}


def side_install(requirements: list[str], name: str) -> Path:
    """`pip install --target` into a cache folder kept between runs (the venv's torch is reused); skipped only when
    the package registry cannot be reached."""
    root = Path(os.environ.get("HF_VIT_TEST_CACHE", Path.home() / ".cache" / "hf_vit-tests"))
    target = root / name
    if (target / ".complete").exists():
        return target
    partial = root / f"{name}.partial-{os.getpid()}"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(partial),
         *requirements],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        unreachable = ("Could not find a version", "No matching distribution", "NewConnectionError", "ConnectError")
        if any(marker in result.stderr for marker in unreachable):
            pytest.skip(f"cannot install {requirements} (package registry unreachable): {result.stderr[-300:]}")
        raise AssertionError(f"pip install {requirements} failed:\n{result.stderr}")
    (partial / ".complete").touch()
    try:
        partial.rename(target)  # atomic: a concurrent run sees the complete folder or none
    except OSError:  # another run finished first
        pass
    return target


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A folder with the options a converted or trained model may carry, an unknown config key, and its logits."""
    folder = tmp_path_factory.mktemp("saved") / "model"
    config = tiny_config(
        num_labels=len(LABELS),
        id2label=LABELS,
        num_register_tokens=1,
        qk_norm=True,
        layerscale_init=0.1,
        drop_path_rate=0.1,
        pooling="mean",
    )
    config.note_from_the_author = "kept by every loader"
    torch.manual_seed(0)
    model = randomize_head(HfViTForImageClassification(config)).eval()
    save_model_folder(model, build_image_processor(config), folder)
    pixels = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    np.save(folder.parent / "pixels.npy", pixels.numpy())
    with torch.no_grad():
        logits = model(pixels).logits
    return folder, logits


@pytest.fixture(scope="module")
def expected_top(saved):
    """The installed hf_vit's pipeline on the image the remote-code runs classify."""
    from PIL import Image
    from transformers import AutoImageProcessor, pipeline

    folder, _ = saved
    model = HfViTForImageClassification.from_pretrained(folder)
    classifier = pipeline(
        "image-classification", model=model, image_processor=AutoImageProcessor.from_pretrained(folder)
    )
    return [entry["label"] for entry in classifier(Image.new("RGB", (40, 30), (200, 10, 10)), top_k=2)]


LOAD_AS_REMOTE_CODE = """
import json
import numpy as np
import torch
import transformers
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, pipeline

folder = {folder!r}
pixels = torch.from_numpy(np.load({pixels!r}))
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(pixel_values=pixels).logits
classifier = pipeline("image-classification", model=folder, trust_remote_code=True)
top = classifier(Image.new("RGB", (40, 30), (200, 10, 10)), top_k=2)
encoder = AutoModel.from_pretrained(folder, trust_remote_code=True)
new_head = AutoModelForImageClassification.from_pretrained(
    folder, trust_remote_code=True, num_labels=6, ignore_mismatched_sizes=True
)
same_body = all(
    torch.equal(tensor, model.state_dict()[name])
    for name, tensor in new_head.state_dict().items() if not name.startswith("classifier.")
)
print(json.dumps({{
    "transformers": transformers.__version__,
    "module": type(model).__module__,
    "logits": logits.tolist(),
    "top": [entry["label"] for entry in top],
    "encoder": type(encoder).__name__,
    "note": AutoConfig.from_pretrained(folder, trust_remote_code=True).note_from_the_author,
    "new_head": [list(new_head.classifier.weight.shape), new_head.classifier.weight.abs().sum().item()],
    "new_labels": new_head.config.num_labels,
    "same_body": same_body,
}}))
"""


@pytest.mark.parametrize("transformers_line", [OLDEST_TRANSFORMERS, "installed"])
def test_remote_code_loads_without_hf_vit(saved, expected_top, tmp_path, transformers_line):
    folder, expected = saved
    code = LOAD_AS_REMOTE_CODE.format(folder=str(folder), pixels=str(folder.parent / "pixels.npy"))
    if transformers_line != "installed":
        side = side_install([f"transformers=={transformers_line}.*", "huggingface_hub<1.0"], "transformers-4.57")
        code = f"import sys\nsys.path.insert(0, {str(side)!r})\n" + code
    result = last_json_line(run_without_hf_vit(code, tmp_path).stdout)
    if transformers_line != "installed":
        assert result["transformers"].startswith(transformers_line + ".")
    assert result["module"].startswith("transformers_modules")  # the folder's own code, not hf_vit's
    assert_float32_close(torch.tensor(result["logits"]), expected)
    assert result["top"] == expected_top
    assert result["encoder"] == "HfViTModel"
    assert result["note"] == "kept by every loader"
    assert result["new_head"] == [[6, 32], 0.0]  # a new head, zero-initialised as hf_vit's heads start
    assert result["new_labels"] == 6 and result["same_body"]


def test_unknown_config_keys_are_kept_and_saved_again(tmp_path):
    config = tiny_config()
    config.some_note = "x"
    config.save_pretrained(tmp_path)
    # Keys a transformers feature or a later release writes load too.
    written = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**written, "tie_word_embeddings": False, "future_key": [1, 2]}))
    loaded = HfViTConfig.from_pretrained(tmp_path)
    assert loaded.some_note == "x" and loaded.future_key == [1, 2]
    loaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["future_key"] == [1, 2]
    assert loaded.hidden_size == config.hidden_size


def test_own_fields_are_still_validated_on_load(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**written, "pooling": "cls", "use_class_token": False}))
    with pytest.raises(ValueError, match="pooling='cls' needs use_class_token=True"):
        HfViTConfig.from_pretrained(tmp_path)


def test_new_head_with_ignore_mismatched_sizes_and_a_clear_error_without(saved):
    folder, _ = saved
    original = HfViTForImageClassification.from_pretrained(folder)
    assert original.config.id2label == LABELS
    model = HfViTForImageClassification.from_pretrained(folder, num_labels=5, ignore_mismatched_sizes=True)
    assert model.config.num_labels == 5 and model.classifier.weight.shape == (5, 32)
    assert torch.count_nonzero(model.classifier.weight) == 0
    for name, tensor in model.vit.state_dict().items():
        assert torch.equal(tensor, original.vit.state_dict()[name]), name
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        HfViTForImageClassification.from_pretrained(folder, num_labels=5)


def test_hub_files_import_only_torch_transformers_and_each_other():
    package = Path(__file__).resolve().parents[1] / "hf_vit"
    for name in ("configuration_hf_vit.py", "modeling_hf_vit.py"):
        imports = [
            line.split()[1]
            for line in (package / name).read_text().splitlines()
            if line.startswith(("import ", "from ")) or line.startswith(("    from ", "    import "))
        ]
        roots = {module.split(".")[0] for module in imports}
        assert roots <= {"__future__", "collections", "torch", "transformers", ""}, (name, roots)
        text = (package / name).read_text()
        for forbidden in ("os.environ", "/proc/cpuinfo", "custom_op", "mkldnn", "platform"):
            assert forbidden not in text, (name, forbidden)


@pytest.mark.parametrize("transformers_line", [OLDEST_TRANSFORMERS, "installed"])
def test_fixed_sincos_positions_are_recomputed_by_remote_code(tmp_path, transformers_line):
    # A buffer left out of the weights file: every transformers line must compute it again on loading.
    torch.manual_seed(0)
    model = randomize_head(HfViTForImageClassification(tiny_config(position_embedding="sincos"))).eval()
    save_model_folder(model, build_image_processor(model.config), tmp_path / "model")
    pixels = torch.randn(2, 3, 16, 16)
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    code = f"""
import json, numpy as np, torch
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
with torch.no_grad():
    print(json.dumps(model(torch.from_numpy(np.load({str(tmp_path / "pixels.npy")!r}))).logits.tolist()))
"""
    if transformers_line != "installed":
        side = side_install([f"transformers=={transformers_line}.*", "huggingface_hub<1.0"], "transformers-4.57")
        code = f"import sys\nsys.path.insert(0, {str(side)!r})\n" + code
    logits = last_json_line(run_without_hf_vit(code, tmp_path).stdout)
    with torch.no_grad():
        assert_float32_close(torch.tensor(logits), model(pixels).logits)
