"""Fine-tuning the checkpoints people have: hf_vit, transformers ViT and DeiT, timm, from local folders and through the
Hub's download path (the local Hub server); a new input size; bad checkpoints refused before any data is loaded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import randomize_head, shapes_images, tiny_config
from huggingface_hub import ModelCard

from hf_vit import HfViTForImageClassification, build_image_processor, save_model_folder
from hf_vit.model_setup import ModelArguments, build_model
from hf_vit.processing import describe_processor, processor_output_size
from hf_vit.sources import load_pretrained
from hf_vit.training import main as train_main

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

QUIET = ["--disable_tqdm", "True", "--per_device_eval_batch_size", "64", "--report_to", "none"]
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
LABELS = ["bottom_right", "top_left"]
# hf_vit's oneDNN linears and the source library's F.linear round differently in the last bits.
TOLERANCE = 1e-4


def randomized(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            is_norm = name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "layernorm.weight"))
            parameter.copy_((1.0 if is_norm else 0.0) + 0.2 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def make_sources(root: Path) -> dict[str, tuple[Path, torch.nn.Module]]:
    """Tiny random checkpoints of every kind, 32 px, two labels: folder and the source library's model."""
    sources = {}
    torch.manual_seed(0)
    hf_vit_model = randomize_head(HfViTForImageClassification(tiny_config(image_size=32, patch_size=8, num_labels=2)))
    save_model_folder(hf_vit_model.eval(), build_image_processor(hf_vit_model.config), root / "hf_vit")
    sources["hf_vit"] = (root / "hf_vit", hf_vit_model)

    vit = randomized(transformers.ViTForImageClassification(
        transformers.ViTConfig(**SMALL, image_size=32, patch_size=8, num_labels=2)))  # fmt: skip
    vit.save_pretrained(root / "transformers")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4] * 3).save_pretrained(
        root / "transformers"
    )
    sources["transformers"] = (root / "transformers", vit)

    deit = randomized(transformers.DeiTForImageClassificationWithTeacher(
        transformers.DeiTConfig(**SMALL, image_size=32, patch_size=8, num_labels=2)))  # fmt: skip
    deit.save_pretrained(root / "deit")  # no preprocessor_config.json: DeiT's defaults at the model's size
    sources["deit"] = (root / "deit", deit)

    # google/vit-base-patch16-224-in21k's layout: ViTModel with its tanh pooler, no head.
    in21k = randomized(transformers.ViTModel(transformers.ViTConfig(**SMALL, image_size=32, patch_size=8)))
    in21k.save_pretrained(root / "in21k")
    sources["in21k"] = (root / "in21k", in21k)

    from timm.models import save_for_hf

    timm_model = randomized(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                              embed_dim=32, depth=2, num_heads=2, num_classes=2,
                                              global_pool="avg"))  # fmt: skip
    save_for_hf(timm_model, root / "timm")
    sources["timm"] = (root / "timm", timm_model)
    return sources


def source_logits(model, pixels):
    with torch.no_grad():
        output = model(pixels)
    return output if isinstance(output, torch.Tensor) else output.logits


def finetuning_logits(source: str, pixels, image_size=None) -> tuple[torch.Tensor, object]:
    model_args = ModelArguments(model_name_or_path=source, image_size=image_size)
    model, processor = build_model(model_args, LABELS)
    with torch.no_grad():
        return model.eval()(pixel_values=pixels).logits, processor


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return make_sources(tmp_path_factory.mktemp("sources"))


def test_every_kind_of_local_checkpoint_is_fine_tuned_from_its_exact_weights(sources):
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for kind, (folder, reference) in sources.items():
        ours, processor = finetuning_logits(str(folder), pixels)
        if kind == "in21k":  # features only: the new head starts at zero; the body was checked at conversion
            assert not ours.any() and ours.shape == (2, 2)
            continue
        theirs = source_logits(reference, pixels)
        assert theirs.std() > 0.05, kind
        assert (ours - theirs).abs().max() <= TOLERANCE, kind  # the same labels count: the head is kept
        assert processor_output_size(processor) == (32, 32), kind
    assert "mean [0.4, 0.4, 0.4]" in describe_processor(finetuning_logits(str(sources["transformers"][0]), pixels)[1])
    timm_processor = finetuning_logits(str(sources["timm"][0]), pixels)[1]
    assert type(timm_processor).__name__ == "BitImageProcessor"  # timm's eval transform: shortest edge, crop
    assert "resize {'shortest_edge': 35}, center crop {'height': 32, 'width': 32}, bicubic" in describe_processor(
        timm_processor
    )


