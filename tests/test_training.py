"""`hf-vit train`, `hf-vit evaluate` and `hf-vit predict` end to end, on tiny models and small sets (CPU)."""

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shapes_images
from datasets import Dataset, DatasetDict, Features, Image, Value
from huggingface_hub import ModelCard
from PIL import Image as PILImage
from safetensors import safe_open

from hf_vit import recipes
from hf_vit.data import DataArguments, load_image_dataset
from hf_vit.evaluation import EvaluateArguments, evaluate_model
from hf_vit.plots import epoch_evaluations
from hf_vit.prediction import predict
from hf_vit.recipes import parse_args
from hf_vit.training import main as train_main
from hf_vit.training import run_training

REPO = Path(__file__).resolve().parent.parent
# A narrow one-block model: the runs below check the plumbing and the saved files, not the recipe's accuracy.
TINY = "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64"
QUIET = ["--disable_tqdm", "True", "--per_device_eval_batch_size", "512"]


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory) -> Path:
    """A model folder trained by `hf-vit train` on the digits with a tiny config (a few seconds)."""
    output_dir = tmp_path_factory.mktemp("digits") / "model"
    argv = ["--output_dir", str(output_dir), "--num_train_epochs", "3", "--config_overrides", TINY, *QUIET]
    assert train_main(argv) == 0
    return output_dir


