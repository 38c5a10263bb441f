"""The input side of `hf-vit predict`: which images (files, folders, globs, URLs, lists of them, a `datasets` split),
read as a stream of batches of uint8 pixels at the model's size, in `DataLoader` workers or in decoding threads.

Nothing is held for the whole set: inputs are enumerated lazily (folders walked, lists read line by line, data set rows
read by slices), each batch is decoded when its turn comes, and only `DataLoader`'s few prefetched batches exist at
once. A single image that cannot be read is a skip naming it, never the end of the run; an input that names nothing
(a missing path, an empty folder, a glob matching nothing, a data set without an image column) is an `InputError`
before any image is read.
"""

from __future__ import annotations

import glob
import io
import itertools
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image as PILImage
from PIL import ImageOps
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as transforms
from transformers.image_utils import PILImageResampling

from .images import to_rgb, unreadable_image
from .processing import size_fields

# Extensions of the formats PIL can open (not those it can only write, like .pdf): the files a folder or glob yields.
IMAGE_EXTENSIONS = frozenset(ext for ext, kind in PILImage.registered_extensions().items() if kind in PILImage.OPEN)
URL_PREFIXES = ("http://", "https://")
GLOB_CHARACTERS = ("*", "?", "[")
URL_TIMEOUT_S = 30
EXIF_ORIENTATION = 0x0112
SIDEWAYS_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
DCT_SCALING_FORMATS = ("JPEG", "MPO")  # formats whose decoder PIL's `Image.draft` can shrink
INTERPOLATIONS = {
    PILImageResampling.NEAREST: InterpolationMode.NEAREST_EXACT,
    PILImageResampling.BILINEAR: InterpolationMode.BILINEAR,
    PILImageResampling.BICUBIC: InterpolationMode.BICUBIC,
}


class InputError(ValueError):
    """An input that names no image, or a setting that cannot work: said before any image is read (exit status 2)."""


def _batched(items, size: int):
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# ----------------------------------------------------------------------------------------------------------------------
# Preprocessing: the saved processor's steps on uint8 tensors
# ----------------------------------------------------------------------------------------------------------------------


