"""`hf-vit predict` on small generated sets: every kind of input, both output formats parsed back, skips and usage
errors, an interrupted run, and agreement with the model run through its saved processor."""

import contextlib
import csv
import functools
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from conftest import assert_float32_close, photo, save_tiny_classifier, tiny_config
from datasets import Dataset, DatasetDict
from PIL import Image as PILImage
from transformers import AutoImageProcessor, DeiTImageProcessor

from hf_vit import HfViTForImageClassification
from hf_vit.inference_data import ImageInputs, Preprocess, decode
from hf_vit.prediction import Classifier, main
from hf_vit.processing import build_image_processor, build_timm_eval_processor

LABELS = {0: "cat", 1: "dog", 2: "fox"}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("model"), LABELS)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """photos/: 3 JPEGs (RGB, grayscale, CMYK), a PNG, a sub-folder with 2 more, a text file and a hidden file."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    photo(40, 30, 0).save(root / "a.jpg")
    photo(33, 47, 1, "L").save(root / "b.jpg")
    photo(64, 48, 2, "CMYK").save(root / "c.jpg")
    photo(20, 20, 3, "RGBA").save(root / "d.png")
    photo(300, 200, 4).save(root / "sub" / "e.jpg", quality=90)
    photo(25, 35, 5, "P").save(root / "sub" / "f.png")
    (root / "notes.txt").write_text("not an image")
    photo(20, 20, 6).save(root / ".hidden.jpg")
    return root


IMAGES_IN_ORDER = ["a.jpg", "b.jpg", "c.jpg", "d.png", "sub/e.jpg", "sub/f.png"]


def assert_same_results(ours: list[dict], theirs: list[dict]) -> None:
    """The same names and labels, and scores equal up to float32 rounding (which a batch's size can change)."""
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        for key in mine:
            if key.startswith("score"):
                assert float(mine[key]) == pytest.approx(float(other[key]), abs=2e-6), key
            else:
                assert mine[key] == other[key], key


def run(argv, capsys) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def read_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_folder_files_glob_and_list_give_the_same_predictions_in_order(model_folder, image_folder, tmp_path, capsys,
                                                                       caplog):  # fmt: skip
    status, out, err = run(["--model", str(model_folder), "--top_k", "2", str(image_folder)], capsys)
    assert status == 0, err
    rows = read_csv(out)
    assert [row["path"] for row in rows] == [str(image_folder / name) for name in IMAGES_IN_ORDER]
    assert list(rows[0]) == ["path", "label_1", "score_1", "label_2", "score_2"]
    for row in rows:
        assert row["label_1"] in LABELS.values() and float(row["score_1"]) >= float(row["score_2"]) > 0
    assert "left out 2 file(s)" in caplog.text and "notes.txt" in caplog.text and ".hidden.jpg" in caplog.text

    files = [str(image_folder / name) for name in IMAGES_IN_ORDER]
    listing = tmp_path / "list.txt"
    listing.write_text("# my photos\n\n" + "\n".join(files) + "\n")
    for argv in (files, [str(image_folder / "*.*"), str(image_folder / "sub" / "*")], ["--input_list", str(listing)]):
        status, out, err = run(["--model", str(model_folder), "--top_k", "2", *argv], capsys)
        assert status == 0, err
        assert_same_results(read_csv(out), rows)


def test_workers_and_batch_sizes_keep_input_order_and_scores(model_folder, image_folder, capsys):
    outputs = []
    for workers, batch_size in ((0, 64), (2, 1), (2, 4)):
        argv = ["--model", str(model_folder), "--num_workers", str(workers), "--batch_size", str(batch_size)]
        status, out, err = run([*argv, "--format", "jsonl", str(image_folder)], capsys)
        assert status == 0, err
        flat = []
        for entry in map(json.loads, out.splitlines()):
            ranked = enumerate(entry["predictions"])
            flat.append(
                {"path": entry["path"], **{f"{k}_{rank}": p[k] for rank, p in ranked for k in ("label", "score")}}
            )
        outputs.append(flat)
    assert_same_results(outputs[0], outputs[1])
    assert_same_results(outputs[0], outputs[2])
    assert [entry["path"] for entry in outputs[0]] == [str(image_folder / name) for name in IMAGES_IN_ORDER]


def test_worker_chunks_gather_into_batches_in_input_order(model_folder, image_folder, tmp_path):
    """Workers decode 2 images at a time, gathered into batches of 5 across chunks, a broken file among them."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    paths = [str(image_folder / name) for name in IMAGES_IN_ORDER]
    paths = paths[:3] + [str(broken)] + paths[3:] + paths
    classifier = Classifier(str(model_folder), device="cpu")
    chunked = list(classifier.classify(ImageInputs(paths), 3, batch_size=5, num_workers=2, worker_chunk=2))
    whole = list(classifier.classify(ImageInputs(paths), 3, batch_size=len(paths), num_workers=0))
    assert [p.name for p in chunked if p.error] == [p.name for p in whole if p.error] == [str(broken)]
    classified = [p for p in chunked if p.error is None]
    assert [p.name for p in classified] == [p.name for p in whole if p.error is None] == paths[:3] + paths[4:]
    for ours, theirs in zip(classified, [p for p in whole if p.error is None], strict=True):
        assert ours.labels == theirs.labels and ours.scores == pytest.approx(theirs.scores, abs=2e-6)


def test_scores_agree_with_the_model_run_through_its_saved_processor(model_folder, image_folder):
    """What users of the folder get: AutoImageProcessor (transformers' torchvision backend) + the model + softmax.
    With exact decoding the pixels are the processor's exactly, so the scores agree to float32 rounding."""
    paths = [str(image_folder / name) for name in IMAGES_IN_ORDER]
    processor = AutoImageProcessor.from_pretrained(model_folder)
    model = HfViTForImageClassification.from_pretrained(model_folder).eval()
    images = [PILImage.open(path).convert("RGB") for path in paths]
    with torch.no_grad():
        expected = model(**processor(images, return_tensors="pt")).logits.softmax(-1)
    classifier = Classifier(str(model_folder), device="cpu", exact_decode=True)
    predictions = list(classifier.classify(ImageInputs(paths), top_k=3))
    ours = torch.tensor([[p.scores[p.labels.index(label)] for label in LABELS.values()] for p in predictions])
    assert_float32_close(ours, expected)
    assert [p.labels[0] for p in predictions] == [LABELS[i] for i in expected.argmax(-1).tolist()]


@pytest.mark.parametrize("kind", ["vit", "timm", "deit"])
def test_preprocessing_equals_the_saved_processor(kind, tmp_path):
    """uint8 resize (bilinear or bicubic), floor-offset center crop, then (x - mean/scale) / (std/scale): the
    processor's own pixels for each processor class hf_vit folders hold."""
    built = {
        "vit": build_image_processor(tiny_config(image_size=32)),
        "timm": build_timm_eval_processor(32, 0.875, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        "deit": DeiTImageProcessor(size={"height": 36, "width": 36}, crop_size={"height": 32, "width": 32}),
    }[kind]
    built.save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    preprocess = Preprocess(processor, exact_decode=True)
    for index, (width, height) in enumerate([(70, 50), (31, 45), (32, 32), (9, 13), (120, 37)]):
        image = photo(width, height, index)
        expected = processor(image, return_tensors="pt")["pixel_values"]
        ours = preprocess.normalize(preprocess(image)[None])
        assert ours.shape == expected.shape == (1, 3, 32, 32)
        assert_float32_close(ours, expected)


def test_jpeg_dct_scaling_decodes_no_smaller_than_needed_and_stays_close(tmp_path):
    """A 640x480 JPEG for a 32x32 model is decoded at 1/8 (80x60, still above 32) unless --exact_decode; the pixels
    then differ from the exact ones by a fraction of a level on average (docs/inference.md has the figures on
    photo-sized images)."""
    path = tmp_path / "big.jpg"
    photo(640, 480, 7).save(path, quality=90)
    with PILImage.open(path) as image:
        image.draft(None, Preprocess(build_image_processor(tiny_config(image_size=32))).draft_size)
        assert image.size == (80, 60)
    processor = build_image_processor(tiny_config(image_size=32))
    scaled = decode(str(path), "big.jpg", Preprocess(processor)).float()
    exact = decode(str(path), "big.jpg", Preprocess(processor, exact_decode=True)).float()
    assert not torch.equal(scaled, exact)
    assert (scaled - exact).abs().mean() < 1.5 and (scaled - exact).abs().max() < 40
    # An EXIF orientation turns the image as training's decoding does, with or without DCT scaling.
    rotated = tmp_path / "rotated.jpg"
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored sideways: to be turned 270 degrees
    photo(640, 320, 8).save(rotated, quality=90, exif=exif)
    square_crop = build_timm_eval_processor(32, 1.0, [0.5] * 3, [0.5] * 3)
    for exact_decode in (False, True):
        assert decode(str(rotated), "rotated.jpg", Preprocess(square_crop, exact_decode)).shape == (3, 32, 32)
    turned = PILImage.open(rotated).transpose(PILImage.Transpose.ROTATE_270)
    exact = Preprocess(square_crop, exact_decode=True)
    assert torch.equal(decode(str(rotated), "rotated.jpg", exact), exact(turned))


def test_unreadable_files_are_skipped_by_name_with_exit_status_1(model_folder, image_folder, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    good = str(image_folder / "a.jpg")
    output = tmp_path / "out.jsonl"
    argv = ["--model", str(model_folder), "--output", str(output), good, str(broken), str(notes), good]
    status, out, err = run(argv, capsys)
    assert status == 1
    assert f"skipped: {broken} is not a readable image file" in err and f"skipped: {notes} is not a readable" in err
    assert "2 image(s) classified, 2 skipped (named above)" in err and out == ""
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["path"] for line in lines] == [good, good] and len(lines[0]["predictions"]) == 3
    assert lines[0]["predictions"][0]["label"] == lines[1]["predictions"][0]["label"]
    assert not (tmp_path / "out.jsonl.partial").exists()


@contextlib.contextmanager
def http_server(folder, before_get=None):
    """Serves `folder` over HTTP on 127.0.0.1 (a URL); `before_get(path)` runs before each GET is answered."""

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            if before_get is not None:
                before_get(self.path)
            return super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def image_server(image_folder):
    with http_server(image_folder) as url:
        yield url


def test_urls_are_fetched_and_a_failing_one_is_skipped_by_name(model_folder, image_folder, image_server, tmp_path,
                                                              capsys):  # fmt: skip
    listing = tmp_path / "urls.txt"
    urls = [f"{image_server}/a.jpg", f"{image_server}/missing.jpg", f"{image_server}/sub/e.jpg"]
    listing.write_text("\n".join(urls))
    status, out, err = run(["--model", str(model_folder), "--input_list", str(listing)], capsys)
    assert status == 1
    assert f"skipped: {urls[1]} could not be fetched (HTTP 404" in err
    rows = read_csv(out)
    assert [row["path"] for row in rows] == [urls[0], urls[2]]
    local = [str(image_folder / "a.jpg"), str(image_folder / "sub" / "e.jpg")]
    _, from_files, _ = run(["--model", str(model_folder), *local], capsys)
    assert_same_results([{**row, "path": ""} for row in rows], [{**row, "path": ""} for row in read_csv(from_files)])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_long_list_is_streamed_not_read_ahead(model_folder, image_folder, tmp_path, workers):
    """The first results of 400 URLs come out after a bounded number of fetches (a batch, and what DataLoader's
    workers prefetch), not after the whole list is read: a set of any size costs the same memory."""
    fetched = []
    with http_server(image_folder, fetched.append) as url:
        urls = [f"{url}/a.jpg?copy={index}" for index in range(400)]
        (tmp_path / "urls.txt").write_text("\n".join(urls))
        inputs = ImageInputs(input_lists=[str(tmp_path / "urls.txt")])
        batch_size = 8
        results = Classifier(str(model_folder), device="cpu").classify(inputs, 1, batch_size, num_workers=workers)
        first = next(results)
        # A batch, plus up to DataLoader's prefetch_factor (2) parts per worker and the one each is decoding.
        assert batch_size <= len(fetched) <= batch_size * (1 + 3 * workers), len(fetched)
        rest = list(results)
    assert [prediction.name for prediction in [first, *rest]] == urls
    assert len(fetched) == 400 and all(prediction.error is None for prediction in rest)


def test_interrupted_run_leaves_no_complete_looking_output(model_folder, image_folder, tmp_path):
    """Ctrl-C (a real SIGINT to a real `hf-vit predict` process) while an image is being fetched: exit status 130,
    the results so far only in the .partial file. The fetch is answered 2 s after the signal: Python runs the handler
    in the main thread, which may be waiting for that fetch (docs/inference.md)."""
    run = {}

    def interrupt(path):
        if path.startswith("/interrupt/"):
            run["process"].send_signal(signal.SIGINT)
            time.sleep(2)

    output = tmp_path / "out.csv"
    with http_server(image_folder, interrupt) as url:
        argv = [sys.executable, "-m", "hf_vit.cli", "predict", "--model", str(model_folder), "--batch_size", "1",
                "--output", str(output), str(image_folder / "a.jpg"), f"{url}/interrupt/b.jpg"]  # fmt: skip
        # As from a terminal, whatever this process inherited (a runner may start tests with SIGINT ignored).
        run["process"] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
        _, err = run["process"].communicate(timeout=120)
    assert run["process"].returncode == 130 and "interrupted" in err, err[-3000:]
    assert not output.exists()
    assert read_csv((tmp_path / "out.csv.partial").read_text())[0]["path"] == str(image_folder / "a.jpg")


def test_datasets_saved_to_disk_and_image_folders(model_folder, image_folder, tmp_path, capsys):
    images = [PILImage.open(image_folder / name) for name in IMAGES_IN_ORDER]
    saved = tmp_path / "saved"
    DatasetDict({"train": Dataset.from_dict({"picture": images[:2], "label": [0, 1]}),
                 "test": Dataset.from_dict({"picture": images, "label": [0] * 6})}).save_to_disk(saved)  # fmt: skip
    status, out, err = run(["--model", str(model_folder), "--dataset", str(saved), "--split", "test"], capsys)
    assert status == 0, err
    from_set = read_csv(out)
    assert [row["path"] for row in from_set] == [f"test[{row}]" for row in range(6)]
    _, from_files, _ = run(["--model", str(model_folder), str(image_folder)], capsys)
    assert [row["label_1"] for row in from_set] == [row["label_1"] for row in read_csv(from_files)]

    status, _, err = run(["--model", str(model_folder), "--dataset", str(saved)], capsys)
    assert status == 2 and "has the splits ['train', 'test']; name one with --split" in err

    classes = tmp_path / "classes"
    for label, name in (("cats", "a.jpg"), ("dogs", "b.jpg")):
        (classes / label).mkdir(parents=True)
        (classes / label / name).write_bytes((image_folder / name).read_bytes())
    status, out, err = run(["--model", str(model_folder), "--dataset", str(classes)], capsys)
    assert status == 0, err
    assert [row["path"] for row in read_csv(out)] == [str(classes / "cats" / "a.jpg"), str(classes / "dogs" / "b.jpg")]

    texts = tmp_path / "texts"
    Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(texts)
    status, _, err = run(["--model", str(model_folder), "--dataset", str(texts)], capsys)
    assert status == 2 and "No Image column" in err and "--image_column" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "inputs, message",
    [
        (["EMPTY"], "holds no image files"),
        (["EMPTY/*.jpg"], "matches no file"),
        (["EMPTY/missing.jpg"], "does not exist"),
        ([], "no images given"),
        (["--device", "cuda:7", "IMAGE"], "--device cuda:7"),
        (["--device", "banana", "IMAGE"], "is not a device"),
        (["--output", "EMPTY", "IMAGE"], "give a file path in an existing folder"),
        (["--input_list", "EMPTY/list.txt"], "is not a file"),
        (["--decode", "device", "--device", "cpu", "IMAGE"], "--decode device decodes JPEGs with nvJPEG on a CUDA"),
    ],
)
def test_usage_errors_name_the_input_with_exit_status_2(model_folder, image_folder, tmp_path, capsys, inputs, message):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no images here")
    argv = [value.replace("EMPTY", str(empty)).replace("IMAGE", str(image_folder / "a.jpg")) for value in inputs]
    status, out, err = run(["--model", str(model_folder), *argv], capsys)
    assert status == 2 and message in err and "Traceback" not in err and out == ""
    assert list(empty.rglob("*.partial")) == []


def test_bfloat16_keeps_the_top_label(model_folder, image_folder, capsys):
    _, reference, _ = run(["--model", str(model_folder), str(image_folder)], capsys)
    status, out, err = run(["--model", str(model_folder), "--dtype", "bfloat16", str(image_folder)], capsys)
    assert status == 0, err
    for ours, theirs in zip(read_csv(out), read_csv(reference), strict=True):
        assert abs(float(ours["score_1"]) - float(theirs["score_1"])) < 0.05
