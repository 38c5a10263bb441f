"""Image classification data sets as `datasets.DatasetDict`s with an `image` (Image()) and a `label` (ClassLabel)
column and the splits train / validation / test, whatever their source: scikit-learn's digits, Fashion-MNIST IDX
files, a Hub dataset id, or a local folder (class sub-folders, or Hub-style data files); and the checks that refuse
unusable images and labels before a run starts."""

import gzip
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value, load_dataset
from PIL import Image as PILImage
from tqdm.auto import tqdm

from .images import to_rgb

BUILTIN_DATASETS = ("digits", "fashion_mnist")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_MNIST_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"
# Columns of the image check's own table: the row in the split, and what is wrong with its image.
ROW_COLUMN = "row"
PROBLEM_COLUMN = "problem"
# Bad images or labels named one by one in a message; the rest are counted.
EXAMPLES_SHOWN = 10

logger = logging.getLogger("hf_vit")

IMAGE_CHECKS = ("auto", "full", "sample", "off")
# --image_check auto decodes every image up to this many images in the splits used, and a sample of each split above.
IMAGE_CHECK_FULL_LIMIT = 100_000
IMAGE_CHECK_SAMPLE_SIZE = 10_000
# Below this many images per process, starting worker processes costs more than it saves.
IMAGES_PER_CHECK_PROCESS = 5_000


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
    image_check: str = field(
        default="auto",
        metadata={
            "help": "How the images are checked before a run: 'full' decodes every image of the splits used "
            f"(in parallel, see --image_check_num_proc), 'sample' a seeded random --image_check_sample_size of each "
            f"split, 'off' none; 'auto' (the default) is 'full' up to {IMAGE_CHECK_FULL_LIMIT:,} images in all, "
            "'sample' above. An unusable image that the check did not decode stops the run when training reaches it."
        },
    )
    image_check_sample_size: int = field(
        default=IMAGE_CHECK_SAMPLE_SIZE, metadata={"help": "Images decoded per split by --image_check sample."}
    )
    image_check_num_proc: int | None = field(
        default=None,
        metadata={
            "help": "Processes that decode images for --image_check full (datasets' num_proc); default: the CPU "
            "cores this process may use, shared between the processes of a multi-process launch on this machine."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read a Hub data set as a stream (datasets' streaming=True) instead of downloading it whole: "
            "needs --max_steps; validation and test are the first --max_eval_samples images (default 1,000) of the "
            "set's validation and test splits (or --eval_split / --test_split), read into memory."
        },
    )
    skip_bad_images: bool = field(
        default=False,
        metadata={
            "help": "Leave out unusable images (corrupt, truncated, not an image, 'I'/'F' values out of range) and "
            "report how many; by default the run stops before training and names them."
        },
    )

    def __post_init__(self):
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"--{name} {value} must be between 0 and 1 (exclusive), e.g. 0.1.")
        if self.streaming and self.dataset in BUILTIN_DATASETS:
            raise ValueError(f"--streaming is for Hub data sets; {self.dataset!r} is built in memory: leave it out.")
        if self.streaming and self.skip_bad_images:
            raise ValueError(
                "--skip_bad_images needs every image decoded before the run, and --streaming reads the training "
                "images only while training (an unusable one stops the run there): give one of the two."
            )
        if self.image_check not in IMAGE_CHECKS:
            raise ValueError(f"--image_check {self.image_check!r} must be one of {', '.join(IMAGE_CHECKS)}.")
        for name in ("max_train_samples", "max_eval_samples", "image_check_sample_size", "image_check_num_proc"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} {value} must be a positive number.")


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
        raise ValueError(
            f"No {kind.__name__} column, nor one named {' or '.join(map(repr, fallbacks))}, among {columns}; "
            f"name the column with {option}."
        )
    return (typed + named)[0]


def _rows_and_values(pairs: list[tuple[int, object]]) -> str:
    shown = ", ".join(f"{value!r} at row {row}" for row, value in pairs[:EXAMPLES_SHOWN])
    return shown + (f", and {len(pairs) - EXAMPLES_SHOWN} more" if len(pairs) > EXAMPLES_SHOWN else "")