def shapes_folder(root: Path, count: int = 24, size: int = 40) -> Path:
    """`shapes_images` as an image folder, one sub-folder per label."""
    images, labels = shapes_images(count, size=size)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / label).mkdir(parents=True, exist_ok=True)
        image.save(root / label / f"{index}.png")
    return root


def test_a_timm_conversion_fine_tunes_at_a_new_non_square_size(sources, tmp_path):
    """The folder `hf-vit convert --from timm` writes (a BitImageProcessor without a height) trains, at 48x32."""
    from hf_vit.cli import main as cli_main

    folder, reference = sources["timm"]
    converted = tmp_path / "converted"
    assert cli_main(["convert", "--from", "timm", "--source", str(folder), "--output", str(converted)]) == 0
    output_dir = tmp_path / "run"
    argv = ["--dataset", str(shapes_folder(tmp_path / "shapes")), "--model_name_or_path", str(converted),
            "--image_size", "48x32", "--output_dir", str(output_dir), "--num_train_epochs", "1",
            "--per_device_train_batch_size", "8", "--learning_rate", "0", "--warmup_steps", "0", *QUIET]  # fmt: skip
    assert train_main(argv) == 0

    config = json.loads((output_dir / "config.json").read_text())
    assert config["image_size"] == [48, 32] and config["pooling"] == "mean" and config["fc_norm"] is True
    processor = json.loads((output_dir / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "BitImageProcessor" and processor["resample"] == 3  # bicubic
    assert processor["crop_size"] == {"height": 48, "width": 32} and processor["size"] == {"shortest_edge": 53}
    # At learning rate 0 the saved weights are the source's, positions resampled once to the 6x4 grid as the model
    # resamples them at run time: the saved model at 48x32 gives timm's logits for 48x32 inputs.
    saved = HfViTForImageClassification.from_pretrained(output_dir).eval()
    pixels = torch.randn(2, 3, 48, 32, generator=torch.Generator().manual_seed(2))
    source = HfViTForImageClassification.from_pretrained(converted).eval()
    with torch.no_grad():
        assert (saved(pixel_values=pixels).logits - source(pixel_values=pixels).logits).abs().max() <= TOLERANCE
    timm_at_size = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                     embed_dim=32, depth=2, num_heads=2, num_classes=2, global_pool="avg",
                                     dynamic_img_size=True)  # fmt: skip
    timm_at_size.load_state_dict(reference.state_dict())
    assert (source_logits(saved, pixels) - source_logits(timm_at_size.eval(), pixels)).abs().max() <= TOLERANCE
    # `hf-vit evaluate` runs the folder's own processor class and reproduces the run's test accuracy.
    from hf_vit.data import DataArguments
    from hf_vit.evaluation import EvaluateArguments, evaluate_model

    metrics = evaluate_model(EvaluateArguments(model=str(output_dir)), DataArguments(dataset=str(tmp_path / "shapes")))
    results = json.loads((output_dir / "all_results.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(results["test_accuracy"])


def non_vit_folder(root: Path) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    return root


def adapter_folder(root: Path) -> Path:
    root.mkdir()
    (root / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "a/b"}))
    return root


def unsupported_timm_folder(root: Path) -> Path:
    from timm.models import save_for_hf

    save_for_hf(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                                  depth=1, num_heads=2, num_classes=2, pre_norm=True), root)  # fmt: skip
    return root


@pytest.mark.parametrize(
    ("make", "options", "message"),
    [
        (non_vit_folder, [], "is not a ViT checkpoint \\(config.json: model_type='bert'"),
        (adapter_folder, [], "is a PEFT adapter .* Fine-tune its base model \\('a/b'\\)"),
        (unsupported_timm_folder, [], "timm option pre_norm=True is not supported"),
        (lambda root: root / "absent", [], "no such folder, and not a Hub repo id"),
        ("hf_vit", ["--image_size", "36"], "--image_size 36x36: the patch size 8x8 .* does not divide it; .* 32x32"),
        ("hf_vit", ["--image_size", "big"], "--image_size 'big' is not a size"),
        ("hf_vit", ["--config_overrides", "hidden_size=64"], "weights do not fit the configured shapes"),
    ],
    ids=["not-a-vit", "peft-adapter", "timm-option", "absent", "indivisible-size", "malformed-size", "body-shape"],
)
def test_bad_checkpoints_and_sizes_are_refused_before_data_is_loaded(sources, tmp_path, make, options, message):
    source = sources[make][0] if isinstance(make, str) else make(tmp_path / "source")
    # A data set that does not exist: reaching it would be another error.
    argv = ["--dataset", str(tmp_path / "no_such_data_set"), "--model_name_or_path", str(source), *options,
            "--output_dir", str(tmp_path / "never"), *QUIET]  # fmt: skip
    with pytest.raises(ValueError, match=message):
        train_main(argv)
    assert not (tmp_path / "never" / "model.safetensors").exists()


