"""report.png reads at a glance: integer epochs, a colour bar, a legible count on every cell."""

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from typedpipe.pipeline.report import report_figure, text_colour, write_report


def history(epochs: int) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_accuracy": 1 - 0.5 / e,
            "val_accuracy": 1 - 0.6 / e,
        }
        for e in range(1, epochs + 1)
    ]


def confusion(classes: int = 10, images: int = 360):
    rng = np.random.default_rng(0)
    true = rng.integers(0, classes, images)
    predicted = np.where(rng.random(images) < 0.93, true, rng.integers(0, classes, images))
    return true, predicted, tuple(str(c) for c in range(classes))


def luminance(rgba) -> float:
    rgb = np.asarray(rgba[:3], dtype=np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return float(linear @ [0.2126, 0.7152, 0.0722])


def contrast(a, b) -> float:
    """WCAG contrast ratio of two colours: 1 (none) to 21 (black on white)."""
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.mark.parametrize("epochs", [2, 3, 40])
def test_epoch_ticks_are_whole_numbers(epochs):
    fig = report_figure(history(epochs), *confusion(), title="t")
    fig.canvas.draw()
    loss_ax, acc_ax = fig.axes[:2]
    for ax in (loss_ax, acc_ax):
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert len(ticks) >= 2
        assert all(float(t).is_integer() for t in ticks), ticks


def test_the_confusion_matrix_has_a_colour_bar_and_a_legible_count_on_every_cell():
    true, predicted, names = confusion()
    fig = report_figure(history(2), true, predicted, names, title="t")
    cm_ax = fig.axes[2]
    assert [ax.get_ylabel() for ax in fig.axes[3:]] == ["images"]  # the colour bar
    (image,) = cm_ax.get_images()
    matrix = np.asarray(image.get_array())
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in cm_ax.texts}
    assert set(texts) == {(r, c) for r in range(10) for c in range(10)}
    for (row, col), text in texts.items():
        count = int(matrix[row, col])
        assert text.get_text() == str(count)
        cell = image.cmap(image.norm(count))
        if count:
            assert contrast(to_rgba(text.get_color()), cell) >= 4.5, (row, col, count)
        if row != col and count:
            assert text.get_fontweight() == "bold"  # a mistake stands out
    # A single mistake is tinted, not lost in the white of empty cells.
    assert contrast(image.cmap(image.norm(1)), image.cmap(image.norm(0))) > 1.1
    assert matrix.sum() == len(true) and np.trace(matrix) == np.sum(true == predicted)


def test_text_colour_picks_the_stronger_contrast():
    assert text_colour((0.03, 0.19, 0.42, 1.0)) == "white"  # Blues' darkest
    assert text_colour((0.97, 0.98, 1.0, 1.0)) == "black"  # Blues' lightest
    for grey in np.linspace(0, 1, 21):
        background = (grey, grey, grey, 1.0)
        chosen = to_rgba(text_colour(background))
        other = to_rgba("black" if text_colour(background) == "white" else "white")
        assert contrast(chosen, background) >= contrast(other, background)


def test_a_run_without_test_split_or_val_still_writes_a_report(tmp_path):
    no_val = [dict(h, val_loss=None, val_accuracy=None) for h in history(1)]
    empty = np.zeros(0, np.int64)
    write_report(tmp_path / "report.png", no_val, empty, empty, ("a", "b"), "t")
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")
