"""`typedpipe init`: survey an image folder and write a commented config that passes `check`.

The folder is read once (`scan_folder`: every file's header and structure), and
each setting is chosen from what it holds, with a comment that says why:

- classes: the sub-folders; the model head gets one output per class.
- colour: `mode = "gray"` when every file is gray, else `"rgb"`; dropping
  transparency is declared (`drop`), so `check` does not warn about a choice made.
- size: none when every file has one size (at most `MAX_SIDE`); else the median
  height and width (most files need no resize or a small one), scaled down to at
  most `MAX_SIDE` a side: a size a CPU trains on in minutes.
- values: `to_float` with the scale that maps the stored range onto [0, 1].
- split and batch: the default fractions where every class can be split, and a
  batch no larger than the training part.

Files that no setting can fix (a truncated file) are left in place and returned
as the diagnostics `check` will report, by name.
"""

import collections
import dataclasses
import math
import os
import re
import statistics
from pathlib import Path

import numpy as np

from typedpipe.contracts import ContractError, Diagnostic, ImageSpec
from typedpipe.contracts.diagnostics import visible
from typedpipe.pipeline.config import Config, parse_config
from typedpipe.pipeline.scaffold_recipe import DECODE_SIDE, SIDE, fine_tune_lines
from typedpipe.pipeline.sources import split_indices
from typedpipe.pipeline.sources.decode import DEEP_MODES, Header, dropped
from typedpipe.pipeline.sources.folder_audit import survey_folder
from typedpipe.pipeline.sources.folder_scan import FolderScan, scan_folder
from typedpipe.pipeline.sources.imagefolder import DecodeMode, FolderOptions, Loss

#: The largest side `init` decodes to: small_cnn trains on it on a CPU in minutes.
MAX_SIDE = 64

# (val_fraction, test_fraction), tried in order until every class can be split.
_FRACTIONS = ((0.1, 0.2), (0.0, 0.2), (0.0, 0.0))

_GRAY_MODES = frozenset({"L", "LA", "La"})
_LOSSES: tuple[Loss, ...] = ("colour", "transparency")


@dataclasses.dataclass(frozen=True)
class Scaffold:
    """A config written for a folder: its text, what was found, what `check` will still say."""

    text: str
    config: Config
    found: tuple[str, ...]  # one line per fact, for the command to print
    diagnostics: tuple[Diagnostic, ...]  # faults in the data that no setting fixes


def scaffold_config(folder: str | Path, weights: str | None = None) -> Scaffold:
    """Survey `folder` (one sub-folder per class) and write the config for it.

    With `weights` (a safetensors file or a run's bundle), the config fine-tunes the
    file's own architecture at 224 px with the augmentation recipe
    (`scaffold_recipe`), its images decoded as RGB.

    Raises:
        ContractError: the folder holds no usable images, or fewer than two classes;
            `weights.*`, a weights file that cannot be read or that no registered
            architecture takes.
    """
    root = Path(folder)
    scanned = scan_folder(root)
    if not isinstance(scanned, FolderScan):
        raise ContractError(scanned)
    good = [h for h in scanned.headers if not h.fault]
    counts = collections.Counter(scanned.classes[h.label] for h in good)
    classes = [name for name in scanned.classes if counts[name]]
    if len(classes) < 2:
        raise ContractError(_too_few_classes(root, scanned, classes))
    mode, drop = _mode(good)
    size = _size(good)
    architecture = None
    if weights is not None:
        architecture = _architecture(weights, len(classes))
        mode, size = "rgb", (DECODE_SIDE, DECODE_SIDE)
        lost = {dropped(h.mode, mode) for h in good}
        drop = ("transparency",) if "transparency" in lost else ()
    options = FolderOptions(str(folder), mode, size, drop)
    survey = survey_folder(options, scan=scanned)
    if survey.spec is None:
        raise ContractError(survey.errors or survey.diagnostics)
    val, test = _fractions(survey.class_ids)
    train = len(split_indices(survey.class_ids, val, test, seed=0).train)
    chosen = _Choices(
        options=options,
        spec=survey.spec,
        classes=[f"{visible(c)} ({counts[c]})" for c in classes],
        images=len(good),
        sizes=_tally(f"{h.height}x{h.width}" for h in good),
        modes=_tally(h.mode for h in good),
        fractions=(val, test),
        batch_size=min(64 if weights is None else 32, train),
        architecture=architecture,
        weights=weights,
    )
    text = _toml(chosen)
    return Scaffold(text, parse_config(text), tuple(_found(chosen)), survey.diagnostics)


