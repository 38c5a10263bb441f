"""`hf-vit predict --decode device` run on the CPU: `DeviceDecoder` takes any torch device, and on the CPU torchvision's
`decode_jpeg` is libjpeg-turbo, as PIL's decoder is, so the device path's pixels can be held to the host path's.

Tolerance: 1 level of 255. Both decoders are libjpeg-turbo with its default integer IDCT and chroma upsampling
(integer arithmetic, so equal between builds; the two bundled here give identical pixels), and the resize is the
same torchvision call on the same uint8 tensors. One level allows another build's SIMD colour conversion to round
differently; a wrong orientation, crop or channel order moves pixels by tens of levels."""

import io

import numpy as np
import pytest
import torch
from conftest import photo, save_tiny_classifier
from datasets import Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image as PILImage
from PIL import ImageOps

from hf_vit.device_decode import ORIENTATIONS, DeviceDecoder, Encoded
from hf_vit.inference_data import ImageBatches, ImageInputs, Preprocess, batch_loader, decode
from hf_vit.prediction import Classifier
from hf_vit.processing import build_timm_eval_processor

# torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec (docs/inference.md).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")
LABELS = {0: "cat", 1: "dog", 2: "fox"}
# A shortest-edge resize (bicubic) then a floor-offset center crop: every step of `Preprocess` on odd sizes.
PROCESSOR = build_timm_eval_processor(32, 0.875, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def jpeg_bytes(image: PILImage.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=88, **options)
    return buffer.getvalue()


def with_orientation(orientation: int) -> bytes:
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(photo(61, 37, orientation), exif=exif)


def bogus_huffman_table(data: bytes) -> bytes:
    """A JPEG whose header PIL reads but whose first Huffman table no decoder accepts (code counts all 255)."""
    table = data.index(b"\xff\xc4") + 4  # after the marker and its length
    return data[:table] + b"\x00" + b"\xff" * 16 + data[table + 17 :]


# name -> (bytes, decoded on the device?): what the workers send as bytes, and what they decode on the host.
FILES = {
    "rgb.jpg": (jpeg_bytes(photo(70, 45, 0)), True),
    "gray.jpg": (jpeg_bytes(photo(45, 70, 1, "L")), True),
    "full_chroma.jpg": (jpeg_bytes(photo(33, 50, 2), subsampling=0), True),
    **{f"orientation_{number}.jpg": (with_orientation(number), True) for number in range(2, 9)},
    "progressive.jpg": (jpeg_bytes(photo(80, 48, 3), progressive=True), False),
    "cmyk.jpg": (jpeg_bytes(photo(40, 40, 4, "CMYK")), False),
    "trailing_data.jpg": (jpeg_bytes(photo(50, 40, 5)) + b"more data", False),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The FILES, a PNG, a truncated JPEG (header intact) and one with a bogus Huffman table, in sorted order."""
    root = tmp_path_factory.mktemp("mixed")
    for name, (data, _) in FILES.items():
        (root / name).write_bytes(data)
    photo(30, 20, 6, "RGBA").save(root / "alpha.png")
    good = FILES["rgb.jpg"][0]
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "zz_bad_table.jpg").write_bytes(bogus_huffman_table(good))
    return root


def test_orientations_are_pils_exif_transpose():
    for number, turn in ORIENTATIONS.items():
        image = PILImage.open(io.BytesIO(with_orientation(number)))
        expected = torch.from_numpy(np.array(ImageOps.exif_transpose(image))).permute(2, 0, 1)
        stored = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(turn(stored), expected), number


@pytest.mark.parametrize("num_workers", [0, 2])
def test_device_path_on_cpu_equals_the_exact_host_path(folder, num_workers):
    """Every image in input order: the JPEGs nvJPEG would get travel as bytes and are decoded, oriented, resized and
    cropped by `DeviceDecoder.pixels`; the rest are the host path's; the truncated JPEG (host: PIL) and the one the
    decoder rejects (retried alone, then the host) are skipped by name, the rejected one counted."""
    preprocess = Preprocess(PROCESSOR, exact_decode=True)
    decoder = DeviceDecoder(preprocess, "cpu")
    batches = ImageBatches(ImageInputs([str(folder)]), preprocess, batch_size=4, device_decoder=decoder)
    names, rows, skipped, sent_as_bytes = [], [], [], []
    for part in batch_loader(batches, num_workers, pin_memory=False):
        sent_as_bytes += [name for name, flag in zip(part["names"], part["from_bytes"].tolist(), strict=True) if flag]
        part_names, pixels, part_skipped = decoder.pixels(part)
        assert pixels.dtype == torch.uint8 and pixels.shape == (len(part_names), 3, 32, 32)
        names += part_names
        rows += list(pixels)
        skipped += part_skipped
    everything = sorted(path.name for path in folder.iterdir())
    assert [name.rsplit("/", 1)[1] for name in names] == [name for name in everything if "truncated" not in name
                                                          and "bad_table" not in name]  # fmt: skip
    expected_bytes = [name for name, (_, on_device) in FILES.items() if on_device] + ["zz_bad_table.jpg"]
    assert sorted(name.rsplit("/", 1)[1] for name in sent_as_bytes) == sorted(expected_bytes)
    for name, row in zip(names, rows, strict=True):
        expected = decode(name, name, preprocess)
        difference = (row.int() - expected.int()).abs().max().item()
        assert difference <= 1, (name, difference)
    assert [name.rsplit("/", 1)[1] for name, _ in skipped] == ["truncated.jpg", "zz_bad_table.jpg"]
    assert all("is not a readable image file" in reason for _, reason in skipped)
    assert decoder.rejected == 1 and decoder.rejected_examples == [str(folder / "zz_bad_table.jpg")]


def test_classify_with_device_decoding_gives_the_host_paths_results(folder, tmp_path, caplog):
    """A CPU classifier given a CPU `DeviceDecoder` (the CLI refuses --decode device without CUDA): the same
    predictions and skips as host decoding, in input order, with workers and without, from files and from a data set's
    image bytes; the JPEG the device rejected is in one log line with its count."""
    model_folder = save_tiny_classifier(tmp_path / "model", LABELS)
    paths = [str(path) for path in sorted(folder.iterdir())]
    host = list(Classifier(str(model_folder), device="cpu", exact_decode=True).classify(ImageInputs(paths), 3))
    classifier = Classifier(str(model_folder), device="cpu", exact_decode=True)
    classifier.device_decoder = DeviceDecoder(classifier.preprocess, "cpu")
    saved = tmp_path / "rows"
    rows = [{"bytes": (folder / name).read_bytes(), "path": None} for name in ("rgb.jpg", "orientation_6.jpg")]
    Dataset.from_dict({"image": rows}, features=Features({"image": ImageFeature()})).save_to_disk(saved)
    for workers in (0, 2):
        ours = list(classifier.classify(ImageInputs(paths), 3, batch_size=5, num_workers=workers, worker_chunk=2))
        assert [p.name for p in ours if p.error] == [p.name for p in host if p.error]
        kept, reference = [p for p in ours if p.error is None], [p for p in host if p.error is None]
        assert [p.name for p in kept] == [p.name for p in reference]
        for mine, theirs in zip(kept, reference, strict=True):
            # The pixels are within a level of the host path's (test above); a level on every pixel moves this
            # model's scores by up to about 4e-3.
            assert mine.labels == theirs.labels and mine.scores == pytest.approx(theirs.scores, abs=5e-3)
    assert "could not decode 1 JPEG(s)" in caplog.text and "zz_bad_table.jpg" in caplog.text
    from_rows = list(classifier.classify(ImageInputs(dataset=str(saved)), 3))
    by_name = {p.name.rsplit("/", 1)[-1]: p for p in host}
    assert [p.name for p in from_rows] == ["row[0]", "row[1]"]
    assert [p.labels for p in from_rows] == [by_name["rgb.jpg"].labels, by_name["orientation_6.jpg"].labels]


def test_workers_send_undecoded_jpegs_with_their_orientation(folder):
    decoder = DeviceDecoder(Preprocess(PROCESSOR), "cpu")
    read = decoder.read(str(folder / "orientation_6.jpg"), "orientation_6.jpg")
    assert isinstance(read, Encoded) and read.orientation == 6 and read.data == FILES["orientation_6.jpg"][0]
    assert isinstance(decoder.read(io.BytesIO(FILES["rgb.jpg"][0]), "row[0]"), Encoded)
    on_host = decoder.read(str(folder / "alpha.png"), "alpha.png")
    assert torch.is_tensor(on_host) and on_host.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="notes.txt is not a readable image file"):
        decoder.read(io.BytesIO(b"plain text"), "notes.txt")