def test_training_leaves_a_complete_model_folder(digits_folder):
    files = {path.name for path in digits_folder.iterdir()}
    expected = {
        "model.safetensors", "config.json", "configuration_hf_vit.py", "modeling_hf_vit.py",
        "preprocessor_config.json", "all_results.json", "trainer_state.json", "training_curves.png",
        "confusion_matrix.png", "attention_maps.png", "README.md",
    }  # fmt: skip
    assert expected <= files, f"missing: {expected - files}"

    config = json.loads((digits_folder / "config.json").read_text())
    assert config["id2label"] == {str(i): str(i) for i in range(10)}
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_hf_vit.HfViTForImageClassification"
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 1  # the overrides reached the model

    results = json.loads((digits_folder / "all_results.json").read_text())
    assert results["train_runtime"] > 0
    for key in ("eval_accuracy", "test_accuracy", "test_macro_f1", "test_top5_accuracy"):
        assert 0.0 <= results[key] <= 1.0, key
    assert results["test_top5_accuracy"] >= results["test_accuracy"]
    assert results["test_accuracy"] > 0.2, "three epochs on the digits should beat chance (0.1) clearly"

    state = json.loads((digits_folder / "trainer_state.json").read_text())
    epochs = [entry["epoch"] for entry in state["log_history"] if "eval_accuracy" in entry]
    assert epochs == [1.0, 2.0, 3.0, 3.0]  # the last: the best model, evaluated after training
    assert [entry["epoch"] for entry in epoch_evaluations(state["log_history"])] == [1.0, 2.0, 3.0]  # as plotted
    assert state["best_metric"] == max(e["eval_accuracy"] for e in state["log_history"] if "eval_accuracy" in e)

    for picture in ("training_curves.png", "confusion_matrix.png", "attention_maps.png"):
        with PILImage.open(digits_folder / picture) as image:
            assert image.format == "PNG" and min(image.size) > 200

    card = ModelCard.load(digits_folder / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "image-classification"
    test_results = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert test_results["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-4)
    for text in ("trust_remote_code=True", "training_curves.png", "confusion_matrix.png", "attention_maps.png",
                 "learning_rate"):  # fmt: skip
        assert text in card.text, text


def test_evaluate_reproduces_the_test_accuracy_of_training(digits_folder):
    metrics = evaluate_model(EvaluateArguments(model=str(digits_folder), split="test"), DataArguments())
    results = json.loads((digits_folder / "all_results.json").read_text())
    assert metrics["test_samples"] == 360  # the seeded stratified 20 % of 1,797 digits
    assert metrics["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)


def test_predict_gives_sorted_top_k_labels(digits_folder, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for index in range(2):
        path = tmp_path / f"digit{index}.png"
        PILImage.fromarray(np.round(digits.images[index] * 255 / 16).astype(np.uint8), "L").save(path)
        paths.append(str(path))
    predictions = predict(str(digits_folder), paths, top_k=3)
    assert len(predictions) == 2
    for scores in predictions:
        assert len(scores) == 3
        assert all(entry["label"] in {str(i) for i in range(10)} for entry in scores)
        values = [entry["score"] for entry in scores]
        assert values == sorted(values, reverse=True) and 0 < sum(values) <= 1 + 1e-6

    command = [sys.executable, "-m", "hf_vit.cli", "predict", "--model", str(digits_folder), "--top_k", "2", *paths]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout
    rows = list(csv.DictReader(io.StringIO(output)))
    assert [row["path"] for row in rows] == paths and list(rows[0])[:3] == ["path", "label_1", "score_1"]
    assert [row["label_1"] for row in rows] == [scores[0]["label"] for scores in predictions]


def test_imagefolder_with_string_labels_fine_tuned_with_mixing_augmentation(digits_folder, tmp_path):
    images, labels = shapes_images(48)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (tmp_path / "shapes" / label).mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "shapes" / label / f"{index}.png")
    output_dir = tmp_path / "fine_tuned"
    argv = [
        "--dataset", str(tmp_path / "shapes"), "--model_name_or_path", str(digits_folder),
        "--output_dir", str(output_dir), "--num_train_epochs", "2", "--per_device_train_batch_size", "8",
        "--validation_fraction", "0.25", "--test_fraction", "0.25", "--mixup_alpha", "0.8", "--cutmix_alpha", "1.0",
        "--auto_augment", "trivial", "--random_erasing", "0.25", "--ignore_mismatched_sizes", "True", *QUIET,
    ]  # fmt: skip
    assert train_main(argv) == 0
    config = json.loads((output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "bottom_right", "1": "top_left"}
    assert config["hidden_size"] == 32  # the digits model's body, with a new two-class head
    results = json.loads((output_dir / "all_results.json").read_text())
    assert "test_top5_accuracy" not in results  # top-5 only with more than 5 classes
    assert 0.0 <= results["test_accuracy"] <= 1.0
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.base_model is None, "a local folder is never a base_model (the Hub takes repo ids)"
    assert f"fine-tuned from `{digits_folder}`" in card.text


def test_in_memory_hub_style_set_with_string_labels_and_a_conv_stem(tmp_path):
    def split(count, seed):
        images, labels = shapes_images(count, seed=seed)
        features = Features({"img": Image(), "shape": Value("string")})
        return Dataset.from_dict({"img": images, "shape": labels}, features=features)

    raw = DatasetDict({"train": split(64, 0), "test": split(16, 1)})
    argv = [
        "--dataset", "my_shapes", "--preset", "vit-digits-patch2-8",
        "--config_overrides", f"{TINY},image_size=16,stem_channels=[8]",  # a list value among the overrides
        "--image_column", "img", "--label_column", "shape", "--output_dir", str(tmp_path / "model"),
        "--num_train_epochs", "4", "--learning_rate", "3e-3", "--per_device_train_batch_size", "8", *QUIET,
    ]  # fmt: skip
    results = run_training(*parse_args(argv), raw_dataset=raw)
    assert results["test_samples_per_second"] > 0
    assert results["test_accuracy"] >= 0.75, "corner squares are easy: four epochs should learn them"
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["label2id"] == {"bottom_right": 0, "top_left": 1}
    assert config["stem_channels"] == [8] and config["hidden_size"] == 32

    # The same set as Hub-style parquet files in a folder loads through `load_dataset`, like a Hub id.
    for name, dataset in raw.items():
        dataset.to_parquet(tmp_path / "hub_style" / "data" / f"{name}-00000-of-00001.parquet")
    splits = load_image_dataset(
        DataArguments(dataset=str(tmp_path / "hub_style"), image_column="img", label_column="shape")
    )
    assert len(splits["train"]) + len(splits["validation"]) == 64 and len(splits["test"]) == 16
    assert splits["train"].features["label"].names == ["bottom_right", "top_left"]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 100), ("t10k", 20)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    splits = load_image_dataset(DataArguments(dataset="fashion_mnist", data_dir=str(tmp_path)))
    assert {name: len(split) for name, split in splits.items()} == {"train": 90, "validation": 10, "test": 20}
    assert splits["train"].features["label"].names[9] == "Ankle boot"
    assert splits["test"][3]["image"].size == (28, 28)

    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist.*zalando-datasets"):
        load_image_dataset(DataArguments(dataset="fashion_mnist", data_dir=str(tmp_path / "absent")))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))
    with pytest.raises(ValueError, match="header promises"):
        load_image_dataset(DataArguments(dataset="fashion_mnist", data_dir=str(tmp_path)))


def test_recipe_defaults_and_command_line_precedence():
    model_args, data_args, augmentation_args, training_args = parse_args([])
    assert model_args.preset == "vit-digits-patch2-8" and data_args.dataset == "digits"
    assert training_args.output_dir == "outputs/digits-vit-digits-patch2-8"
    assert augmentation_args.horizontal_flip is False  # digits are not mirror-symmetric
    assert training_args.remove_unused_columns is False
    _, _, augmentation_args, training_args = parse_args(["--num_train_epochs", "2", "--horizontal_flip", "True"])
    assert training_args.num_train_epochs == 2 and augmentation_args.horizontal_flip is True
    model_args, _, _, training_args = parse_args(["--dataset", "fashion_mnist", "--learning_rate=0.01"])
    assert model_args.preset == "vit-mnist-convstem-patch8-28" and training_args.learning_rate == 0.01
    assert training_args.per_device_train_batch_size == 64 and training_args.dataloader_num_workers == 0
    assert training_args.output_dir == "outputs/fashion_mnist-vit-mnist-convstem-patch8-28"
    # The default folder is named after the preset trained, given or the recipe's.
    model_args, _, _, training_args = parse_args(["--preset=vit-tiny-patch16-224"])
    assert training_args.output_dir == "outputs/digits-vit-tiny-patch16-224" == f"outputs/digits-{model_args.preset}"


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        return next((set(line.split(":", 1)[1].split()) for line in cpuinfo if line.startswith("flags")), set())


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads a CPU's flags")
def test_bf16_detection_reads_the_cpu_as_the_kernel_does():
    assert recipes.cpu_computes_bf16() is bool({"avx512_bf16", "amx_tile"} & cpu_flags())


@pytest.mark.skipif(torch.cuda.is_available(), reason="judges the CPU as the training device")
@pytest.mark.parametrize("native", [True, False], ids=["cpu-with-bf16", "cpu-without-bf16"])
def test_fashion_mnist_recipe_trains_in_bf16_where_the_cpu_computes_it_and_says_so(native, monkeypatch, caplog):
    """Both kinds of CPU, on any machine: the detection is forced (its own reading is tested above)."""
    monkeypatch.setattr(recipes, "cpu_computes_bf16", lambda: native)
    with caplog.at_level("WARNING", logger="hf_vit"):
        _, _, _, training_args = parse_args(["--dataset", "fashion_mnist"])
    assert training_args.bf16 is native and training_args.use_cpu is native  # Trainer takes CPU bf16 with use_cpu
    expected = "bfloat16 mixed precision, as this CPU computes" if native else "float32, as this CPU has no native"
    assert f"recipe: {expected}" in caplog.text
    for given in (["--bf16", "False"], ["--bf16=false"], ["--fp16", "False"]):
        _, _, _, training_args = parse_args(["--dataset", "fashion_mnist", *given])
        assert training_args.bf16 is False and training_args.use_cpu is False
    for given in (["--use_cpu", "False"], ["--use-cpu=false"]):
        with caplog.at_level("WARNING", logger="hf_vit"):
            _, _, _, training_args = parse_args(["--dataset", "fashion_mnist", *given])
        assert training_args.bf16 is False
    assert "recipe: float32, as --use_cpu False was given; give --use_cpu True --bf16 True" in caplog.text
    _, _, _, training_args = parse_args(["--dataset", "fashion_mnist", "--use_cpu"])
    assert training_args.bf16 is native and training_args.use_cpu is True
    _, _, _, training_args = parse_args([])  # the digits recipe stays in float32
    assert training_args.bf16 is False and training_args.use_cpu is False


def test_bf16_training_on_cpu_learns_and_saves_float32_weights(tmp_path):
    """What the Fashion-MNIST recipe turns on where the CPU computes bfloat16: Trainer's autocast on the CPU."""
    output_dir = tmp_path / "bf16"
    argv = ["--output_dir", str(output_dir), "--num_train_epochs", "3", "--config_overrides", TINY, *QUIET]
    assert train_main([*argv, "--bf16", "True", "--use_cpu", "True"]) == 0
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["test_accuracy"] > 0.2, "three epochs on the digits should beat chance (0.1) clearly"
    with safe_open(output_dir / "model.safetensors", "pt") as weights:
        assert {weights.get_slice(name).get_dtype() for name in weights.keys()} == {"F32"}
    assert "| bf16 | True |" in (output_dir / "README.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "vit-nano"], "Unknown|unknown.*choose one of"),
        (["--preset", "vit-digits-patch2-8", "--model_name_or_path", "x"], "not both"),
        (["--auto_augment", "autoaug"], "must be 'none', 'trivial' or 'rand'"),
        (["--validation_fraction", "1.5"], "between 0 and 1"),
        (["--config_overrides", "hidden_sise=8"], "not HfViTConfig fields"),
        (["--dataset", "/no/such/folder", "--train_split", "train"], "Could not load --dataset"),
    ],
)
def test_bad_options_name_the_option_and_the_fix(argv, message, tmp_path):
    with pytest.raises((ValueError, SystemExit)) as error:
        train_main([*argv, "--output_dir", str(tmp_path / "never"), *QUIET])
    assert error.type is ValueError, "argument errors are ValueErrors with a message, not a bare parser exit"
    assert __import__("re").search(message, str(error.value)), str(error.value)
    assert not (tmp_path / "never" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("argv", "expected", "logged"),
    [
        (["--eval_strategy", "no"], ("no", "epoch", False), "--eval_strategy no was given"),
        (["--save_strategy", "no"], ("epoch", "no", False), "--save_strategy no was given"),
        (["--save_strategy", "steps", "--save_steps", "30"], ("steps", "steps", True), "--eval_strategy follows"),
        (["--eval_strategy", "steps", "--eval_steps", "20"], ("steps", "steps", True), "--save_strategy follows"),
        (["--eval_strategy", "epoch", "--save_strategy", "steps"], ("epoch", "steps", False), "differ"),
        (["--eval_strategy=steps", "--eval_steps", "30", "--save_steps", "50"], ("steps", "steps", False), "multiple"),
        (["--save_strategy", "best"], ("epoch", "best", True), None),
    ],
)
def test_a_recipe_default_gives_way_to_given_strategies_and_says_so(argv, expected, logged, caplog):
    with caplog.at_level("WARNING", logger="hf_vit"):
        _, _, _, training_args = parse_args(argv)  # TrainingArguments itself refuses an inconsistent combination
    strategies = (training_args.eval_strategy.value, training_args.save_strategy.value)
    assert (*strategies, training_args.load_best_model_at_end) == expected
    if training_args.load_best_model_at_end and "steps" in strategies:
        assert training_args.save_steps % training_args.eval_steps == 0
    assert (logged is None and "recipe:" not in caplog.text) or (logged and logged in caplog.text), caplog.text


def test_a_run_without_evaluations_trains_to_the_end(tmp_path):
    output_dir = tmp_path / "no_eval"
    argv = ["--eval_strategy", "no", "--output_dir", str(output_dir), "--num_train_epochs", "2",
            "--config_overrides", TINY, "--max_train_samples", "256", *QUIET]  # fmt: skip
    assert train_main(argv) == 0
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 16 and state["best_model_checkpoint"] is None
    assert [entry["epoch"] for entry in state["log_history"] if "eval_accuracy" in entry] == [2.0]  # the final one
    assert 0.0 <= json.loads((output_dir / "all_results.json").read_text())["test_accuracy"] <= 1.0


def test_help_shows_the_values_the_run_uses(capsys):
    for argv, shown in (([], "(default: 0.001)"), (["--dataset", "fashion_mnist"], "(default: 0.0015)")):
        with pytest.raises(SystemExit):
            parse_args([*argv, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert (
            "usage: hf-vit train" in text
            and f"--learning-rate LEARNING_RATE The initial learning rate for the optimizer. {shown}" in text
        )