def _architecture(weights: str, num_classes: int) -> str:
    """The registered architecture whose tensors `weights` holds at 224 px.

    Raises:
        ContractError: `weights.*` when the file cannot be read; `weights.mismatch` when no
            registered architecture takes its tensors.
    """
    from typedpipe.models.identify import architectures_of, candidates

    found = next(architectures_of(weights, (SIDE, SIDE, 3), num_classes), None)
    if found is None:
        raise ContractError(
            Diagnostic(
                "weights.mismatch",
                f"no registered architecture takes the tensors of {weights} at {SIDE}x{SIDE}x3",
                stage="weights",
                expected="a state dict of one of: " + ", ".join(candidates()),
                got=weights,
                hint="pass a torchvision or timm safetensors file of a zoo model "
                "(typedpipe summary lists a model's layers), or leave --weights out",
                items=(weights,),
            )
        )
    return found


def plain_name(folder: str | Path) -> str:
    """A run name from the folder's name: letters, digits, '-', '_', '.' only.

    Example:
        >>> plain_name("data/My Flowers (2024)")
        'My-Flowers-2024'
    """
    name = Path(os.path.abspath(folder)).name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return cleaned or "images"


def _mode(headers: list[Header]) -> tuple[DecodeMode, tuple[Loss, ...]]:
    """The decode mode for these files, and what it drops on purpose."""
    modes = {h.mode for h in headers}
    # "gray" keeps 16-bit and float depth; mixed with colour files, check says so.
    mode: DecodeMode = "gray" if modes <= _GRAY_MODES or modes & DEEP_MODES else "rgb"
    lost = {part for m in modes for part in dropped(m, mode).split(" and ")}
    return mode, tuple(loss for loss in _LOSSES if loss in lost)


