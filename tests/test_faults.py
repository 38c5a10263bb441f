"""What happens when training goes wrong: a non-finite loss, a run killed with SIGKILL (during training, during a
checkpoint, during the final save), an unwritable or too small output disk, a checkpoint with another label count,
and whether the same seed gives the same run. Real runs on tiny slices of the digits, real subprocesses, real kill -9.
"""

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from safetensors.torch import load_file

from hf_vit import HfViTForImageClassification, build_image_processor, save_model_folder
from hf_vit.flops import count_parameters
from hf_vit.model_setup import build_config
from hf_vit.preflight import estimate_output_bytes
from hf_vit.processing import STAGING_DIR_NAME
from hf_vit.recipes import parse_args
from hf_vit.trainer import NonFiniteLossError
from hf_vit.training import main as train_main
from hf_vit.training import prepare_training, run_training

REPO = Path(__file__).resolve().parent.parent
TINY = "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64"
QUIET = ["--disable_tqdm", "True", "--report_to", "none"]
# Every source of randomness of a training run is on: random crops, flips, TrivialAugment, random erasing, MixUp
# and CutMix in the collator, and the digits preset's stochastic depth (drop_path_rate 0.05) in the model.
RANDOM_RUN = [
    "--config_overrides", TINY, "--max_train_samples", "128", "--max_eval_samples", "64", "--num_train_epochs", "4",
    "--random_crop", "True", "--horizontal_flip", "True", "--auto_augment", "trivial", "--random_erasing", "0.25",
    "--mixup_alpha", "0.8", "--cutmix_alpha", "1.0", "--load_best_model_at_end", "False", "--save_total_limit", "10",
    "--dataloader_num_workers", "0", "--seed", "7", *QUIET,
]  # fmt: skip
# Results that are measurements of the machine, not of the model.
TIMINGS = ("_runtime", "_per_second")


def subprocess_env() -> dict:
    # The same thread count as this process, so that runs here and in subprocesses do the same arithmetic.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}


@contextlib.contextmanager
def training_subprocess(argv: list[str], log: Path):
    """`hf-vit train ARGV` in a subprocess, output to `log`; killed on the way out if still running."""
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "hf_vit.cli", "train", *argv],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=subprocess_env(),
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            kill_9(process)