def _is_integer(feature) -> bool:
    return isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))


def _checked_label_values(dataset: DatasetDict, label_column: str) -> dict[str, list]:
    """The `label` values of every split, refused when a value is missing, a ClassLabel value lies outside
    0..num_classes-1 (datasets writes -1 for "no label"), an integer label is negative, or splits disagree on the
    ClassLabel. `label_column` is the user's name of the column, for the messages."""
    first = next(iter(dataset))
    label_feature = dataset[first].features[LABEL_COLUMN]
    labels = {name: split.select_columns([LABEL_COLUMN])[:][LABEL_COLUMN] for name, split in dataset.items()}
    for name, values in labels.items():
        feature = dataset[name].features[LABEL_COLUMN]
        if feature != label_feature and ClassLabel in (type(feature), type(label_feature)):
            raise ValueError(
                f"Column {label_column!r} is {feature} in split {name!r} but {label_feature} in split {first!r}: "
                "label ids would mean different classes. Give every split the same label feature (`cast_column`)."
            )
        unlabelled = [(row, value) for row, value in enumerate(values) if value is None]
        if unlabelled:
            raise ValueError(
                f"Split {name!r} has {len(unlabelled)} image(s) without a label in column {label_column!r} "
                f"({_rows_and_values(unlabelled)}); label them or remove those rows."
            )
        if isinstance(label_feature, ClassLabel):
            outside = [(row, value) for row, value in enumerate(values) if not 0 <= value < label_feature.num_classes]
            if outside:
                no_label = " (-1 is datasets' 'no label': these images are unlabelled)" if -1 in values else ""
                raise ValueError(
                    f"Split {name!r} has {len(outside)} label(s) in column {label_column!r} outside its ClassLabel's "
                    f"0..{label_feature.num_classes - 1} ({_rows_and_values(outside)}){no_label}. Train and evaluate "
                    "on labelled splits (--train_split, --eval_split, --test_split) or remove those rows."
                )
        elif _is_integer(label_feature):
            negative = [(row, value) for row, value in enumerate(values) if value < 0]
            if negative:
                raise ValueError(
                    f"Split {name!r} has {len(negative)} negative integer label(s) in column {label_column!r} "
                    f"({_rows_and_values(negative)}); datasets writes -1 for 'no label'. Remove those rows or pick "
                    "labelled splits (--train_split, --eval_split, --test_split); if a negative number is a real "
                    "class, cast the column to strings."
                )
    return labels


def with_standard_columns(dataset, image_column: str, label_column: str):
    """The image and label columns only, under hf_vit's names (`image`, `label`): for a `Dataset`, a `DatasetDict`
    or a streamed `IterableDataset` alike."""
    dataset = dataset.select_columns([image_column, label_column])
    if image_column != IMAGE_COLUMN:
        dataset = dataset.rename_column(image_column, IMAGE_COLUMN)
    if label_column != LABEL_COLUMN:
        dataset = dataset.rename_column(label_column, LABEL_COLUMN)
    return dataset