def test_lineage_of_local_folders_is_a_hub_id_or_nothing(sources, tmp_path):
    from hf_vit.sources import read_lineage

    folder = sources["hf_vit"][0]
    assert load_pretrained(str(folder)).lineage.base_model is None  # a local path is never a base_model
    cache = tmp_path / "hub" / "models--org--tiny-vit" / "snapshots" / ("0" * 40)
    cache.parent.mkdir(parents=True)
    cache.symlink_to(folder)
    assert read_lineage(cache, None, "hf_vit").base_model == "org/tiny-vit"
    card = "---\nlicense: mit\nbase_model: google/vit-base-patch16-224\n---\n# converted\n"
    (tmp_path / "converted").mkdir()
    (tmp_path / "converted" / "README.md").write_text(card)
    lineage = read_lineage(tmp_path / "converted", None, "hf_vit")
    assert (lineage.base_model, lineage.license) == ("google/vit-base-patch16-224", "mit")
    (tmp_path / "local_base").mkdir()
    (tmp_path / "local_base" / "README.md").write_text(f"---\nbase_model: {tmp_path}\n---\n")
    assert read_lineage(tmp_path / "local_base", None, "hf_vit").base_model is None


# --- The Hub's download path, against the local Hub server ------------------------------------------------------------


def test_every_kind_downloads_from_the_hub_and_a_timm_repo_fine_tunes(sources, tmp_path):
    from hub_server import LocalHub
    from test_hub import hub_env

    hub = LocalHub(tmp_path / "hub").start()
    try:
        env = hub_env(hub, tmp_path / "home")
        repos = {"hf_vit": "tester/tiny-hf-vit", "transformers": "google/tiny-vit", "deit": "facebook/tiny-deit",
                 "timm": "timm/tiny_vit.augreg"}  # fmt: skip
        # timm's Hub repos carry their licence in the card.
        (sources["timm"][0] / "README.md").write_text("---\nlicense: apache-2.0\nlibrary_name: timm\n---\n# tiny\n")
        pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        torch.save(pixels, tmp_path / "pixels.pt")
        folders = {kind: str(sources[kind][0]) for kind in repos}
        output_dir = tmp_path / "run"
        train_argv = ["--dataset", str(shapes_folder(tmp_path / "shapes")), "--model_name_or_path", repos["timm"],
                      "--output_dir", str(output_dir), "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
                      *QUIET]  # fmt: skip
        code = f"""
import json
import torch
from huggingface_hub import HfApi
from hf_vit.model_setup import ModelArguments, build_model

api = HfApi()
for kind, repo in {repos!r}.items():
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path={folders!r}[kind])
from hf_vit.convert import main as convert_main

assert convert_main(["--from", "timm", "--source", {repos["timm"]!r}, "--output", "converted"]) == 0
assert convert_main(["--from", "transformers", "--source", {repos["transformers"]!r}, "--output", "converted_vit"]) == 0
pixels = torch.load("pixels.pt")
logits = {{}}
for kind, repo in {repos!r}.items():
    model = build_model(ModelArguments(model_name_or_path=repo), {LABELS!r})[0].eval()
    with torch.no_grad():
        logits[kind] = model(pixel_values=pixels).logits.tolist()
open("logits.json", "w").write(json.dumps(logits))
# A whole run from the timm repo, as `hf-vit train` makes it (in this process: one interpreter start less).
from hf_vit.training import main as train_main

assert train_main({train_argv!r}) == 0
"""
        result = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": os.getcwd()}, cwd=tmp_path,
                                capture_output=True, text=True, timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        logits = json.loads((tmp_path / "logits.json").read_text())
        for kind in repos:
            reference = sources[kind][1]
            assert (torch.tensor(logits[kind]) - source_logits(reference, pixels)).abs().max() <= TOLERANCE, kind
        assert "converted in memory from a timm checkpoint" in result.stderr
        # Lineage through `hf-vit convert` from the Hub: the convert card names the repo, its relation and licence,
        # and a fine-tuning run from the converted folder (offline, local) takes them over.
        card = ModelCard.load(tmp_path / "converted" / "README.md").data
        assert (card.base_model, card.base_model_relation, card.license) == (repos["timm"], "quantized", "apache-2.0")
        card = ModelCard.load(tmp_path / "converted_vit" / "README.md").data
        assert card.base_model == repos["transformers"] and "license" not in card.to_dict()  # none in the source
        lineage = load_pretrained(str(tmp_path / "converted")).lineage
        assert (lineage.base_model, lineage.license) == (repos["timm"], "apache-2.0")

        card = ModelCard.load(output_dir / "README.md")
        assert card.data.base_model == repos["timm"] and card.data.license == "apache-2.0"
        assert card.data.base_model_relation == "finetune"
        assert (
            f"fine-tuned from `{repos['timm']}`, a timm checkpoint converted exactly by `hf_vit.convert`," in card.text
        )
    finally:
        hub.stop()


