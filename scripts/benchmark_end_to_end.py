"""End to end: a folder of JPEG files -> top-1 labels, with `hf-vit predict`'s classifier, transformers'
`pipeline("image-classification", batch_size=...)` and timm's model with timm's data loader, all holding the same
weights (one hf_vit model exported with `hf_vit.convert`), with equal torch threads, DataLoader workers, batch size and
dtype. What is timed is what a user waits for once the model is loaded: listing, reading, decoding, resizing,
normalising, the model and the top-1. On CUDA, `hf_vit-device-decode` is the same classifier with `--decode device`
(nvJPEG decodes the baseline JPEGs on the GPU, the workers only read them).

The folder is generated (seeded, cached): photo-like JPEGs from 224-pixel thumbnails to 1-4 megapixel photos, RGB,
grayscale and CMYK, baseline and progressive, qualities 80-92. Contenders run interleaved, one pass over the folder
each per round (A B C ... A B C ...), after a short warm-up; figures are medians over the rounds. Two reference rows:
hf_vit's model alone on a ready batch of the same size (the rate the input side would have to hide behind), and
hf_vit's input side alone (also with device decoding when that contender runs). Predictions are compared with the
pipeline's (else `hf_vit-exact`'s, else `hf_vit`'s), image by image.

    python scripts/benchmark_end_to_end.py --num_images 600 --rounds 3 --threads 2
    python scripts/benchmark_end_to_end.py --device cuda --dtype bfloat16 --preset vit-base-patch16-224 \\
        --batch_size 256 --num_images 3000 --contenders hf_vit hf_vit-device-decode --gpu_decode_probe  # gpu_check.sh
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from hf_vit.benchmark import benchmark_config, reference_model, retain_freed_memory
from hf_vit.cli_args import CommandParser
from hf_vit.convert import export_timm, export_transformers
from hf_vit.images import to_rgb
from hf_vit.inference_data import ImageInputs, Preprocess, load_image
from hf_vit.prediction import Classifier, default_num_workers
from hf_vit.presets import PRESETS
from hf_vit.processing import build_image_processor, save_model_folder

CONTENDERS = ("hf_vit", "hf_vit-exact", "hf_vit-device-decode", "transformers", "timm")
HF_VIT_OPTIONS = {"hf_vit": {}, "hf_vit-exact": {"exact_decode": True}, "hf_vit-device-decode": {"decode": "device"}}
# (share of the set, megapixels low, high); thumbnails are 224-320 px on the short side.
SIZE_CLASSES = {"thumbnail": (0.3, None, None), "web": (0.2, 0.3, 0.8), "photo": (0.5, 1.0, 4.0)}
SIZE_NAMES = {"thumbnail": "thumbnails, 224-320 px", "web": "web images, 0.3-0.8 MP", "photo": "photos, 1-4 MP"}
ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9)
MODES = (("RGB", 0.85), ("L", 0.10), ("CMYK", 0.05))


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# The folder of JPEGs
# ----------------------------------------------------------------------------------------------------------------------


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour fields, hard-edged shapes and grain: compresses like a photo (1-2.5 bits per pixel at these
    qualities), unlike flat colours (far less) or pure noise (far more)."""
    grid = rng.integers(0, 256, (rng.integers(3, 9), rng.integers(3, 9), 3), dtype=np.uint8)
    image = Image.fromarray(grid).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(10, 40)):
        x, y = rng.integers(0, width), rng.integers(0, height)
        box = (x, y, x + rng.integers(4, max(5, width // 3)), y + rng.integers(4, max(5, height // 3)))
        colour = tuple(int(value) for value in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    pixels = np.asarray(image).astype(np.int16)
    pixels += rng.integers(-10, 11, (height, width, 1), dtype=np.int16)  # grain, mostly in brightness
    pixels += rng.integers(-3, 4, pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_one(task) -> dict:
    folder, seed, index = task
    rng = np.random.default_rng([seed, index])
    kind = rng.choice(list(SIZE_CLASSES), p=[share for share, _, _ in SIZE_CLASSES.values()])
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    if kind == "thumbnail":
        short = int(rng.integers(224, 321))
        width, height = round(short * aspect), short
    else:
        _, low, high = SIZE_CLASSES[kind]
        pixels = rng.uniform(low, high) * 1e6
        width, height = round((pixels * aspect) ** 0.5), round((pixels / aspect) ** 0.5)
    if rng.random() < 0.25:
        width, height = height, width  # portrait
    mode = MODES[rng.choice(len(MODES), p=[share for _, share in MODES])][0]
    quality, progressive = int(rng.integers(80, 93)), bool(rng.random() < 0.15)
    path = Path(folder) / f"{index:05d}.jpg"
    photo(rng, width, height).convert(mode).save(path, quality=quality, progressive=progressive)
    return {"file": path.name, "kind": str(kind), "mode": mode, "width": width, "height": height,
            "bytes": path.stat().st_size, "progressive": progressive}  # fmt: skip


def jpeg_folder(folder: Path, num_images: int, seed: int, processes: int) -> list[dict]:
    """The generated set in `folder` (reused when it was made with the same count and seed), one dict per file."""
    manifest = folder / "manifest.json"
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved["num_images"] == num_images and saved["seed"] == seed:
            return saved["files"]
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.jpg"):
        stale.unlink()
    started = time.perf_counter()
    with Pool(processes) as pool:
        files = pool.map(write_one, [(str(folder), seed, index) for index in range(num_images)], chunksize=8)
    progress(f"generated {num_images} JPEGs in {time.perf_counter() - started:.0f} s")
    manifest.write_text(json.dumps({"num_images": num_images, "seed": seed, "files": files}))
    return files


def describe_set(files: list[dict]) -> str:
    pixels = sum(entry["width"] * entry["height"] for entry in files)
    size = sum(entry["bytes"] for entry in files)
    kinds = ", ".join(f"{sum(e['kind'] == kind for e in files)} {SIZE_NAMES[kind]}" for kind in SIZE_CLASSES)
    modes = ", ".join(f"{sum(e['mode'] == mode for e in files)} {mode}" for mode, _ in MODES)
    return (f"{len(files)} JPEGs ({kinds}; {modes}; {sum(e['progressive'] for e in files)} progressive), "
            f"{size / 2**20:.0f} MiB, {pixels / len(files) / 1e6:.2f} megapixels and {size / len(files) / 1024:.0f} "
            f"KiB on average, {8 * size / pixels:.2f} bits per pixel")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Contenders: each a function run(limit) -> {file name: top-1 label} over the folder (or its first `limit` images)
# ----------------------------------------------------------------------------------------------------------------------


def hf_vit_contender(model_folder, images: Path, args, options: dict):
    classifier = Classifier(model_folder, device=args.device, dtype=args.dtype, compile=args.compile, **options)

    def run(limit=None):
        found = {}
        for prediction in classifier.classify(ImageInputs([str(images)]), 1, args.batch_size, args.num_workers):
            found[Path(prediction.name).name] = prediction.labels[0] if prediction.error is None else prediction.error
            if limit is not None and len(found) >= limit:
                break
        return found

    return run, classifier


def transformers_contender(model, model_folder, images: Path, args, folder: str):
    from transformers import AutoImageProcessor, pipeline

    exported = export_transformers(model, Path(folder) / "transformers", attn_implementation="sdpa")
    exported = exported.to(args.device, getattr(torch, args.dtype)).eval()
    if args.compile:
        exported.forward = torch.compile(exported.forward)
    processor = AutoImageProcessor.from_pretrained(model_folder)  # the torchvision ("fast") backend by default
    classifier = pipeline("image-classification", model=exported, image_processor=processor, device=args.device)
    files = sorted(str(path) for path in images.glob("*.jpg"))

    def run(limit=None):
        chosen = files[:limit]
        results = classifier(chosen, batch_size=args.batch_size, num_workers=args.num_workers, top_k=1)
        return {Path(file).name: result[0]["label"] for file, result in zip(chosen, results, strict=True)}

    return run


def timm_contender(model, images: Path, args):
    from timm.data import ImageDataset, create_loader

    exported = export_timm(model).to(args.device, getattr(torch, args.dtype)).eval()
    forward = torch.compile(exported) if args.compile else exported
    dataset = ImageDataset(str(images))
    processor = build_image_processor(model.config)  # the same resize (squash to 224 x 224), bilinear, mean, std
    loader = create_loader(
        dataset, input_size=(3, *model.config.image_hw), batch_size=args.batch_size, interpolation="bilinear",
        mean=tuple(processor.image_mean), std=tuple(processor.image_std), crop_pct=1.0, crop_mode="squash",
        num_workers=args.num_workers, persistent_workers=False, device=torch.device(args.device),
        img_dtype=getattr(torch, args.dtype), pin_memory=args.device.startswith("cuda"),
    )  # fmt: skip
    files = [Path(dataset.filename(index)).name for index in range(len(dataset))]
    labels = model.config.id2label

    def run(limit=None):
        found = []
        with torch.inference_mode():
            for pixels, _ in loader:
                found += forward(pixels).argmax(-1).tolist()
                if limit is not None and len(found) >= limit:
                    break
        return {file: labels[label] for file, label in zip(files, found)}  # noqa: B905 (limit stops early)

    return run


def model_only(classifier: Classifier, args, batches: int):
    """hf_vit's model (normalisation and top-1 included) on a ready uint8 batch: no file, no decoding."""
    pixels = torch.randint(0, 256, (args.batch_size, 3, *classifier.preprocess.output_size), dtype=torch.uint8)

    def run(limit=None):
        for _ in range(batches if limit is None else 1):
            classifier.top_k(pixels, 1, args.batch_size)[1].tolist()  # waits for the device
        return {}

    return run


def input_only(classifier: Classifier, images: Path, args):
    """hf_vit's input side alone: listing, decoding, resizing, batching, with the workers, threads and parts of
    `Classifier.classify`; with the classifier's `device_decoder`, its decoding on the device too."""
    decoder = classifier.device_decoder

    def run(limit=None):
        loader, chunk = classifier.parts_of_batches(ImageInputs([str(images)]), args.batch_size, args.num_workers)
        for index, part in enumerate(loader):
            if decoder is not None:
                decoder.pixels(part)
            if limit is not None and (index + 1) * chunk >= limit:
                break
        if classifier.device.type != "cpu":
            torch.accelerator.synchronize()
        return {}

    return run


# ----------------------------------------------------------------------------------------------------------------------
# Where the time goes, and how close DCT-scaled decoding is
# ----------------------------------------------------------------------------------------------------------------------


def input_profile(images: Path, files: list[dict], preprocess: Preprocess, sample: int) -> dict:
    """Single-threaded milliseconds per image by size class: reading and decoding the JPEG, with libjpeg's DCT scaling
    (hf_vit's default) and without (--exact_decode, and what transformers and timm decode), then converting and
    resizing; and how far DCT-scaled pixels are from exactly decoded ones, in 8-bit levels."""
    rows = {kind: dict.fromkeys(("count", "scaled_decode", "exact_decode", "scaled_resize", "exact_resize"), 0.0)
            for kind in SIZE_CLASSES}  # fmt: skip
    differences = []
    for entry in files[:: max(1, len(files) // sample)]:
        path, row = str(images / entry["file"]), rows[entry["kind"]]
        row["count"] += 1
        pixels = {}
        for name, draft_size in (("scaled", preprocess.draft_size), ("exact", None)):
            started = time.perf_counter()
            image = load_image(path, draft_size)
            decoded = time.perf_counter()
            pixels[name] = preprocess(to_rgb(image)).float()
            row[f"{name}_decode"] += (decoded - started) * 1e3
            row[f"{name}_resize"] += (time.perf_counter() - decoded) * 1e3
        difference = (pixels["scaled"] - pixels["exact"]).abs()
        differences.append((difference.mean().item(), difference.max().item()))
    for row in rows.values():
        for key in row:
            row[key] = row[key] / max(1, row["count"]) if key != "count" else int(row[key])
    means, maxima = zip(*differences, strict=True)
    return {"classes": rows, "mean_abs_levels": float(np.mean(means)), "p99_image_mean_levels":
            float(np.percentile(means, 99)), "max_levels": float(np.max(maxima))}  # fmt: skip


def gpu_decode_probe(images: Path, files: list[dict], size: tuple[int, int], args) -> str:
    """nvJPEG through torchvision: batched `decode_jpeg(device="cuda")` + resize on the GPU, RGB and gray files,
    baseline and progressive apart (torchvision decodes progressive ones one at a time, entropy decoding on the host:
    why `--decode device` leaves them to the workers)."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.v2 import functional

    rates = []
    for progressive, count in ((False, 4 * args.batch_size), (True, args.batch_size)):
        chosen = [e["file"] for e in files if e["mode"] in ("RGB", "L") and e["progressive"] == progressive][:count]
        data = [read_file(str(images / name)) for name in chosen]

        def step(data=data):
            for start in range(0, len(data), args.batch_size):
                decoded = decode_jpeg(data[start : start + args.batch_size], mode=ImageReadMode.RGB, device="cuda")
                torch.stack([functional.resize(image, list(size), antialias=True) for image in decoded])
            torch.cuda.synchronize()

        if data:
            step()
            started = time.perf_counter()
            step()
            kind = "progressive" if progressive else "baseline"
            rates.append(f"{len(data)} {kind}: {len(data) / (time.perf_counter() - started):,.0f} images/s")
    return f"GPU decode probe (torchvision decode_jpeg on cuda + resize, RGB and gray files): {'; '.join(rates)}"


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def parse_args(argv=None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vit-small-patch16-224", choices=sorted(PRESETS), metavar="NAME")
    parser.add_argument("--num_images", type=int, default=600, help="JPEGs in the generated folder")
    parser.add_argument("--images", default=os.path.join(tempfile.gettempdir(), "hf_vit-end-to-end-jpegs"),
                        help="folder of the generated set (kept and reused for the same count and seed)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, help="DataLoader workers of every contender (None: hf-vit "
                        "predict's default for the device)")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for every contender")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--compile", action="store_true", help="torch.compile every contender's model")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the folder per contender")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, help="None: all (hf_vit-device-decode only "
                        "with --device cuda)")  # fmt: skip
    parser.add_argument("--profile_sample", type=int, default=200, help="images timed stage by stage")
    parser.add_argument("--gpu_decode_probe", action="store_true", help="also time nvJPEG decoding on the GPU")
    parser.add_argument("--json", help="also write the figures as JSON to this path")
    args = parser.parse_args(argv)
    if args.num_workers is None:
        args.num_workers = default_num_workers(torch.device(args.device))
    if args.contenders is None:
        on_cuda = args.device.startswith("cuda")
        args.contenders = [name for name in CONTENDERS if on_cuda or name != "hf_vit-device-decode"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: torch sees no CUDA device here; run on a GPU machine or use --device cpu.",
              file=sys.stderr)  # fmt: skip
        return 2
    if "hf_vit-device-decode" in args.contenders and not args.device.startswith("cuda"):
        print(f"--contenders hf_vit-device-decode decodes JPEGs with nvJPEG on a CUDA GPU, not on --device "
              f"{args.device}: give --device cuda on a GPU machine, or leave that contender out.",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        retain_freed_memory()  # as hf-vit benchmark does: no page faults of freed activations, for every contender
    images = Path(args.images)
    files = jpeg_folder(images, args.num_images, args.seed, processes=max(1, os.cpu_count() or 1))
    for entry in files:  # every contender reads the files from the page cache
        (images / entry["file"]).read_bytes()
    config = benchmark_config(args.preset, num_labels=1000)
    model = reference_model(config, args.seed).eval()
    with tempfile.TemporaryDirectory() as folder:
        model_folder = str(Path(folder) / "hf_vit")
        save_model_folder(model, build_image_processor(config), model_folder)
        runners, classifiers = {}, {}
        for name in args.contenders:
            if name.startswith("hf_vit"):
                runners[name], classifiers[name] = hf_vit_contender(model_folder, images, args, HF_VIT_OPTIONS[name])
            elif name == "transformers":
                runners[name] = transformers_contender(model, model_folder, images, args, folder)
            else:
                runners[name] = timm_contender(model, images, args)
        classifier = classifiers.get("hf_vit") or Classifier(
            model_folder, device=args.device, dtype=args.dtype, compile=args.compile
        )  # the model-alone and input-side rows: hf-vit predict's defaults
        model_batches = math.ceil(len(files) / args.batch_size)  # as many images as a pass over the folder
        runners["(model alone)"] = model_only(classifier, args, model_batches)
        runners["(input side alone)"] = input_only(classifier, images, args)
        if "hf_vit-device-decode" in classifiers:
            on_device = input_only(classifiers["hf_vit-device-decode"], images, args)
            runners["(input side alone, device decode)"] = on_device
        for name, run in runners.items():
            started = time.perf_counter()
            run(limit=2 * args.batch_size)
            progress(f"{name}: warmed up in {time.perf_counter() - started:.1f} s")
        seconds = {name: [] for name in runners}
        predictions = {}
        for round_number in range(args.rounds):
            for name, run in runners.items():
                started = time.perf_counter()
                predictions[name] = run()
                seconds[name].append(time.perf_counter() - started)
                progress(f"round {round_number + 1}: {name} {seconds[name][-1]:.1f} s")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the stages of one decoding thread or worker
        profile = input_profile(images, files, Preprocess(build_image_processor(config)), args.profile_sample)
        torch.set_num_threads(threads)
        size = classifier.preprocess.output_size
        probe = gpu_decode_probe(images, files, size, args) if args.gpu_decode_probe else ""
    counts = {name: len(found) or len(files) for name, found in predictions.items()}
    counts["(model alone)"] = model_batches * args.batch_size
    rates = {name: counts[name] / statistics.median(times) for name, times in seconds.items()}
    reference_name = next((name for name in ("transformers", "hf_vit-exact", "hf_vit") if predictions.get(name)), None)
    reference = predictions.get(reference_name) or {}
    report = {"args": vars(args), "set": describe_set(files), "rates": rates, "seconds": seconds, "profile": profile,
              "agreement": {name: agreement(found, reference) for name, found in predictions.items() if found},
              "environment": {"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                              "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None},
              "gpu_decode_probe": probe, "reference": reference_name}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


def agreement(found: dict, reference: dict) -> float | None:
    if not reference:
        return None
    return sum(found.get(name) == label for name, label in reference.items()) / len(reference)


def markdown(report: dict) -> str:
    args, env, rates, profile = report["args"], report["environment"], report["rates"], report["profile"]
    ours, model_rate = rates.get("hf_vit"), rates["(model alone)"]
    reference = {"transformers": "transformers' pipeline", "hf_vit-exact": "hf_vit --exact_decode"}.get(
        report["reference"], report["reference"] or "a reference"
    )
    lines = [
        f"{args['preset']}, batch {args['batch_size']}, {args['device']}{' (' + env['gpu'] + ')' if env['gpu'] else ''}"
        f", {args['dtype']}, {'compiled' if args['compile'] else 'eager'}, {env['threads']} torch threads, "
        f"{args['num_workers']} DataLoader workers; {args['rounds']} interleaved rounds (median); {env['cpu']}, "
        f"torch {env['torch']}. Set: {report['set']}.",
        "",
        f"| contender | images/s | hf_vit / this | of the model-alone rate | top-1 = {reference}'s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rate in rates.items():
        ratio = f"{ours / rate:.2f}x" if ours else "-"
        share = report["agreement"].get(name)
        lines.append(f"| {name} | {rate:,.1f} | {ratio} | {rate / model_rate:.0%} | "
                     f"{'-' if share is None else f'{share:.1%}'} |")  # fmt: skip
    lines += [
        "",
        "Input side, one thread, ms per image (decode: read + libjpeg; resize: RGB conversion, resize, crop):",
        "",
        "| images | count | decode, DCT-scaled | resize after it | decode, every pixel | resize after it |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, row in profile["classes"].items():
        stages = ("scaled_decode", "scaled_resize", "exact_decode", "exact_resize")
        timings = " | ".join(f"{row[stage]:.2f}" for stage in stages)
        lines.append(f"| {SIZE_NAMES[kind]} | {row['count']} | {timings} |")
    lines += [
        "",
        f"Model alone: {1e3 / model_rate:.2f} ms per image on {env['threads']} threads. DCT-scaled against exactly "
        f"decoded pixels at the model's size: mean |difference| {profile['mean_abs_levels']:.2f} of 255 levels (99th "
        f"percentile of the per-image means {profile['p99_image_mean_levels']:.2f}, largest single difference "
        f"{profile['max_levels']:.0f}).",
    ]
    if report["gpu_decode_probe"]:
        lines += ["", report["gpu_decode_probe"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
