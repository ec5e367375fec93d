"""The `[train]` rules over several keys: a key the config would not read, and the
recipe's bounds that depend on other keys (warmup and the freeze end before training).

Each is a `config.value` naming the key's line, with the fix.
"""

from collections.abc import Callable
from typing import Any

from typedpipe.contracts import Diagnostic
from typedpipe.contracts.diagnostics import config_value
from typedpipe.contracts.keys import dataclass_schema, validate
from typedpipe.models import MODELS
from typedpipe.models.classifier import logits_layer
from typedpipe.pipeline.config.schema import ModelConfig, TrainConfig
from typedpipe.pipeline.train.optimizers import OPTIMIZER_KEYS, OPTIMIZERS, optimizer_for


def unread_keys(
    table: dict[str, Any], line: Callable[[str], str], errors: list[Diagnostic]
) -> set[str]:
    """The keys the file writes whose values the config would not use (`TrainConfig.unread`),
    each a `config.value`. They are held out of the table: a fix of their value would only
    lead to this second error. Judged once the keys that decide it (`optimizer`,
    `freeze_epochs`) are sound; until then their own faults are reported alone.
    """
    schema = dataclass_schema(TrainConfig)
    deciders: dict[str, Any] = {k: table[k] for k in ("optimizer", "freeze_epochs") if k in table}
    decided, faults = validate({k: schema[k] for k in deciders}, deciders, where="[train]")
    if faults:
        return set()
    probe = TrainConfig(**decided)
    unread = [key for key in probe.unread() if key in table]
    written = tuple(key for key in OPTIMIZER_KEYS if key in unread)
    reader = optimizer_for(tuple(k for k in OPTIMIZER_KEYS if k in table), probe.optimizer)
    for key in unread:
        got = f"{key} = {table[key]!r}"
        if key in OPTIMIZER_KEYS:
            reads = OPTIMIZERS.get(probe.optimizer).reads
            message = (
                f"[train] {key} is not read by optimizer {probe.optimizer!r}: it would be ignored"
            )
            expected = f"only the keys {probe.optimizer!r} reads: " + (
                ", ".join(reads) if reads else f"none of {', '.join(OPTIMIZER_KEYS)}"
            )
            got += f" with optimizer = {probe.optimizer!r}"
            remove = f"remove {key} from [train]"
            hint = (
                f'optimizer = "{reader}" under [train] (it reads {", ".join(written)}), or {remove}'
                if reader and not _wrong_values(table, written)
                else remove  # another optimizer would read a wrong value: a second error
            )
        else:
            message = (
                "[train] backbone_lr_mult is read only when fine-tuning (freeze_epochs > 0): "
                "it scales the backbone's rate once the freeze ends"
            )
            expected = "freeze_epochs >= 1 with backbone_lr_mult"
            got += f" with freeze_epochs = {probe.freeze_epochs}"
            hint = "remove backbone_lr_mult from [train]"
            epochs = table.get("epochs", TrainConfig.epochs)
            if type(epochs) is int and epochs >= 2:  # else a freeze could not end in time
                hint = (
                    "freeze_epochs = 1 under [train] (the head trains alone for the first "
                    f"epoch), or {hint}"
                )
        errors.append(
            config_value(
                f"{line(key)}: {message}",
                stage="[train]",
                expected=expected,
                got=got,
                hint=hint,
            )
        )
    return set(unread)


def _wrong_values(table: dict[str, Any], keys: tuple[str, ...]) -> bool:
    """Whether any of `keys` holds a value its annotation refuses."""
    schema = dataclass_schema(TrainConfig)
    return bool(validate({k: schema[k] for k in keys}, {k: table[k] for k in keys}, where="")[1])


def train_faults(
    train: TrainConfig, model: ModelConfig | None, line: Callable[[str], str] = lambda key: "config"
) -> list[Diagnostic]:
    """Rules over several `[train]` keys (and the model, when sound), which no single
    annotation states: warmup and the freeze end before training does, and a freeze
    needs a head to train alone.

    `make_train` applies them too, to a config changed after loading (`--epochs`).
    """
    found = []
    for key in ("warmup_epochs", "freeze_epochs"):
        value = getattr(train, key)
        if value >= train.epochs:
            found.append(
                config_value(
                    f"{line(key)}: [train] {key} must be < epochs",
                    stage="[train]",
                    expected=f"{key} < epochs = {train.epochs}",
                    got=f"{key} = {value}",
                    hint=f"{key} = {train.epochs - 1} under [train] (fewer than the "
                    f"{train.epochs} epochs), or epochs = {value + 1} under [train]",
                )
            )
    if train.freeze_epochs and model is not None and model.name in MODELS:
        entries = MODELS.get(model.name)(model.input, model.num_classes, model.layers)
        if logits_layer(entries) is None:
            found.append(
                config_value(
                    f"{line('freeze_epochs')}: [train] freeze_epochs needs a head to "
                    f"train alone, and model {model.name!r} does not end in a dense or conv "
                    "layer (past any dropout or flatten)",
                    stage="[train]",
                    expected="a model whose logits come from a dense or conv layer",
                    got=f"freeze_epochs = {train.freeze_epochs}",
                    hint="freeze_epochs = 0 under [train] (the whole model trains from the start)",
                )
            )
    return found
