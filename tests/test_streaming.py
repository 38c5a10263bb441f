"""`--streaming`: a Hub data set of several parquet files, pushed to the local Hub server and read as a stream by
`hf-vit train` and `hf-vit evaluate` (real clients in subprocesses, as in test_hub.py)."""

import csv
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hub_server import LocalHub
from test_distributed import REPO, TORCHRUN, assert_one_complete_folder, needs_torchrun
from test_hub import hub, hub_env  # noqa: F401  (hub: the server fixture)

from hf_vit.prediction import main as predict_main
from hf_vit.recipes import parse_args

TINY = "image_size=16,patch_size=4,hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64"
REPO_ID = "shapes/stripes-streamed"
EVAL_IMAGES = 24


def push_script() -> str:
    """The stripes set of the Trainer test: 192 training images in 4 parquet files, validation and test splits."""
    return f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from datasets import DatasetDict
from test_trainer_steps import stripes_dataset

splits = {{"train": stripes_dataset(192, seed=0), "validation": stripes_dataset(32, seed=1),
           "test": stripes_dataset(48, seed=2)}}
DatasetDict(splits).push_to_hub({REPO_ID!r}, num_shards={{"train": 4}})
"""


@pytest.fixture(scope="module")
def streamed_set(hub, tmp_path_factory) -> list[str]:  # noqa: F811
    """The stripes set pushed once to the module's Hub server; its training files' paths in the repository."""
    folder = tmp_path_factory.mktemp("push")
    pushed = subprocess.run([sys.executable, "-c", push_script()], env=hub_env(hub, folder / "home"), cwd=folder,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    train_files = sorted(name for name in hub.files(REPO_ID, repo_type="dataset") if "train-" in name)
    assert len(train_files) == 4, train_files
    return train_files


def test_streaming_trains_and_evaluates_on_a_bounded_declared_number_of_images(hub, streamed_set, tmp_path):  # noqa: F811
    env = hub_env(hub, tmp_path / "home")
    output = tmp_path / "run"
    train = ["--dataset", REPO_ID, "--streaming", "--max_steps", "6", "--per_device_train_batch_size", "16",
             "--max_eval_samples", str(EVAL_IMAGES), "--preset", "vit-digits-patch2-8", "--config_overrides", TINY,
             "--output_dir", str(output), "--report_to", "none", "--disable_tqdm", "True"]  # fmt: skip
    # `hf-vit evaluate --streaming` must read the same declared test images: run in the same interpreter (the
    # commands' own `main` functions) to spare a second start of torch and transformers.
    evaluate = ["--model", str(output), "--dataset", REPO_ID, "--streaming", "--max_eval_samples", str(EVAL_IMAGES),
                "--split", "test"]  # fmt: skip
    code = (
        "from hf_vit.training import main as train\nfrom hf_vit.evaluation import main as evaluate\n"
        f"train({train!r})\nprint('EVALUATE')\nevaluate({evaluate!r})"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert (
        f"--streaming: validation is the first {EVAL_IMAGES} images of 'validation', test the first {EVAL_IMAGES} "
        "images of 'test'" in result.stderr
    )
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert [entry["step"] for entry in state["log_history"] if "eval_accuracy" in entry][:1] == [1]  # every 10%
    assert f"| test | {EVAL_IMAGES} |" in (output / "README.md").read_text()
    # Read as a stream: no parquet file of the set was downloaded into the cache.
    assert not list((tmp_path / "home").rglob("*.parquet"))

    evaluated = result.stdout[result.stdout.index("EVALUATE") :]
    metrics = json.loads(evaluated[evaluated.index("{") :])
    results = json.loads((output / "all_results.json").read_text())
    assert metrics["test_samples"] == EVAL_IMAGES
    assert metrics["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-4)


def file_downloads(server: LocalHub) -> Counter:
    """GETs of each file of the streamed set (its path in the repository) that `server` answered."""
    prefix = re.compile(rf"/datasets/{re.escape(REPO_ID)}/resolve/[^/]+/")
    return Counter(prefix.sub("", path) for verb, path in server.state.requests if verb == "GET" and prefix.match(path))


# Each process of the launch talks to its own server (HF_ENDPOINT_RANK<local rank>), set before huggingface_hub reads
# HF_ENDPOINT at import, so that each server's request log is one process's.
PER_RANK_ENDPOINT = (
    "import os, sys\n"
    "os.environ['HF_ENDPOINT'] = os.environ['HF_ENDPOINT_RANK' + os.environ['LOCAL_RANK']]\n"
    "from hf_vit.cli import main\n"
    "sys.exit(main(sys.argv[1:]))"
)


@needs_torchrun
def test_each_process_of_a_streaming_launch_reads_its_own_training_files(hub, streamed_set, tmp_path):  # noqa: F811
    """`torchrun --nproc_per_node 2`: the 4 training files are split between the 2 processes (two each), none read by
    both, where processes reading the whole stream would each fetch all 4, and batches dispatched from the first
    process would leave the second reading none."""
    # A server per process over the module server's repositories and files, each with its own request log.
    servers = []
    for _ in range(2):
        server = LocalHub(hub.state.root)
        server.state.repos = hub.state.repos
        servers.append(server.start())
    folder = tmp_path / "model"
    endpoints = {f"HF_ENDPOINT_RANK{rank}": server.endpoint for rank, server in enumerate(servers)}
    # One thread per process: two processes on two cores.
    env = hub_env(hub, tmp_path / "home", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **endpoints)
    train = ["--dataset", REPO_ID, "--streaming", "--max_steps", "3", "--per_device_train_batch_size", "8",
             "--max_eval_samples", "8", "--preset", "vit-digits-patch2-8", "--config_overrides", TINY,
             "--output_dir", str(folder), "--report_to", "none", "--disable_tqdm", "True"]  # fmt: skip
    command = [TORCHRUN, "--nproc_per_node", "2", "--no-python", sys.executable, "-c", PER_RANK_ENDPOINT, "train"]
    try:
        result = subprocess.run([*command, *train], env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
    finally:
        for server in servers:
            server.stop()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "global batch 16 = 8 per device x 2 processes" in result.stderr
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 3

    downloads = [file_downloads(server) for server in servers]
    for rank, fetched in enumerate(downloads):
        # Each process reads the head of the held-out splits itself, from its own server.
        assert fetched["data/validation-00000-of-00001.parquet"] == 1, (rank, fetched)
        # A process fills its shuffle buffer (1,000 images) from all of its files (48 images each) before its first
        # step: every file of its share is fetched, once.
        own_files = {name: count for name, count in fetched.items() if name in streamed_set}
        assert sorted(own_files.values()) == [1, 1], (rank, fetched)
    assert set(downloads[0]) & set(downloads[1]) & set(streamed_set) == set(), downloads
    assert_one_complete_folder(folder, result)
    # Read as a stream: no parquet file of the set was downloaded into the cache.
    assert not list((tmp_path / "home").rglob("*.parquet"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--streaming reads a set of unknown length.*give --max_steps N"),
        (["--max_steps", "5", "--dataset", "digits"], "--streaming is for Hub data sets"),
        (["--max_steps", "5", "--dataset", "x/y", "--skip_bad_images"], "--skip_bad_images needs"),
    ],
)
def test_streaming_options_that_cannot_work_are_refused(argv, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        parse_args(["--streaming", *argv, "--output_dir", str(tmp_path)])


def test_streaming_without_held_out_splits_names_the_options(tmp_path):
    from test_trainer_steps import stripes_dataset

    from hf_vit.data import DataArguments
    from hf_vit.streaming import load_streaming_splits

    (tmp_path / "set" / "data").mkdir(parents=True)
    stripes_dataset(16).to_parquet(tmp_path / "set" / "data" / "train-00000-of-00001.parquet")
    with pytest.raises(ValueError, match="--streaming needs a validation split.*name one with --eval_split"):
        load_streaming_splits(DataArguments(dataset=str(tmp_path / "set"), streaming=True), seed=0)


def test_predict_classifies_a_hub_split_as_the_same_images_saved_locally(hub, streamed_set, tmp_path):  # noqa: F811
    """`hf-vit predict --dataset <Hub id> --split test`: every row of the split, in order, named `test[row]`, with
    the labels and scores the same images get from a local copy of the set."""
    from conftest import save_tiny_classifier
    from test_trainer_steps import stripes_dataset

    model = save_tiny_classifier(tmp_path / "model", {0: "horizontal", 1: "vertical"})
    remote = tmp_path / "remote.csv"
    command = [sys.executable, "-m", "hf_vit.cli", "predict", "--model", str(model), "--dataset", REPO_ID, "--split",
               "test", "--output", str(remote)]  # fmt: skip
    result = subprocess.run(command, env=hub_env(hub, tmp_path / "home"), cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    local_set = tmp_path / "local"
    stripes_dataset(48, seed=2).save_to_disk(local_set)  # the pushed test split (see `push_script`)
    local = tmp_path / "local.csv"
    assert predict_main(["--model", str(model), "--dataset", str(local_set), "--output", str(local)]) == 0
    remote_rows, local_rows = (list(csv.DictReader(path.open())) for path in (remote, local))
    assert [row["path"] for row in remote_rows] == [f"test[{row}]" for row in range(48)]
    for remote_row, local_row in zip(remote_rows, local_rows, strict=True):
        assert remote_row["label_1"] == local_row["label_1"] and remote_row["score_1"] == local_row["score_1"]
    assert len({row["score_1"] for row in remote_rows}) > 1  # the images differ, and so do their scores
