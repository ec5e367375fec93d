"""Diagnostics: every fault typedpipe reports, with a stable code and a fix."""

import dataclasses
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Literal

Severity = Literal["error", "warning"]

#: The stable catalog of diagnostic codes. Add codes; never rename one.
CODES: dict[str, str] = {
    "config.syntax": "the config file is not valid TOML",
    "config.unknown_key": "a key the config schema does not have",
    "config.value": "a config value of the wrong type or out of its allowed set",
    "config.unknown_op": "a preprocessing op that is not registered",
    "config.unknown_model": "a model name that is not registered",
    "config.unknown_name": "a layer type, activation, source or optimizer that is not registered",
    "shape.spatial": "height/width differ at a boundary",
    "shape.channels": "channel count differs (grayscale vs RGB vs RGBA)",
    "shape.layout": "images look channels-first where channels-last is expected",
    "shape.rank": "an axis is missing or extra",
    "dtype.input": "integer pixels reach a stage that wants floats, or the reverse",
    "range.input": "values after preprocessing fall outside the model's input_range",
    "value.nonfinite": "NaN or inf in the data",
    "labels.format": "integer labels where one-hot is expected, or the reverse",
    "labels.range": "a label < 0 or >= num_classes",
    "labels.count": "the data has a different number of classes than the model head",
    "model.shape": "a layer cannot accept its input",
    "memory.exceeds": "the compiled step needs more memory than the device has",
    "data.empty": "no images",
    "data.corrupt": "an unreadable file",
    "data.too_large": "an image or archive member too large to decode safely (pixel or zip bomb)",
    "data.size_mixed": "files of differing size without a decode size",
    "data.mode_mixed": "files of differing colour mode without a decode mode",
    "data.mismatch": "images and labels differ in number",
    "data.too_few": "a class has too few images to split into train, val and test",
    "step.trace": "the train step cannot be traced for a reason no other code names",
    "numeric.nonfinite": "training produced NaN/inf",
    "run.locked": "another run is using the run folder",
    "resume.missing": "--resume found no checkpoint to continue from",
    "resume.mismatch": "--resume with a config the checkpoint was not trained with",
    "checkpoint.corrupt": "a checkpoint file differs from the checksum written with it",
    "io.write": "the run folder cannot be written (read-only, permission, disk full)",
    "bundle.version": "a model bundle of a format or version this typedpipe cannot read",
    "bundle.corrupt": "a model bundle file is missing or differs from its checksum",
    "memory.host": "data held in host memory would exceed the share of RAM it may use",
    "data.permission": "a file or folder that may not be read (permission denied)",
    "data.link": "a symbolic link that is dangling or loops",
    "data.special": "an image-named entry that is not a regular file (FIFO, socket, device)",
    "data.lossy": "a decode setting throws information away (colour, alpha or bit depth)",
    "devices.collectives": "several CPU devices of one process train together (XLA can deadlock)",
    "weights.mismatch": "a weights file's tensors are missing, unused or of another shape",
    "weights.new_head": "the weights file's head has another number of classes: the head is new",
    "weights.missing": "no weights file or bundle at the configured path",
    "weights.format": "a weights file that is a pickle or not safetensors (refused unopened)",
    "weights.corrupt": "a weights file or bundle that cannot be read",
}

#: How many offending files or indices a diagnostic carries, as `--json` lists them
#: (`total_items` keeps the true count); text shows the first `TEXT_ITEMS`.
MAX_ITEMS = 1000
TEXT_ITEMS = 20

# Characters a terminal acts on instead of showing: controls (ESC starts an ANSI
# sequence), format characters (bidirectional overrides, zero-width), surrogates,
# unassigned code points, line and paragraph separators.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})


def visible(text: str, *, newlines: bool = False) -> str:
    r"""`text` with every character a terminal would act on shown as its escape, as `repr` does.

    Text from files (class and file names, a bundle's contract, config strings)
    goes through this before any terminal or table shows it. `newlines` keeps
    line breaks (our own messages use them); a file name's are escaped.

    Example:
        >>> print(visible("cat\x1b[2J\u202e.png"))
        cat\x1b[2J\u202e.png
    """
    if text.isprintable():
        return text
    return "".join(
        ch
        if (ch == "\n" and newlines) or unicodedata.category(ch) not in _HIDDEN
        else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


@dataclasses.dataclass(frozen=True)
class Diagnostic:
    """One fault: what broke, where, what was expected, what arrived, and the fix.

    Example:
        >>> d = Diagnostic("shape.channels", "model expects RGB", stage="model",
        ...                expected="float b 32 32 3", got="float b 32 32 1",
        ...                hint='[[preprocess]] op = "to_rgb"')
        >>> d.code
        'shape.channels'
    """

    code: str
    message: str
    stage: str = ""
    expected: str = ""
    got: str = ""
    hint: str = ""
    severity: Severity = "error"
    items: Sequence[str] = ()  # stored as a tuple
    total_items: int = 0  # how many offending items there are; `items` holds the first few

    def __post_init__(self):
        if self.code not in CODES:
            raise ValueError(f"unknown diagnostic code {self.code!r}; add it to CODES first")
        items = tuple(self.items)
        object.__setattr__(self, "total_items", max(self.total_items, len(items)))
        object.__setattr__(self, "items", items[:MAX_ITEMS])

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"items": list(self.items)}

    def __str__(self) -> str:
        # An exception's message reaches terminals too: file names are escaped here.
        where = f" in {visible(self.stage)}" if self.stage else ""
        lines = [f"[{self.code}]{where}: {visible(self.message, newlines=True)}"]
        if self.expected or self.got:
            lines.append(f"  expected: {visible(self.expected, newlines=True)}")
            lines.append(f"  got:      {visible(self.got, newlines=True)}")
        if self.items:
            shown = self.items[:TEXT_ITEMS]
            more = self.total_items - len(shown)
            listed = ", ".join(map(visible, shown)) + (f" ... and {more} more" if more else "")
            lines.append(f"  items:    {listed}")
        if self.hint:
            lines.append(f"  fix:      {visible(self.hint, newlines=True)}")
        return "\n".join(lines)


# Constructors for the codes built in several places: each fixes the code and the
# stage a user looks for, so call sites say only what differs.


def config_value(message: str, *, stage: str, expected: str, got: str, hint: str) -> Diagnostic:
    """`config.value`: a config value of the wrong type or out of range."""
    return Diagnostic("config.value", message, stage=stage, expected=expected, got=got, hint=hint)


def data_empty(
    message: str, *, expected: str, got: str, hint: str, items: Iterable[str] = ()
) -> Diagnostic:
    """`data.empty`: no images where some were expected."""
    return Diagnostic(
        "data.empty",
        message,
        stage="data",
        expected=expected,
        got=got,
        hint=hint,
        items=tuple(items),
    )


def data_corrupt(
    message: str, *, expected: str, got: str, hint: str, items: Iterable[str] = ()
) -> Diagnostic:
    """`data.corrupt`: files or arrays that cannot be read."""
    return Diagnostic(
        "data.corrupt",
        message,
        stage="data",
        expected=expected,
        got=got,
        hint=hint,
        items=tuple(items),
    )


def model_shape(message: str, *, stage: str, expected: str, got: str, hint: str) -> Diagnostic:
    """`model.shape`: a layer cannot accept its input."""
    return Diagnostic("model.shape", message, stage=stage, expected=expected, got=got, hint=hint)
