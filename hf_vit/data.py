"""Image classification data sets as `datasets.DatasetDict`s with an `image` (Image()) and a `label` (ClassLabel)
column and the splits train / validation / test, whatever their source: scikit-learn's digits, Fashion-MNIST IDX
files, a Hub dataset id, or a local folder (class sub-folders, or Hub-style data files)."""

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset
from PIL import Image as PILImage
from tqdm.auto import tqdm

BUILTIN_DATASETS = ("digits", "fashion_mnist")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_MNIST_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"


@dataclass
class DataArguments:
    """Which images to train and evaluate on."""

    dataset: str = field(
        default="digits",
        metadata={
            "help": "'digits' (scikit-learn's 8x8 digits), 'fashion_mnist' (IDX files in --data_dir), a Hub dataset "
            "id, or a local folder (class sub-folders, or Hub-style data files)."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    data_dir: str | None = field(
        default=None, metadata={"help": f"Folder of the Fashion-MNIST IDX files (default {FASHION_MNIST_DIR})."}
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Validation split; default 'validation' when the set has one, else carved from train."},
    )
    test_split: str | None = field(
        default=None,
        metadata={"help": "Test split; default 'test' when the set has one, else a seeded stratified split of train."},
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column; default: the first Image()."})
    label_column: str | None = field(
        default=None, metadata={"help": "Label column; default: the first ClassLabel, else 'label' or 'labels'."}
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Share of train carved out as validation when the set has none."}
    )
    test_fraction: float = field(
        default=0.2, metadata={"help": "Share of the set carved out as test when the set has no test split."}
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the carved validation and test splits."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training images."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N validation and test images."}
    )

    def __post_init__(self):
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"--{name} {value} must be between 0 and 1 (exclusive), e.g. 0.1.")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} {value} must be a positive number of images.")


def digits_dataset() -> Dataset:
    """scikit-learn's 1,797 8x8 digits (ink 0..16) as 8-bit grayscale images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    images = [PILImage.fromarray(image, mode="L") for image in tqdm(pixels, desc="digits: building images")]
    features = Features({IMAGE_COLUMN: Image(), LABEL_COLUMN: ClassLabel(names=[str(d) for d in range(10)])})
    return Dataset.from_dict({IMAGE_COLUMN: images, LABEL_COLUMN: digits.target.tolist()}, features=features)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian dims, then uint8 data), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number); re-download it.")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(f"{path} holds {len(data)} bytes where its header promises {expected}; re-download it.")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(data_dir: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {data_dir}. Install Debian's package with "
        "`apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist), point --data_dir at "
        f"a folder holding the four IDX files, or, online, use the Hub copy: --dataset {FASHION_MNIST_HUB_ID}."
    )


def fashion_mnist_dataset(data_dir: str | os.PathLike | None = None) -> DatasetDict:
    """Fashion-MNIST's own train (60k) and test (10k) splits, from the four IDX files."""
    data_dir = Path(data_dir or FASHION_MNIST_DIR)
    features = Features({IMAGE_COLUMN: Image(), LABEL_COLUMN: ClassLabel(names=FASHION_MNIST_LABELS)})
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find_idx(data_dir, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(data_dir, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"Fashion-MNIST {split} files in {data_dir} disagree: images {images.shape}, labels {labels.shape}."
            )
        if labels.max(initial=0) >= len(FASHION_MNIST_LABELS):
            raise ValueError(f"Fashion-MNIST {split} labels in {data_dir} go beyond 9; are these the right files?")
        pil_images = [
            PILImage.fromarray(image, mode="L") for image in tqdm(images, desc=f"fashion_mnist: {split} images")
        ]
        splits[split] = Dataset.from_dict({IMAGE_COLUMN: pil_images, LABEL_COLUMN: labels.tolist()}, features)
    return DatasetDict(splits)


def load_raw_dataset(args: DataArguments) -> DatasetDict:
    """The set named by `args.dataset`, with its own splits."""
    if args.dataset == "digits":
        return DatasetDict({"train": digits_dataset()})
    if args.dataset == "fashion_mnist":
        return fashion_mnist_dataset(args.data_dir)
    try:
        # One path for Hub ids and local folders: datasets picks imagefolder for class sub-folders and the
        # parquet/arrow/... builder for Hub-style data files.
        loaded = load_dataset(args.dataset, args.dataset_config)
    except Exception as error:  # datasets raises many types; name the input and the choices
        raise ValueError(
            f"Could not load --dataset {args.dataset!r} ({type(error).__name__}: {error}). Use one of "
            f"{', '.join(BUILTIN_DATASETS)}, a Hub dataset id (online, or cached with HF_HUB_OFFLINE=1), or a local "
            "folder of class sub-folders of images."
        ) from error
    if not isinstance(loaded, DatasetDict):
        raise ValueError(f"--dataset {args.dataset!r} loaded as {type(loaded).__name__}, not a set of named splits.")
    return loaded


def _pick_column(dataset: Dataset, wanted: str | None, kind: type, fallbacks: tuple[str, ...], option: str) -> str:
    columns = dataset.column_names
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{option} {wanted!r} is not a column of the data set; its columns are {columns}.")
        return wanted
    typed = [name for name, feature in dataset.features.items() if isinstance(feature, kind)]
    named = [name for name in fallbacks if name in columns]
    if not typed + named:
        raise ValueError(f"No {kind.__name__} column found among {columns}; name the column with {option}.")
    return (typed + named)[0]


def standardize_columns(dataset: DatasetDict, args: DataArguments) -> DatasetDict:
    """Keep only `image` (Image()) and `label` (ClassLabel); string or integer labels become a ClassLabel."""
    first = next(iter(dataset.values()))
    image_column = _pick_column(first, args.image_column, Image, ("image", "img"), "--image_column")
    label_column = _pick_column(first, args.label_column, ClassLabel, ("label", "labels"), "--label_column")
    dataset = dataset.select_columns([image_column, label_column])
    if image_column != IMAGE_COLUMN:
        dataset = dataset.rename_column(image_column, IMAGE_COLUMN)
    if label_column != LABEL_COLUMN:
        dataset = dataset.rename_column(label_column, LABEL_COLUMN)
    if not isinstance(dataset[next(iter(dataset))].features[IMAGE_COLUMN], Image):
        dataset = dataset.cast_column(IMAGE_COLUMN, Image())
    if not isinstance(dataset[next(iter(dataset))].features[LABEL_COLUMN], ClassLabel):
        # Names sorted across all splits, so that every split shares one id per label.
        names = sorted({str(value) for split in dataset.values() for value in split[LABEL_COLUMN]})
        dataset = dataset.map(lambda batch: {LABEL_COLUMN: [str(v) for v in batch[LABEL_COLUMN]]}, batched=True)
        dataset = dataset.cast_column(LABEL_COLUMN, ClassLabel(names=names))
    return dataset


def _carve(dataset: Dataset, fraction: float, seed: int, name: str) -> tuple[Dataset, Dataset]:
    try:
        parts = dataset.train_test_split(test_size=fraction, seed=seed, stratify_by_column=LABEL_COLUMN)
    except ValueError as error:
        raise ValueError(
            f"Could not carve a stratified {name} split ({fraction:.0%} of {len(dataset)} images): {error}. "
            f"Give the set its own {name} split, or change the fraction so that every class has images on both sides."
        ) from error
    return parts["train"], parts["test"]


def prepare_splits(raw: DatasetDict, args: DataArguments) -> DatasetDict:
    """train / validation / test: the set's own splits where it has them, else seeded stratified carves."""
    if args.train_split not in raw:
        raise ValueError(f"--train_split {args.train_split!r} is not a split of the set; its splits are {list(raw)}.")
    for option, name in (("--eval_split", args.eval_split), ("--test_split", args.test_split)):
        if name is not None and name not in raw:
            raise ValueError(f"{option} {name!r} is not a split of the set; its splits are {list(raw)}.")
    raw = standardize_columns(raw, args)
    train = raw[args.train_split]
    test_split = args.test_split or ("test" if "test" in raw else None)
    eval_split = args.eval_split or ("validation" if "validation" in raw else None)
    if test_split is None:
        train, test = _carve(train, args.test_fraction, args.split_seed, "test")
    else:
        test = raw[test_split]
    if eval_split is None:
        train, validation = _carve(train, args.validation_fraction, args.split_seed, "validation")
    else:
        validation = raw[eval_split]
    if args.max_train_samples:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples:
        validation = validation.select(range(min(args.max_eval_samples, len(validation))))
        test = test.select(range(min(args.max_eval_samples, len(test))))
    return DatasetDict({"train": train, "validation": validation, "test": test})


def load_image_dataset(args: DataArguments, raw: DatasetDict | None = None) -> DatasetDict:
    """`args.dataset` (or the given in-memory `raw` set) as train / validation / test with `image` and `label`."""
    return prepare_splits(load_raw_dataset(args) if raw is None else raw, args)


def dataset_slug(name: str) -> str:
    """A folder-name-safe short name of a data set: 'digits', 'org_name', 'my_folder'."""
    if os.path.isdir(name):
        return Path(name).resolve().name
    return name.replace("/", "_")
