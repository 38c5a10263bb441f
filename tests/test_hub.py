"""Sharing on the Hub, end to end, with the real huggingface_hub client against a local Hub-compatible server.

Every client runs in a subprocess: huggingface_hub reads HF_ENDPOINT when it is imported, and these tests must not
touch the offline settings of the test process itself.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import last_json_line, randomize_head, run_without_hf_vit, tiny_config
from hub_server import LocalHub
from PIL import Image

from hf_vit import HfViTForImageClassification, build_image_processor, save_model_folder

FAKE_TOKEN = "hf_FakeTokenForTests0123456789abcdefXYZ"
LABELS = {0: "circle", 1: "square", 2: "triangle"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = LocalHub(tmp_path_factory.mktemp("hub")).start()
    yield server
    server.stop()


def hub_env(hub: LocalHub, home: Path, **extra) -> dict:
    offline = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN")
    env = {key: value for key, value in os.environ.items() if key not in offline}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HOME=str(home),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_TOKEN=FAKE_TOKEN,
    )
    env.update(extra)
    return env


def hf_vit_cli(args: list[str], env: dict, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "hf_vit.cli", *args], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"hf-vit {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def folder_fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def make_model_folder(folder: Path, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = randomize_head(HfViTForImageClassification(tiny_config(num_labels=3, id2label=LABELS))).eval()
    save_model_folder(model, build_image_processor(model.config), folder)
    return model


def test_push_then_load_anywhere_with_remote_code(hub, tmp_path):
    folder = tmp_path / "model"
    model = make_model_folder(folder, seed=0)
    before = folder_fingerprint(folder)
    result = hf_vit_cli(
        ["push", "--model", str(folder), "--repo-id", "shapes/tiny-vit"], hub_env(hub, tmp_path / "home"), tmp_path
    )
    assert "Pushed" in result.stdout
    assert folder_fingerprint(folder) == before, "push must not write into the local folder"
    files = hub.files("shapes/tiny-vit")
    assert {"model.safetensors", "config.json", "configuration_hf_vit.py", "modeling_hf_vit.py",
            "preprocessor_config.json", "README.md"} <= set(files)  # fmt: skip
    assert hub.commit_count("shapes/tiny-vit") == 1, "everything goes in one commit"
    assert "auto_map" in json.loads(files["config.json"])
    card = files["README.md"].decode()
    assert "library_name: transformers" in card and "pipeline_tag: image-classification" in card
    assert 'pipeline("image-classification", model="shapes/tiny-vit", trust_remote_code=True)' in card

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    image.save(tmp_path / "photo.png")
    pixels = build_image_processor(model.config)([image], return_tensors="pt")["pixel_values"]
    expected = model(pixels).logits[0].tolist()
    code = """
import json
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

