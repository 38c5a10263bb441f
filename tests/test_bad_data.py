"""What happens when the data is bad: images of every PIL mode and size, unreadable files, and unusable labels.
Real image files in tmp_path, real datasets, tiny models (CPU, a few seconds in all)."""

import json
import re

import numpy as np
import PIL
import pytest
import torch
from conftest import save_tiny_classifier, tiny_config
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage
from PIL import ImageFile

from hf_vit import build_image_processor
from hf_vit.augment import AugmentationArguments, build_train_transform, eval_transform_fn, train_transform_fn
from hf_vit.data import DataArguments, load_image_dataset, load_image_dataset_with_skip_counts
from hf_vit.evaluation import EvaluateArguments, evaluate_model
from hf_vit.images import read_image_file, to_rgb
from hf_vit.prediction import predict
from hf_vit.recipes import parse_args
from hf_vit.training import run_training

GREEN = (10, 200, 30)
GRAY = 77  # as a 16-bit level: 77 * 257 = 19789
PALETTE = [0] * 15 + list(GREEN) + [0] * (768 - 18)  # index 5 is GREEN


def palette_image(mode: str, size) -> PILImage.Image:
    image = PILImage.new(mode, size, 5 if mode == "P" else (5, 0))
    image.putpalette(PALETTE)
    return image


# mode -> (a one-colour image of that mode, the RGB colour `to_rgb` must give). Alpha 0 everywhere: it is dropped.
MODES = {
    "1": (lambda size: PILImage.new("1", size, 1), (255, 255, 255)),
    "L": (lambda size: PILImage.new("L", size, GRAY), (GRAY,) * 3),
    "LA": (lambda size: PILImage.new("LA", size, (GRAY, 0)), (GRAY,) * 3),
    "P": (lambda size: palette_image("P", size), GREEN),
    "PA": (lambda size: palette_image("PA", size), GREEN),
    "RGB": (lambda size: PILImage.new("RGB", size, GREEN), GREEN),
    "RGBA": (lambda size: PILImage.new("RGBA", size, (*GREEN, 0)), GREEN),
    "CMYK": (lambda size: PILImage.new("CMYK", size, (255, 0, 0, 0)), (0, 255, 255)),  # full cyan ink
    "YCbCr": (lambda size: PILImage.new("YCbCr", size, (GRAY, 128, 128)), (GRAY,) * 3),
    "I": (lambda size: PILImage.new("I", size, GRAY * 257), (GRAY,) * 3),
    "I;16": (lambda size: PILImage.new("I;16", size, GRAY * 257), (GRAY,) * 3),
    "I;16B": (lambda size: PILImage.new("I;16B", size, GRAY * 257), (GRAY,) * 3),
    "F": (lambda size: PILImage.new("F", size, GRAY / 255), (GRAY,) * 3),
}
SIZES = [(1, 1), (7, 3)]  # (width, height): the smallest image, and an odd non-square one
LABELS = {0: "apple", 1: "bus", 2: "cat"}
# A narrow one-block model for the training runs: they check the data plumbing, not accuracy.
TINY = "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64,image_size=16"
QUIET = ["--disable_tqdm", "True", "--report_to", "none"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("model"), LABELS)


@pytest.fixture(scope="module")
def processor():
    return build_image_processor(tiny_config())


def expected_pixels(colour) -> torch.Tensor:
    """The [3, 16, 16] input of a one-colour image at the tiny config's 16 x 16: mean = std = 0.5 maps 0..255 to
    -1..1."""
    return (torch.tensor(colour, dtype=torch.float32) / 255 * 2 - 1).view(3, 1, 1).expand(3, 16, 16)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_and_size_gives_the_same_pixels_in_training_and_evaluation(mode, size, processor):
    make, colour = MODES[mode]
    image = make(size)
    assert image.mode == mode
    converted = to_rgb(image)
    assert converted.mode == "RGB" and converted.size == size
    assert {tuple(pixel) for pixel in np.asarray(converted).reshape(-1, 3).tolist()} == {colour}

    plain = AugmentationArguments(random_crop=False, horizontal_flip=False)
    torch.testing.assert_close(build_train_transform(processor, plain)(image), expected_pixels(colour))
    evaluated = eval_transform_fn(processor)({"image": [image], "label": [0]})["pixel_values"][0]
    torch.testing.assert_close(evaluated, expected_pixels(colour), atol=1e-5, rtol=0)

    every_augmentation = AugmentationArguments(auto_augment="trivial", random_erasing=1.0)
    augmented = build_train_transform(processor, every_augmentation)(image)
    assert augmented.shape == (3, 16, 16) and torch.isfinite(augmented).all()


