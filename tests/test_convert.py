"""Converters from transformers ViT/DeiT, timm and JAX .npz: the converted model gives the source library's logits.

Every reference model is built here with random weights (no Hub access), small enough for a CPU.
"""

import json
import logging
import math
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_float32_close, last_json_line, run_without_hf_vit
from safetensors.torch import save_file

from hf_vit import HfViTConfig, HfViTForImageClassification
from hf_vit.convert import (
    convert_deit,
    convert_npz,
    convert_timm,
    convert_transformers,
    export_timm,
    export_transformers,
    load_for_finetuning,
    to_timm_state_dict,
    to_transformers_state_dict,
)

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1]


def randomize(model, std=0.2, seed=0):
    """Random non-zero weights everywhere (heads included), so that a misplaced weight shows in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            centre = 1.0 if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "layernorm.weight")) else 0.0
            parameter.copy_(centre + std * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def images(height, width, count=3, seed=1):
    return torch.randn(count, 3, height, width, generator=torch.Generator().manual_seed(seed))


def assert_same_logits(ours, theirs):
    assert theirs.std() > 0.1, "reference logits are nearly constant: the comparison would prove little"
    assert_float32_close(ours, theirs)


def logits(model, pixels):
    with torch.no_grad():
        output = model(pixels)
    return output if isinstance(output, torch.Tensor) else output.logits


SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


# ----------------------------------------------------------------------------------------------------------------------
# transformers ViT and DeiT
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        dict(image_size=32, patch_size=8),
        dict(image_size=32, patch_size=8, layer_norm_eps=1e-5, qkv_bias=False, hidden_act="gelu_new"),
        dict(image_size=[224, 160], patch_size=16),  # non-square, at the checkpoint's own size
    ],
    ids=["default", "eps-no-qkv-bias", "224x160"],
)
def test_transformers_vit_folder(tmp_path, options):
    config = transformers.ViTConfig(**SMALL, **options, num_labels=4, id2label={i: f"c{i}" for i in range(4)})
    reference = randomize(transformers.ViTForImageClassification(config))
    reference.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)

    converted = convert_transformers(tmp_path)
    model = converted.model
    assert model.config.layer_norm_eps == config.layer_norm_eps
    assert model.config.qkv_bias == config.qkv_bias
    assert model.config.id2label == {i: f"c{i}" for i in range(4)}
    assert converted.image_processor.size == {"height": 32, "width": 32}  # the folder's processor is carried
    height, width = model.config.image_hw
    pixels = images(height, width)
    assert_same_logits(logits(model, pixels), logits(reference, pixels))


def test_transformers_in_memory_model_with_renamed_modules():
    # transformers >= 5.9 renames modules in memory (q_proj, mlp.fc1, vit.layers...): both layouts convert.
    reference = randomize(
        transformers.ViTForImageClassification(
            transformers.ViTConfig(**SMALL, image_size=32, patch_size=8, num_labels=3)
        )
    )
    assert any(".q_proj." in key for key in reference.state_dict())
    converted = convert_transformers(reference)
    pixels = images(32, 32)
    assert_same_logits(logits(converted.model, pixels), logits(reference, pixels))


def test_transformers_vit_model_without_head(tmp_path):
    reference = randomize(transformers.ViTModel(transformers.ViTConfig(**SMALL, image_size=32, patch_size=8)))
    reference.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"pooler\.dense.*drop_pooler=True"):
        convert_transformers(tmp_path)
    converted = convert_transformers(tmp_path, drop_pooler=True)
    assert converted.model.config.num_labels == 0
    assert any("pooler.dense.weight" in note for note in converted.notes)
    pixels = images(32, 32)
    with torch.no_grad():
        features = reference(pixels).last_hidden_state[:, 0]
    assert_same_logits(logits(converted.model, pixels), features)


@pytest.mark.parametrize("architecture", ["DeiTForImageClassificationWithTeacher", "DeiTForImageClassification"])
def test_deit(tmp_path, architecture):
    config = transformers.DeiTConfig(**SMALL, image_size=32, patch_size=8, num_labels=6)
    reference = randomize(getattr(transformers, architecture)(config))
    reference.save_pretrained(tmp_path)
    converted = convert_deit(tmp_path)
    model = converted.model
    with_teacher = architecture.endswith("WithTeacher")
    assert model.config.use_distillation_token and model.config.distillation_head == with_teacher
    assert hasattr(model, "distillation_classifier") == with_teacher
    pixels = images(32, 32)
    assert_same_logits(logits(model, pixels), logits(reference, pixels))


def test_transformers_errors_name_the_problem(tmp_path):
    config = transformers.ViTConfig(**SMALL, image_size=32, patch_size=8, num_labels=2)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="expected model_type='deit'"):
        convert_deit(tmp_path)
    # hf_vit's own from_pretrained refuses a transformers folder and says how to convert it.
    with pytest.raises(ValueError, match="hf-vit convert --from transformers"):
        HfViTForImageClassification.from_pretrained(tmp_path)
    # A weight hf_vit cannot place is named, never dropped.
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "model.safetensors")
    tensors["vit.encoder.layer.0.attention.attention.relative_bias"] = torch.zeros(3)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"vit\.encoder\.layer\.0\.attention\.attention\.relative_bias"):
        convert_transformers(tmp_path)


# ----------------------------------------------------------------------------------------------------------------------
# timm
# ----------------------------------------------------------------------------------------------------------------------


def timm_vit(name="vit_tiny_patch16_224", **options):
    options = {
        "img_size": 32,
        "patch_size": 8,
        "embed_dim": 64,
        "depth": 2,
        "num_heads": 4,
        "num_classes": 7,
        **options,
    }
    return randomize(timm.create_model(name, pretrained=False, **options))


TIMM_OPTIONS = {
    "token": dict(),
    "avg-fc_norm": dict(global_pool="avg"),
    "reg4-gap": dict(class_token=False, global_pool="avg", reg_tokens=4),
    "no-class-token-avg-no-fc_norm": dict(class_token=False, global_pool="avg", fc_norm=False),
    "no_embed_class-registers": dict(no_embed_class=True, reg_tokens=2),
    "layerscale-qk_norm": dict(init_values=1e-2, qk_norm=True),
    "token-fc_norm": dict(fc_norm=True),
    "eps-no-biases": dict(norm_layer=partial(torch.nn.LayerNorm, eps=1e-5), qkv_bias=False, proj_bias=False),
    "quick-gelu": dict(act_layer="quick_gelu"),
    "headless": dict(num_classes=0),
}


@pytest.mark.parametrize("options", TIMM_OPTIONS.values(), ids=TIMM_OPTIONS.keys())
def test_timm_options(options):
    reference = timm_vit(**options)
    model = convert_timm(reference).model
    pixels = images(32, 32)
    assert_same_logits(logits(model, pixels), logits(reference, pixels))


def test_timm_distilled_deit():
    reference = timm_vit("deit_tiny_distilled_patch16_224")
    model = convert_timm(reference).model
    assert model.config.distillation_head
    pixels = images(32, 32)
    assert_same_logits(logits(model, pixels), logits(reference, pixels))


def test_timm_non_square_input_through_resampled_positions():
    # timm resamples its 14x14 table to 14x10 (bicubic, antialias); hf_vit does the same from its config grid.
    reference = timm_vit(img_size=224, patch_size=16, dynamic_img_size=True)
    model = convert_timm(reference).model
    assert model.config.image_hw == (224, 224)
    pixels = images(224, 160, count=2)
    assert_same_logits(logits(model, pixels), logits(reference, pixels))


def test_timm_checkpoint_files_and_hub_folder(tmp_path):
    from timm.models import save_for_hf

    # A checkpoint trained at 64 px for a named architecture: the grid is read from pos_embed.
    reference = randomize(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=5))
    save_file(reference.state_dict(), tmp_path / "weights.safetensors")
    torch.save({"state_dict": reference.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pth")
    pixels = images(64, 64, count=2)
    expected = logits(reference, pixels)
    for file in ("weights.safetensors", "checkpoint.pth"):
        converted = convert_timm(tmp_path / file, model_name="vit_tiny_patch16_224")
        assert converted.model.config.image_hw == (64, 64)
        assert_same_logits(logits(converted.model, pixels), expected)
    with pytest.raises(ValueError, match="--timm-model"):
        convert_timm(tmp_path / "weights.safetensors")

    small = timm_vit(global_pool="avg")
    save_for_hf(small, tmp_path / "hub")
    converted = convert_timm(tmp_path / "hub")
    pixels = images(32, 32)
    assert_same_logits(logits(converted.model, pixels), logits(small, pixels))


@pytest.mark.parametrize(
    "options, option_named",
    [
        (dict(pre_norm=True), "pre_norm"),
        (dict(global_pool="map"), "global_pool='map'"),
        (dict(global_pool="max", fc_norm=False), "global_pool='max'"),
        (dict(final_norm=False), "final_norm=False"),
        (dict(scale_mlp_norm=True), "scale_mlp_norm"),
    ],
)
def test_timm_unsupported_options_are_named(options, option_named):
    with pytest.raises(ValueError, match=option_named.replace("(", r"\(")):
        convert_timm(timm_vit(**options))


# ----------------------------------------------------------------------------------------------------------------------
# JAX .npz
# ----------------------------------------------------------------------------------------------------------------------


def write_jax_npz(model, path, layout):
    """A timm VisionTransformer's weights in the JAX layout: google-research/vision_transformer ("original":
    per-block arrays, class slot in Transformer/posembed_input/pos_embedding) or big_vision (top-level
    pos_embedding without a class slot, scanned layers stacked on a leading axis)."""
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    width, heads = model.embed_dim, model.blocks[0].attn.num_heads
    arrays = {
        "embedding/kernel": state["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": state["patch_embed.proj.bias"],
        "Transformer/encoder_norm/scale": state["norm.weight"],
        "Transformer/encoder_norm/bias": state["norm.bias"],
        "head/kernel": state["head.weight"].T,
        "head/bias": state["head.bias"],
    }
    if model.cls_token is not None:
        arrays["cls"] = state["cls_token"]
    if layout == "original":
        arrays["Transformer/posembed_input/pos_embedding"] = state["pos_embed"]
        names = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
    else:
        arrays["pos_embedding"] = state["pos_embed"]
        names = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
    norm1, attention, norm2, mlp = names
    blocks = []
    for i in range(len(model.blocks)):
        p = f"blocks.{i}."
        q, k, v = np.split(state[p + "attn.qkv.weight"], 3)
        qb, kb, vb = np.split(state[p + "attn.qkv.bias"], 3)
        block = {
            f"{norm1}/scale": state[p + "norm1.weight"],
            f"{norm1}/bias": state[p + "norm1.bias"],
            f"{norm2}/scale": state[p + "norm2.weight"],
            f"{norm2}/bias": state[p + "norm2.bias"],
            f"{attention}/out/kernel": state[p + "attn.proj.weight"].T.reshape(heads, -1, width),
            f"{attention}/out/bias": state[p + "attn.proj.bias"],
            f"{mlp}/Dense_0/kernel": state[p + "mlp.fc1.weight"].T,
            f"{mlp}/Dense_0/bias": state[p + "mlp.fc1.bias"],
            f"{mlp}/Dense_1/kernel": state[p + "mlp.fc2.weight"].T,
            f"{mlp}/Dense_1/bias": state[p + "mlp.fc2.bias"],
        }
        for part, weight, bias in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
            block[f"{attention}/{part}/kernel"] = weight.T.reshape(width, heads, -1)
            block[f"{attention}/{part}/bias"] = bias.reshape(heads, -1)
        blocks.append(block)
    if layout == "original":
        for i, block in enumerate(blocks):
            arrays.update({f"Transformer/encoderblock_{i}/{k}": v for k, v in block.items()})
    else:
        arrays.update({f"Transformer/encoderblock/{k}": np.stack([b[k] for b in blocks]) for k in blocks[0]})
    np.savez(path, **arrays)


NPZ_CASES = {
    "original-class-slot": ("original", dict()),
    "big_vision-no-class-slot": ("big_vision", dict(no_embed_class=True)),
    "big_vision-gap": ("big_vision", dict(class_token=False, global_pool="avg", fc_norm=False)),
}


@pytest.mark.parametrize("case", NPZ_CASES.values(), ids=NPZ_CASES.keys())
def test_npz_layouts(tmp_path, case):
    layout, options = case
    reference = timm_vit(**options)
    path = tmp_path / "vit.npz"
    write_jax_npz(reference, path, layout)
    pixels = images(32, 32)
    expected = logits(reference, pixels)

    # The file is in the real layout: timm's own .npz loader reads it back to the same logits.
    reloaded = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=4,
        num_classes=7,
        **options,
    ).eval()
    reloaded.load_pretrained(str(path))
    assert_float32_close(logits(reloaded, pixels), expected)

    converted = convert_npz(path)
    assert converted.model.config.pooling == ("mean" if "class_token" in options else "cls")
    assert_same_logits(logits(converted.model, pixels), expected)


def test_npz_unknown_array_is_named(tmp_path):
    path = tmp_path / "vit.npz"
    write_jax_npz(timm_vit(), path, "original")
    arrays = dict(np.load(path))
    arrays["Transformer/encoderblock_0/MlpBlock_3/Dense_2/kernel"] = np.zeros((2, 2), np.float32)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="MlpBlock_3/Dense_2/kernel"):
        convert_npz(path)


# ----------------------------------------------------------------------------------------------------------------------
# hf_vit -> transformers / timm (the benchmark runs the peers with an hf_vit model's weights)
# ----------------------------------------------------------------------------------------------------------------------


def random_hf_vit(**options):
    config = HfViTConfig(**SMALL, image_size=32, patch_size=8, num_labels=5, **options)
    return randomize(HfViTForImageClassification(config))


@pytest.mark.parametrize(
    "options", [{}, dict(qkv_bias=False, position_embedding="sincos", layer_norm_eps=1e-5)], ids=["default", "sincos"]
)
def test_export_to_transformers_round_trip(tmp_path, options):
    model = random_hf_vit(**options)
    exported = export_transformers(model, tmp_path, attn_implementation="eager")
    pixels = images(32, 32)
    assert_same_logits(logits(model, pixels), logits(exported, pixels))
    # The file is transformers' on-disk layout, which the converter reads back to the same model.
    assert "vit.encoder.layer.0.attention.attention.query.weight" in to_transformers_state_dict(model)
    back = convert_transformers(tmp_path).model
    assert_same_logits(logits(back, pixels), logits(model, pixels))


@pytest.mark.parametrize(
    "options",
    [
        {},
        dict(pooling="mean", fc_norm=True, num_register_tokens=2, qk_norm=True, layerscale_init=0.5),
        dict(use_class_token=False, pooling="mean", hidden_act="quick_gelu", qkv_bias=False),
    ],
    ids=["default", "registers-qknorm-layerscale-fcnorm", "no-class-token"],
)
def test_export_to_timm_round_trip(options):
    model = random_hf_vit(**options)
    exported = export_timm(model)
    assert set(to_timm_state_dict(model)) == set(exported.state_dict())
    pixels = images(32, 32)
    assert_same_logits(logits(model, pixels), logits(exported.eval(), pixels))
    assert_same_logits(logits(convert_timm(exported).model, pixels), logits(model, pixels))


def test_export_names_options_the_peer_lacks():
    with pytest.raises(ValueError, match="num_register_tokens"):
        to_transformers_state_dict(random_hf_vit(num_register_tokens=2))
    with pytest.raises(ValueError, match="distillation"):
        to_timm_state_dict(random_hf_vit(use_distillation_token=True))
    with pytest.raises(ValueError, match="stem_channels"):
        to_transformers_state_dict(random_hf_vit(stem_channels=[8, 16, 32]))
    with pytest.raises(ValueError, match="stem_channels"):
        to_timm_state_dict(random_hf_vit(stem_channels=[8, 16, 32]))


# ----------------------------------------------------------------------------------------------------------------------
# Preprocessing, saved folders, fine-tuning, command line
# ----------------------------------------------------------------------------------------------------------------------


def test_saved_processor_reproduces_timm_eval_transform(tmp_path):
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images
    from timm.data import create_transform, resolve_model_data_config
    from torchvision.transforms import functional as TF
    from transformers import AutoImageProcessor

    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)  # bicubic, crop_pct 0.9
    converted = convert_timm(reference)
    converted.save(tmp_path)
    data_config = resolve_model_data_config(reference)
    timm_transform = create_transform(**data_config)
    pil_processor = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    default_processor = AutoImageProcessor.from_pretrained(tmp_path)
    one_level = 1 / 255 / 0.5  # one 8-bit step after normalisation with std 0.5

    for photo in (data.chelsea(), data.astronaut()):  # crop margins that round the same way in both libraries
        image = Image.fromarray(photo)
        expected = timm_transform(image)
        assert torch.equal(pil_processor(image, return_tensors="pt")["pixel_values"][0], expected)
        # The default (torchvision) backend resizes a tensor instead of the PIL image: within one 8-bit level.
        assert (
            default_processor(image, return_tensors="pt")["pixel_values"][0] - expected
        ).abs().max() <= one_level + 1e-6

    # A 427x640 photo resizes to 248x371: the 73.5-pixel margin is floored by transformers, rounded to 74 by
    # torchvision. The result is otherwise the same pixels, one column over (documented in the README).
    image = Image.fromarray(load_sample_images().images[0])
    resized = TF.resize(image, 248, interpolation=TF.InterpolationMode.BICUBIC)
    floor_crop = TF.normalize(TF.to_tensor(TF.crop(resized, 12, 73, 224, 224)), [0.5] * 3, [0.5] * 3)
    assert torch.equal(pil_processor(image, return_tensors="pt")["pixel_values"][0], floor_crop)
    assert not torch.equal(floor_crop, timm_transform(image))


def test_converted_folders_load_without_hf_vit(tmp_path):
    sources = {
        "timm-reg4-gap": convert_timm(timm_vit(class_token=False, global_pool="avg", reg_tokens=4)),
        "timm-layerscale-qk_norm": convert_timm(timm_vit(init_values=1e-2, qk_norm=True, no_embed_class=True)),
    }
    deit = randomize(
        transformers.DeiTForImageClassificationWithTeacher(
            transformers.DeiTConfig(**SMALL, image_size=32, patch_size=8, num_labels=6)
        )
    )
    deit.save_pretrained(tmp_path / "deit-source")
    sources["deit-with-teacher"] = convert_deit(tmp_path / "deit-source")
    pixels = images(32, 32, count=2)
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    expected = {}
    for name, converted in sources.items():
        converted.save(tmp_path / name)
        assert {
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
            "README.md",
            "modeling_hf_vit.py",
            "configuration_hf_vit.py",
        } <= {p.name for p in (tmp_path / name).iterdir()}
        expected[name] = logits(converted.model, pixels)

    code = f"""
