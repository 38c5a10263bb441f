"""`--image_check full|sample|off|auto`: which images are decoded before a run, in how many processes, and what the
log says about the ones that are not (real images and real undecodable bytes, in memory and in a folder)."""

import json
import re

import numpy as np
import pytest
import torch
from conftest import tiny_config
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage

from hf_vit import HfViTForImageClassification, build_image_processor, save_model_folder
from hf_vit import data as data_module
from hf_vit.data import DataArguments, find_bad_images, load_image_dataset_with_skip_counts
from hf_vit.evaluation import main as evaluate_main

NUM_IMAGES = 40
NUM_BAD = 20  # rows 0..19: bytes that are no image


def half_bad_set() -> DatasetDict:
    images = [{"bytes": b"not an image", "path": None}] * NUM_BAD
    images += [PILImage.new("L", (8, 8), 10 * index) for index in range(NUM_IMAGES - NUM_BAD)]
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b"])})
    return DatasetDict({"train": Dataset.from_dict({"image": images, "label": [0, 1] * (NUM_IMAGES // 2)}, features)})


def test_sample_check_decodes_a_seeded_sample_of_each_split_and_says_so(caplog):
    args = DataArguments(dataset="in_memory", image_check="sample", image_check_sample_size=10, skip_bad_images=True)
    splits, skipped = load_image_dataset_with_skip_counts(args, half_bad_set())
    # Half the images are bad: a sample of 10 finds some of them, never all 20.
    assert 1 <= skipped["train"] <= 10
    assert sum(len(split) for split in splits.values()) == NUM_IMAGES - skipped["train"]
    assert f"--image_check sample: decoded 10 of {NUM_IMAGES} images" in caplog.text
    assert "--image_check full checks them all" in caplog.text
    # Seeded by --split_seed: the same sample again.
    assert load_image_dataset_with_skip_counts(args, half_bad_set())[1] == skipped
    with pytest.raises(ValueError, match=r"^\d+ image\(s\) cannot be used"):
        load_image_dataset_with_skip_counts(DataArguments(dataset="in_memory", image_check="sample"), half_bad_set())


def test_off_decodes_nothing_and_says_so(caplog):
    splits, skipped = load_image_dataset_with_skip_counts(
        DataArguments(dataset="in_memory", image_check="off"), half_bad_set()
    )
    assert skipped == {} and sum(len(split) for split in splits.values()) == NUM_IMAGES
    assert f"--image_check off: none of the {NUM_IMAGES} images was decoded" in caplog.text


def test_auto_checks_everything_up_to_the_limit_and_a_sample_above(monkeypatch, caplog):
    args = DataArguments(dataset="in_memory", image_check_sample_size=10, skip_bad_images=True)
    assert args.image_check == "auto"
    assert load_image_dataset_with_skip_counts(args, half_bad_set())[1] == {"train": NUM_BAD}
    monkeypatch.setattr(data_module, "IMAGE_CHECK_FULL_LIMIT", NUM_IMAGES - 1)
    assert load_image_dataset_with_skip_counts(args, half_bad_set())[1]["train"] < NUM_BAD
    assert f"--image_check sample, as the splits hold more than {NUM_IMAGES - 1}" in caplog.text


def test_full_check_in_two_processes_finds_what_one_process_finds():
    def without_addresses(found):  # PIL names the in-memory file by its object's address
        return [(row, re.sub(r" at 0x[0-9a-f]+", "", problem)) for row, problem in found]

    split = half_bad_set()["train"]
    one = without_addresses(find_bad_images(split, "train", num_proc=1))
    assert [row for row, _ in one] == list(range(NUM_BAD))
    assert "cannot be decoded (UnidentifiedImageError" in one[0][1]
    assert without_addresses(find_bad_images(split, "train", num_proc=2)) == one


def test_bad_image_check_options_are_refused():
    with pytest.raises(ValueError, match="--image_check 'some' must be one of auto, full, sample, off"):
        DataArguments(image_check="some")
    with pytest.raises(ValueError, match="--image_check_sample_size 0 must be a positive number"):
        DataArguments(image_check_sample_size=0)


def test_evaluate_takes_the_same_image_check_options(tmp_path, capsys, caplog):
    rng = np.random.default_rng(0)
    for label, base in (("a", 40), ("b", 200)):
        (tmp_path / "folder" / label).mkdir(parents=True)
        for index in range(10):
            pixels = np.clip(base + rng.integers(-30, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            PILImage.fromarray(pixels).save(tmp_path / "folder" / label / f"{index}.png")
    (tmp_path / "folder" / "b" / "fake.png").write_text("not an image")
    torch.manual_seed(0)
    model = HfViTForImageClassification(tiny_config(num_labels=2, id2label={0: "a", 1: "b"}))
    save_model_folder(model, build_image_processor(model.config), tmp_path / "model")
    argv = ["--model", str(tmp_path / "model"), "--dataset", str(tmp_path / "folder"), "--test_fraction", "0.25"]

    with pytest.raises(ValueError, match="fake.png"):
        evaluate_main([*argv, "--image_check", "full", "--image_check_num_proc", "2"])
    (tmp_path / "folder" / "b" / "fake.png").unlink()
    assert evaluate_main([*argv, "--image_check", "off"]) == 0
    assert "--image_check off: none of the 20 images was decoded" in caplog.text
    assert json.loads(capsys.readouterr().out)["test_samples"] == 5