def standardize_columns(dataset: DatasetDict, args: DataArguments) -> DatasetDict:
    """Keep only `image` (Image()) and `label` (ClassLabel); string or integer labels become a ClassLabel (names
    sorted; integers by value, so that 10 follows 9). Labels are checked (`_checked_label_values`), and a set needs
    two classes or more."""
    first = next(iter(dataset))
    image_column = _pick_column(dataset[first], args.image_column, Image, ("image", "img"), "--image_column")
    label_column = _pick_column(dataset[first], args.label_column, ClassLabel, ("label", "labels"), "--label_column")
    for name, split in dataset.items():
        missing = [column for column in (image_column, label_column) if column not in split.column_names]
        if missing:
            raise ValueError(
                f"Split {name!r} has no column {missing[0]!r} (split {first!r} has); its columns are "
                f"{split.column_names}. Give every split the same columns, or pick other splits with --train_split, "
                "--eval_split, --test_split."
            )
    dataset = with_standard_columns(dataset, image_column, label_column)
    if not isinstance(dataset[first].features[IMAGE_COLUMN], Image):
        dataset = dataset.cast_column(IMAGE_COLUMN, Image())
    labels = _checked_label_values(dataset, label_column)
    label_feature = dataset[first].features[LABEL_COLUMN]
    if not isinstance(label_feature, ClassLabel):
        # Names from every split, so that every split shares one id per label.
        values = {value for split_values in labels.values() for value in split_values}
        if _is_integer(label_feature):
            names = [str(value) for value in sorted(values)]
        else:
            names = sorted({str(value) for value in values})
        dataset = dataset.map(lambda batch: {LABEL_COLUMN: [str(v) for v in batch[LABEL_COLUMN]]}, batched=True)
        dataset = dataset.cast_column(LABEL_COLUMN, ClassLabel(names=names))
    names = dataset[first].features[LABEL_COLUMN].names
    if len(names) < 2:
        raise ValueError(
            f"Column {label_column!r} has {len(names)} class(es) {names}; classification needs two or more. Check "
            "--label_column, or add images of the other classes."
        )
    return dataset


def _image_problem(decoder: Image, entry: dict, where: str) -> str | None:
    """What is wrong with one image entry ({"bytes", "path"}) of a set, or None when training can use it."""
    try:
        image = decoder.decode_example(entry)
    # PIL's decoders raise many types on a malformed file (OSError, SyntaxError, struct.error, ...).
    except Exception as error:
        return f"{where}: cannot be decoded ({type(error).__name__}: {error})"
    try:
        to_rgb(image, source=where)
    except ValueError as error:
        return str(error)
    return None


def _check_image_batch(batch: dict, split_name: str) -> dict:
    """datasets.map function of `find_bad_images`: what is wrong with each image of the batch ('' when usable)."""
    decoder = Image()
    problems = []
    for entry, row in zip(batch[IMAGE_COLUMN], batch[ROW_COLUMN], strict=True):
        where = f"split {split_name!r}, row {row}"
        problem = _image_problem(decoder, entry, f"{entry['path']} ({where})" if entry["path"] else where)
        problems.append(problem or "")
    return {PROBLEM_COLUMN: problems}


