"""scripts/benchmark_end_to_end.py on a dozen generated JPEGs and a 32-pixel model: every contender classifies every
file, and the ones that decode and preprocess identically agree image by image."""

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "benchmark_end_to_end.py"


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_end_to_end", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its generator's worker processes find their function by module name
    spec.loader.exec_module(module)
    return module


def test_contenders_classify_the_same_folder_and_agree(tmp_path, capsys):
    script = load_script()
    report_path = tmp_path / "report.json"
    argv = ["--preset", "vit-cifar-patch4-32", "--num_images", "12", "--rounds", "1", "--batch_size", "4",
            "--threads", "1", "--images", str(tmp_path / "jpegs"), "--profile_sample", "6",
            "--json", str(report_path)]  # fmt: skip
    assert script.main(argv) == 0
    report = json.loads(report_path.read_text())
    files = json.loads((tmp_path / "jpegs" / "manifest.json").read_text())["files"]
    assert len(files) == 12 and {entry["kind"] for entry in files} <= {"thumbnail", "web", "photo"}
    assert all(rate > 0 for rate in report["rates"].values())
    # transformers' pipeline is the reference; hf_vit with exact decoding gives the processor's own pixels.
    assert report["agreement"]["transformers"] == 1.0
    assert report["agreement"]["hf_vit-exact"] == 1.0
    assert 0.0 <= report["agreement"]["timm"] <= 1.0 and 0.0 <= report["agreement"]["hf_vit"] <= 1.0
    assert report["profile"]["mean_abs_levels"] > 0  # DCT scaling did change some pixels of the larger JPEGs
    table = capsys.readouterr().out
    assert "| hf_vit |" in table and "| (model alone) |" in table and "| photos, 1-4 MP |" in table

    again = script.jpeg_folder(tmp_path / "jpegs", 12, 0, processes=1)  # the cached set, not regenerated
    assert again == files


def test_device_decode_contender_refuses_a_machine_without_cuda(tmp_path, capsys):
    """nvJPEG needs a CUDA GPU: said before any JPEG is generated, with exit status 2."""
    script = load_script()
    argv = ["--device", "cpu", "--contenders", "hf_vit", "hf_vit-device-decode", "--images", str(tmp_path / "jpegs")]
    assert script.main(argv) == 2
    assert "hf_vit-device-decode decodes JPEGs with nvJPEG on a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "jpegs").exists()
