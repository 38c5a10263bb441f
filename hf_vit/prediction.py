"""`hf-vit predict`: the top-k labels and scores of a saved model for many images (files, folders, globs, URLs, lists of
them, a `datasets` split), batched, decoded in parallel, written as CSV or JSON Lines.

The input side (which images, decoding, resizing) is `hf_vit.inference_data`; this module loads the model, runs the
batches and writes the results. Scores are what transformers' `pipeline("image-classification")` gives for the same
folder: the folder's own processor steps, softmax (sigmoid for multi-label models)."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import AutoImageProcessor
from transformers.utils import logging

from . import speedups
from .cli_args import CommandParser
from .device_decode import DeviceDecoder
from .inference_data import ImageBatches, ImageInputs, InputError, Preprocess, batch_loader
from .input_pipeline import usable_cores
from .modeling_hf_vit import HfViTForImageClassification

logger = logging.get_logger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FORMATS = ("csv", "jsonl")
DECODES = ("host", "device")
DEFAULT_BATCH_SIZE = 64
WORKER_CHUNK = 32  # images a worker decodes per task


@dataclass
class Prediction:
    """One input's top-k labels and scores, best first; or, for a skipped input, why (`error`)."""

    name: str
    labels: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    error: str | None = None


def resolve_device(name: str) -> torch.device:
    """`auto` (the accelerator if there is one, else the CPU) or a device that exists here; else an InputError."""
    if name == "auto":
        accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        return torch.device(accelerator.type if accelerator is not None else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise InputError(f"--device {name!r} is not a device ({error}); use auto, cpu, cuda, cuda:1, ...") from error
    if device.type == "cpu":
        return device
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    count = torch.accelerator.device_count() if accelerator is not None and accelerator.type == device.type else 0
    if count == 0:
        raise InputError(f"--device {name}: this machine has no {device.type} device; use --device cpu (or auto).")
    if device.index is not None and device.index >= count:
        raise InputError(f"--device {name} does not exist: this machine has {count} {device.type} device(s), "
                         f"{device.type}:0 to {device.type}:{count - 1}.")  # fmt: skip
    return device


def default_num_workers(device: torch.device) -> int:
    """No worker on the CPU, where the model's threads use every core (a worker would take cores from them) and a
    batch is decoded by as many threads between model steps instead. On an accelerator every core but the one that
    drives the device: at inference, decoding is the host's whole job (training caps its workers lower,
    `hf_vit.input_pipeline.loader_settings`, because there each image costs the device three times as much)."""
    return 0 if device.type == "cpu" else max(1, usable_cores() - 1)


class Classifier:
    """A saved model (folder or Hub id) ready for batches: hf_vit's own classes (never code that came with the
    folder), `hf_vit.speedups` applied, on `device`, weights cast to `dtype` (as `from_pretrained(dtype=...)` does,
    on every device), optionally compiled. `decode="device"` decodes JPEGs on a CUDA device (`hf_vit.device_decode`);
    `device_decoder` is then its `DeviceDecoder`, which takes any device (tests set one on a CPU classifier)."""

    def __init__(self, model, processor=None, device: str = "auto", dtype: str = "float32", compile: bool = False,
                 exact_decode: bool = False, decode: str = "host"):  # fmt: skip
        self.device = resolve_device(device)
        if dtype not in DTYPES:
            raise InputError(f"--dtype {dtype!r} must be one of {', '.join(DTYPES)}.")
        if decode not in DECODES:
            raise InputError(f"--decode {decode!r} must be one of {', '.join(DECODES)}.")
        if decode == "device" and self.device.type != "cuda":
            raise InputError(f"--decode device decodes JPEGs with nvJPEG on a CUDA GPU, and this run's device is "
                             f"{self.device}: give --device cuda on a machine with an NVIDIA GPU, or use --decode "
                             "host.")  # fmt: skip
        if isinstance(model, (str, os.PathLike)):
            try:
                processor = AutoImageProcessor.from_pretrained(model)
                model = HfViTForImageClassification.from_pretrained(model)
            except (OSError, ValueError) as error:
                raise InputError(f"--model {model} could not be loaded ({type(error).__name__}: {error}); give an "
                                 "hf_vit model folder or Hub repo id.") from error  # fmt: skip
        if processor is None:
            raise TypeError("Classifier(model) with a model instance needs its image processor: processor=...")
        if not model.config.num_labels:
            raise InputError("the model has no classifier (num_labels=0): it gives features, not labels.")
        self.preprocess = Preprocess(processor, exact_decode=exact_decode)
        self.device_decoder = DeviceDecoder(self.preprocess, self.device) if decode == "device" else None
        self.config = model.config
        speedups.apply_and_log(model, logger.warning)
        self.model = model.eval().to(self.device, DTYPES[dtype])
        self.dtype = DTYPES[dtype]
        self.compiled = compile
        self.forward = torch.compile(self.model) if compile else self.model
        multi_label = self.config.problem_type == "multi_label_classification"
        self.to_scores = torch.sigmoid if multi_label else (lambda logits: logits.softmax(-1))

    @torch.inference_mode()
    def top_k(self, pixels: torch.Tensor, k: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 pixels [n, 3, H, W] -> (scores, label ids) [n, k], on the device (not waited for). A compiled model
        gets full batches (zeros after the images), so that it compiles once."""
        count = len(pixels)
        pixels = self.preprocess.normalize(pixels.to(self.device, non_blocking=True)).to(self.dtype)
        if self.compiled and count < batch_size:
            pixels = torch.cat([pixels, pixels.new_zeros(batch_size - count, *pixels.shape[1:])])
        logits = self.forward(pixel_values=pixels).logits[:count]
        return self.to_scores(logits.float()).topk(k, dim=-1)

    def classify(self, inputs: ImageInputs, top_k: int = 5, batch_size: int = DEFAULT_BATCH_SIZE,
                 num_workers: int | None = None, worker_chunk: int = WORKER_CHUNK) -> Iterator[Prediction]:  # fmt: skip
        """A `Prediction` per input: the classified ones in input order, the skipped ones with their reason.

        Without workers, each batch is decoded by `torch.get_num_threads()` threads. Workers decode `worker_chunk`
        images at a time, gathered into batches on the device: a large batch then does not wait for one worker to
        decode all of it, and every worker is busy from the start. On an accelerator, batch k + 1 goes to the device
        before batch k's results are read, so that the device does not wait for the host. With a `device_decoder`,
        each part's JPEGs are decoded on the device with one call as the part arrives."""
        decoder = self.device_decoder
        if decoder is not None:
            decoder.reset_rejected()  # the log line counts this run's
        loader, _ = self.parts_of_batches(inputs, batch_size, num_workers, worker_chunk)
        top_k = min(top_k, self.config.num_labels)
        kept = 0 if self.device.type == "cpu" else 1  # batches left running on the device while the next one is sent
        pending, names, parts = [], [], []

        def launch(batch_names: list[str], pixels: torch.Tensor) -> None:
            pending.append((batch_names, *self._to_host(*self.top_k(pixels, top_k, batch_size))))

        for part in loader:
            if decoder is not None:
                part_names, pixels, skipped = decoder.pixels(part)
            else:
                part_names, skipped = part["names"], part["skipped"]
                pixels = part["pixels"].to(self.device, non_blocking=True)
            yield from (Prediction(name, error=reason) for name, reason in skipped)
            names += part_names
            parts.append(pixels)
            while len(names) >= batch_size:
                pixels = parts[0] if len(parts) == 1 else torch.cat(parts)
                launch(names[:batch_size], pixels[:batch_size])
                names, parts = names[batch_size:], [pixels[batch_size:]]
                while len(pending) > kept:
                    yield from self._results(*pending.pop(0))
        if names:
            launch(names, torch.cat(parts))
        for launched in pending:
            yield from self._results(*launched)
        if decoder is not None and (rejected := decoder.rejected_message()):
            logger.warning(rejected)

    def parts_of_batches(self, inputs: ImageInputs, batch_size: int, num_workers: int | None = None,
                         worker_chunk: int = WORKER_CHUNK) -> tuple[torch.utils.data.DataLoader, int]:  # fmt: skip
        """The loader of decoded parts of batches that `classify` reads (its docstring says how they are made), and
        the images per part."""
        workers = default_num_workers(self.device) if num_workers is None else num_workers
        threads = torch.get_num_threads() if workers == 0 else 1
        chunk = batch_size if workers == 0 else min(batch_size, worker_chunk)
        batches = ImageBatches(inputs, self.preprocess, chunk, threads, device_decoder=self.device_decoder)
        return batch_loader(batches, workers, pin_memory=self.device.type == "cuda"), chunk

    def _to_host(self, scores: torch.Tensor, label_ids: torch.Tensor):
        """Results copied to the host as soon as the device computes them, with an event that says when they are
        there: reading batch k then waits for batch k only, not for batch k + 1 queued behind it."""
        if self.device.type == "cpu":
            return scores, label_ids, None
        copied = scores.to("cpu", non_blocking=True), label_ids.to("cpu", non_blocking=True)
        arrived = torch.Event(self.device)
        arrived.record()
        return *copied, arrived

    def _results(self, names, scores, label_ids, arrived) -> Iterator[Prediction]:
        if arrived is not None:
            arrived.synchronize()
        labels = self.config.id2label
        for name, row_scores, row_ids in zip(names, scores.tolist(), label_ids.tolist(), strict=True):
            yield Prediction(name, [labels[index] for index in row_ids], row_scores)


def predict(model: str, images: list[str], top_k: int = 5, **options) -> list[list[dict]]:
    """Top-k labels and scores ([{"label", "score"}, ...], best first) per image of `images` (files, or any input
    `ImageInputs` takes), in order; any image that cannot be read is a ValueError naming it. `options`: device, dtype,
    compile, exact_decode, decode (for `Classifier`), batch_size, num_workers (for `Classifier.classify`)."""
    run = {name: options.pop(name) for name in ("batch_size", "num_workers") if name in options}
    inputs = ImageInputs(images)
    results = []
    for prediction in Classifier(model, **options).classify(inputs, top_k, **run):
        if prediction.error is not None:
            raise ValueError(prediction.error)
        results.append([{"label": label, "score": score}
                        for label, score in zip(prediction.labels, prediction.scores, strict=True)])  # fmt: skip
    return results


# ----------------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------------


class ResultWriter:
    """CSV (path, label_1, score_1, ...) or JSON Lines ({"path", "predictions": [{"label", "score"}]}) to stdout or to
    `output`. A file is written as `output`.partial and renamed when the run is complete, so that a stopped run never
    leaves a file that looks complete."""

    def __init__(self, output: str | None, format: str, top_k: int):
        self.output, self.format, self.top_k = output, format, top_k
        if output is None:
            self.file = sys.stdout
        else:
            folder = os.path.dirname(os.path.abspath(output))
            if os.path.isdir(output) or not os.path.isdir(folder):
                raise InputError(f"--output {output}: give a file path in an existing folder.")
            self.partial = output + ".partial"
            self.file = open(self.partial, "w", encoding="utf-8", newline="")
        self.csv = csv.writer(self.file, lineterminator="\n") if format == "csv" else None
        if self.csv is not None:
            ranks = range(1, top_k + 1)
            self.csv.writerow(["path"] + [f"{kind}_{rank}" for rank in ranks for kind in ("label", "score")])

    def write(self, prediction: Prediction) -> None:
        scores = [round(score, 6) for score in prediction.scores]
        if self.csv is not None:
            pairs = [value for label, score in zip(prediction.labels, scores, strict=True) for value in (label, score)]
            self.csv.writerow([prediction.name, *pairs])
        else:
            entries = [{"label": label, "score": score} for label, score in zip(prediction.labels, scores, strict=True)]
            self.file.write(json.dumps({"path": prediction.name, "predictions": entries}) + "\n")

    def flush(self) -> None:
        self.file.flush()

    def commit(self) -> None:
        if self.output is not None:
            self.file.close()
            os.replace(self.partial, self.output)

    def abandon(self) -> str | None:
        """Close a file output of a stopped run; it stays as the .partial file, whose path is returned."""
        if self.output is None:
            return None
        self.file.close()
        return self.partial


# ----------------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------------


def build_parser() -> CommandParser:
    parser = CommandParser(prog="hf-vit predict", description=__doc__)
    parser.add_argument("inputs", nargs="*", help="image files, folders (walked recursively), globs (quoted: "
                        "'photos/**/*.jpg'), http(s) URLs")  # fmt: skip
    parser.add_argument("--model", required=True, help="an hf_vit model folder or Hub repo id")
    parser.add_argument("--input_list", action="append", default=[], metavar="FILE",
                        help="a text file of image paths or URLs, one a line (repeatable)")  # fmt: skip
    parser.add_argument("--dataset", help="a `datasets` set: Hub id, local image folder, or save_to_disk folder")
    parser.add_argument("--split", help="the --dataset split (None: its only split)")
    parser.add_argument("--dataset_config", help="the --dataset configuration name")
    parser.add_argument("--image_column", help="the --dataset image column (None: the first Image() column)")
    parser.add_argument("--top_k", type=int, default=5, help="labels per image")
    parser.add_argument("--output", help="write results to this file (else stdout); complete only once renamed from "
                        "FILE.partial at the end")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, help="csv or jsonl (None: jsonl for an --output ending in "
                        ".jsonl or .json, else csv)")  # fmt: skip
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE, help="images per model step")
    parser.add_argument("--num_workers", type=int, help="decoding processes (None: 0 on the CPU, where threads "
                        "decode each batch; on an accelerator one per core but one)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto (the accelerator if any, else cpu), cpu, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="the model's weights are cast to it")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on large sets)")
    parser.add_argument("--exact_decode", action="store_true", help="decode every pixel of large JPEGs, not libjpeg's "
                        "DCT-scaled image at the size the resize needs (docs/inference.md)")  # fmt: skip
    parser.add_argument("--decode", default="host", choices=DECODES, help="where JPEGs are decoded: host (PIL, in the "
                        "workers or threads) or device (nvJPEG on a CUDA GPU; the workers only read the files; not "
                        "the default until measured against host workers, docs/inference.md)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    for name in ("top_k", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)} must be 1 or more.")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num_workers {args.num_workers} must be 0 or more.")
    try:
        return run(args)
    except InputError as error:
        print(f"hf-vit predict: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hf-vit predict: interrupted before any image was classified.", file=sys.stderr)
        return 130


def run(args) -> int:
    """The command after parsing: 0 when every image was classified, 1 when some were skipped, 130 when stopped."""
    output_format = args.format or ("jsonl" if (args.output or "").endswith((".jsonl", ".json")) else "csv")
    inputs = ImageInputs(args.inputs, args.input_list, args.dataset, args.split, args.dataset_config,
                         args.image_column)  # fmt: skip
    classifier = Classifier(args.model, device=args.device, dtype=args.dtype, compile=args.compile,
                            exact_decode=args.exact_decode, decode=args.decode)  # fmt: skip
    top_k = min(args.top_k, classifier.config.num_labels)
    total, left_out = inputs.count()
    if left_out.count:
        more = left_out.count - len(left_out.examples)
        shown = ", ".join(left_out.examples) + (f" and {more} more" if more else "")
        logger.warning(f"left out {left_out.count} file(s) of the folders and globs that are hidden or have no image "
                       f"extension: {shown}. Name a file itself to classify it.")  # fmt: skip
    writer = ResultWriter(args.output, output_format, top_k)
    classified, skipped, started = 0, 0, time.perf_counter()
    progress = tqdm(total=total, unit="img", file=sys.stderr, disable=None, smoothing=0.1)
    try:
        for prediction in classifier.classify(inputs, top_k, args.batch_size, args.num_workers):
            if prediction.error is not None:
                skipped += 1
                progress.write(f"skipped: {prediction.error}", file=sys.stderr)
            else:
                classified += 1
                writer.write(prediction)
            progress.update(1)
        writer.flush()
    except (KeyboardInterrupt, torch.OutOfMemoryError) as error:
        progress.close()
        partial = writer.abandon()
        kept = f"; the {classified} results so far are in {partial} (incomplete)" if partial else ""
        if isinstance(error, KeyboardInterrupt):
            print(f"hf-vit predict: interrupted{kept}.", file=sys.stderr)
            return 130
        print(f"hf-vit predict: out of memory on {classifier.device} at --batch_size {args.batch_size}: give a "
              f"smaller --batch_size{kept}.", file=sys.stderr)  # fmt: skip
        return 2
    progress.close()
    writer.commit()
    seconds = time.perf_counter() - started
    summary = (f"hf-vit predict: {classified} image(s) classified, {skipped} skipped"
               f"{' (named above)' if skipped else ''} in {seconds:.1f} s ({(classified + skipped) / seconds:.1f} "
               f"images/s){f'; results in {args.output}' if args.output else ''}.")  # fmt: skip
    print(summary, file=sys.stderr)
    return 1 if skipped else 0
