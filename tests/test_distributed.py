"""Launches of several processes train one model: real `torchrun` processes on the CPU (gloo), compared with
one-process runs of the same seed and data."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_vit.recipes import parse_args
from hf_vit.training import main as train_main

REPO = Path(__file__).resolve().parent.parent
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
# A narrow one-block model without stochastic depth, so that runs of the same seed are comparable weight by weight.
TINY = "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64,drop_path_rate=0.0"
# 256 training digits, one epoch, 32 images per process and step.
RUN = [
    "--num_train_epochs", "1", "--max_train_samples", "256", "--per_device_train_batch_size", "32",
    "--config_overrides", TINY, "--disable_tqdm", "True", "--per_device_eval_batch_size", "512",
]  # fmt: skip
MODEL_FOLDER_FILES = {
    "model.safetensors", "config.json", "configuration_hf_vit.py", "modeling_hf_vit.py", "preprocessor_config.json",
    "all_results.json", "trainer_state.json", "training_curves.png", "confusion_matrix.png", "README.md",
}  # fmt: skip

needs_torchrun = pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="no torchrun beside the interpreter")


def launch_env() -> dict:
    # One thread per process: two processes on two cores.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def torchrun(launcher_args: list[str], train_args: list[str]) -> subprocess.CompletedProcess:
    command = [TORCHRUN, *launcher_args, "-m", "hf_vit.cli", "train", *train_args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=launch_env(), cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def global_step(folder: Path) -> int:
    return json.loads((folder / "trainer_state.json").read_text())["global_step"]


def max_difference(folder_a: Path, folder_b: Path) -> float:
    weights_a, weights_b = load_file(folder_a / "model.safetensors"), load_file(folder_b / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    return max((weights_a[name] - weights_b[name]).abs().max().item() for name in weights_a)


def assert_one_complete_folder(folder: Path, result: subprocess.CompletedProcess) -> None:
    files = {path.name for path in folder.iterdir()}
    assert MODEL_FOLDER_FILES <= files, f"missing: {MODEL_FOLDER_FILES - files}"
    assert not [name for name in files if name.startswith(".")], files  # no staging folder or write probe left
    assert (result.stdout + result.stderr).count("hf_vit: model folder written to") == 1  # by the main process only
    assert "| world_size | 2 |" in (folder / "README.md").read_text()


@pytest.fixture(scope="module")
def one_process_runs(tmp_path_factory) -> dict[int, Path]:
    """One-process runs (in this process) with 32 and with 64 images per step."""
    folders = {}
    for batch in (32, 64):
        folders[batch] = tmp_path_factory.mktemp("one") / f"batch{batch}"
        assert train_main([*RUN, "--output_dir", str(folders[batch]), "--per_device_train_batch_size", str(batch)]) == 0
    return folders


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`torchrun --nproc_per_node 2` with no distributed option at all, as a new user types it."""
    folder = tmp_path_factory.mktemp("ddp") / "model"
    return folder, torchrun(["--nproc_per_node", "2"], [*RUN, "--output_dir", str(folder)])


@needs_torchrun
def test_two_processes_shard_the_data_and_average_their_gradients(two_process_run, one_process_runs):
    folder, result = two_process_run
    # Twice the data per optimizer step: half the steps of one process with the same per-device batch.
    assert global_step(one_process_runs[32]) == 8
    assert global_step(folder) == global_step(one_process_runs[32]) // 2
    assert "global batch 64 = 32 per device x 2 processes" in result.stderr
    # One model trained on both halves with averaged gradients: the weights of one process taking both halves of
    # each step at once (batch 64), not those of a process training alone on its half (batch 32).
    assert max_difference(folder, one_process_runs[64]) < 1e-5
    assert max_difference(folder, one_process_runs[32]) > 1e-3
    assert_one_complete_folder(folder, result)


