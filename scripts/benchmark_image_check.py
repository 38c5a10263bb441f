"""Cost of hf_vit's image check (`--image_check`) on a generated set of small images: seconds and images per second
for growing numbers of images, in one and in several processes, and for the sample check.

    python scripts/benchmark_image_check.py --num_images 100000 --num_proc 1 2

The set is written once into --workdir (a `datasets` folder on disk, memory-mapped when read back, as a Hub set in
the cache is); images are grayscale noise PNGs or colour JPEGs (--format) of --image_size pixels, stored in the
table (`--storage bytes`, as Hub parquet sets hold them) or as files (`--storage files`, as an image folder)."""

import argparse
import io
import time
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_from_disk
from PIL import Image as PILImage

from hf_vit.data import DataArguments, drop_or_refuse_bad_images, find_bad_images


def generate(folder: Path, num_images: int, image_size: int, storage: str, image_format: str) -> Dataset:
    saved = folder / f"set-{num_images}-{image_size}-{storage}-{image_format}"
    if saved.is_dir():
        return load_from_disk(saved)
    rng = np.random.default_rng(0)
    files = folder / f"files-{image_size}-{image_format}"
    entries = []
    for index in range(num_images):
        buffer = io.BytesIO()
        if image_format == "png":
            PILImage.fromarray(rng.integers(0, 256, (image_size, image_size), dtype=np.uint8), "L").save(buffer, "PNG")
        else:  # a smooth colour photo-like gradient with noise, at JPEG quality 90 (ImageNet's files are JPEGs)
            ramp = np.linspace(0, 200, image_size)[None, :, None] + rng.normal(0, 20, (image_size, image_size, 3))
            PILImage.fromarray(np.clip(ramp, 0, 255).astype(np.uint8), "RGB").save(buffer, "JPEG", quality=90)
        if storage == "bytes":
            entries.append({"bytes": buffer.getvalue(), "path": None})
        else:
            path = files / f"{index // 10_000}" / f"{index}.{image_format}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buffer.getvalue())
            entries.append({"bytes": None, "path": str(path)})
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b"])})
    Dataset.from_dict({"image": entries, "label": [index % 2 for index in range(num_images)]}, features).save_to_disk(
        saved
    )
    return load_from_disk(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=100_000)
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--storage", choices=("bytes", "files"), default="bytes")
    parser.add_argument("--format", choices=("png", "jpeg"), default="png", dest="image_format")
    parser.add_argument("--num_proc", type=int, nargs="+", default=[1, 2], help="process counts of the full check")
    parser.add_argument("--workdir", default="/tmp/hf_vit_image_check_benchmark")
    args = parser.parse_args()
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    dataset = generate(folder, args.num_images, args.image_size, args.storage, args.image_format)
    print(f"set of {len(dataset):,} {args.image_size}x{args.image_size} {args.image_format} ({args.storage}): "
          f"{time.perf_counter() - start:.1f} s to generate or load")  # fmt: skip

    print("| check | images | processes | seconds | images/s |\n|---|---|---|---|---|")
    counts = sorted({args.num_images // 4, args.num_images // 2, args.num_images})
    for processes in args.num_proc:
        for count in counts:
            subset = dataset.select(range(count))
            start = time.perf_counter()
            problems = find_bad_images(subset, "train", num_proc=processes)
            seconds = time.perf_counter() - start
            assert not problems, problems[:3]
            print(f"| full | {count:,} | {processes} | {seconds:.2f} | {count / seconds:,.0f} |", flush=True)
    # --image_check sample as a run calls it: the sample drawn, decoded and judged.
    start = time.perf_counter()
    drop_or_refuse_bad_images(DatasetDict({"train": dataset}), DataArguments(dataset="generated", image_check="sample"))
    seconds = time.perf_counter() - start
    print(f"| sample of {DataArguments.image_check_sample_size:,} | {args.num_images:,} | 1 | {seconds:.2f} | - |")


if __name__ == "__main__":
    main()
