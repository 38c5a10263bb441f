"""`--streaming`: train on a Hub data set read as a stream (`load_dataset(..., streaming=True)`), never downloaded
whole. Training reads the train split image by image (shuffled in a buffer, each process of a launch reading its own
files); validation and test are a bounded, declared number of images of the set's own held-out splits, read into
memory first, so that evaluation and `hf-vit evaluate` see the same images.

`load_splits` is the one entry point of `hf-vit train` and `hf-vit evaluate` to their data, streamed or not (it lives
here, above data.py, as the one module that knows both ways)."""

import json
import logging

from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, IterableDataset, load_dataset

from .data import (
    IMAGE_COLUMN,
    LABEL_COLUMN,
    DataArguments,
    _pick_column,
    drop_or_refuse_bad_images,
    load_image_dataset_with_skip_counts,
    with_standard_columns,
)

logger = logging.getLogger("hf_vit")

# Validation and test images read into memory under --streaming when --max_eval_samples is not given.
STREAMING_EVAL_SAMPLES = 1_000
# Images of the shuffle buffer: the stream is shuffled by file order and within this window.
SHUFFLE_BUFFER_SIZE = 1_000


def load_splits(args: DataArguments, seed: int, raw: DatasetDict | None = None) -> tuple[DatasetDict, dict[str, int]]:
    """train / validation / test of --dataset (or of the in-memory `raw` set), streamed under --streaming (train
    shuffled with `seed`), and the unusable images --skip_bad_images left out of each of the set's splits (none under
    --streaming, which refuses --skip_bad_images)."""
    if args.streaming:
        return load_streaming_splits(args, seed), {}
    return load_image_dataset_with_skip_counts(args, raw)


def streaming_defaults(recipe: dict, given: dict) -> None:
    """Recipe defaults of a --streaming run: a stream has no known length, so Trainer needs --max_steps, and epochs
    are not a schedule: evaluation, saving and logging every tenth of the steps. Each process reads its own files of
    the stream (Accelerate shards a `datasets` stream by files when batches are not dispatched from the first
    process). `given`, the options on the command line, win."""
    if not given.get("streaming"):
        return
    if "max_steps" not in given:
        raise ValueError(
            "--streaming reads a set of unknown length, so the run needs a length in optimizer steps: give "
            "--max_steps N (the images read are N x --per_device_train_batch_size x processes)."
        )
    for name in ("eval", "save", "logging"):
        if f"{name}_strategy" not in given:
            recipe[f"{name}_strategy"] = "steps"
        if f"{name}_steps" not in given:
            recipe[f"{name}_steps"] = 0.1  # a float below 1 is a share of --max_steps
    if "accelerator_config" not in given:
        recipe["accelerator_config"] = json.dumps({"dispatch_batches": False})


def _standardized(stream: IterableDataset, args: DataArguments, name: str) -> IterableDataset:
    """`image` (Image()) and `label` (ClassLabel) columns of one streamed split, picked as `standardize_columns`
    picks them. The label must already be a ClassLabel: its names cannot be collected without reading the whole
    stream."""
    if stream.features is None:
        raise ValueError(
            f"--streaming: split {name!r} of {args.dataset!r} does not declare its features, so its image and label "
            "columns are unknown before reading it. Stream a set stored as parquet with its features (as "
            "`Dataset.push_to_hub` writes it), or train without --streaming."
        )
    image_column = _pick_column(stream, args.image_column, Image, ("image", "img"), "--image_column")
    label_column = _pick_column(stream, args.label_column, ClassLabel, ("label", "labels"), "--label_column")
    if not isinstance(stream.features[label_column], ClassLabel):
        raise ValueError(
            f"--streaming: column {label_column!r} of split {name!r} is {stream.features[label_column]}, not a "
            "ClassLabel, and the names of its classes cannot be known without reading the whole set. Cast the "
            "column to a ClassLabel where the set is written (`cast_column`), or train without --streaming."
        )
    return with_standard_columns(stream, image_column, label_column).cast_column(IMAGE_COLUMN, Image())


def _read_head(stream: IterableDataset, count: int) -> Dataset:
    """The first `count` images of a stream, in memory, as encoded bytes (decoded when used)."""
    undecoded = stream.cast_column(IMAGE_COLUMN, Image(decode=False))
    features = Features({IMAGE_COLUMN: Image(), LABEL_COLUMN: stream.features[LABEL_COLUMN]})
    return Dataset.from_list(list(undecoded.take(count)), features=features)


def load_streaming_splits(args: DataArguments, seed: int) -> DatasetDict:
    """train (an `IterableDataset`, shuffled with `seed`), validation and test (`Dataset`s of the first
    --max_eval_samples images, default STREAMING_EVAL_SAMPLES, of the set's validation and test splits or those
    --eval_split / --test_split name). The held-out images are checked like any set's; the training images are
    decoded only when training reads them."""
    try:
        streams = load_dataset(args.dataset, args.dataset_config, streaming=True)
    except Exception as error:  # datasets raises many types; name the input and the fix
        raise ValueError(
            f"Could not stream --dataset {args.dataset!r} ({type(error).__name__}: {error}). Give a Hub dataset id "
            "(online), or train without --streaming."
        ) from error
    if args.train_split not in streams:
        raise ValueError(
            f"--train_split {args.train_split!r} is not a split of the set; its splits are {list(streams)}."
        )
    train = _standardized(streams[args.train_split], args, args.train_split)
    count = args.max_eval_samples or STREAMING_EVAL_SAMPLES
    held_out, sources = {}, {}
    for name, option, given in (
        ("validation", "--eval_split", args.eval_split),
        ("test", "--test_split", args.test_split),
    ):
        source = given or name
        if source not in streams:
            # Carving held-out images from the head of the train stream is not done: the processes of a launch each
            # read their own files of it, and a skip of the first images would be split between them.
            raise ValueError(
                f"--streaming needs a {name} split, and the set has none named {source!r} (its splits are "
                f"{list(streams)}): name one with {option} (the same split may serve validation and test), or train "
                "without --streaming, which carves it from train."
            )
        held_out[name] = _read_head(_standardized(streams[source], args, source), count)
        sources[name] = f"the first {len(held_out[name])} images of {source!r}"
    held_out, _ = drop_or_refuse_bad_images(DatasetDict(held_out), args)
    logger.warning(
        f"--streaming: validation is {sources['validation']}, test {sources['test']} (--max_eval_samples {count}); "
        f"training streams {args.train_split!r}, shuffled by file and in a buffer of {SHUFFLE_BUFFER_SIZE:,} images; "
        "its images are decoded only when training reads them, so an unusable one stops the run there."
    )
    train = train.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER_SIZE)
    return DatasetDict({"train": train, **held_out})


def with_batch_transform(split, transform):
    """`split` with `transform` (a function of a batch of `image` / `label` columns) applied on the fly: datasets'
    `with_transform` for a `Dataset`, a lazy batched `map` for a streamed `IterableDataset`, which has no
    `with_transform`."""
    if isinstance(split, IterableDataset):
        return split.map(transform, batched=True, remove_columns=[IMAGE_COLUMN, LABEL_COLUMN])
    return split.with_transform(transform)


def train_images(split, args) -> int:
    """Images a run trains on: the split's size, or for a stream what --max_steps reads."""
    if not isinstance(split, IterableDataset):
        return len(split)
    return args.max_steps * args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps


def split_size(split) -> int | str:
    """The number of images of a split, or 'streamed' for a stream of unknown length."""
    return "streamed" if isinstance(split, IterableDataset) else len(split)