def test_training_batches_hold_the_pixels_of_the_per_image_transform(processor):
    """The training split normalises whole batches; its pixels must be those of `build_train_transform`, image by
    image, under the same seed (bit for bit: the batched steps are elementwise)."""
    images = [make(size) for make, _ in MODES.values() for size in SIZES]
    augmented = AugmentationArguments(auto_augment="trivial")
    torch.manual_seed(0)
    batched = train_transform_fn(processor, augmented)({"image": images, "label": [0] * len(images)})
    torch.manual_seed(0)
    one_by_one = [build_train_transform(processor, augmented)(image) for image in images]
    assert len(batched["pixel_values"]) == len(images) and batched["labels"] == [0] * len(images)
    for image, expected in zip(batched["pixel_values"], one_by_one, strict=True):
        assert torch.equal(image, expected)

    erased = train_transform_fn(processor, AugmentationArguments(random_erasing=1.0))
    for image in erased({"image": images, "label": [0] * len(images)})["pixel_values"]:
        assert image.shape == (3, 16, 16) and (image == 0).all(dim=0).any()  # erased to 0, the normalised mean


def pillow_reads(path) -> bool:
    try:
        with PILImage.open(path) as image:
            image.load()
    except OSError:
        return False
    return True


def test_predict_reads_every_mode_and_size_as_training_does(model_folder, tmp_path):
    """Each mode saved as a TIFF (which keeps them all) must score exactly as its RGB colour saved as a PNG."""
    odd_files, rgb_files = [], []
    for mode, (make, colour) in MODES.items():
        for width, height in SIZES:
            name = f"{mode.replace(';', '_')}-{width}x{height}"
            make((width, height)).save(tmp_path / f"{name}.tif")
            if not pillow_reads(tmp_path / f"{name}.tif"):
                # Pillow 12 (which gradio and trackio pin below 13) cannot read back the small YCbCr TIFFs it writes
                # ("image file is truncated"); Pillow 13 can. Any other file it cannot read fails here.
                assert mode == "YCbCr" and int(PIL.__version__.split(".")[0]) < 13, name
                continue
            PILImage.new("RGB", (width, height), colour).save(tmp_path / f"{name}-rgb.png")
            odd_files.append(str(tmp_path / f"{name}.tif"))
            rgb_files.append(str(tmp_path / f"{name}-rgb.png"))
    with PILImage.open(odd_files[-1]) as reopened:
        assert reopened.mode == "F"  # the files really hold the odd modes
    odd_scores = predict(str(model_folder), odd_files, top_k=3)
    rgb_scores = predict(str(model_folder), rgb_files, top_k=3)
    for path, odd, rgb in zip(odd_files, odd_scores, rgb_scores, strict=True):
        assert [entry["label"] for entry in odd] == [entry["label"] for entry in rgb], path
        assert [entry["score"] for entry in odd] == pytest.approx([entry["score"] for entry in rgb], abs=1e-5), path


def test_unreadable_file_given_to_predict_is_named(model_folder, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("not an image")
    with pytest.raises(ValueError, match=re.escape(f"{fake} is not a readable image file")):
        predict(str(model_folder), [str(fake)])


def test_sixteen_bit_png_reads_as_scaled_gray_levels(tmp_path):
    levels = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "depth.png"
    PILImage.fromarray(levels).save(path)
    with PILImage.open(path) as image:
        assert image.mode == "I;16"  # how this PIL opens 16-bit grayscale PNGs (older versions said "I")
        np.testing.assert_array_equal(np.asarray(image), levels)
        assert image.convert("RGB").getpixel((1, 0)) == (255, 255, 255)  # PIL's own convert clips: why to_rgb exists
    np.testing.assert_array_equal(np.asarray(read_image_file(path))[..., 0], [[0, 1, 128, 255]])
    # The same file through a datasets Image() column, as training reads it.
    column = Dataset.from_dict({"image": [str(path)]}).cast_column("image", Image())
    np.testing.assert_array_equal(np.asarray(to_rgb(column[0]["image"]))[..., 1], [[0, 1, 128, 255]])


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (PILImage.new("I", (2, 2), 70000), r"values 70000\.\.70000; hf_vit reads 'I' images as 16-bit .* 0\.\.65535"),
        (PILImage.new("I", (2, 2), -1), r"'I'.*Rescale it to 0\.\.65535"),
        (PILImage.new("F", (2, 2), 255.0), r"float \('F'\) image with values 255\.\.255.*Scale it to \[0, 1\]"),
        (PILImage.fromarray(np.array([[np.nan, 0.5]], np.float32)), r"NaN or inf values.*Scale it to \[0, 1\]"),
        (PILImage.new("L", (0, 0)), r"has no pixels \(size 0x0\)"),
    ],
    ids=["I-above-16-bit", "I-negative", "F-above-1", "F-nan", "empty"],
)
def test_images_out_of_range_are_refused_by_name(image, message):
    with pytest.raises(ValueError, match=f"^scan.tif .*{message}"):
        to_rgb(image, source="scan.tif")