def check_processes(num_images: int, asked: int | None = None) -> int:
    """Processes for decoding `num_images` images: `asked`, else the cores this process may use shared between the
    processes a launcher started on this machine, and no more than keeps each busy (IMAGES_PER_CHECK_PROCESS)."""
    if asked is not None:
        return asked
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, min(cores // max(1, local_processes), num_images // IMAGES_PER_CHECK_PROCESS))


def find_bad_images(
    split: Dataset, split_name: str, rows: list[int] | None = None, num_proc: int = 1
) -> list[tuple[int, str]]:
    """(row, what is wrong) of every image of `split` (or of its `rows`) that training could not use: a corrupt,
    truncated or non-image file, or one `to_rgb` refuses. Every image is decoded in full, as training decodes it
    (datasets' Image(): PIL's `open` and then `load`, which reads every pixel; `Image.verify()` alone misses truncated
    JPEGs), in `num_proc` processes (datasets' `map`)."""
    entries = split.select_columns([IMAGE_COLUMN]).cast_column(IMAGE_COLUMN, Image(decode=False))
    if rows is None:
        entries = entries.add_column(ROW_COLUMN, list(range(len(entries))))
    else:
        entries = entries.select(rows).add_column(ROW_COLUMN, rows)
    checked = entries.map(
        _check_image_batch,
        batched=True,
        batch_size=1000,
        fn_kwargs={"split_name": split_name},
        remove_columns=[IMAGE_COLUMN],
        num_proc=num_proc if num_proc > 1 else None,
        keep_in_memory=True,  # a result, not a data set to cache: the files may change before the next run
        desc=f"checking images ({split_name})",
    )
    found = zip(checked[ROW_COLUMN], checked[PROBLEM_COLUMN], strict=True)
    return [(row, problem) for row, problem in found if problem]


def _listing(problems: list[str]) -> str:
    lines = problems[:EXAMPLES_SHOWN]
    if len(problems) > EXAMPLES_SHOWN:
        lines.append(f"... and {len(problems) - EXAMPLES_SHOWN} more")
    return "\n".join(f"  {line}" for line in lines)


def _rows_to_check(dataset: DatasetDict, args: DataArguments) -> dict[str, list[int] | None]:
    """Per split, the rows --image_check decodes (None: all of them), and the log line that says what is left out."""
    total = sum(len(split) for split in dataset.values())
    mode = args.image_check
    if mode == "auto":
        mode = "full" if total <= IMAGE_CHECK_FULL_LIMIT else "sample"
    if mode == "off":
        logger.warning(
            f"--image_check off: none of the {total:,} images was decoded before the run; an unusable image stops "
            "training when it is reached. --image_check full checks them all first."
        )
        return {}
    if mode == "full":
        return dict.fromkeys(dataset)
    rows = {}
    rng = np.random.default_rng(args.split_seed)
    for name, split in dataset.items():
        size = min(args.image_check_sample_size, len(split))
        rows[name] = None if size == len(split) else sorted(rng.choice(len(split), size, replace=False).tolist())
    checked = sum(len(split) if rows[name] is None else len(rows[name]) for name, split in dataset.items())
    reason = "" if args.image_check == "sample" else f", as the splits hold more than {IMAGE_CHECK_FULL_LIMIT:,}"
    logger.warning(
        f"--image_check sample{reason}: decoded {checked:,} of {total:,} images (a seeded sample of up to "
        f"{args.image_check_sample_size:,} per split); an unusable image outside the sample stops training when it is "
        "reached. --image_check full checks them all first (in parallel; cost measured in docs/scaling.md)."
    )
    return rows


def drop_or_refuse_bad_images(dataset: DatasetDict, args: DataArguments) -> tuple[DatasetDict, dict[str, int]]:
    """The images --image_check picks (`_rows_to_check`) checked with `find_bad_images`: any unusable image is a
    ValueError naming each (its path, or its split and row), unless --skip_bad_images, which leaves them out, logs
    them and counts them per split."""
    rows_to_check = _rows_to_check(dataset, args)
    problems = {}
    for name, rows in rows_to_check.items():
        count = len(dataset[name]) if rows is None else len(rows)
        processes = check_processes(count, args.image_check_num_proc)
        problems[name] = find_bad_images(dataset[name], name, rows, processes)
    every_problem = [problem for found in problems.values() for _, problem in found]
    if every_problem and not args.skip_bad_images:
        raise ValueError(
            f"{len(every_problem)} image(s) cannot be used:\n{_listing(every_problem)}\nFix or remove these files, "
            "or pass --skip_bad_images to leave them out (the run then reports how many it left out)."
        )
    kept = {}
    for name, split in dataset.items():
        bad_rows = {row for row, _ in problems.get(name, ())}
        listing = _listing([problem for _, problem in problems.get(name, ())])
        if bad_rows and len(bad_rows) == len(split):
            raise ValueError(f"All {len(split)} images of split {name!r} are unusable; fix the files:\n{listing}")
        if bad_rows:
            logger.warning(
                f"--skip_bad_images: left out {len(bad_rows)} of {len(split)} images of split {name!r}:\n{listing}"
            )
            split = split.select([row for row in range(len(split)) if row not in bad_rows])
        kept[name] = split
    return DatasetDict(kept), {name: len(found) for name, found in problems.items()}


def _carve(dataset: Dataset, fraction: float, seed: int, name: str) -> tuple[Dataset, Dataset]:
    try:
        parts = dataset.train_test_split(test_size=fraction, seed=seed, stratify_by_column=LABEL_COLUMN)
    except ValueError as error:
        raise ValueError(
            f"Could not carve a stratified {name} split ({fraction:.0%} of {len(dataset)} images): {error}. "
            f"Give the set its own {name} split, or change the fraction so that every class has images on both sides."
        ) from error
    return parts["train"], parts["test"]


def prepare_splits(
    raw: DatasetDict, args: DataArguments, check_images: bool = True
) -> tuple[DatasetDict, dict[str, int]]:
    """train / validation / test: the set's own splits where it has them, else seeded stratified carves; and the
    number of unusable images `--skip_bad_images` left out of each of the set's splits (empty without the check).
    Labels and images are checked before carving, so that a bad input stops the run before any training."""
    if args.train_split not in raw:
        raise ValueError(f"--train_split {args.train_split!r} is not a split of the set; its splits are {list(raw)}.")
    for option, name in (("--eval_split", args.eval_split), ("--test_split", args.test_split)):
        if name is not None and name not in raw:
            raise ValueError(f"{option} {name!r} is not a split of the set; its splits are {list(raw)}.")
    test_split = args.test_split or ("test" if "test" in raw else None)
    eval_split = args.eval_split or ("validation" if "validation" in raw else None)
    # Only the splits the run uses are read and checked: a split it does not use (unlabelled, say) costs nothing.
    used_names = dict.fromkeys(name for name in (args.train_split, eval_split, test_split) if name is not None)
    for name in used_names:
        if len(raw[name]) == 0:
            raise ValueError(
                f"Split {name!r} of the set has no images; pick another with --train_split, --eval_split or "
                "--test_split."
            )
    used = standardize_columns(DatasetDict({name: raw[name] for name in used_names}), args)
    skipped = {}
    if check_images:
        used, skipped = drop_or_refuse_bad_images(used, args)
    train = used[args.train_split]
    if test_split is None:
        train, test = _carve(train, args.test_fraction, args.split_seed, "test")
    else:
        test = used[test_split]
    if eval_split is None:
        train, validation = _carve(train, args.validation_fraction, args.split_seed, "validation")
    else:
        validation = used[eval_split]
    if args.max_train_samples:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples:
        validation = validation.select(range(min(args.max_eval_samples, len(validation))))
        test = test.select(range(min(args.max_eval_samples, len(test))))
    train_classes = set(train.select_columns([LABEL_COLUMN])[:][LABEL_COLUMN])
    if len(train_classes) < 2:
        only = train.features[LABEL_COLUMN].names[train_classes.pop()]
        hint = (
            " (--max_train_samples keeps the first N; the set may be sorted by class)" if args.max_train_samples else ""
        )
        raise ValueError(
            f"All {len(train)} training images are of class {only!r}{hint}; a classifier needs images of two or "
            "more classes. Use more of the set or a split with several classes."
        )
    return DatasetDict({"train": train, "validation": validation, "test": test}), skipped


def load_image_dataset_with_skip_counts(
    args: DataArguments, raw: DatasetDict | None = None
) -> tuple[DatasetDict, dict[str, int]]:
    """`load_image_dataset`, and the number of unusable images `--skip_bad_images` left out of each of the set's
    splits. The built-in sets skip the image check: hf_vit builds their images itself, in memory, from arrays of
    bytes, so none can be unreadable. A `raw` set given in memory is checked like any other."""
    if raw is not None:
        return prepare_splits(raw, args)
    return prepare_splits(load_raw_dataset(args), args, check_images=args.dataset not in BUILTIN_DATASETS)


def load_image_dataset(args: DataArguments, raw: DatasetDict | None = None) -> DatasetDict:
    """`args.dataset` (or the given in-memory `raw` set) as train / validation / test with `image` and `label`."""
    return load_image_dataset_with_skip_counts(args, raw)[0]


def dataset_slug(name: str) -> str:
    """A folder-name-safe short name of a data set: 'digits', 'org_name', 'my_folder'."""
    if os.path.isdir(name):
        return Path(name).resolve().name
    return name.replace("/", "_")