model = AutoModelForImageClassification.from_pretrained("shapes/tiny-vit", trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained("shapes/tiny-vit")
with torch.no_grad():
    logits = model(processor([Image.open("photo.png")], return_tensors="pt")["pixel_values"]).logits[0].tolist()
top = pipeline("image-classification", model="shapes/tiny-vit", trust_remote_code=True)(Image.open("photo.png"))[0]
print(json.dumps({"logits": logits, "top": top["label"]}))
"""
    loaded = last_json_line(run_without_hf_vit(code, tmp_path, env=hub_env(hub, tmp_path / "fresh-home")).stdout)
    np.testing.assert_allclose(loaded["logits"], expected, atol=1e-5)
    assert loaded["top"] == LABELS[int(np.argmax(expected))]


def test_push_with_a_space_serves_the_demo_from_the_hub(hub, tmp_path):
    pytest.importorskip("gradio", reason="a Space names the installed Gradio: pip install -e '.[demo]'")
    folder = tmp_path / "model"
    model = make_model_folder(folder, seed=3)
    (tmp_path / "examples").mkdir()
    Image.new("RGB", (24, 24), (200, 30, 30)).save(tmp_path / "examples" / "red.png")
    env = hub_env(hub, tmp_path / "home")
    result = hf_vit_cli(["push", "--model", str(folder), "--repo-id", "shapes/demo-vit", "--space",
                         "shapes/demo-vit-space", "--examples", str(tmp_path / "examples")], env, tmp_path)  # fmt: skip
    assert "Pushed the demo Space shapes/demo-vit-space" in result.stdout
    space = hub.files("shapes/demo-vit-space", repo_type="space")
    assert {"app.py", "requirements.txt", "README.md", "hf_vit_demo/__init__.py", "hf_vit_demo/attention_maps.py",
            "hf_vit_demo/demo_app.py", "examples/red.png"} <= set(space)  # fmt: skip
    assert hub.commit_count("shapes/demo-vit-space", repo_type="space") == 1
    readme = space["README.md"].decode()
    assert "sdk: gradio" in readme and "- shapes/demo-vit" in readme
    assert "MODEL_ID = 'shapes/demo-vit'" in space["app.py"].decode()

    # The Space as the Hub runs it: its files, a Python without hf_vit, the model read from the Hub.
    pixels = build_image_processor(model.config)([Image.open(tmp_path / "examples" / "red.png")], return_tensors="pt")
    with torch.no_grad():
        expected = model(**pixels).logits[0].softmax(-1)
    code = """
import json, sys
from huggingface_hub import snapshot_download
from PIL import Image

sys.path.insert(0, snapshot_download("shapes/demo-vit-space", repo_type="space"))
import app

labels, overlay = app.classify(Image.open("examples/red.png"))
print(json.dumps({"labels": labels, "examples": len(app.demo.examples)}))
"""
    served = last_json_line(run_without_hf_vit(code, tmp_path, env=hub_env(hub, tmp_path / "space-home")).stdout)
    assert served["examples"] == 1
    order = expected.argsort(descending=True).tolist()
    assert list(served["labels"]) == [LABELS[index] for index in order]
    np.testing.assert_allclose(list(served["labels"].values()), expected[order].tolist(), atol=1e-5)


def test_second_push_is_a_new_revision_and_branches_work(hub, tmp_path):
    env = hub_env(hub, tmp_path / "home")
    first, second = tmp_path / "v1", tmp_path / "v2"
    make_model_folder(first, seed=1)
    make_model_folder(second, seed=2)
    hf_vit_cli(["push", "--model", str(first), "--repo-id", "shapes/versions"], env, tmp_path)
    sha_one = hub.state.repos[("model", "shapes/versions")].branches["main"]
    hf_vit_cli(
        ["push", "--model", str(second), "--repo-id", "shapes/versions", "--commit-message", "v2"], env, tmp_path
    )
    hf_vit_cli(
        ["push", "--model", str(first), "--repo-id", "shapes/versions", "--revision", "v1-branch"], env, tmp_path
    )
    code = f"""
import json
from transformers import AutoModelForImageClassification

def head(**kwargs):
    model = AutoModelForImageClassification.from_pretrained("shapes/versions", trust_remote_code=True, **kwargs)
    return model.classifier.bias.tolist()

print(json.dumps({{"old": head(revision={sha_one!r}), "new": head(), "branch": head(revision="v1-branch")}}))
"""
    heads = last_json_line(run_without_hf_vit(code, tmp_path, env=hub_env(hub, tmp_path / "load-home")).stdout)
    expected_old = HfViTForImageClassification.from_pretrained(first).classifier.bias.tolist()
    expected_new = HfViTForImageClassification.from_pretrained(second).classifier.bias.tolist()
    np.testing.assert_allclose(heads["old"], expected_old)
    np.testing.assert_allclose(heads["new"], expected_new)
    np.testing.assert_allclose(heads["branch"], expected_old)
    assert expected_old != expected_new


def test_failed_push_is_clear_keeps_the_folder_and_a_retry_lands(hub, tmp_path):
    folder = tmp_path / "model"
    make_model_folder(folder, seed=3)
    before = folder_fingerprint(folder)
    env = hub_env(hub, tmp_path / "home")
    args = ["push", "--model", str(folder), "--repo-id", "shapes/flaky"]

    hub.state.fail_commits = 10  # more than huggingface_hub's own retries
    failed = hf_vit_cli(args, env, tmp_path, check=False)
    hub.state.fail_commits = 0
    assert failed.returncode == 1
    assert "push of" in failed.stderr and "failed" in failed.stderr and "run the same command again" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert folder_fingerprint(folder) == before
    hf_vit_cli(args, env, tmp_path)
    assert hub.files("shapes/flaky")["model.safetensors"] == (folder / "model.safetensors").read_bytes()

    port = hub.port
    hub.stop()
    try:
        down = hf_vit_cli(args, env, tmp_path, check=False)
    finally:
        hub.start()
    assert hub.port == port
    assert down.returncode == 1 and "failed" in down.stderr and "Traceback" not in down.stderr
    assert folder_fingerprint(folder) == before
    hf_vit_cli([*args, "--commit-message", "after the outage"], env, tmp_path)


def test_bad_folders_are_refused_before_any_upload(hub, tmp_path):
    env = hub_env(hub, tmp_path / "home")
    folder = tmp_path / "model"
    make_model_folder(folder, seed=4)
    (folder / "model.safetensors").unlink()
    result = hf_vit_cli(["push", "--model", str(folder), "--repo-id", "shapes/broken"], env, tmp_path, check=False)
    assert result.returncode == 1 and "missing model.safetensors" in result.stderr
    assert ("model", "shapes/broken") not in hub.state.repos
    (folder / "README.md").write_text("---\nlicense: [unclosed\n---\ntext\n")
    make_model_folder(folder, seed=4)
    result = hf_vit_cli(["push", "--model", str(folder), "--repo-id", "shapes/broken"], env, tmp_path, check=False)
    assert result.returncode == 1 and "README.md" in result.stderr and "metadata" in result.stderr


def test_token_is_sent_but_never_printed_or_stored(hub, tmp_path):
    folder = tmp_path / "model"
    make_model_folder(folder, seed=5)
    result = hf_vit_cli(
        ["push", "--model", str(folder), "--repo-id", "shapes/secret"], hub_env(hub, tmp_path / "home"), tmp_path
    )
    assert f"Bearer {FAKE_TOKEN}" in hub.state.authorizations, "the token from HF_TOKEN authenticates the push"
    assert FAKE_TOKEN not in result.stdout + result.stderr
    for name, data in hub.files("shapes/secret").items():
        assert FAKE_TOKEN.encode() not in data, name
    for path in folder.rglob("*"):
        assert path.is_dir() or FAKE_TOKEN.encode() not in path.read_bytes(), path


def stripes_push_script(repo_id: str) -> str:
    """Code that pushes the stripes image set of the Trainer test through `Dataset.push_to_hub`."""
    return f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from datasets import DatasetDict
from test_trainer_steps import stripes_dataset

DatasetDict({{"train": stripes_dataset(96, seed=0), "test": stripes_dataset(32, seed=1)}}).push_to_hub({repo_id!r})
"""


def test_train_on_a_hub_dataset_and_push_with_trainer(hub, tmp_path):
    env = hub_env(hub, tmp_path / "home")
    pushed = subprocess.run([sys.executable, "-c", stripes_push_script("shapes/stripes")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    assert any(name.endswith(".parquet") for name in hub.files("shapes/stripes", repo_type="dataset"))

    output = tmp_path / "run"
    hf_vit_cli(
        ["train", "--dataset", "shapes/stripes", "--preset", "vit-digits-patch2-8", "--config_overrides",
         "image_size=16,patch_size=4,hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64",
         "--num_train_epochs", "2", "--per_device_train_batch_size", "32", "--output_dir", str(output),
         "--push_to_hub", "--hub_model_id", "shapes/stripes-vit", "--report_to", "none"],
        env, tmp_path,
    )  # fmt: skip
    files = hub.files("shapes/stripes-vit")
    for name in ("model.safetensors", "config.json", "configuration_hf_vit.py", "modeling_hf_vit.py",
                 "preprocessor_config.json", "README.md", "training_curves.png", "confusion_matrix.png"):  # fmt: skip
        assert name in files, name
        assert files[name] == (output / name).read_bytes(), f"{name} on the Hub differs from the local folder"
    card = files["README.md"].decode()
    assert "hf_vit" in card and "shapes/stripes" in card and "model-index" in card
    assert 'model="shapes/stripes-vit"' in card
    assert not any(name.endswith(".bin") for name in files), "no pickled training_args on the Hub"
    assert FAKE_TOKEN.encode() not in b"".join(files.values())
