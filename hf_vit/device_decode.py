"""`hf-vit predict --decode device`: JPEGs decoded on the GPU by nvJPEG (torchvision's batched
`decode_jpeg(device="cuda")`), then oriented, resized and cropped there.

Why it exists: with the model on a GPU, decoding on the host is the ceiling of `hf-vit predict` (docs/performance.md,
"End to end: folder of JPEGs"): a core decodes far fewer images per second than the GPU classifies. Here the
`DataLoader` workers (or threads) only read each input's bytes and its header (`Image.open` reads no pixels); the
JPEGs nvJPEG decodes well travel as bytes and the main process decodes each part of a batch with one call on the
device. Every other image is decoded on the host exactly as with `--decode host` and travels as pixels:

- progressive JPEGs: torchvision's CUDA path decodes them one at a time, their entropy decoding (most of a JPEG's
  decoding) on the host, in the process that drives the GPU; the workers decode them in parallel instead;
- CMYK and Adobe-RGB JPEGs, files that do not end with the JPEG end-of-image marker (truncated, or followed by other
  data: PIL decides, as on the host path), and every other format (PNG, WebP, ...).

A JPEG the device rejects though its header read (say, arithmetic-coded) is retried alone, then decoded on the host;
`rejected` counts them for a log line. `DeviceDecoder` takes any torch device: on the CPU torchvision decodes with
libjpeg-turbo, as PIL does, so the tests run this code without a GPU and compare it with the host path.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image as PILImage
from torchvision.io import ImageReadMode, decode_jpeg

from .images import unreadable_image
from .inference_data import EXIF_ORIENTATION, InputError, Preprocess, decode

END_OF_IMAGE = b"\xff\xd9"
# EXIF orientation -> the torch ops on [C, H, W] that PIL's `ImageOps.exif_transpose` applies (its table, as tensor
# ops): torchvision's own `apply_exif_orientation` works on the CPU only.
ORIENTATIONS = {
    2: lambda pixels: pixels.flip(-1),
    3: lambda pixels: pixels.flip(-2, -1),
    4: lambda pixels: pixels.flip(-2),
    5: lambda pixels: pixels.transpose(-2, -1),
    6: lambda pixels: torch.rot90(pixels, -1, (-2, -1)),
    7: lambda pixels: pixels.transpose(-2, -1).flip(-2, -1),
    8: lambda pixels: torch.rot90(pixels, 1, (-2, -1)),
}
EXAMPLES = 5  # rejected JPEGs named in the log line


@dataclass
class Encoded:
    """A JPEG's bytes, left for the device, and its EXIF orientation."""

    data: bytes
    orientation: int