# --- The fine-tuning recipe and layer-wise learning-rate decay -------------------------------------------------------


def test_a_checkpoint_gets_the_finetuning_recipe_scaled_to_its_batch_and_given_options_win(capsys, caplog):
    from hf_vit.recipes import parse_args

    cases = {
        (): 2.5e-5,  # batch 32
        ("--per_device_train_batch_size", "64", "--gradient_accumulation_steps", "2"): 1e-4,  # 128 images a step
        ("--per_device_train_batch_size", "512"): 1e-4,  # the top of the usual range
        ("--per_device_train_batch_size", "4"): 1e-5,  # its bottom
        ("--learning_rate", "3e-4"): 3e-4,
    }
    for options, learning_rate in cases.items():
        with caplog.at_level("WARNING", logger="hf_vit"):
            model_args, _, augmentation_args, training_args = parse_args(["--model_name_or_path", "org/vit", *options])
        assert training_args.learning_rate == pytest.approx(learning_rate), options
        assert model_args.preset is None and training_args.warmup_steps == 0.1
        assert augmentation_args.horizontal_flip is False  # the data set's (digits) augmentation settings stay
    assert "recipe: fine-tuning at learning rate 2.5e-05 for a total batch of 32" in caplog.text
    _, _, _, training_args = parse_args(["--model_name_or_path", "org/vit", "--num_train_epochs", "2"])
    assert training_args.num_train_epochs == 2
    with pytest.raises(SystemExit):
        parse_args(["--model_name_or_path", "org/vit", "--help"])
    assert "(default: 2.5e-05)" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(ValueError, match="--layer_decay 1.5 must be in \\(0, 1\\]"):
        parse_args(["--model_name_or_path", "org/vit", "--layer_decay", "1.5"])


def test_layer_decay_gives_each_block_its_learning_rate_in_a_real_run(sources, tmp_path):
    from hf_vit.finetuning import layer_index

    output_dir = tmp_path / "run"
    argv = ["--dataset", str(shapes_folder(tmp_path / "shapes")), "--model_name_or_path", str(sources["hf_vit"][0]),
            "--layer_decay", "0.5", "--learning_rate", "1e-3", "--output_dir", str(output_dir),
            "--num_train_epochs", "1", "--per_device_train_batch_size", "8", *QUIET]  # fmt: skip
    assert train_main(argv) == 0
    checkpoint = next(output_dir.glob("checkpoint-*"))
    base_lrs = torch.load(checkpoint / "scheduler.pt", weights_only=True)["base_lrs"]
    # Two blocks: head and final norm 1e-3, block 1 5e-4, block 0 2.5e-4, embeddings 1.25e-4 (each with and
    # without weight decay), the full rate first.
    assert sorted(set(base_lrs), reverse=True) == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4])
    assert base_lrs[0] == pytest.approx(1e-3)
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    model = HfViTForImageClassification.from_pretrained(sources["hf_vit"][0])
    per_layer = [0] * 4
    for name, _ in model.named_parameters():
        per_layer[layer_index(name, 2)] += 1
    per_rate = {}
    for group in optimizer["param_groups"]:
        rate = round(group["initial_lr"], 12)  # "lr" is where the schedule left it
        per_rate[rate] = per_rate.get(rate, 0) + len(group["params"])
    assert [per_rate[round(1e-3 * 0.5 ** (3 - layer), 12)] for layer in range(4)] == per_layer
    assert layer_index("base_model.model.vit.layers.1.mlp.fc1.lora_A.default.weight", 2) == 2  # under PEFT
    assert layer_index("vit.embeddings.stem.convs.0.weight", 2) == 0 and layer_index("classifier.bias", 2) == 3


