"""report.png: learning curves and the test confusion matrix, one picture per run."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # No display on servers and CI.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import confusion_matrix


def write_report(
    path: Path,
    history: list[dict],
    true: np.ndarray,
    predicted: np.ndarray,
    class_names: tuple[str, ...],
    title: str,
) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax, cm_ax) = plt.subplots(1, 3, figsize=(15, 4.5))
    fig.suptitle(title)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val")
    loss_ax.set(title="loss", xlabel="epoch")
    loss_ax.legend()
    acc_ax.plot(epochs, [h["train_accuracy"] for h in history], marker="o", label="train")
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="val")
    acc_ax.set(title="accuracy", xlabel="epoch", ylim=(0, 1.01))
    acc_ax.legend()
    labels = np.arange(len(class_names))
    matrix = confusion_matrix(true, predicted, labels=labels)
    cm_ax.imshow(matrix, cmap="Blues")
    cm_ax.set(
        title=f"test confusion (accuracy {np.mean(true == predicted):.3f})",
        xlabel="predicted",
        ylabel="true",
        xticks=labels,
        yticks=labels,
    )
    if len(labels) <= 20:
        cm_ax.set_xticklabels(class_names, rotation=90)
        cm_ax.set_yticklabels(class_names)
        for (row, col), count in np.ndenumerate(matrix):
            if count:
                color = "white" if count > matrix.max() / 2 else "black"
                cm_ax.text(col, row, str(count), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