class DeviceDecoder:
    """Worker side: `read` (one input -> `Encoded` or host-decoded pixels) and `pack` (a part of a batch -> the dict
    a `DataLoader` carries). Main side: `pixels` (that dict -> names and uint8 pixels [n, 3, H, W] on `device`)."""

    def __init__(self, preprocess: Preprocess, device: str | torch.device):
        self.preprocess, self.device = preprocess, torch.device(device)
        self.reset_rejected()
        probe = io.BytesIO()
        PILImage.new("RGB", (16, 16), (200, 100, 50)).save(probe, "JPEG")
        try:
            self._decode_jpegs([torch.frombuffer(bytearray(probe.getvalue()), dtype=torch.uint8)])
        except RuntimeError as error:  # torchvision without nvJPEG (a ROCm or CPU-only build), a driver problem
            raise InputError(f"--decode device: torchvision cannot decode JPEGs on {self.device} here ({error}); "
                             "use --decode host.") from error  # fmt: skip

    # Worker side ------------------------------------------------------------------------------------------------------

    def read(self, source, name: str) -> Encoded | torch.Tensor:
        """A path or binary file -> its bytes as `Encoded` when the device decodes it, else the host's pixels (the
        same `decode` as `--decode host`). Anything unreadable is a ValueError naming `name`."""
        try:
            data = source.getvalue() if isinstance(source, io.BytesIO) else Path(source).read_bytes()
            image = PILImage.open(io.BytesIO(data))  # the header only
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        except Exception as error:  # PIL raises many types on a malformed header (OSError, SyntaxError, ...)
            raise unreadable_image(name, error) from error
        if self.on_device(image, data, orientation):
            return Encoded(data, orientation)
        return decode(io.BytesIO(data), name, self.preprocess)

    @staticmethod
    def on_device(image: PILImage.Image, data: bytes, orientation) -> bool:
        """Whether nvJPEG gets this image (the module docstring says why the others stay on the host; a malformed
        orientation tag too, so that PIL treats it as on the host path)."""
        return (image.format == "JPEG" and image.mode in ("RGB", "L") and not image.info.get("progressive")
                and image.info.get("adobe_transform") != 0 and data.endswith(END_OF_IMAGE)
                and isinstance(orientation, int))  # fmt: skip

    def pack(self, kept: list[tuple[str, Encoded | torch.Tensor]], skipped: list[tuple[str, str]]) -> dict:
        """One part of a batch, in input order: host pixels stacked, JPEG bytes joined into one tensor (one shared
        memory block from a worker, not one per image), `from_bytes` saying which name is which."""
        encoded = [result for _, result in kept if isinstance(result, Encoded)]
        pixels = [result for _, result in kept if torch.is_tensor(result)]
        joined = bytearray().join(item.data for item in encoded)
        return {
            "names": [name for name, _ in kept],
            "skipped": skipped,
            "pixels": torch.stack(pixels) if pixels else torch.empty(0, 3, *self.preprocess.output_size,
                                                                       dtype=torch.uint8),
            "from_bytes": torch.tensor([isinstance(result, Encoded) for _, result in kept], dtype=torch.bool),
            "encoded": torch.frombuffer(joined, dtype=torch.uint8) if joined else torch.empty(0, dtype=torch.uint8),
            "lengths": [len(item.data) for item in encoded],
            "orientations": [item.orientation for item in encoded],
        }  # fmt: skip

    # Main side --------------------------------------------------------------------------------------------------------

    def pixels(self, part: dict) -> tuple[list[str], torch.Tensor, list[tuple[str, str]]]:
        """A packed part -> (names, uint8 pixels [n, 3, H, W] on the device, skipped [(name, reason)]), in input
        order: its JPEG bytes decoded with one batched call, each image oriented, resized and cropped as
        `Preprocess` does on the host."""
        names, skipped = part["names"], list(part["skipped"])
        host = part["pixels"].to(self.device, non_blocking=True)
        if not part["lengths"]:
            return names, host, skipped
        which = part["from_bytes"].tolist()
        jpegs = list(torch.split(part["encoded"], part["lengths"]))
        jpeg_names = [name for name, from_bytes in zip(names, which, strict=True) if from_bytes]
        decoded = iter(self._decode(jpegs, jpeg_names, part["orientations"]))
        from_host = iter(host)
        kept, rows = [], []
        for name, from_bytes in zip(names, which, strict=True):
            row = next(decoded) if from_bytes else next(from_host)
            if isinstance(row, ValueError):
                skipped.append((name, str(row)))
            else:
                kept.append(name)
                rows.append(row)
        empty = host.new_empty(0, 3, *self.preprocess.output_size)
        return kept, torch.stack(rows) if rows else empty, skipped

    def _decode_jpegs(self, jpegs: list[torch.Tensor]) -> list[torch.Tensor]:
        # torchvision decodes on the CPU for any device but CUDA; `.to` is then the copy to that device.
        return [image.to(self.device) for image in decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=self.device)]

    def _decode(self, jpegs, names, orientations) -> list[torch.Tensor | ValueError]:
        """Each JPEG at the model's size on the device: one batched call; if the device rejects the batch, each JPEG
        alone, and the ones it rejects alone on the host (a ValueError where the host cannot either)."""
        try:
            images = self._decode_jpegs(jpegs)
            return [self._place(image, orientation) for image, orientation in zip(images, orientations, strict=True)]
        except torch.OutOfMemoryError:
            raise  # not a bad JPEG: `hf-vit predict` says to lower --batch_size
        except RuntimeError:
            pass
        results = []
        for jpeg, name, orientation in zip(jpegs, names, orientations, strict=True):
            try:
                results.append(self._place(self._decode_jpegs([jpeg])[0], orientation))
                continue
            except torch.OutOfMemoryError:
                raise
            except RuntimeError:
                self.rejected += 1
                if len(self.rejected_examples) < EXAMPLES:
                    self.rejected_examples.append(name)
            try:
                results.append(decode(io.BytesIO(jpeg.numpy().tobytes()), name, self.preprocess).to(self.device))
            except ValueError as error:
                results.append(error)
        return results

    def _place(self, image: torch.Tensor, orientation: int) -> torch.Tensor:
        oriented = ORIENTATIONS[orientation](image) if orientation in ORIENTATIONS else image
        return self.preprocess.resize_and_crop(oriented)

    def reset_rejected(self) -> None:
        self.rejected, self.rejected_examples = 0, []

    def rejected_message(self) -> str | None:
        """The log line for JPEGs the device rejected (decoded on the host instead), or None."""
        if not self.rejected:
            return None
        more = self.rejected - len(self.rejected_examples)
        shown = ", ".join(self.rejected_examples) + (f" and {more} more" if more else "")
        return (f"--decode device: {self.device} could not decode {self.rejected} JPEG(s) ({shown}); they were "
                "decoded on the host instead (or skipped, named above, where the host could not read them "
                "either).")  # fmt: skip