# --- Partial fine-tuning: a linear probe, LoRA -----------------------------------------------------------------------


def reproduced_test_results(model, processor, data_set: Path) -> dict[str, float]:
    """Loss and accuracy of `model` on the test split a run on `data_set` used (the same seeded carve), through the
    saved processor: what the trained model gave, when the saved files hold it."""
    from hf_vit.data import DataArguments, load_image_dataset

    test = load_image_dataset(DataArguments(dataset=str(data_set)))["test"]
    pixels = processor([image.convert("RGB") for image in test["image"]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model.eval()(pixel_values=pixels).logits
    labels = torch.tensor(test["label"])
    return {"test_loss": torch.nn.functional.cross_entropy(logits, labels).item(),
            "test_accuracy": (logits.argmax(-1) == labels).float().mean().item()}  # fmt: skip


@pytest.mark.skipif(__import__("importlib").util.find_spec("peft") is None, reason="needs peft (the dev extra has it)")
def test_lora_leaves_an_adapter_or_a_merged_model_that_gives_the_trained_logits(sources, tmp_path):
    from peft import PeftModel
    from transformers import AutoImageProcessor

    data_set = shapes_folder(tmp_path / "shapes", count=32)
    source = sources["hf_vit"][0]
    common = ["--dataset", str(data_set), "--model_name_or_path", str(source), "--lora_r", "4", "--learning_rate",
              "1e-2", "--label_smoothing_factor", "0", "--num_train_epochs", "2", "--per_device_train_batch_size", "8",
              *QUIET]  # fmt: skip
    assert train_main([*common, "--output_dir", str(tmp_path / "adapter")]) == 0
    assert train_main([*common, "--merge_lora", "True", "--output_dir", str(tmp_path / "merged")]) == 0

    adapter = tmp_path / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "preprocessor_config.json"} <= {
        path.name for path in adapter.iterdir()}  # fmt: skip
    assert not (adapter / "model.safetensors").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(source)
    base = HfViTForImageClassification.from_pretrained(source)
    tuned = PeftModel.from_pretrained(base, adapter)
    processor = AutoImageProcessor.from_pretrained(adapter)
    results = json.loads((adapter / "all_results.json").read_text())
    reproduced = reproduced_test_results(tuned, processor, data_set)
    assert reproduced["test_loss"] == pytest.approx(results["test_loss"], abs=1e-5)
    assert reproduced["test_accuracy"] == pytest.approx(results["test_accuracy"])
    card = ModelCard.load(adapter / "README.md")
    assert "base_model_relation" not in card.data.to_dict() and card.data.library_name == "peft"  # a local base
    assert f'PeftModel.from_pretrained(base, "{adapter.name}")' in card.text

    merged = tmp_path / "merged"
    assert not (merged / "adapter_config.json").exists()
    results = json.loads((merged / "all_results.json").read_text())
    model = HfViTForImageClassification.from_pretrained(merged)
    reproduced = reproduced_test_results(model, AutoImageProcessor.from_pretrained(merged), data_set)
    assert reproduced["test_loss"] == pytest.approx(results["test_loss"], abs=1e-5)
    # The trained adapters changed the weights they sit on, and the head trained in full.
    source_model = HfViTForImageClassification.from_pretrained(source)
    for name in ("vit.layers.0.attention.qkv.weight", "vit.layers.1.mlp.fc2.weight", "classifier.weight"):
        assert not torch.equal(model.state_dict()[name], source_model.state_dict()[name]), name
    assert torch.equal(
        model.state_dict()["vit.layers.0.norm1.weight"], source_model.state_dict()["vit.layers.0.norm1.weight"]
    )


def test_freeze_backbone_trains_the_head_only(sources, tmp_path):
    source = sources["hf_vit"][0]
    output_dir = tmp_path / "probe"
    argv = ["--dataset", str(shapes_folder(tmp_path / "shapes")), "--model_name_or_path", str(source),
            "--freeze_backbone", "True", "--learning_rate", "1e-2", "--num_train_epochs", "1",
            "--per_device_train_batch_size", "8", "--output_dir", str(output_dir), *QUIET]  # fmt: skip
    assert train_main(argv) == 0
    before = HfViTForImageClassification.from_pretrained(source).state_dict()
    after = HfViTForImageClassification.from_pretrained(output_dir).state_dict()
    changed = sorted(name for name in before if not torch.equal(before[name], after[name]))
    assert changed == ["classifier.bias", "classifier.weight"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lora_r", "8"], "--lora_r adapts a pretrained model: give the checkpoint with --model_name_or_path"),
        (["--freeze_backbone", "True"], "--freeze_backbone adapts a pretrained model"),
        (["--model_name_or_path", "x", "--merge_lora", "True"], "--merge_lora configure LoRA.*add --lora_r 16"),
        (["--model_name_or_path", "x", "--lora_r", "8", "--freeze_backbone", "True"], "give one"),
        (["--model_name_or_path", "x", "--lora_r", "-1"], "positive rank"),
        (["--model_name_or_path", "x", "--lora_r", "8", "--push_to_hub", "True"], "add --merge_lora True"),
    ],
)
def test_partial_finetuning_options_are_checked_before_anything_loads(argv, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        train_main([*argv, "--output_dir", str(tmp_path / "never"), *QUIET])


def test_lora_without_peft_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "peft", None)  # what an import sees when PEFT is not installed
    with pytest.raises(ValueError, match=r"LoRA needs PEFT.*pip install 'hf_vit\[peft\]'"):
        train_main(["--model_name_or_path", "x", "--lora_r", "8", "--output_dir", str(tmp_path / "never"), *QUIET])


