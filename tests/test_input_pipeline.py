"""Data loading defaults per training device (`hf_vit/input_pipeline.py`), and that a given worker count wins."""

import gc
import multiprocessing

import pytest
import torch

from hf_vit.input_pipeline import WORKERS_TO_FEED_A_GPU, loader_settings, usable_cores
from hf_vit.recipes import parse_args
from hf_vit.training import prepare_training

TINY = "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64"


def test_loader_settings_per_device():
    for cores in (1, 2, 64):  # on the CPU the model's threads get every core, whatever their number
        assert loader_settings("cpu", cores) == {
            "dataloader_num_workers": 0,
            "dataloader_persistent_workers": False,
            "dataloader_pin_memory": False,
        }
    few, many = loader_settings("cuda", 4), loader_settings("cuda", 4 * WORKERS_TO_FEED_A_GPU)
    assert few["dataloader_num_workers"] == 3  # one core is left to the process that drives the GPU
    assert many["dataloader_num_workers"] == WORKERS_TO_FEED_A_GPU  # enough for the reference GPU's rate
    assert loader_settings("cuda", 1)["dataloader_num_workers"] == 1  # decodes while the GPU computes
    assert few["dataloader_persistent_workers"] and few["dataloader_pin_memory"]
    assert loader_settings("mps", 8)["dataloader_pin_memory"] is False  # pinning is for CUDA copies


def test_usable_cores_are_shared_between_the_processes_of_a_launch(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    alone = usable_cores()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert usable_cores() == max(1, alone // 2)


@pytest.mark.skipif(torch.accelerator.is_available(), reason="checks the CPU defaults")
def test_cpu_run_decodes_in_the_training_process_and_a_given_worker_count_wins(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="hf_vit"):
        _, _, _, training_args = parse_args(["--dataset", "fashion_mnist"])
    assert training_args.dataloader_num_workers == 0 and not training_args.dataloader_persistent_workers
    assert training_args.dataloader_pin_memory is False
    assert "data loading: 0 worker process(es) on cpu" in caplog.text
    assert "give --dataloader_num_workers N to change it" in caplog.text

    # A given count wins, and persistent workers follow it; Trainer's loader really runs in two worker processes.
    argv = ["--output_dir", str(tmp_path / "run"), "--config_overrides", TINY, "--max_train_samples", "64",
            "--per_device_train_batch_size", "16", "--dataloader-num-workers", "2"]  # fmt: skip
    setup = prepare_training(*parse_args(argv))
    loader = setup.trainer.get_train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers
    before = {process.pid for process in multiprocessing.active_children()}
    assert sum(len(batch["labels"]) for batch in loader) == 64
    workers = [process for process in multiprocessing.active_children() if process.pid not in before]
    assert len(workers) == 2  # still alive after the epoch: persistent
    del loader, setup
    gc.collect()  # the loader's workers end with it
    _, _, _, training_args = parse_args([*argv, "--dataloader_persistent_workers", "False"])
    assert training_args.dataloader_persistent_workers is False  # a given option wins over the derived one

    for given in (["--dataloader_persistent_workers"], ["--dataloader_persistent_workers", "True"]):
        with pytest.raises(ValueError, match="give --dataloader_num_workers 1 or more"):
            parse_args(["--dataset", "fashion_mnist", *given])
    _, _, _, training_args = parse_args(["--dataloader_num_workers", "1", "--dataloader_persistent_workers"])
    assert training_args.dataloader_num_workers == 1 and training_args.dataloader_persistent_workers


@pytest.mark.skipif(not torch.cuda.is_available(), reason="checks the CUDA defaults")
def test_cuda_run_decodes_in_persistent_workers_unless_told_otherwise():
    _, _, _, training_args = parse_args([])
    assert 1 <= training_args.dataloader_num_workers <= WORKERS_TO_FEED_A_GPU
    assert training_args.dataloader_persistent_workers and training_args.dataloader_pin_memory
    _, _, _, training_args = parse_args(["--dataloader_num_workers", "0"])  # given: wins, and no persistent workers
    assert training_args.dataloader_num_workers == 0 and not training_args.dataloader_persistent_workers
    _, _, _, training_args = parse_args(["--use_cpu", "True"])  # training on the CPU of a GPU machine
    assert training_args.dataloader_num_workers == 0 and training_args.dataloader_pin_memory is False
