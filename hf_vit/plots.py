"""The two pictures of a training run: loss and accuracy over the epochs, and the test split's confusion matrix."""

import os

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402


def epoch_evaluations(log_history: list[dict]) -> list[dict]:
    """The evaluations made during training, one per epoch (or per eval step): the evaluation of the best model after
    training is logged at the last epoch too, and would plot as a second point there."""
    evaluations, epochs = [], set()
    for entry in log_history:
        if "eval_loss" in entry and entry.get("epoch") not in epochs:
            evaluations.append(entry)
            epochs.add(entry.get("epoch"))
    return evaluations


def plot_training_curves(log_history: list[dict], path: str | os.PathLike) -> None:
    """Train loss (as logged) and validation loss and accuracy (per evaluation) over the epochs, from
    `trainer.state.log_history`."""
    train = [(entry["epoch"], entry["loss"]) for entry in log_history if "loss" in entry and "epoch" in entry]
    evals = epoch_evaluations(log_history)
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        # The training loss is logged many times an epoch: a line, with markers only where the points are few.
        loss_axis.plot(*zip(*train, strict=True), marker="o" if len(train) <= 30 else None, label="train")
    if evals:
        loss_axis.plot([e["epoch"] for e in evals], [e["eval_loss"] for e in evals], marker="o", label="validation")
        accuracy_axis.plot(
            [e["epoch"] for e in evals], [e.get("eval_accuracy", np.nan) for e in evals], marker="o", color="C1"
        )
    loss_axis.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    loss_axis.legend()
    accuracy_axis.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion_matrix(references, predictions, label_names: list[str], path: str | os.PathLike) -> None:
    """Counts of (true, predicted) label pairs; the diagonal holds the correct predictions."""
    matrix = confusion_matrix(references, predictions, labels=list(range(len(label_names))))
    side = max(4.0, 0.45 * len(label_names) + 2)
    figure, axis = plt.subplots(figsize=(side + 1, side))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis)
    ticks = range(len(label_names))
    axis.set_xticks(ticks, label_names, rotation=90)
    axis.set_yticks(ticks, label_names)
    axis.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix ({int(matrix.sum())} test images)")
    if len(label_names) <= 20:
        threshold = matrix.max() / 2
        for (row, column), count in np.ndenumerate(matrix):
            color = "white" if count > threshold else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=color, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