def test_a_head_for_the_same_labels_is_reordered_and_one_for_other_labels_starts_anew(tmp_path):
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    named = {"same labels, other order": ["top_left", "bottom_right"], "other labels": ["cat", "dog"]}
    for case, names in named.items():
        config = tiny_config(image_size=32, patch_size=8, num_labels=2, id2label=dict(enumerate(names)))
        model = randomize_head(HfViTForImageClassification(config)).eval()
        save_model_folder(model, build_image_processor(model.config), tmp_path / case)
        ours, _ = finetuning_logits(str(tmp_path / case), pixels)  # the data set's labels: LABELS
        if case == "other labels":
            assert not ours.any(), case  # a new, zero-initialised head
            continue
        theirs = source_logits(model, pixels)
        assert theirs.std() > 0.05
        rows = [names.index(name) for name in LABELS]
        assert (ours - theirs[:, rows]).abs().max() <= TOLERANCE, case


def test_transfer_script_writes_both_runs_into_the_fine_tuned_card(tmp_path):
    """scripts/transfer.py (the docs' transfer result): a real fine-tune and a real from-scratch run of the same
    preset, their table in the fine-tuned model's card."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    small = ["--max_train_samples", "64", "--max_eval_samples", "32"]
    pretrain = [sys.executable, "-m", "hf_vit.cli", "train", "--dataset", "digits", "--num_train_epochs", "1", *small,
                "--output_dir", str(tmp_path / "pretrained")]  # fmt: skip
    subprocess.run(pretrain, env=env, check=True, capture_output=True)
    script = Path(__file__).parents[1] / "scripts" / "transfer.py"
    subprocess.run([sys.executable, str(script), "--pretrained", str(tmp_path / "pretrained"), "--dataset", "digits",
                    "--epochs", "1", "--output_dir", str(tmp_path / "transfer"), "--finetune_args", " ".join(small),
                    "--scratch_args", " ".join(small)], env=env, check=True, capture_output=True)  # fmt: skip
    card = (tmp_path / "transfer" / "finetuned" / "README.md").read_text()
    section = card.split("## Compared with training from scratch")[1]
    for run, folder in (("fine-tuned", "finetuned"), ("from scratch", "scratch")):
        results = json.loads((tmp_path / "transfer" / folder / "all_results.json").read_text())
        assert f"| {run} |" in section and f"**{results['test_accuracy']:.3f}**" in section
    assert "--preset vit-digits-patch2-8" in section  # the pretrained folder's architecture, from scratch