def _size(headers: list[Header]) -> tuple[int, int] | None:
    """None when one size fits all and a CPU; else a common size (see the module doc)."""
    sizes = {(h.height, h.width) for h in headers}
    if len(sizes) == 1:
        ((height, width),) = sizes
        if max(height, width) <= MAX_SIDE:
            return None
    else:
        height = statistics.median_low(h.height for h in headers)
        width = statistics.median_low(h.width for h in headers)
    scale = min(1.0, MAX_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _fractions(class_ids: np.ndarray) -> tuple[float, float]:
    for val, test in _FRACTIONS:
        try:
            split_indices(class_ids, val, test, seed=0)
        except ContractError:
            continue
        return val, test
    return 0.0, 0.0


def _too_few_classes(root: Path, scanned: FolderScan, classes: list[str]) -> list[Diagnostic]:
    broken = [h for h in scanned.headers if h.fault]
    got = f"{len(classes)} class folder(s) with images" + (
        f" ({', '.join(map(visible, classes))})" if classes else ""
    )
    if broken:
        got += f"; {len(broken)} file(s) unreadable"
    return [
        Diagnostic(
            "labels.count" if classes else "data.empty",
            f"{root} holds images of {len(classes)} class(es): a classifier needs at least 2",
            stage="data",
            expected="path/<class>/<image> with at least 2 class sub-folders of images",
            got=got,
            hint=f"put each class's images in a sub-folder of its own: "
            f"{root}/cat/1.png, {root}/dog/2.png",
            items=tuple(str(h.path.relative_to(root)) for h in broken),
        )
    ]


def _tally(values) -> str:
    """ "28x28 (400), 51x51 (199), 2 more": the most common values with their counts."""
    counts = collections.Counter(values)
    shown = ", ".join(f"{value} ({count})" for value, count in counts.most_common(4))
    return shown + (f", {len(counts) - 4} more" if len(counts) > 4 else "")


@dataclasses.dataclass(frozen=True)
class _Choices:
    """What the survey found and the settings chosen from it: the config and its comments."""

    options: FolderOptions
    spec: ImageSpec  # as decoded with `options`
    classes: list[str]  # "name (count)", visible
    images: int
    sizes: str
    modes: str
    fractions: tuple[float, float]
    batch_size: int
    architecture: str | None = None  # a pretrained file's, with `weights`
    weights: str | None = None

    @property
    def scale(self) -> float | None:
        """The `to_float` scale onto [0, 1] (or [-1, 1]); None for float pixels."""
        dtype, value_range = np.dtype(self.spec.dtype), self.spec.value_range or (0.0, 1.0)
        if dtype == np.uint8 or dtype == np.uint16:
            return 1.0 / np.iinfo(dtype).max
        if np.issubdtype(dtype, np.integer):
            return 1.0 / max(1.0, abs(value_range[0]), abs(value_range[1]))
        return None

    @property
    def input_range(self) -> tuple[float, float]:
        lo, hi = self.spec.value_range or (0.0, 1.0)
        if self.scale is not None:
            return (-1.0 if lo < 0 else 0.0), 1.0
        return float(math.floor(lo)), float(math.ceil(hi))


def _found(c: _Choices) -> list[str]:
    spec, classes = c.spec, c.classes
    values = f"{spec.value_range[0]:g}..{spec.value_range[1]:g}" if spec.value_range else "?"
    return [
        f"{c.images} images in {len(classes)} classes: {', '.join(classes[:6])}"
        + (f", {len(classes) - 6} more" if len(classes) > 6 else ""),
        f"sizes: {c.sizes}",
        f"colour modes: {c.modes}",
        f"values: {spec.dtype} {values} (in a decoded sample)",
        f'chosen: mode = "{c.options.mode}", {spec.height}x{spec.width}x{spec.channels} '
        + (
            f"into small_cnn, {len(classes)} classes"
            if c.architecture is None
            else f"cropped to {SIDE}x{SIDE} into {c.architecture} from {visible(c.weights or '')}, "
            f"{len(classes)} classes"
        ),
    ]


def _toml(c: _Choices) -> str:
    options, spec = c.options, c.spec
    classes = ", ".join(c.classes[:10]) + (
        f" and {len(c.classes) - 10} more" if len(c.classes) > 10 else ""
    )
    lines = [
        f"# Written by `typedpipe init {visible(options.path)}`: each setting was chosen",
        "# from what the folder holds; the comments say why.",
        f"name = {_string(plain_name(options.path))}",
        "seed = 0",
        "",
        "[data]",
        'source = "imagefolder"',
        f"path = {_string(options.path)}  # relative to where typedpipe runs",
        f"# {c.images} images in {len(c.classes)} classes (one sub-folder each): {classes}",
        f"# colour modes: {c.modes}",
        f"mode = {_string(options.mode)}"
        + (
            "  # every file is gray"
            if options.mode == "gray"
            else "  # the pretrained network takes RGB"
            if c.architecture is not None
            else "  # colour files present"
        ),
    ]
    if options.drop:
        lines.append(
            f"drop = [{', '.join(map(_string, options.drop))}]  # lost as {options.mode} by "
            "some files: said here, on purpose, so check does not warn"
        )
    lines.append(f"# sizes: {c.sizes}")
    if options.size is None:
        lines.append(f"# one size, {spec.height}x{spec.width}: no resize")
    elif c.architecture is not None:
        lines.append(
            f"size = [{spec.height}, {spec.width}]  # every image resized to this first: the "
            f"crops the network sees are {SIDE}x{SIDE} parts of it"
        )
    else:
        lines.append(
            f"size = [{spec.height}, {spec.width}]  # the median height and width, at most "
            f"{MAX_SIDE} a side (a CPU trains on it in minutes)"
        )
    val, test = c.fractions
    lines += [
        f"val_fraction = {val}",
        f"test_fraction = {test}"
        + ("" if c.fractions == _FRACTIONS[0] else "  # the smallest class allows no more"),
        "",
    ]
    if c.architecture is not None and c.weights is not None:
        return "\n".join(
            lines
            + fine_tune_lines(c.architecture, c.weights, len(c.classes), c.batch_size, _string)
        )
    if c.scale is not None:
        lines += [
            "[[preprocess]]",
            'op = "to_float"',
            f"scale = {c.scale!r}  # stored {spec.dtype} values onto [0, 1]",
            "",
        ]
    lo, hi = c.input_range
    lines += [
        "# [[preprocess]]  # for photos, where a mirror image is of the same class",
        '# op = "random_flip"',
        "",
        "[model]",
        'name = "small_cnn"  # three conv blocks and a linear head',
        f"input = [{spec.height}, {spec.width}, {spec.channels}]  # the images as decoded",
        f"input_range = [{lo}, {hi}]",
        f"num_classes = {len(c.classes)}",
        "",
        "[train]",
        "epochs = 10",
        f"batch_size = {c.batch_size}",
        'optimizer = "adam"',
        "learning_rate = 1e-3",
        'precision = "float32"',
        "",
    ]
    return "\n".join(lines)


def _string(text: str) -> str:
    """A TOML basic string, escaped by the TOML writer itself."""
    import tomli_w

    return tomli_w.dumps({"v": text}).removeprefix("v = ").rstrip("\n")
