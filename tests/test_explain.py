"""Attention maps (`hf_vit.attention_maps`), `hf-vit explain` and the training card's attention picture."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_float32_close, randomize_head, shapes_images, tiny_config
from PIL import Image as PILImage

from hf_vit import HfViTForImageClassification, build_image_processor, save_model_folder
from hf_vit.attention_maps import attention_rollout, explain_pixels
from hf_vit.explain import load_model_and_processor, save_attention_grid
from hf_vit.explain import main as explain_main
from hf_vit.model_card import build_model_card
from hf_vit.prediction import predict

LABELS = {0: "top_left", 1: "bottom_right"}


def test_rollout_is_the_product_of_residual_mixed_head_means():
    rng = np.random.default_rng(0)
    layers = [rng.dirichlet(np.ones(5), size=(1, 3, 5)) for _ in range(3)]  # (batch, heads, tokens, tokens) rows of 1
    expected = np.eye(5)
    for weights in layers:
        expected = (0.5 * weights[0].mean(axis=0) + 0.5 * np.eye(5)) @ expected
    ours = attention_rollout([torch.tensor(w, dtype=torch.float32) for w in layers])[0]
    assert_float32_close(ours, torch.tensor(expected, dtype=torch.float32))
    assert_float32_close(ours.sum(-1), torch.ones(5))


def spotlight_model(target: int, **config_fields) -> HfViTForImageClassification:
    """A model whose every head in every layer sends the class token's attention to patch `target` (row-major in the
    patch grid), whatever the image: patches carry only their position, all zero but the target's (one-hot on
    channel 1); the class token is one-hot on channel 0, and query(channel 0) . key(channel 1) is large. Attention and
    MLP outputs are zeroed, so every layer sees the same tokens."""
    torch.manual_seed(0)
    model = HfViTForImageClassification(tiny_config(num_labels=2, **config_fields)).eval()
    width = model.config.hidden_size
    with torch.no_grad():
        embeddings = model.vit.embeddings
        for parameter in (embeddings.patch_embeddings.weight, embeddings.patch_embeddings.bias):
            parameter.zero_()
        embeddings.position_embeddings.zero_()
        embeddings.position_embeddings[0, target, 1] = 1.0
        embeddings.cls_token.zero_()
        embeddings.cls_token[0, 0, 0] = 1.0
        for token in (embeddings.distillation_token, embeddings.register_tokens):
            if token is not None:
                token.zero_()
        for layer in model.vit.layers:
            qkv = layer.attention.qkv
            qkv.weight.zero_()
            qkv.bias.zero_()
            qkv.weight[:width, 0] = 3.0  # every query channel reads channel 0 (the class token's)
            qkv.weight[width : 2 * width, 1] = 3.0  # every key channel reads channel 1 (the target patch's)
            for linear in (layer.attention.proj, layer.mlp.fc2):
                linear.weight.zero_()
                linear.bias.zero_()
    return model


@pytest.mark.parametrize(
    "fields, size",
    [
        ({}, (16, 16)),
        ({"num_register_tokens": 3}, (16, 16)),
        ({"use_distillation_token": True}, (16, 16)),
        ({"num_register_tokens": 2, "image_size": [16, 8]}, (16, 8)),  # a 4x2 grid: rows and columns must not swap
    ],
    ids=["class-token", "registers", "distillation-token", "non-square"],
)
def test_maps_point_at_the_patch_the_class_token_attends_to(fields, size):
    grid = (size[0] // 4, size[1] // 4)
    target = grid[1] * (grid[0] - 1) + 1  # last row, second column
    maps = explain_pixels(spotlight_model(target, **fields), torch.randn(1, 3, *size))
    assert maps.rollout.shape == (1, *grid) and maps.last_layer_heads.shape == (1, 2, *grid)
    expected = np.unravel_index(target, grid)
    assert np.unravel_index(maps.rollout[0].argmax(), grid) == expected
    for head in maps.last_layer_heads[0]:
        assert np.unravel_index(head.argmax(), grid) == expected
        assert head.max() > 0.9  # the prefix tokens (class, registers) are left out of the grid, not folded in
    # Rollout rows sum to 1: what the grid does not hold went to the prefix tokens.
    assert maps.rollout[0].sum() + maps.prefix_share[0] == pytest.approx(1.0, abs=1e-5)
    assert maps.queries == "class token"
    assert ("register" in maps.prefix_tokens) == bool(fields.get("num_register_tokens"))


def test_distillation_head_and_mean_pooling_explain_what_the_heads_read():
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 16, 16)
    cases = {
        "distillation": (tiny_config(use_distillation_token=True, distillation_head=True), [0, 1], 2),
        "mean": (tiny_config(pooling="mean", use_class_token=False, num_register_tokens=2), slice(2, None), 2),
    }
    for name, (config, rows, prefix) in cases.items():
        model = HfViTForImageClassification(config).eval()
        maps = explain_pixels(model, pixels)
        with torch.no_grad():
            attentions = model(pixel_values=pixels, output_attentions=True).attentions
        rollout = attention_rollout(attentions)[:, rows].mean(1)[:, prefix:]
        assert_float32_close(maps.rollout.reshape(2, -1), rollout)
        last = attentions[-1][:, :, rows].mean(2)[..., prefix:]
        assert_float32_close(maps.last_layer_heads.reshape(2, 2, -1), last)
        assert ("averaged" in maps.queries) and (("mean pooling" in maps.queries) == (name == "mean"))


def model_folder(folder: Path, **fields) -> HfViTForImageClassification:
    torch.manual_seed(0)
    model = randomize_head(HfViTForImageClassification(tiny_config(num_labels=2, id2label=LABELS, **fields))).eval()
    save_model_folder(model, build_image_processor(model.config), folder)
    return model


def test_maps_are_the_same_whatever_attention_implementation_the_model_was_loaded_with(tmp_path):
    model_folder(tmp_path / "model", num_register_tokens=1)
    pixels = torch.randn(3, 3, 16, 16)
    results = {}
    for implementation in ("eager", "sdpa"):
        model = HfViTForImageClassification.from_pretrained(tmp_path / "model", attn_implementation=implementation)
        assert model.config._attn_implementation == implementation
        with torch.no_grad():
            plain_probabilities = model(pixel_values=pixels).logits.softmax(-1)  # the fused path, no weights
        results[implementation] = explain_pixels(model.eval(), pixels)
        assert_float32_close(results[implementation].probabilities, plain_probabilities)
    for field in ("rollout", "last_layer_heads", "probabilities"):
        assert_float32_close(getattr(results["sdpa"], field), getattr(results["eager"], field))


def write_images(folder: Path) -> list[str]:
    """Two shapes images named a.png in two folders (same stem), and one b.png."""
    images, _ = shapes_images(3)
    paths = [folder / "one" / "a.png", folder / "two" / "a.png", folder / "one" / "b.png"]
    for image, path in zip(images, paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    return [str(path) for path in paths]


def test_explain_writes_a_picture_per_image_and_the_predictions(tmp_path, capsys):
    model_folder(tmp_path / "model", num_register_tokens=2)
    images = write_images(tmp_path)
    output = tmp_path / "explained"
    assert explain_main(["--model", str(tmp_path / "model"), "--output", str(output), "--top-k", "2", *images]) == 0
    assert sorted(path.name for path in output.iterdir()) == ["a-2.png", "a.png", "b.png", "explanations.json"]
    results = json.loads((output / "explanations.json").read_text())["images"]
    for entry, expected in zip(results, predict(str(tmp_path / "model"), images, top_k=2), strict=True):
        assert [p["label"] for p in entry["predictions"]] == [p["label"] for p in expected]
        np.testing.assert_allclose([p["score"] for p in entry["predictions"]], [p["score"] for p in expected],
                                   atol=1e-5)  # fmt: skip
        assert entry["shown"] == "attention of the class token" and 0 < entry["non_patch_share"] < 1
        with PILImage.open(output / entry["picture"]) as picture:
            assert picture.format == "PNG" and min(picture.size) > 400
    printed = capsys.readouterr().out
    assert f"-> {output / 'a-2.png'}" in printed and "shown: attention of the class token" in printed


def test_bad_input_is_named_with_its_fix_and_leaves_the_output_as_it_was(tmp_path, capsys):
    model_folder(tmp_path / "model")
    images = write_images(tmp_path)
    output = tmp_path / "explained"
    output.mkdir()
    (output / "kept.txt").write_text("mine")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    no_processor = tmp_path / "no_processor"
    model_folder(no_processor)
    (no_processor / "preprocessor_config.json").unlink()
    cases = [
        (["--model", str(tmp_path / "model"), images[0], str(broken)], [str(broken), "not a readable image"]),
        (["--model", str(no_processor), images[0]], [str(no_processor), "no image processor", "build_image_processor"]),
        (["--model", str(tmp_path / "model"), str(tmp_path / "missing.png")], ["missing.png", "not found"]),
    ]
    for argv, expected in cases:
        assert explain_main([*argv, "--output", str(output)]) == 1
        message = capsys.readouterr().err
        for text in expected:
            assert text in message, (text, message)
        assert [path.name for path in output.iterdir()] == ["kept.txt"]
        assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []
    assert explain_main(["--model", str(tmp_path / "model"), "--output", str(output / "kept.txt"), images[0]]) == 1
    assert "is a file" in capsys.readouterr().err


def test_attention_grid_for_the_training_card(tmp_path):
    peft = pytest.importorskip("peft")
    model = model_folder(tmp_path / "model", num_register_tokens=1)
    _, processor = load_model_and_processor(str(tmp_path / "model"))
    images, labels = shapes_images(4)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["qkv"]))  # as a LoRA run's trainer holds it
    lora.train()
    save_attention_grid(lora, processor, images, labels, tmp_path / "attention_maps.png")
    assert lora.training, "the model's mode is given back"
    with PILImage.open(tmp_path / "attention_maps.png") as picture:
        assert picture.format == "PNG" and picture.width > 4 * 150
    assert [path.name for path in tmp_path.iterdir() if path.suffix == ".partial"] == []

    from transformers import TrainingArguments

    from hf_vit.augment import AugmentationArguments

    card_fields = dict(
        model_name="tiny", dataset="digits", config=model.config, results={"test": {"accuracy": 0.5}},
        split_sizes={"test": 4}, training_args=TrainingArguments(output_dir=str(tmp_path / "run")),
        augmentation_args=AugmentationArguments(), train_runtime_s=1.0, command="hf-vit train",
    )  # fmt: skip
    with_picture = build_model_card(**card_fields, attention_picture="attention_maps.png").text
    assert "](attention_maps.png)" in with_picture and "attention rollout" in with_picture
    without = build_model_card(**card_fields).text
    assert "attention_maps.png" not in without and "](confusion_matrix.png)\n\n## Training procedure" in without
