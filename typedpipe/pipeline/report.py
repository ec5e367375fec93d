"""report.png: learning curves and the test confusion matrix, one picture per run.

Drawn on a `matplotlib.figure.Figure` with the Agg canvas: no pyplot state, and
the caller's matplotlib backend is never touched.
"""

import io
from pathlib import Path

import numpy as np

from typedpipe.files import write_atomic

# Classes beyond this get no per-cell counts or tick names: they would not be legible.
_MAX_LABELLED_CLASSES = 30
# Up to this many classes every cell shows its count, 0 included (quietly).
_MAX_ZEROS_SHOWN = 12


def write_report(
    path: Path,
    history: list[dict],
    true: np.ndarray,
    predicted: np.ndarray,
    class_names: tuple[str, ...],
    title: str,
) -> None:
    """Write `report_figure(...)` to `path` as a PNG, atomically."""
    fig = report_figure(history, true, predicted, class_names, title)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    write_atomic(path, png.getvalue())


def report_figure(
    history: list[dict],
    true: np.ndarray,
    predicted: np.ndarray,
    class_names: tuple[str, ...],
    title: str,
):
    """Loss and accuracy per epoch (train and val), and the test confusion matrix.

    A split that does not exist (no val, no test) leaves its curve or panel out.

    Returns:
        A `matplotlib.figure.Figure` on an Agg canvas.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # The confusion panel grows with the classes, so each cell keeps room for its count.
    side = min(max(4.5, 0.32 * len(class_names)), 12.0)
    fig = Figure(figsize=(10 + side, side + 1), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, acc_ax, cm_ax = fig.subplots(1, 3, width_ratios=(5, 5, side + 1))
    fig.suptitle(title)
    epochs = [h["epoch"] for h in history]
    for ax, metric, limits in ((loss_ax, "loss", None), (acc_ax, "accuracy", (0, 1.01))):
        for split in ("train", "val"):
            points = [(e, h[f"{split}_{metric}"]) for e, h in zip(epochs, history, strict=True)]
            points = [(e, v) for e, v in points if v is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=split)
        ax.set(title=f"{metric} (train: epoch mean)", xlabel="epoch")
        ax.grid(alpha=0.3)
        if limits:
            ax.set_ylim(*limits)
        # Epochs are whole: never a tick at 1.5, however short the run.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if len(true):
        _confusion(fig, cm_ax, true, predicted, class_names)
    else:
        cm_ax.set_axis_off()
        cm_ax.text(0.5, 0.5, "no test split", ha="center", va="center")
    return fig


def _confusion(fig, ax, true: np.ndarray, predicted: np.ndarray, class_names) -> None:
    """Counts of (true, predicted) pairs, each cell's count written on it.

    A square-root colour scale lets a cell of 1 show against a diagonal of 300,
    and each count is written in black or white, whichever stands out from its cell.
    """
    from matplotlib.colors import PowerNorm

    n = len(class_names)
    labels = np.arange(n)
    matrix = np.zeros((n, n), np.int64)
    np.add.at(matrix, (true, predicted), 1)
    norm = PowerNorm(gamma=0.5, vmin=0, vmax=max(int(matrix.max()), 1))
    image = ax.imshow(matrix, cmap="Blues", norm=norm)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    ax.set(
        title=f"test confusion (accuracy {np.mean(true == predicted):.3f})",
        xlabel="predicted",
        ylabel="true",
    )
    if n > _MAX_LABELLED_CLASSES:
        return
    ax.set_xticks(labels, labels=class_names, rotation=90)
    ax.set_yticks(labels, labels=class_names)
    cell_points = 72 * fig.get_figheight() * 0.8 / n  # about how tall a cell is drawn
    fontsize = float(np.clip(cell_points / 2.4, 6, 11))  # three digits fit a cell
    for (row, col), count in np.ndenumerate(matrix):
        if not count and n > _MAX_ZEROS_SHOWN:
            continue  # many classes: blank empty cells keep the mistakes readable
        mistakes = row != col and count > 0
        ax.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=fontsize,
            # An empty cell's 0 is quiet; a mistake's count is bold, so errors stand out.
            color=text_colour(image.cmap(norm(count))) if count else "0.7",
            fontweight="bold" if mistakes else "normal",
        )


def text_colour(background) -> str:
    """Black or white, whichever contrasts more with an RGBA `background` (WCAG luminance)."""
    channels = np.asarray(background[:3], dtype=np.float64)
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    luminance = float(linear @ np.array([0.2126, 0.7152, 0.0722]))
    # Contrast with white is 1.05 / (L + 0.05), with black (L + 0.05) / 0.05: equal at L ~ 0.18.
    return "white" if luminance < 0.179 else "black"
