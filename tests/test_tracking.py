"""Experiment tracking offline: `--report_to tensorboard trackio` leave the run's loss and evaluation accuracy in
TensorBoard's event files and in trackio's local store, the loss logged within epochs, not only at their ends."""

import json
import os
import subprocess
import sys

import pytest
from conftest import last_json_line

from hf_vit.recipes import parse_args

EPOCHS = 2


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    pytest.importorskip("tensorboard")
    pytest.importorskip("trackio")
    root = tmp_path_factory.mktemp("tracked")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRACKIO_DIR": str(root / "trackio")}
    command = [sys.executable, "-m", "hf_vit.cli", "train", "--dataset", "digits", "--max_train_samples", "200",
               "--num_train_epochs", str(EPOCHS), "--config_overrides", "num_hidden_layers=1",
               "--report_to", "tensorboard", "trackio", "--run_name", "tracked",
               "--output_dir", str(root / "run")]  # fmt: skip
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return root, env


def test_tensorboard_event_files_hold_the_loss_within_epochs_and_the_eval_accuracy(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _ = tracked_run
    (logs,) = {path.parent for path in (root / "run").rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(logs))
    events.Reload()
    losses = events.Scalars("train/loss")
    accuracies = events.Scalars("eval/accuracy")
    assert len(losses) > EPOCHS  # logged within each epoch
    assert len(accuracies) >= EPOCHS and all(0.0 <= event.value <= 1.0 for event in accuracies)
    results = json.loads((root / "run" / "all_results.json").read_text())
    assert any(abs(event.value - results["eval_accuracy"]) < 1e-6 for event in accuracies)


def test_trackio_local_store_holds_the_loss_and_the_eval_accuracy(tracked_run):
    root, env = tracked_run
    code = """
import json
from trackio.sqlite_storage import SQLiteStorage
logs = SQLiteStorage.get_logs(project="hf_vit", run="tracked")
print(json.dumps({"loss": [e["train/loss"] for e in logs if "train/loss" in e],
                  "accuracy": [e["eval/accuracy"] for e in logs if "eval/accuracy" in e]}))
"""
    stored = last_json_line(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                           text=True).stdout)  # fmt: skip
    assert len(stored["loss"]) > EPOCHS
    assert len(stored["accuracy"]) >= EPOCHS
    results = json.loads((root / "run" / "all_results.json").read_text())
    assert any(abs(value - results["eval_accuracy"]) < 1e-6 for value in stored["accuracy"])


@pytest.mark.parametrize(
    "given, expected",
    [(["tensorboard", "trackio"], ["tensorboard", "trackio"]), (["tensorboard,trackio"], ["tensorboard", "trackio"]),
     (["none"], [])],
)  # fmt: skip
def test_report_to_takes_several_trackers_either_way(given, expected):
    pytest.importorskip("tensorboard")
    pytest.importorskip("trackio")
    assert parse_args(["--dataset", "digits", "--report_to", *given])[3].report_to == expected


def test_an_unknown_or_missing_tracker_is_named_before_any_data_is_loaded():
    with pytest.raises(ValueError, match="tensorbord: not an integration transformers knows"):
        parse_args(["--dataset", "digits", "--report_to", "tensorbord"])
    from transformers.integrations import get_available_reporting_integrations

    installed = get_available_reporting_integrations()
    missing = next(name for name in ("wandb", "mlflow", "neptune") if name not in installed)
    with pytest.raises(ValueError, match=f"{missing}: not installed; pip install {missing}"):
        parse_args(["--dataset", "digits", "--report_to", missing])
