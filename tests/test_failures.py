"""What happens when things go wrong at the model level: broken folders, bad configs, bad tensors."""

import json

import pytest
import torch
from conftest import randomize_head, tiny_config
from safetensors.torch import load_file, save_file

from hf_vit import HfViTForImageClassification, HfViTModel


@pytest.fixture
def saved_folder(tmp_path):
    torch.manual_seed(0)
    model = randomize_head(HfViTForImageClassification(tiny_config()))
    model.save_pretrained(tmp_path)
    return tmp_path


def test_truncated_weights_are_an_error_not_random_weights(saved_folder):
    weights = saved_folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated or corrupt.*save the model again"):
        HfViTForImageClassification.from_pretrained(saved_folder)


def test_missing_weights_file_is_an_error(saved_folder):
    (saved_folder / "model.safetensors").unlink()
    with pytest.raises(OSError, match="no file named model.safetensors"):
        HfViTForImageClassification.from_pretrained(saved_folder)


def test_weights_missing_from_the_file_are_an_error(saved_folder):
    weights = load_file(saved_folder / "model.safetensors")
    del weights["vit.layers.1.mlp.fc1.weight"]
    save_file(weights, saved_folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(OSError, match=r"lacks weights of this model \(vit.layers.1.mlp.fc1.weight\)"):
        HfViTForImageClassification.from_pretrained(saved_folder)


def test_an_encoder_folder_loads_for_classification_with_a_new_head(tmp_path):
    torch.manual_seed(0)
    encoder = HfViTModel(tiny_config())
    encoder.save_pretrained(tmp_path)
    model, info = HfViTForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    torch.testing.assert_close(model.vit.norm.weight, encoder.norm.weight)


def test_config_file_with_contradictory_fields_is_refused_and_unknown_keys_load(saved_folder):
    config_path = saved_folder / "config.json"
    config = json.loads(config_path.read_text())
    # A key hf_vit does not know loads (as in transformers' configs): a later release may write it.
    config_path.write_text(json.dumps({**config, "num_hiden_layers": 4}))
    model = HfViTForImageClassification.from_pretrained(saved_folder)
    assert model.config.num_hiden_layers == 4 and len(model.vit.layers) == config["num_hidden_layers"]
    config_path.write_text(json.dumps({**config, "pooling": "cls", "use_class_token": False}))
    with pytest.raises(ValueError, match="pooling='cls' needs use_class_token=True"):
        HfViTForImageClassification.from_pretrained(saved_folder)


def test_non_finite_inputs_are_refused(saved_folder):
    model = HfViTForImageClassification.from_pretrained(saved_folder)
    pixels = torch.randn(2, 3, 16, 16)
    pixels[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        model(pixels)
    for bad in (float("inf"), -float("inf")):  # the check looks at the extremes: each end must be caught
        pixels[1, 0, 3, 3] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            model(pixels)