def wait_until(condition, process: subprocess.Popen, timeout: float = 300) -> bool:
    """Poll `condition` every millisecond or two while `process` runs; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return condition()
        time.sleep(0.002)
    raise TimeoutError("the training subprocess never reached the expected point")


def kill_9(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def trainer_state_complete(checkpoint: Path) -> bool:
    try:
        return "global_step" in json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False


def model_results(folder: Path) -> dict:
    """The final eval and test metrics, and the per-epoch training loss, gradient norm and validation metrics.
    (all_results' train_loss is not among them: after a resume, Trainer averages it over the resumed steps only.)"""
    results = json.loads((folder / "all_results.json").read_text())
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return {
        "final": {k: v for k, v in results.items() if k.startswith(("eval_", "test_")) and not k.endswith(TIMINGS)},
        "per_epoch": [
            {k: v for k, v in entry.items() if not k.endswith(TIMINGS)}
            for entry in history
            if "train_loss" not in entry
        ],
    }


def assert_same_weights(folder_a: Path, folder_b: Path) -> None:
    weights_a, weights_b = load_file(folder_a / "model.safetensors"), load_file(folder_b / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted run with every kind of randomness on (in this process, a few seconds)."""
    output_dir = tmp_path_factory.mktemp("reference") / "run"
    assert train_main(["--output_dir", str(output_dir), *RANDOM_RUN]) == 0
    return output_dir


# --- 1. A non-finite loss stops the run -------------------------------------------------------------------------


def test_non_finite_loss_stops_before_the_optimizer_step_and_keeps_the_last_checkpoint(tmp_path):
    # A learning rate of 1e30 turns the first AdamW step into weights of about 1e30: still finite, so the step-1
    # checkpoint is written, but the next forward pass overflows float32 (deterministically).
    output_dir = tmp_path / "run"
    argv = [
        "--output_dir", str(output_dir), "--config_overrides", TINY, "--max_train_samples", "64",
        "--max_eval_samples", "32", "--learning_rate", "1e30", "--lr_scheduler_type", "constant", "--warmup_steps",
        "0", "--save_strategy", "steps", "--save_steps", "1", "--eval_strategy", "no", "--load_best_model_at_end",
        "False", *QUIET,
    ]  # fmt: skip
    prepare_training(*parse_args([*argv, "--max_steps", "1"])).trainer.train()
    checkpoint = output_dir / "checkpoint-1"
    saved = {path.name: path.read_bytes() for path in checkpoint.iterdir()}

    # Resuming at another learning rate would silently keep the checkpoint's: refused, naming both rates.
    with pytest.raises(ValueError, match=r"--learning_rate 0.001 differs from the 1e\+30 of --resume_from_checkpoint"):
        prepare_training(*parse_args([*argv, "--learning_rate", "1e-3", "--resume_from_checkpoint", str(checkpoint)]))

    setup = prepare_training(*parse_args([*argv, "--max_steps", "3", "--resume_from_checkpoint", str(checkpoint)]))
    with pytest.raises(NonFiniteLossError) as error:
        setup.trainer.train(resume_from_checkpoint=str(checkpoint))
    message = str(error.value)
    assert "Training stopped at step 2 " in message and "the loss is nan" in message, message
    for fix in ("--learning_rate", "--max_grad_norm", "--fp16", "--bf16", f"--resume_from_checkpoint {checkpoint}"):
        assert fix in message, fix

    # The bad batch's optimizer step never happened: one AdamW step in all, and the weights are the checkpoint's.
    trainer = setup.trainer
    assert trainer.state.global_step == 1
    assert {int(state["step"]) for state in trainer.optimizer.state.values()} == {1}
    saved_weights = load_file(checkpoint / "model.safetensors")
    for name, parameter in trainer.model.state_dict().items():
        assert torch.equal(parameter, saved_weights[name]), name
    # ... and nothing on disk changed: same files, same bytes, no later checkpoint, no model folder.
    assert {path.name: path.read_bytes() for path in checkpoint.iterdir()} == saved
    assert sorted(path.name for path in output_dir.iterdir()) == ["checkpoint-1"]


# --- 2. kill -9 and resume ---------------------------------------------------------------------------------------


def test_run_killed_after_its_first_checkpoint_resumes_to_the_uninterrupted_result(reference_run, tmp_path):
    output_dir = tmp_path / "run"
    argv = ["--output_dir", str(output_dir), *RANDOM_RUN]
    checkpoint = output_dir / "checkpoint-4"  # 128 images, 32 per step: the end of the first epoch
    with training_subprocess(argv, tmp_path / "killed.log") as process:
        assert wait_until(lambda: trainer_state_complete(checkpoint), process), (tmp_path / "killed.log").read_text()
        kill_9(process)
    # Killed mid-run: SIGKILL ended it, and it had not reached the final model folder.
    assert process.returncode == -signal.SIGKILL
    assert not (output_dir / "model.safetensors").exists() and not (output_dir / "all_results.json").exists()

    with training_subprocess([*argv, "--resume_from_checkpoint", str(checkpoint)], tmp_path / "resumed.log") as process:
        assert process.wait(timeout=600) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert_same_weights(output_dir, reference_run)
    assert model_results(output_dir) == model_results(reference_run)


def test_checkpoint_cut_short_by_kill_is_refused_on_resume(tmp_path):
    # 25M parameters: the checkpoint (weights and AdamW state, about 300 MB) takes long enough to write that
    # a kill sent as soon as its folder appears lands in the middle.
    output_dir = tmp_path / "run"
    argv = [
        "--output_dir", str(output_dir), "--config_overrides",
        "hidden_size=1024,num_hidden_layers=2,num_attention_heads=8,intermediate_size=4096", "--max_train_samples", "4",
        "--per_device_train_batch_size", "4", "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1",
        "--eval_strategy", "no", "--load_best_model_at_end", "False", *QUIET,
    ]  # fmt: skip
    checkpoint = output_dir / "checkpoint-1"
    with training_subprocess(argv, tmp_path / "killed.log") as process:
        assert wait_until(checkpoint.is_dir, process), (tmp_path / "killed.log").read_text()
        kill_9(process)
    assert process.returncode == -signal.SIGKILL
    assert not trainer_state_complete(checkpoint), "the kill landed after the checkpoint was complete"

    with pytest.raises(ValueError) as error:
        train_main([*argv, "--resume_from_checkpoint", str(checkpoint)])
    message = str(error.value)
    assert f"--resume_from_checkpoint {checkpoint} cannot be resumed" in message
    assert "the save was interrupted" in message and "start the run again" in message
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint True: no complete checkpoint in --output_dir"):
        train_main([*argv, "--resume_from_checkpoint", "True"])


# --- 3. Atomic model folders -------------------------------------------------------------------------------------

# Saves a ~110 MB model over and over in forked children, kills each child with SIGKILL after a share of a save's
# duration, and reports what the folder loads as afterwards. The two versions differ in every weight and in their
# labels, so that a mix of one version's config with the other's weights would show.
KILLED_SAVES = """
import json, os, resource, signal, sys, time
import torch
from hf_vit import HfViTConfig, HfViTForImageClassification, build_image_processor, save_model_folder

# One thread: GNU OpenMP's thread pool is not fork-safe, and a forked child that entered a parallel region hung in a
# futex wait (seen once in a full-suite run). With one thread PyTorch runs its loops inline and starts no pool.
torch.set_num_threads(1)
target, fractions = sys.argv[1], [float(value) for value in sys.argv[2].split(",")]
config = HfViTConfig(image_size=16, patch_size=4, hidden_size=768, num_hidden_layers=4, num_attention_heads=8,
                     intermediate_size=3072, num_labels=3)
model = HfViTForImageClassification(config)
states = [{key: value.clone() for key, value in model.state_dict().items()}]
states.append({key: value + 1 for key, value in states[0].items()})
labels = [{0: "a0", 1: "a1", 2: "a2"}, {0: "b0", 1: "b1", 2: "b2"}]
processor = build_image_processor(config)


def save(version):
    model.load_state_dict(states[version])
    model.config.id2label = labels[version]
    model.config.label2id = {name: index for index, name in labels[version].items()}
    save_model_folder(model, processor, target)


def in_child(version):
    pid = os.fork()
    if pid == 0:
        save(version)
        os._exit(0)
    return pid


def folder_version():
    try:
        loaded = HfViTForImageClassification.from_pretrained(target)
    except OSError as error:
        return "refused: " + str(error)
    weights = loaded.state_dict()
    for version, state in enumerate(states):
        if loaded.config.id2label == labels[version] and all(torch.equal(weights[k], state[k]) for k in state):
            return version
    return "WRONG WEIGHTS"


save(0)
durations = []
for version in (1, 0):  # a full save's duration, in a child like the killed ones; the shorter of two
    start = time.monotonic()
    os.waitpid(in_child(version), 0)
    durations.append(time.monotonic() - start)
duration = min(durations)
rounds = []
current = folder_version()
for fraction in fractions:
    saving = 1 - current if current in (0, 1) else 0
    pid = in_child(saving)
    time.sleep(fraction * duration)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    after = folder_version()
    rounds.append({"before": current, "saving": saving, "killed": killed, "after": after})
    current = after

# A real write failure: a file size limit (RLIMIT_FSIZE; Python ignores SIGXFSZ, so writes fail with EFBIG) far
# below the weights' size, as a full disk would.
before = current
pid = os.fork()
if pid == 0:
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
    try:
        save(1 - before if before in (0, 1) else 0)
    except BaseException as error:
        with open(os.path.join(os.path.dirname(target), "write_error.txt"), "w") as handle:
            handle.write(f"{type(error).__name__}: {error}")
        os._exit(3)
    os._exit(0)
_, status = os.waitpid(pid, 0)
failed_write = {"exit": os.WEXITSTATUS(status), "before": before, "after": folder_version(),
                "left": sorted(os.listdir(target))}

save(0)
print(json.dumps({"save_seconds": duration, "rounds": rounds, "failed_write": failed_write,
                  "final": folder_version(), "left": sorted(os.listdir(target))}))
"""


def test_model_folder_killed_while_saving_loads_old_or_new_weights_or_refuses(tmp_path):
    target = tmp_path / "model"
    fractions = "0.02,0.15,0.3,0.45,0.6,0.75,0.9"
    result = subprocess.run(
        [sys.executable, "-c", KILLED_SAVES, str(target), fractions],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={**subprocess_env(), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for round_ in report["rounds"]:
        after = round_["after"]
        if isinstance(after, str):  # a folder without weights: refused, by name, never loaded with wrong weights
            assert after.startswith("refused: ") and "model.safetensors" in after, round_
        else:
            assert after in (round_["before"], round_["saving"]), round_
    assert sum(round_["killed"] for round_ in report["rounds"]) >= 3, report  # kills landed mid-save
    # A save whose writes fail (the file size limit) raises, leaves the folder as it was and cleans up after itself.
    failed = report["failed_write"]
    assert failed["exit"] == 3 and "File too large" in (tmp_path / "write_error.txt").read_text(), failed
    assert failed["after"] == failed["before"] and STAGING_DIR_NAME not in failed["left"], failed
    # A later save completes the folder and leaves no staging folder behind.
    assert report["final"] == 0
    assert STAGING_DIR_NAME not in report["left"] and "model.safetensors" in report["left"]


def test_saving_over_a_folder_keeps_its_other_files_and_a_file_target_is_refused(tmp_path):
    torch.manual_seed(0)
    model = HfViTForImageClassification(tiny_config())
    processor = build_image_processor(model.config)
    folder = tmp_path / "model"
    (folder / "checkpoint-3").mkdir(parents=True)
    (folder / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (folder / "all_results.json").write_text("{}")
    save_model_folder(model, processor, folder, extra_files={"README.md": "card"})
    names = {path.name for path in folder.iterdir()}
    assert {"checkpoint-3", "all_results.json", "README.md", "model.safetensors", "config.json"} <= names
    assert STAGING_DIR_NAME not in names
    loaded = HfViTForImageClassification.from_pretrained(folder)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())

    a_file = tmp_path / "weights.txt"
    a_file.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        save_model_folder(model, processor, a_file)
    assert a_file.read_text() == "not a folder"


# --- 4. Unwritable or too small output disk ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["proc", "under_a_file"])
def test_unwritable_output_dir_fails_before_anything_is_loaded(where, tmp_path):
    if where == "proc":
        output_dir = Path("/proc/hf_vit_cannot_be_here/run")  # no process, root included, can create this
    else:
        (tmp_path / "a_file").write_text("x")
        output_dir = tmp_path / "a_file" / "run"
    # A data set that cannot load: the output folder's error must come first, before any data or model.
    argv = ["--output_dir", str(output_dir), "--dataset", str(tmp_path / "no_such_set"), *QUIET]
    with pytest.raises(OSError) as error:
        train_main(argv)
    message = str(error.value)
    assert f"--output_dir {output_dir} cannot be written" in message
    assert "Give --output_dir a folder you can write to" in message


def test_run_too_large_for_the_disk_fails_before_the_model_is_built(tmp_path):
    # About 0.4 T parameters: building the model would take terabytes of memory.
    huge = "hidden_size=32768,num_hidden_layers=32,num_attention_heads=32,intermediate_size=131072"
    output_dir = tmp_path / "run"
    memory_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(OSError) as error:
        train_main(["--output_dir", str(output_dir), "--config_overrides", huge, "--max_train_samples", "64", *QUIET])
    message = str(error.value)
    assert f"--output_dir {output_dir}: this run needs about" in message, message
    assert "float32 parameters" in message
    for option in ("--output_dir", "--save_total_limit", "--save_only_model"):
        assert option in message, option
    needed, free = (
        int(value.replace(",", "")) for value in re.search(r"([\d,]+) bytes needed, ([\d,]+) free", message).groups()
    )
    # tmp_path's free space (other writers on the disk may change it a little meanwhile), far below the estimate
    assert abs(free - shutil.disk_usage(tmp_path).free) < 2**30
    assert needed > 100 * free
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory_before < 1_000_000  # KiB: under 1 GiB more
    assert list(output_dir.iterdir()) == []  # the probe file is gone, nothing else was written


def test_space_estimate_covers_what_a_run_writes(reference_run):
    model_args, data_args, _, training_args = parse_args(["--output_dir", str(reference_run), *RANDOM_RUN])
    config = build_config(model_args, [str(digit) for digit in range(10)])
    needed, how = estimate_output_bytes(config, training_args, data_args.max_train_samples)
    assert "up to 4 checkpoint(s)" in how  # four epochs, one checkpoint each, all kept (--save_total_limit 10)
    written = sum(path.stat().st_size for path in reference_run.rglob("*") if path.is_file())
    assert needed >= written
    # Its parts, against the files: the analytic float32 weights are the weights file (plus its small header), and a
    # checkpoint's AdamW state is about twice the weights.
    weights_bytes = 4 * count_parameters(config)
    for weights_file in reference_run.rglob("model.safetensors"):
        assert weights_bytes <= weights_file.stat().st_size <= weights_bytes + 8192
    for optimizer_file in reference_run.rglob("optimizer.pt"):
        assert 2 * weights_bytes <= optimizer_file.stat().st_size <= 2.5 * weights_bytes


# --- 5. A checkpoint with another label count ---------------------------------------------------------------------


def two_class_set(count: int) -> Dataset:
    images = [PILImage.new("RGB", (16, 16), (255 * (index % 2),) * 3) for index in range(count)]
    features = Features({"image": Image(), "label": ClassLabel(names=["black", "white"])})
    return Dataset.from_dict({"image": images, "label": [index % 2 for index in range(count)]}, features=features)


def test_other_label_count_needs_ignore_mismatched_sizes(tmp_path, caplog):
    torch.manual_seed(0)
    base = tmp_path / "ten_labels"
    model = HfViTForImageClassification(tiny_config(num_labels=10))
    save_model_folder(model, build_image_processor(model.config), base)
    raw = DatasetDict({"train": two_class_set(32), "test": two_class_set(8)})
    argv = [
        "--dataset", "black_white", "--model_name_or_path", str(base), "--output_dir", str(tmp_path / "run"),
        "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--validation_fraction", "0.25", *QUIET,
    ]  # fmt: skip
    with pytest.raises(ValueError) as error:
        run_training(*parse_args(argv), raw_dataset=raw)
    message = str(error.value)
    assert f"--model_name_or_path '{base}' has a classification head for 10 labels" in message
    assert "the data set has 2 labels" in message and "--ignore_mismatched_sizes True" in message
    assert not (tmp_path / "run" / "model.safetensors").exists()

    with caplog.at_level("WARNING", logger="hf_vit"):
        run_training(*parse_args([*argv, "--ignore_mismatched_sizes", "True"]), raw_dataset=raw)
    assert "classification head of" in caplog.text and "re-initialised for the data set's 2 labels" in caplog.text
    tuned = HfViTForImageClassification.from_pretrained(tmp_path / "run")
    assert tuned.config.id2label == {0: "black", 1: "white"}
    # Only the head may be re-initialised (and the positions resampled for another image size): an override that
    # changes the body's shapes stays an error.
    with pytest.raises(ValueError, match="do not fit the configured shapes.*Only the classification head"):
        run_training(
            *parse_args([*argv, "--ignore_mismatched_sizes", "True", "--config_overrides", "intermediate_size=32"]),
            raw_dataset=raw,
        )


# --- 6. Determinism ----------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_metrics_and_weights(reference_run, tmp_path):
    output_dir = tmp_path / "again"
    assert train_main(["--output_dir", str(output_dir), *RANDOM_RUN]) == 0
    assert model_results(output_dir) == model_results(reference_run)
    assert_same_weights(output_dir, reference_run)
