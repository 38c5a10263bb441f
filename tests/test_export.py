"""`hf-vit export`: each target loads in its own library and gives hf_vit's logits (transformers without hf_vit in
the process, pipeline included; timm through `local-dir:`; ONNX in onnxruntime at other batch and image sizes);
options a target cannot hold are refused by name; bad input is an error that names the fix and writes nothing."""

import json
import re
import sys

import numpy as np
import pytest
import torch
from conftest import (
    assert_float32_close,
    last_json_line,
    randomize_head,
    run_without_hf_vit,
    shapes_images,
    tiny_config,
)
from transformers import AutoImageProcessor, pipeline

from hf_vit import HfViTForImageClassification, build_image_processor, save_model_folder
from hf_vit.cli import main as cli_main
from hf_vit.export import export

LABELS = {0: "cat", 1: "dog", 2: "bird"}


def saved_model(folder, **options) -> HfViTForImageClassification:
    """A tiny hf_vit folder with three named labels and hf_vit's default processor; the learned positions are far
    from zero, so that a wrong position resampling shows in the logits."""
    torch.manual_seed(0)
    model = randomize_head(HfViTForImageClassification(tiny_config(num_labels=3, id2label=LABELS, **options))).eval()
    positions = model.vit.embeddings.position_embeddings
    if isinstance(positions, torch.nn.Parameter):
        with torch.no_grad():
            positions.normal_(0, 1)
    save_model_folder(model, build_image_processor(model.config), folder)
    return model


def random_pixels(*shape) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def hf_vit_logits(model, pixels) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=pixels).logits


