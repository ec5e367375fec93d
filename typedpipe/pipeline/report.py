"""report.png: learning curves and the test confusion matrix, one picture per run.

Drawn on a `matplotlib.figure.Figure` with the Agg canvas: no pyplot state, and
the caller's matplotlib backend is never touched.
"""

import io
from pathlib import Path

import numpy as np

from typedpipe.files import write_atomic


def write_report(
    path: Path,
    history: list[dict],
    true: np.ndarray,
    predicted: np.ndarray,
    class_names: tuple[str, ...],
    title: str,
) -> None:
    """Loss and accuracy per epoch (train and val), and the test confusion matrix.

    A split that does not exist (no val, no test) leaves its curve or panel out.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.5))
    FigureCanvasAgg(fig)
    loss_ax, acc_ax, cm_ax = fig.subplots(1, 3)
    fig.suptitle(title)
    epochs = [h["epoch"] for h in history]
    for ax, metric, limits in ((loss_ax, "loss", None), (acc_ax, "accuracy", (0, 1.01))):
        for split in ("train", "val"):
            points = [(e, h[f"{split}_{metric}"]) for e, h in zip(epochs, history, strict=True)]
            points = [(e, v) for e, v in points if v is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=split)
        ax.set(title=metric, xlabel="epoch")
        if limits:
            ax.set_ylim(*limits)
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if len(true):
        _confusion(fig, cm_ax, true, predicted, class_names)
    else:
        cm_ax.set_axis_off()
        cm_ax.text(0.5, 0.5, "no test split", ha="center", va="center")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    write_atomic(path, png.getvalue())


def _confusion(fig, ax, true: np.ndarray, predicted: np.ndarray, class_names) -> None:
    labels = np.arange(len(class_names))
    matrix = np.zeros((len(labels), len(labels)), np.int64)
    np.add.at(matrix, (true, predicted), 1)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set(
        title=f"test confusion (accuracy {np.mean(true == predicted):.3f})",
        xlabel="predicted",
        ylabel="true",
        xticks=labels,
        yticks=labels,
    )
    if len(labels) <= 20:
        ax.set_xticklabels(class_names, rotation=90)
        ax.set_yticklabels(class_names)
        for (row, col), count in np.ndenumerate(matrix):
            if count:
                color = "white" if count > matrix.max() / 2 else "black"
                ax.text(col, row, str(count), ha="center", va="center", fontsize=7, color=color)
