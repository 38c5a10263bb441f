"""Pixels: `to_rgb`, the one conversion of every image that training, evaluation and prediction see (any PIL mode,
any size), and `read_image_file`, which decodes a file as training decodes the files of an image folder."""

import os

import numpy as np
from datasets import Image
from PIL import Image as PILImage

# PIL modes of 16-bit gray levels (0..65535); 16-bit grayscale PNG and TIFF files open as "I;16".
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(image: PILImage.Image, source: str | None = None) -> PILImage.Image:
    """Any PIL image as 8-bit RGB, the one conversion used by the train transform, the eval transform and
    `hf-vit predict`, so that all three see the same pixels. The size is kept: the transforms resize any size, 1x1 up.

    - 8-bit modes (1, L, LA, P, PA, RGBA, RGBX, CMYK, YCbCr, LAB, HSV, ...): PIL's `convert("RGB")`. Alpha is dropped,
      not composited, as transformers' `pipeline` does when it loads an image.
    - 16-bit gray ("I;16", "I;16B", "I;16L", "I;16N": how PIL opens 16-bit grayscale PNG and TIFF files): 0..65535
      scaled to 0..255 (divided by 257, rounded), so 65535 is white. PIL's own convert clips every value above 255.
    - "I" (32-bit integers): read as 16-bit gray like "I;16", whatever the values (older PIL opened 16-bit PNGs as
      "I"); a value outside 0..65535 is a ValueError. An "I" image of 8-bit values therefore comes out dark: save
      such images as mode "L".
    - "F" (32-bit floats): gray levels in [0, 1], scaled by 255; a value outside [0, 1], NaN or inf is a ValueError.

    `source` names the image in errors (default: the file PIL opened it from, if any).
    """
    name = source or getattr(image, "filename", "") or "an image"
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{name} has no pixels (size {image.width}x{image.height}); remove it from the data.")
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        levels = np.asarray(image).astype(np.int64)
        if image.mode == "I" and (levels.min() < 0 or levels.max() > 65535):
            raise ValueError(
                f"{name} is a 32-bit integer ('I') image with values {levels.min()}..{levels.max()}; hf_vit reads "
                "'I' images as 16-bit gray levels 0..65535. Rescale it to 0..65535 (or save it as an 8-bit image)."
            )
        return PILImage.fromarray(np.round(levels / 257).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        finite = np.isfinite(values).all()
        if not (finite and values.min() >= 0.0 and values.max() <= 1.0):
            found = f"values {values.min():g}..{values.max():g}" if finite else "NaN or inf values"
            raise ValueError(
                f"{name} is a float ('F') image with {found}; hf_vit reads float images as gray levels in [0, 1]. "
                "Scale it to [0, 1] (or save it as an 8-bit image)."
            )
        return PILImage.fromarray(np.round(values * 255).astype(np.uint8)).convert("RGB")
    if image.mode == "La":
        image = image.convert("LA")  # PIL converts premultiplied "La" to "LA" only
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ValueError(
            f"{name}: PIL cannot convert mode {image.mode!r} to RGB ({error}); convert the image to RGB first."
        ) from error


def read_image_file(path: str | os.PathLike) -> PILImage.Image:
    """An image file as `to_rgb` RGB, decoded exactly as training decodes the files of an image folder (datasets'
    Image(): every pixel loaded, EXIF orientation applied). An unreadable file is a ValueError naming it."""
    path = os.fspath(path)
    try:
        image = Image().decode_example({"path": path, "bytes": None})
    except Exception as error:  # PIL's decoders raise many types on a malformed file (OSError, SyntaxError, ...)
        raise unreadable_image(path, error) from error
    return to_rgb(image, source=path)


def unreadable_image(name: str, error: Exception) -> ValueError:
    """The error for an image that cannot be decoded, naming it and the decoder's reason."""
    return ValueError(
        f"{name} is not a readable image file ({type(error).__name__}: {error}); give a PNG, JPEG, ... image."
    )