class Preprocess:
    """The model folder's image processor (resize, optional center crop, rescale, normalise) as torchvision ops on
    uint8 tensors, so that workers hand over a quarter of float32's bytes and the normalisation runs on the device.

    Pixels equal those of transformers' default (torchvision) processors exactly, which resize uint8 tensors with the
    same kernels; the center crop starts at floor((size - crop) / 2) as transformers does (torchvision's own crop
    rounds). `draft_size` is the (width, height) a JPEG is decoded at, at least, by libjpeg's DCT scaling
    (`Image.draft`): never smaller than what the first resize needs, so it only skips pixels that resize would
    average away; None (`exact_decode`) decodes every pixel, as transformers and timm do."""

    def __init__(self, processor, exact_decode: bool = False):
        name = type(processor).__name__
        resample = getattr(processor, "resample", PILImageResampling.BILINEAR)
        if resample not in INTERPOLATIONS:
            raise InputError(f"{name} resamples with {PILImageResampling(resample).name}; hf-vit predict reproduces "
                             "nearest, bilinear and bicubic: save the processor with one of them.")  # fmt: skip
        if getattr(processor, "do_rescale", True) is False or getattr(processor, "do_normalize", True) is False:
            raise InputError(f"{name} turns rescaling or normalisation off; hf-vit predict expects both (any mean, "
                             "std and rescale factor).")  # fmt: skip
        size = size_fields(getattr(processor, "size", None))
        if not getattr(processor, "do_resize", True):
            raise InputError(f"{name} does not resize; hf-vit predict batches images of one size: set do_resize.")
        if "height" in size and "width" in size:
            self.resize_size = [int(size["height"]), int(size["width"])]
            draft = (self.resize_size[1], self.resize_size[0])
        elif "shortest_edge" in size:
            self.resize_size = [int(size["shortest_edge"])]
            draft = (self.resize_size[0], self.resize_size[0])  # both sides >= it: the shortest one is
        else:
            raise InputError(f"{name} has size {size}; hf-vit predict reproduces a (height, width) or shortest_edge "
                             "resize.")  # fmt: skip
        crop = size_fields(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else {}
        self.crop_size = (int(crop["height"]), int(crop["width"])) if crop else None
        if self.crop_size is None and len(self.resize_size) == 1:
            raise InputError(f"{name} resizes the shortest edge without a center crop: images of many sizes, which "
                             "cannot be batched. Give the processor a crop_size (do_center_crop=True).")  # fmt: skip
        self.output_size = self.crop_size or tuple(self.resize_size)
        self.interpolation = INTERPOLATIONS[resample]
        self.draft_size = None if exact_decode else draft
        scale = float(getattr(processor, "rescale_factor", 1 / 255))
        # transformers' fast processors fuse rescale and normalise as (x - mean / scale) / (std / scale): the same
        # float32 arithmetic here gives the same values.
        self.shift = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1) / scale
        self.divisor = torch.tensor(processor.image_std, dtype=torch.float32).view(1, 3, 1, 1) / scale

    def __call__(self, image: PILImage.Image) -> torch.Tensor:
        """An RGB PIL image -> uint8 tensor [3, height, width] at the model's size."""
        return self.resize_and_crop(transforms.functional.pil_to_tensor(image))

    def resize_and_crop(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 RGB pixels [3, h, w] of any size, on any device -> [3, height, width] at the model's size."""
        pixels = transforms.functional.resize(pixels, self.resize_size, self.interpolation, antialias=True)
        if self.crop_size is not None:
            height, width = pixels.shape[-2:]
            top, left = (height - self.crop_size[0]) // 2, (width - self.crop_size[1]) // 2
            pixels = transforms.functional.crop(pixels, top, left, *self.crop_size)
        return pixels

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """A uint8 batch [B, 3, H, W] (on any device) -> the model's float32 input."""
        return (pixels.float() - self.shift.to(pixels.device)) / self.divisor.to(pixels.device)


def load_image(source, draft_size: tuple[int, int] | None = None) -> PILImage.Image:
    """A path or binary file -> the PIL image, every pixel read and EXIF orientation applied (as training reads
    images). A JPEG is decoded by libjpeg at 1/2, 1/4 or 1/8 of its size where that stays at least `draft_size`
    (width, height) in the displayed orientation."""
    image = PILImage.open(source)
    orientation = image.getexif().get(EXIF_ORIENTATION)
    if draft_size is not None and image.format in DCT_SCALING_FORMATS:
        width, height = draft_size
        image.draft(None, (height, width) if orientation in SIDEWAYS_ORIENTATIONS else (width, height))
    image.load()  # every pixel read now (a truncated file fails here); PIL closes a file it opened by name
    return ImageOps.exif_transpose(image) if orientation is not None else image


def decode(source, name: str, preprocess: Preprocess) -> torch.Tensor:
    """One image -> `preprocess`'s uint8 tensor: `load_image` at `preprocess.draft_size`, then `to_rgb` for every
    mode. Anything unreadable is a ValueError naming `name`."""
    try:
        image = load_image(source, preprocess.draft_size)
    except Exception as error:  # PIL's decoders raise many types on a malformed file (OSError, SyntaxError, ...)
        raise unreadable_image(name, error) from error
    return preprocess(to_rgb(image, source=name))


def fetch(url: str) -> io.BytesIO:
    """The body of an HTTP(S) URL. The standard library suffices for a plain GET (no Hub authentication involved)."""
    request = urllib.request.Request(url, headers={"User-Agent": "hf_vit-predict"})
    try:
        with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response:
            return io.BytesIO(response.read())
    except urllib.error.HTTPError as error:
        raise ValueError(f"{url} could not be fetched (HTTP {error.code} {error.reason}); check the URL.") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ValueError(f"{url} could not be fetched ({reason}); check the URL and the network.") from error


# ----------------------------------------------------------------------------------------------------------------------
# Which images
# ----------------------------------------------------------------------------------------------------------------------


class LeftOut:
    """Files of folders and globs that are not inputs (hidden, or without an image extension): counted, a few named."""

    EXAMPLES = 5

    def __init__(self):
        self.count, self.examples = 0, []

    def add(self, path: str) -> None:
        self.count += 1
        if len(self.examples) < self.EXAMPLES:
            self.examples.append(path)


class Url(str):
    """A source to fetch (in the decoding thread or worker) before decoding."""


@dataclass
class DatasetSplit:
    """One split of a `datasets` set, its image column read undecoded (bytes and/or path per row)."""

    name: str
    split: str
    rows: object  # datasets.Dataset with the one image column
    column: str

    def read(self, row_numbers: list[int]) -> list[tuple[str, object]]:
        """(name, source) per row: the row's own file path when it refers to a file, else `split[row]` (`row[n]` for
        a set saved without splits)."""
        values = self.rows[row_numbers][self.column]
        read = []
        for row, value in zip(row_numbers, values, strict=True):
            name = f"{self.split}[{row}]"
            if isinstance(value, str):  # a column of paths or URLs
                read.append((value, Url(value) if value.startswith(URL_PREFIXES) else value))
            elif value is None or (value.get("bytes") is None and value.get("path") is None):
                read.append((name, ValueError(f"{name} of {self.name} has no image (an empty cell)")))
            elif value.get("bytes") is not None:
                read.append((name, io.BytesIO(value["bytes"])))
            else:
                read.append((value["path"], value["path"]))
        return read


class ImageInputs:
    """The images to classify, in a fixed order: the `paths` (files, folders walked recursively in sorted order,
    globs, HTTP(S) URLs), then the lines of each `input_lists` file (a path or URL each; blank lines and lines
    starting with # ignored; relative paths from the current folder), then the rows of a `datasets` split.

    Folders and globs yield the files whose extension PIL opens; other files, and hidden ones (.name), are counted
    in a `LeftOut` and not classified. Enumeration is lazy, so a set of any size costs no memory; `count()` walks it
    once for the progress bar."""

    def __init__(self, paths=(), input_lists=(), dataset: str | None = None, split: str | None = None,
                 dataset_config: str | None = None, image_column: str | None = None):  # fmt: skip
        self.entries: list[tuple[str, str]] = [(self._kind(path), path) for path in paths]
        for path in input_lists:
            if not Path(path).is_file():
                raise InputError(f"--input_list {path} is not a file; give a text file with one path or URL a line.")
            self.entries.append(("list", path))
        self.dataset = load_split(dataset, split, dataset_config, image_column) if dataset else None
        if not self.entries and self.dataset is None:
            raise InputError("no images given: name files, folders, globs or URLs, an --input_list, or a --dataset.")

    @staticmethod
    def _kind(path: str) -> str:
        if path.startswith(URL_PREFIXES):
            return "url"
        if os.path.isdir(path):
            if next(_walk_images(path, LeftOut()), None) is None:
                raise InputError(f"folder {path} holds no image files (extensions PIL opens: .jpg, .png, ...), "
                                 "in it or in its sub-folders; give a folder of images.")  # fmt: skip
            return "folder"
        if os.path.exists(path):
            return "file"
        if any(character in path for character in GLOB_CHARACTERS):
            if not glob.glob(path, recursive=True):
                raise InputError(f"glob {path!r} matches no file; check the pattern (** matches sub-folders).")
            return "glob"
        raise InputError(f"{path} does not exist (not a file, folder, glob or http(s) URL); check the path.")

    def references(self, left_out: LeftOut | None = None) -> Iterator[tuple[str, object]]:
        """(kind, what) for each image, in order: ("file", path), ("url", url), ("row", number)."""
        left_out = LeftOut() if left_out is None else left_out
        for kind, value in self.entries:
            if kind in ("file", "url"):
                yield kind, value
            elif kind == "folder":
                yield from (("file", path) for path in _walk_images(value, left_out))
            elif kind == "glob":
                for path in sorted(glob.glob(value, recursive=True)):
                    if os.path.isdir(path):
                        yield from (("file", inner) for inner in _walk_images(path, left_out))
                    elif _is_image_name(path):
                        yield "file", path
                    else:
                        left_out.add(path)
            else:
                with open(value, encoding="utf-8") as lines:
                    for line in lines:
                        line = line.strip()
                        if line and not line.startswith("#"):
                            yield ("url" if line.startswith(URL_PREFIXES) else "file"), line
        if self.dataset is not None:
            yield from (("row", row) for row in range(len(self.dataset.rows)))

    def count(self) -> tuple[int, LeftOut]:
        """The number of images, and the files left out of folders and globs (not images by extension, hidden)."""
        left_out = LeftOut()
        return sum(1 for _ in self.references(left_out)), left_out

    def read(self, references: list[tuple[str, object]]) -> list[tuple[str, object]]:
        """(name, source) per reference: a path, binary file or `Url` to decode, or the ValueError that stops it."""
        rows = [what for kind, what in references if kind == "row"]
        from_rows = iter(self.dataset.read(rows)) if rows else iter(())
        read = []
        for kind, what in references:
            if kind == "row":
                read.append(next(from_rows))
            elif kind == "url":
                read.append((what, Url(what)))
            elif not os.path.isfile(what):
                read.append((what, ValueError(f"{what} is not a file; give existing image files.")))
            else:
                read.append((what, what))
        return read


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS and not os.path.basename(path).startswith(".")


def _walk_images(folder: str, left_out: LeftOut) -> Iterator[str]:
    for root, folders, files in os.walk(folder):
        folders.sort()
        hidden = [name for name in folders if name.startswith(".")]
        for name in hidden:
            folders.remove(name)
            left_out.add(os.path.join(root, name) + os.sep)
        for name in sorted(files):
            path = os.path.join(root, name)
            if _is_image_name(path):
                yield path
            else:
                left_out.add(path)


def load_split(dataset: str, split: str | None, config: str | None, image_column: str | None) -> DatasetSplit:
    """A split of a `datasets` set: a folder written by `save_to_disk`, a local image folder or data files, or a Hub
    id (through `load_dataset`: downloaded or cached, then read from disk as memory-mapped Arrow)."""
    from datasets import Dataset, DatasetDict, Image, Value, load_dataset, load_from_disk

    from .data import _pick_column

    saved = Path(dataset) / "dataset_dict.json"
    try:
        if saved.exists() or (Path(dataset) / "state.json").exists():
            loaded = load_from_disk(dataset)
        else:
            loaded = load_dataset(dataset, config, split=split)
    except Exception as error:  # datasets raises many types; name the input
        raise InputError(
            f"--dataset {dataset!r} could not be loaded ({type(error).__name__}: {error}); give a Hub dataset id, a "
            "local image folder or a folder written by save_to_disk."
        ) from error
    if isinstance(loaded, Dataset) and split is not None and saved.parent.joinpath("state.json").exists():
        raise InputError(f"--dataset {dataset!r} is one saved split without split names; leave --split out.")
    if isinstance(loaded, DatasetDict):
        if split is None and len(loaded) == 1:
            split = next(iter(loaded))
        if split not in loaded:
            raise InputError(f"--dataset {dataset!r} has the splits {list(loaded)}; name one with --split.")
        loaded = loaded[split]
    if not isinstance(loaded, Dataset):
        raise InputError(f"--dataset {dataset!r} loaded as {type(loaded).__name__}, not a split of rows.")
    try:
        column = _pick_column(loaded, image_column, Image, ("image", "img"), "--image_column")
    except ValueError as error:
        raise InputError(f"--dataset {dataset!r}: {error}") from error
    feature = loaded.features[column]
    rows = loaded.select_columns([column])
    if isinstance(feature, Image):
        rows = rows.cast_column(column, Image(decode=False))  # bytes and path, decoded here with DCT scaling
    elif not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        raise InputError(f"--dataset {dataset!r}: column {column!r} is {feature}, neither Image() nor paths; name "
                         "the image column with --image_column.")  # fmt: skip
    return DatasetSplit(dataset, split or "row", rows, column)


# ----------------------------------------------------------------------------------------------------------------------
# The stream of batches
# ----------------------------------------------------------------------------------------------------------------------


class ImageBatches(torch.utils.data.IterableDataset):
    """Batches of `batch_size` inputs as {"names", "pixels" (uint8 [n, 3, H, W]), "skipped" [(name, reason)]}
    (with a `device_decoder`, its `pack` of them: the JPEGs it decodes on the device travel undecoded).
    Batch k is made by worker k % workers, and `DataLoader` takes the workers' batches in turn, so batches come out in
    input order whatever the number of workers. Without workers, the inputs of a batch are decoded by
    `decode_threads` threads (PIL and torch release the GIL while they decode and resize)."""

    def __init__(self, inputs: ImageInputs, preprocess: Preprocess, batch_size: int, decode_threads: int = 1,
                 device_decoder=None):  # fmt: skip
        self.inputs, self.preprocess, self.batch_size = inputs, preprocess, batch_size
        self.decode_threads = decode_threads
        self.device_decoder = device_decoder  # a `hf_vit.device_decode.DeviceDecoder`: JPEGs left for the device

    def _one(self, named):
        """A decoded image (uint8 tensor), a `DeviceDecoder`'s undecoded JPEG, or the ValueError that skips it."""
        name, source = named
        if isinstance(source, ValueError):
            return source
        try:
            source = fetch(source) if isinstance(source, Url) else source
            if self.device_decoder is not None:
                return self.device_decoder.read(source, name)
            return decode(source, name, self.preprocess)
        except ValueError as error:
            return error

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        number, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        threads = self.decode_threads if worker is None else 1
        pool = ThreadPoolExecutor(threads) if threads > 1 else None
        try:
            for index, references in enumerate(_batched(self.inputs.references(), self.batch_size)):
                if index % workers != number:
                    continue
                named = self.inputs.read(references)
                decoded = list(pool.map(self._one, named)) if pool else [self._one(item) for item in named]
                results = [(name, result) for (name, _), result in zip(named, decoded, strict=True)]
                kept = [(name, result) for name, result in results if not isinstance(result, ValueError)]
                skipped = [(name, str(result)) for name, result in results if isinstance(result, ValueError)]
                if self.device_decoder is not None:
                    yield self.device_decoder.pack(kept, skipped)
                    continue
                pixels = [result for _, result in kept]
                empty = torch.empty(0, 3, *self.preprocess.output_size, dtype=torch.uint8)
                yield {"names": [name for name, _ in kept], "pixels": torch.stack(pixels) if pixels else empty,
                       "skipped": skipped}  # fmt: skip
        finally:
            if pool is not None:  # a stopped run does not wait for the fetches and decodes under way
                pool.shutdown(wait=False, cancel_futures=True)


def batch_loader(batches: ImageBatches, num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        batches, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
        prefetch_factor=2 if num_workers else None,
    )  # fmt: skip