@needs_torchrun
def test_fsdp_on_two_cpu_processes_shards_and_trains_the_data_parallel_weights(two_process_run, tmp_path):
    folder = tmp_path / "fsdp"
    # `--fsdp True`, as transformers' message spells it; hf_vit wraps each HfViTLayer (FSDP2, transformers' default).
    result = torchrun(["--nproc_per_node", "2"], [*RUN, "--output_dir", str(folder), "--fsdp", "True"])
    assert "FSDP: 2 processes (gloo backend" in result.stderr
    checkpoint = next(folder.glob("checkpoint-*"))
    # Trainer's FSDP checkpoint (sharded model and optimizer state gathered by FSDP), not DDP's optimizer.pt ...
    assert {"pytorch_model_fsdp.bin", "optimizer.bin"} <= {path.name for path in checkpoint.iterdir()}
    # ... that names hf_vit's own classes, not the FSDP subclass torch makes of them.
    assert "modeling_hf_vit.HfViTForImageClassification" in (checkpoint / "config.json").read_text()
    assert not list(checkpoint.glob("_fsdp*.py"))
    # The final folder: full float32 weights in safetensors, those of the data parallel run of the same seed.
    ddp_folder, _ = two_process_run
    assert global_step(folder) == global_step(ddp_folder)
    assert max_difference(folder, ddp_folder) < 1e-6
    assert_one_complete_folder(folder, result)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@needs_torchrun
def test_two_nodes_on_this_machine_train_one_model(two_process_run, one_process_runs, tmp_path):
    """Two `torchrun` invocations, one per "node", one process each, meeting through a c10d rendezvous on
    127.0.0.1, as two machines would meet at the first one's address."""
    folder = tmp_path / "two_nodes"
    rendezvous = ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{free_port()}", "--rdzv_id", "hf_vit"]
    train = ["-m", "hf_vit.cli", "train", *RUN, "--output_dir", str(folder)]
    nodes = []
    for rank in (0, 1):
        command = [TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank), *rendezvous, *train]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        nodes.append(subprocess.Popen(command, env=launch_env(), cwd=REPO, **pipes))
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (stdout, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, stdout[-3000:] + stderr[-5000:]
    logs = "".join(stdout + stderr for stdout, stderr in outputs)
    assert logs.count("global batch 64 = 32 per device x 2 processes") == 1  # logged by the main process only
    assert global_step(folder) == global_step(one_process_runs[32]) // 2
    ddp_folder, _ = two_process_run
    assert max_difference(folder, ddp_folder) < 1e-6
    assert max_difference(folder, one_process_runs[64]) < 1e-5
    assert_one_complete_folder(folder, subprocess.CompletedProcess([], 0, logs, ""))


@pytest.mark.parametrize(
    ("argv", "sharded"),
    [(["--fsdp"], True), (["--fsdp", "True"], True), (["--fsdp=true"], True), (["--fsdp", "False"], False), ([], 0)],
)
def test_fsdp_switch_spellings_and_the_default_sharding_unit(argv, sharded, tmp_path):
    training_args = parse_args([*argv, "--output_dir", str(tmp_path)])[3]
    assert bool(training_args.fsdp) is bool(sharded)
    if sharded:
        assert training_args.fsdp_plugin_args["transformer_cls_names_to_wrap"] == "HfViTLayer"
        assert training_args.fsdp_plugin_args["fsdp_version"] == 2


def test_fsdp_in_one_process_names_the_launch(tmp_path):
    with pytest.raises(ValueError, match="--fsdp shards the model across processes and this run has one"):
        train_main([*RUN, "--fsdp", "--output_dir", str(tmp_path / "never")])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--use_cpu", "False"], "Leave --use_cpu out"),
        (["--ddp_backend", "nccl"], "--ddp_backend nccl needs an accelerator"),
    ],
)
def test_options_that_would_not_shard_a_launch_are_refused(argv, message, monkeypatch, tmp_path):
    if torch.accelerator.is_available():
        pytest.skip("the refused options are mistakes on a CPU")
    # What torchrun gives the first of two processes; refused before any process group is started.
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        train_main([*RUN, *argv, "--output_dir", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()


def test_trainer_arguments_that_would_train_processes_alone_are_refused(monkeypatch, tmp_path):
    from transformers import TrainingArguments

    from hf_vit.distributed import check_launch

    # What an MPI launcher (MPICH, Intel MPI) gives the first of two processes.
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "0")
    # Built by a caller of run_training without hf_vit's launch defaults: on a CPU, Trainer would run this process
    # alone (world size 1).
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    if args.world_size != 1:
        pytest.skip("this machine's accelerator makes the launch shard")
    with pytest.raises(ValueError, match="each would train alone on all the data.*--use_cpu True"):
        check_launch(args)