def test_truncation_must_stay_an_error():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False, "something made PIL accept truncated files silently"


def write_image_folder(root, per_class: int = 8):
    """Class sub-folders of 16 x 16 PNGs, plus a truncated JPEG, a text file named .jpg and a notes.txt."""
    rng = np.random.default_rng(0)
    for label, base in (("dark", 40), ("light", 200)):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            pixels = np.clip(base + rng.integers(-30, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            PILImage.fromarray(pixels).save(root / label / f"{index}.png")
    PILImage.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "dark" / "cut.jpg")
    data = (root / "dark" / "cut.jpg").read_bytes()
    (root / "dark" / "cut.jpg").write_bytes(data[: len(data) // 2])  # PIL's verify() passes it; load() does not
    (root / "light" / "fake.jpg").write_text("not an image")
    (root / "light" / "notes.txt").write_text("imagefolder ignores files without an image extension")
    return [root / "dark" / "cut.jpg", root / "light" / "fake.jpg"]


def test_bad_files_in_an_image_folder_stop_the_run_or_are_skipped_and_counted(tmp_path, caplog):
    bad_files = write_image_folder(tmp_path / "folder")
    with pytest.raises(ValueError) as error:
        load_image_dataset(DataArguments(dataset=str(tmp_path / "folder")))
    message = str(error.value)
    assert message.startswith("2 image(s) cannot be used")
    for path in bad_files:
        assert str(path) in message
    assert "image file is truncated" in message and "--skip_bad_images" in message
    assert "notes.txt" not in message

    splits, skipped = load_image_dataset_with_skip_counts(
        DataArguments(dataset=str(tmp_path / "folder"), skip_bad_images=True, test_fraction=0.25)
    )
    assert skipped == {"train": 2}
    assert sum(len(split) for split in splits.values()) == 16
    assert "left out 2 of 18 images of split 'train'" in caplog.text

    output_dir = tmp_path / "model"
    argv = [
        "--dataset", str(tmp_path / "folder"), "--skip_bad_images", "--test_fraction", "0.25",
        "--preset", "vit-digits-patch2-8", "--config_overrides", TINY, "--num_train_epochs", "1",
        "--per_device_train_batch_size", "4", "--output_dir", str(output_dir), *QUIET,
    ]  # fmt: skip
    results = run_training(*parse_args(argv))
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert results["skipped_bad_images"] == 2
    assert json.loads((output_dir / "config.json").read_text())["id2label"] == {"0": "dark", "1": "light"}

    # `hf-vit evaluate` skips the same files, so it rebuilds the same test split and reproduces the accuracy.
    metrics = evaluate_model(
        EvaluateArguments(model=str(output_dir), split="test"),
        DataArguments(dataset=str(tmp_path / "folder"), skip_bad_images=True, test_fraction=0.25),
    )
    assert metrics["skipped_bad_images"] == 2 and metrics["test_samples"] == len(splits["test"])
    assert metrics["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)


def tiny_images(count: int) -> list:
    return [PILImage.new("L", (4, 4), 10 * index) for index in range(count)]


def test_bad_images_without_a_path_are_named_by_split_and_row():
    images = [*tiny_images(6), {"bytes": b"not an image", "path": None}, PILImage.new("F", (4, 4), 3.0)]
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b"])})
    raw = DatasetDict({"train": Dataset.from_dict({"image": images, "label": [0, 1] * 4}, features=features)})
    with pytest.raises(ValueError) as error:
        load_image_dataset(DataArguments(dataset="in_memory"), raw)
    assert "split 'train', row 6: cannot be decoded (UnidentifiedImageError" in str(error.value)
    assert "split 'train', row 7 is a float ('F') image with values 3..3" in str(error.value)

    raw["test"] = Dataset.from_dict({"image": tiny_images(2), "label": [0, 1]}, features=features)
    splits, skipped = load_image_dataset_with_skip_counts(
        DataArguments(dataset="in_memory", skip_bad_images=True, validation_fraction=0.34), raw
    )
    assert skipped == {"train": 2, "test": 0}
    assert len(splits["train"]) + len(splits["validation"]) == 6 and len(splits["test"]) == 2

    raw["test"] = Dataset.from_dict({"image": [{"bytes": b"junk", "path": "a.png"}] * 2, "label": [0, 1]}, features)
    with pytest.raises(ValueError, match=r"All 2 images of split 'test' are unusable; fix the files:\n  a.png"):
        load_image_dataset(DataArguments(dataset="in_memory", skip_bad_images=True), raw)


def labelled_set(labels: dict[str, list], feature) -> DatasetDict:
    features = Features({"image": Image(), "label": feature})
    return DatasetDict(
        {
            name: Dataset.from_dict({"image": tiny_images(len(values)), "label": values}, features=features)
            for name, values in labels.items()
        }
    )


def out_of_range_class_labels() -> DatasetDict:
    # ClassLabel refuses 5 when encoding an example, but a cast (or a file written elsewhere) keeps it.
    raw = labelled_set({"train": [0, 1] * 4, "test": [0, 1, 5, 1]}, Value("int64"))
    return raw.cast_column("label", ClassLabel(names=["a", "b"]))


@pytest.mark.parametrize(
    ("raw", "options", "message"),
    [
        (
            DatasetDict({"train": Dataset.from_dict({"image": tiny_images(4)}, features=Features({"image": Image()}))}),
            {},
            r"No ClassLabel column, nor one named 'label' or 'labels', among \['image'\]; name the column with "
            r"--label_column",
        ),
        (
            labelled_set({"train": [0, 1] * 4, "test": [-1] * 4}, ClassLabel(names=["a", "b"])),
            {},
            r"Split 'test' has 4 label\(s\) in column 'label' outside its ClassLabel's 0\.\.1 \(-1 at row 0, .*\) "
            r"\(-1 is datasets' 'no label'.*labelled splits \(--train_split, --eval_split, --test_split\)",
        ),
        (out_of_range_class_labels(), {}, r"Split 'test' has 1 label\(s\) .* outside .*0\.\.1 \(5 at row 2\)\. Train"),
        (
            labelled_set({"train": [0, 1, -1, 1, 0, 1]}, Value("int64")),
            {},
            r"Split 'train' has 1 negative integer label\(s\) in column 'label' \(-1 at row 2\); datasets writes -1",
        ),
        (
            labelled_set({"train": ["a", None, "b", "a"]}, Value("string")),
            {},
            r"Split 'train' has 1 image\(s\) without a label in column 'label' \(None at row 1\); label them",
        ),
        (
            labelled_set({"train": [0, 1] * 4, "test": []}, ClassLabel(names=["a", "b"])),
            {},
            r"Split 'test' of the set has no images; pick another with --train_split, --eval_split or --test_split",
        ),
        (
            labelled_set({"train": ["cat"] * 6}, Value("string")),
            {},
            r"Column 'label' has 1 class\(es\) \['cat'\]; classification needs two or more\. Check --label_column",
        ),
        (
            labelled_set({"train": [0] * 8 + [1] * 8, "test": [0, 1]}, ClassLabel(names=["a", "b"])),
            {"max_train_samples": 4, "eval_split": "test"},
            r"All 4 training images are of class 'a' \(--max_train_samples keeps the first N; the set may be sorted",
        ),
    ],
    ids=[
        "no-label-column",
        "minus-one",
        "beyond-num-classes",
        "negative-int",
        "missing-label",
        "empty-split",
        "one-class",
        "one-class-in-train",
    ],  # fmt: skip
)
def test_unusable_labels_are_refused_before_training(raw, options, message):
    with pytest.raises(ValueError, match=message):
        load_image_dataset(DataArguments(dataset="in_memory", **options), raw)


def test_integer_labels_keep_their_numeric_order():
    raw = labelled_set({name: list(range(12)) for name in ("train", "validation", "test")}, Value("int64"))
    splits = load_image_dataset(DataArguments(dataset="in_memory"), raw)
    names = splits["train"].features["label"].names
    assert names == [str(value) for value in range(12)]  # "10" after "9", not after "1"
    assert list(splits["train"]["label"]) == list(range(12))
