"""The benchmark end to end on the smallest preset: its output format and the weight copying, not its speed."""

import json
import statistics

import pytest
import torch
from conftest import assert_float32_close

from hf_vit.benchmark import (
    CONTENDERS,
    MATMUL,
    MATMUL_ONEDNN,
    MODES,
    Settings,
    benchmark_config,
    main,
    measure_memory,
    parse_settings,
    prepare,
)
from hf_vit.modeling_hf_vit import HfViTForImageClassification
from hf_vit.speedups import ONEDNN_LINEAR, OneDNNLinear

pytest.importorskip("timm")

TINY = ["--preset", "vit-digits-patch2-8", "--batch-size", "4", "--repeats", "2", "--warmup", "1", "--threads", "1"]


def test_benchmark_runs_every_contender_with_the_same_weights(tmp_path, capsys):
    report_path = tmp_path / "report.json"
    contenders = CONTENDERS
    # --onednn-linear on: the oneDNN branch runs whatever this CPU is (auto would pick it on AMD CPUs only).
    arguments = [*TINY, "--no-memory", "--onednn-linear", "on", "--json", str(report_path), "--contenders", *contenders]
    assert main(arguments) == 0
    table = capsys.readouterr().out
    report = json.loads(report_path.read_text())

    results = report["results"]
    matmuls = (MATMUL, MATMUL_ONEDNN) if ONEDNN_LINEAR is not None else (MATMUL,)
    assert [(r["mode"], r["contender"]) for r in results] == [
        (mode, name) for mode in MODES for name in (*contenders, *matmuls)
    ]
    for mode in MODES:
        # Fractions are of the faster library's matrix-multiply rate in the same rounds.
        rates = [r["flops_per_s"] for r in results if r["mode"] == mode and r["contender"] in matmuls]
        assert all(rate > 0 for rate in rates)
        for r in results:
            if r["mode"] == mode and r["contender"] not in matmuls:
                assert r["matmul_fraction"] == pytest.approx(r["flops_per_s"] / max(rates))
    for r in results:
        if r["contender"] in matmuls:
            continue
        # The run itself refuses to time contenders whose logits differ; this is the record of that check.
        assert r["max_logit_difference"] <= 1e-4
        assert r["images_per_s"] > 0 and len(r["seconds"]) == 2
        step_flops = report["flops_per_image"] * 4 * (3 if r["mode"] == "training" else 1)
        assert r["flops_per_s"] == pytest.approx(step_flops / statistics.median(r["seconds"]))
        assert 0 < r["matmul_fraction"]
        hf_vit = next(x for x in results if x["mode"] == r["mode"] and x["contender"] == "hf_vit")
        assert r["hf_vit_ratio"] == pytest.approx(hf_vit["images_per_s"] / r["images_per_s"])
        assert r["peak_memory_mib"] is None  # --no-memory

    lines = table.strip().splitlines()
    assert lines[0].startswith("vit-digits-patch2-8, batch 4, cpu, float32, eager")
    assert lines[2].startswith("| mode | contender | images/s | hf_vit / this |")
    assert len(lines) == 4 + len(results)
    assert "| training | transformers-sdpa |" in table and "(matmul rate, torch.mm)" in table
    assert ("(matmul rate, oneDNN)" in table) == (ONEDNN_LINEAR is not None)


def test_hf_vit_contender_has_the_speedups_and_hf_vit_plain_has_none():
    """ "hf_vit" is the installed package (hf_vit.speedups applied, here forced on so that any CPU exercises it);
    "hf_vit-plain" is the Hub model file alone, as remote code runs it; both hold the same weights."""
    from hf_vit.benchmark import benchmark_config, build_contenders, reference_model

    config = benchmark_config("vit-digits-patch2-8", 10)
    built = build_contenders(reference_model(config, 0), ["hf_vit", "hf_vit-plain"], "unused", onednn_linear=True)
    assert any(isinstance(m, OneDNNLinear) for m in built["hf_vit"].modules()) == (ONEDNN_LINEAR is not None)
    assert built["hf_vit"].config._attn_implementation == "hf_vit_short_sdpa"
    assert not any(isinstance(m, OneDNNLinear) for m in built["hf_vit-plain"].modules())
    assert built["hf_vit-plain"].config._attn_implementation == "sdpa"
    for name, tensor in built["hf_vit"].state_dict().items():
        assert torch.equal(tensor, built["hf_vit-plain"].state_dict()[name]), name


def test_peak_memory_of_a_training_step_is_measured_in_a_fresh_process():
    settings = Settings(preset="vit-digits-patch2-8", batch_size=64, warmup=1, threads=1)
    activations = measure_memory("hf_vit", "training", settings)
    # 4 layers x 64 images x 17 tokens x (8 x 128 + 2 x 256) floats saved for backward: about 27 MiB, plus gradients.
    assert 5 < activations < 500


def test_training_step_trains_every_contender():
    """The timed training step changes the weights of every contender alike (it is a real optimizer step)."""
    from hf_vit.benchmark import benchmark_config, build_contenders, inputs, make_step, reference_model

    settings = Settings(preset="vit-digits-patch2-8", batch_size=4)
    config = benchmark_config(settings.preset, settings.num_labels)
    contenders = build_contenders(reference_model(config, 0), ["hf_vit", "timm"], "unused")
    pixels, labels = inputs(config, settings)
    for name, module in contenders.items():
        before = module.state_dict()["classifier.weight" if name == "hf_vit" else "head.weight"].clone()
        make_step(module.train(), "training", settings, pixels, labels)()
        after = module.state_dict()["classifier.weight" if name == "hf_vit" else "head.weight"]
        assert not torch.equal(before, after), name


def test_freeze_compiles_inference_with_frozen_weights():
    """--freeze implies --compile; inference runs inductor's frozen graph (weights folded in as constants), which must
    give the model's logits."""
    arguments = [*TINY, "--no-memory", "--freeze", "--contenders", "hf_vit-plain"]
    settings, _ = parse_settings(arguments)
    assert settings.compile and settings.freeze
    torch.manual_seed(0)
    config = benchmark_config("vit-digits-patch2-8", 10)
    model = HfViTForImageClassification(config).eval()
    pixels = torch.randn(4, config.num_channels, *config.image_hw)
    frozen = prepare(model, "inference", settings)
    with torch.inference_mode():
        assert_float32_close(frozen(pixels).logits, model(pixels).logits)