def left_in(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


PLAIN_TRANSFORMERS = """
import json
import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

model = AutoModelForImageClassification.from_pretrained("vit")
with torch.no_grad():
    logits = model(pixel_values=torch.from_numpy(np.load("pixels.npy"))).logits
classifier = pipeline("image-classification", model="vit")
predictions = [classifier(Image.open(f"{index}.png"), top_k=3) for index in range(4)]
print(json.dumps({"class": type(model).__name__, "logits": logits.tolist(), "predictions": predictions}))
"""


def test_transformers_export_runs_on_plain_transformers(tmp_path, capsys):
    model = saved_model(tmp_path / "model", drop_path_rate=0.1)
    assert (
        cli_main(
            ["export", "--model", str(tmp_path / "model"), "--to", "transformers", "--output", str(tmp_path / "vit")]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "drop_path_rate=0.1" in printed and 'pipeline("image-classification"' in printed
    assert left_in(tmp_path / "vit") == ["config.json", "model.safetensors", "preprocessor_config.json"]
    pixels = random_pixels(2, 3, 16, 16)
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    images, _ = shapes_images(4, size=20)
    for index, image in enumerate(images):
        image.save(tmp_path / f"{index}.png")

    theirs = last_json_line(run_without_hf_vit(PLAIN_TRANSFORMERS, cwd=tmp_path).stdout)
    assert theirs["class"] == "ViTForImageClassification"
    assert_float32_close(theirs["logits"], hf_vit_logits(model, pixels))
    ours = pipeline(
        "image-classification", model=model, image_processor=AutoImageProcessor.from_pretrained(tmp_path / "model")
    )
    for image, their_predictions in zip(images, theirs["predictions"], strict=True):
        our_predictions = ours(image, top_k=3)
        assert [p["label"] for p in their_predictions] == [p["label"] for p in our_predictions]
        assert_float32_close([p["score"] for p in their_predictions], [p["score"] for p in our_predictions])


@pytest.mark.parametrize(
    "options, named",
    [
        (dict(num_register_tokens=2), "num_register_tokens"),
        (dict(pooling="mean"), "pooling='mean'"),
        (dict(use_class_token=False, pooling="mean"), "use_class_token=False"),
        (dict(stem_channels=[8, 16]), "stem_channels"),
        (dict(qk_norm=True), "qk_norm"),
        (dict(layerscale_init=0.1), "layerscale_init"),
        (dict(fc_norm=True), "fc_norm"),
        (dict(use_distillation_token=True), "use_distillation_token"),
    ],
)
def test_transformers_export_refuses_what_vit_cannot_hold_by_name(tmp_path, options, named):
    saved_model(tmp_path / "model", **options)
    with pytest.raises(ValueError, match=re.escape(named)) as error:
        export(tmp_path / "model", "transformers", tmp_path / "vit")
    assert "--to onnx" in str(error.value)
    assert left_in(tmp_path) == ["model"]  # no output folder, no temporary folder


def test_timm_export_rebuilds_with_timm_create_model(tmp_path):
    import timm
    from timm.data import create_transform, resolve_data_config

    options = dict(
        num_register_tokens=2,
        pooling="mean",
        fc_norm=True,
        qk_norm=True,
        layerscale_init=0.5,
        hidden_act="quick_gelu",
        image_size=[16, 24],
    )
    model = saved_model(tmp_path / "model", **options)
    export(tmp_path / "model", "timm", tmp_path / "timm")
    assert left_in(tmp_path / "timm") == ["config.json", "model.safetensors"]
    timm_model = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    assert type(timm_model).__name__ == "VisionTransformer"
    pixels = random_pixels(2, 3, 16, 24)
    with torch.no_grad():
        assert_float32_close(timm_model(pixels), hf_vit_logits(model, pixels))
    assert json.loads((tmp_path / "timm" / "config.json").read_text())["label_names"] == ["cat", "dog", "bird"]
    # timm's own eval transform, from the pretrained_cfg written, makes the processor's pixels.
    image = shapes_images(1, size=40)[0][0].crop((0, 0, 40, 28))
    transform = create_transform(**resolve_data_config(model=timm_model))
    processor = AutoImageProcessor.from_pretrained(tmp_path / "model", backend="pil")
    assert_float32_close(transform(image)[None], processor(image, return_tensors="pt")["pixel_values"])


@pytest.mark.parametrize(
    "options, named",
    [(dict(layer_norm_eps=1e-12), "layer_norm_eps=1e-12"), (dict(use_distillation_token=True), "distillation")],
)
def test_timm_export_refuses_what_its_config_cannot_hold_by_name(tmp_path, options, named):
    saved_model(tmp_path / "model", **options)
    with pytest.raises(ValueError, match=re.escape(named)):
        export(tmp_path / "model", "timm", tmp_path / "timm")
    assert left_in(tmp_path) == ["model"]


@pytest.mark.parametrize(
    "options", [dict(num_register_tokens=2), dict(stem_channels=[8, 16])], ids=["registers", "stem"]
)
def test_onnx_export_matches_onnxruntime_at_other_batch_and_image_sizes(tmp_path, options):
    import onnxruntime

    model = saved_model(tmp_path / "model", **options)
    export(tmp_path / "model", "onnx", tmp_path / "onnx")
    assert left_in(tmp_path / "onnx") == ["config.json", "model.onnx", "preprocessor_config.json"]
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "pixel_values" and [isinstance(d, str) for d in graph_input.shape] == [1, 0, 1, 1]
    # Other sizes than the model's 16x16: multiples of the patch size, and with a stem (which pads) any size.
    other_sizes = [(8, 28)] + ([(18, 13)] if options.get("stem_channels") else [])
    for batch, (height, width) in [(1, (16, 16)), (5, (16, 16)), *[(2, size) for size in other_sizes]]:
        pixels = random_pixels(batch, 3, height, width)
        reference = hf_vit_logits(model, pixels)
        (logits,) = session.run(["logits"], {"pixel_values": pixels.numpy()})
        difference = np.abs(logits - reference.numpy()).max()
        assert difference <= 1e-4 * max(1.0, reference.abs().max().item()), (batch, height, width, difference)
    # The preprocessing and the labels beside the graph, read with plain transformers and json.
    image = shapes_images(1, size=30)[0][0]
    processor = AutoImageProcessor.from_pretrained(tmp_path / "onnx")
    (logits,) = session.run(["logits"], dict(processor(image, return_tensors="np")))
    id2label = json.loads((tmp_path / "onnx" / "config.json").read_text())["id2label"]
    expected = pipeline("image-classification", model=model, image_processor=processor)(image, top_k=1)[0]["label"]
    assert id2label[str(int(logits.argmax()))] == expected


def test_onnx_export_without_its_packages_names_the_extra(tmp_path, capsys, monkeypatch):
    saved_model(tmp_path / "model")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import of it now fails, as when it is not installed
    assert (
        cli_main(["export", "--model", str(tmp_path / "model"), "--to", "onnx", "--output", str(tmp_path / "onnx")])
        == 1
    )
    error = capsys.readouterr().err
    assert "onnxruntime" in error and "pip install 'hf_vit[onnx]'" in error
    assert left_in(tmp_path) == ["model"]


def test_bad_model_folders_are_refused_with_the_fix(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = saved_model(tmp_path / "model")
    model.save_pretrained(tmp_path / "no_processor")
    get_peft_model(model, LoraConfig(r=2, target_modules=["qkv"])).save_pretrained(tmp_path / "adapter")
    export(tmp_path / "model", "transformers", tmp_path / "vit")
    cases = {
        "no_processor": "preprocessor_config.json",
        "adapter": "PEFT adapter",
        "vit": "convert a transformers ViT/DeiT",  # a transformers folder is not an hf_vit one
        "missing": "no such folder",
    }
    for folder, fix in cases.items():
        with pytest.raises(ValueError, match=re.escape(fix)) as error:
            export(tmp_path / folder, "onnx", tmp_path / "out")
        assert str(tmp_path / folder) in str(error.value) and "--model" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_output_folder_is_never_left_half_written(tmp_path):
    saved_model(tmp_path / "model")
    output = tmp_path / "vit"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="--overwrite"):
        export(tmp_path / "model", "transformers", output)
    assert left_in(output) == ["notes.txt"]
    with pytest.raises(ValueError, match="model folder itself"):
        export(tmp_path / "model", "transformers", tmp_path / "model", overwrite=True)
    # A refused export leaves the old folder whole; a complete one replaces it, old files gone.
    saved_model(tmp_path / "registers", num_register_tokens=1)
    with pytest.raises(ValueError, match="num_register_tokens"):
        export(tmp_path / "registers", "transformers", output, overwrite=True)
    assert left_in(output) == ["notes.txt"]
    export(tmp_path / "model", "transformers", output, overwrite=True)
    assert left_in(output) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert left_in(tmp_path) == ["model", "registers", "vit"]