import json
import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

pixels = torch.from_numpy(np.load({str(tmp_path / "pixels.npy")!r}))
out = {{}}
for name in {list(sources)!r}:
    folder = {str(tmp_path)!r} + "/" + name
    AutoImageProcessor.from_pretrained(folder)
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        out[name] = model(pixel_values=pixels).logits.tolist()
print(json.dumps(out))
"""
    result = last_json_line(run_without_hf_vit(code, tmp_path).stdout)
    for name, values in result.items():
        assert_float32_close(torch.tensor(values), expected[name])


def test_finetuning_with_new_labels_reinitialises_only_the_heads(tmp_path, caplog):
    deit = randomize(
        transformers.DeiTForImageClassificationWithTeacher(
            transformers.DeiTConfig(**SMALL, image_size=32, patch_size=8, num_labels=6)
        )
    )
    deit.save_pretrained(tmp_path / "source")
    converted = convert_deit(tmp_path / "source")
    converted.save(tmp_path / "converted")

    with caplog.at_level(logging.WARNING, logger="hf_vit.convert"):
        model = load_for_finetuning(tmp_path / "converted", labels=["cat", "dog", "fox"])
    assert "re-initialised for 3 labels" in caplog.text and "distillation_classifier" in caplog.text
    assert model.config.id2label == {0: "cat", 1: "dog", 2: "fox"}
    for head in (model.classifier, model.distillation_classifier):
        assert head.weight.shape == (3, 64) and not head.weight.any() and not head.bias.any()
    old = converted.model.state_dict()
    for key, value in model.state_dict().items():
        if "classifier" not in key:
            assert torch.equal(value, old[key]), key
    # It trains: one step on the new labels changes the heads.
    loss = model(pixel_values=images(32, 32, count=3), labels=torch.tensor([0, 1, 2])).loss
    loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0


def test_command_line_and_script(tmp_path):
    from hf_vit.cli import main as cli_main

    reference = timm_vit(global_pool="avg")
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    output = tmp_path / "out"
    assert (
        cli_main(
            [
                "convert",
                "--from",
                "timm",
                "--source",
                str(tmp_path / "weights.pth"),
                "--timm-model",
                "vit_tiny_patch16_224",
                "--output",
                str(output),
            ]
        )
        == 1
    )  # a 64-wide state dict is not vit_tiny (192 wide)

    source = tmp_path / "hub"
    from timm.models import save_for_hf

    save_for_hf(reference, source)
    assert cli_main(["convert", "--from", "timm", "--source", str(source), "--output", str(output)]) == 0
    card = (output / "README.md").read_text()
    assert str(source) in card and "max |logit difference|" in card
    config = json.loads((output / "config.json").read_text())
    assert config["fc_norm"] is True and config["pooling"] == "mean"

    npz = tmp_path / "vit.npz"
    write_jax_npz(timm_vit(no_embed_class=True), npz, "big_vision")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "convert_checkpoint.py"),
            "--from",
            "npz",
            "--source",
            str(npz),
            "--output",
            str(tmp_path / "from-npz"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-npz" / "model.safetensors").exists()
    assert math.isfinite(json.loads((tmp_path / "from-npz" / "config.json").read_text())["layer_norm_eps"])


def test_config_fields_for_converted_checkpoints():
    from hf_vit import HfViTConfig
    from hf_vit.flops import count_parameters

    small = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=64, num_labels=3)  # fmt: skip
    for options in (dict(use_distillation_token=True, distillation_head=True), dict(fc_norm=True, pooling="mean")):
        config = HfViTConfig(**small, **options)
        model = HfViTForImageClassification(config)
        assert sum(p.numel() for p in model.parameters()) == count_parameters(config)
    for options, message in (
        (dict(use_distillation_token=True, use_class_token=False, pooling="mean"), "needs use_class_token=True"),
        (dict(distillation_head=True), "needs use_distillation_token=True"),
        (dict(use_distillation_token=True, distillation_head=True, fc_norm=True), "fc_norm=False"),
    ):
        with pytest.raises(ValueError, match=message):
            HfViTConfig(**small, **options)


@pytest.mark.parametrize("slip", ["q-k-swapped", "proj-transposed", "norm-swapped"])
def test_a_misplaced_weight_fails_the_logit_comparison(slip):
    """The float32 tolerance is loose enough for rounding on any CPU and tight enough for a converter's real
    mistakes: each slip below, in one block of a correctly converted model, fails the comparison."""
    reference = timm_vit()
    model = convert_timm(reference).model
    pixels = images(32, 32)
    expected = logits(reference, pixels)
    assert_same_logits(logits(model, pixels), expected)
    block = model.vit.layers[1]
    with torch.no_grad():
        if slip == "q-k-swapped":  # qkv rows read in the wrong order
            weight, width = block.attention.qkv.weight, block.attention.qkv.weight.shape[1]
            weight[:width], weight[width : 2 * width] = weight[width : 2 * width].clone(), weight[:width].clone()
        elif slip == "proj-transposed":  # a JAX kernel left in its [in, out] layout
            block.attention.proj.weight.copy_(block.attention.proj.weight.t().clone())
        else:  # the two LayerNorms of a block exchanged
            norm1 = block.norm1.weight.clone()
            block.norm1.weight.copy_(block.norm2.weight)
            block.norm2.weight.copy_(norm1)
    with pytest.raises(AssertionError, match="max |difference|"):
        assert_same_logits(logits(model, pixels), expected)
