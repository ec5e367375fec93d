"""The training recipe: optimizer keys, label smoothing, warmup, mixup and cutmix, EMA,
and fine-tuning (a frozen backbone, then a scaled one), each key bounded and resumable."""

import tomllib

import pytest
import tomli_w

from typedpipe import ConfigError, parse_config


def fault(text: str):
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="c.toml")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "config.value"
    return diagnostic


def fixed(text: str, hint: str) -> str:
    """`text` with the first fix of `hint` applied: `key = value under [train]` or
    `remove key from [train]`."""
    table = tomllib.loads(text)
    first = hint.split(", or ")[0]
    if first.startswith("remove "):
        del table["train"][first.split()[1]]
    else:
        assignment = first.split(" under [train]")[0]
        table["train"].update(tomllib.loads(assignment))
    return tomli_w.dumps(table)


# --- optimizer keys (issue 22.6) ----------------------------------------------------------------


def test_a_weight_decay_adam_would_ignore_is_refused_with_adamw_as_the_fix():
    text = '[train]\noptimizer = "adam"\nweight_decay = 0.01\n'
    diagnostic = fault(text)
    assert diagnostic.message == (
        "c.toml:3: [train] weight_decay is not read by optimizer 'adam': it would be ignored"
    )
    assert diagnostic.expected == "only the keys 'adam' reads: none of weight_decay, momentum"
    assert diagnostic.got == "weight_decay = 0.01 with optimizer = 'adam'"
    assert diagnostic.hint == (
        'optimizer = "adamw" under [train] (it reads weight_decay), '
        "or remove weight_decay from [train]"
    )
    config = parse_config(fixed(text, diagnostic.hint))
    assert (config.train.optimizer, config.train.weight_decay) == ("adamw", 0.01)


def test_the_fix_names_an_optimizer_that_reads_every_key_written():
    """Following one hint never leads to the next: adam given both keys is told sgd."""
    text = "[train]\nmomentum = 0.5\nweight_decay = 0.01\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="c.toml")
    hints = {d.got.split(" =")[0]: d.hint for d in info.value.diagnostics}
    assert set(hints) == {"momentum", "weight_decay"}
    for hint in hints.values():
        assert hint.startswith('optimizer = "sgd" under [train] (it reads weight_decay, momentum)')
        assert parse_config(fixed(text, hint)).train.momentum == 0.5
    adamw = fault('[train]\noptimizer = "adamw"\nmomentum = 0.5\n')
    assert adamw.message.startswith("c.toml:3: [train] momentum is not read by optimizer 'adamw'")
    assert adamw.expected == "only the keys 'adamw' reads: weight_decay"


def test_defaults_the_file_does_not_write_are_not_held_against_it():
    """The default weight_decay (1e-4) is adamw's and sgd's: adam's file never wrote it."""
    config = parse_config("[train]\nepochs = 2\n")
    assert config.train.optimizer == "adam" and config.train.weight_decay == 1e-4
    sgd = parse_config('[train]\noptimizer = "sgd"\nmomentum = 0.5\nweight_decay = 0.0\n')
    assert (sgd.train.momentum, sgd.train.weight_decay) == (0.5, 0.0)
    # The resolved config writes only the keys the optimizer reads, so it loads again.
    assert "weight_decay" not in config.to_toml() and "momentum" not in config.to_toml()
    assert parse_config(config.to_toml()) == config
    assert parse_config(sgd.to_toml()) == sgd


def test_an_unread_key_is_judged_once_the_optimizer_name_is_sound():
    with pytest.raises(ConfigError) as info:
        parse_config('[train]\noptimizer = "adamm"\nweight_decay = 0.01\n')
    assert [d.code for d in info.value.diagnostics] == ["config.unknown_name"]


def test_sgd_applies_its_weight_decay():
    import jax.numpy as jnp

    from typedpipe.pipeline.train.optimizers import make_optimizer

    params = {"w": jnp.ones(3)}
    zero = {"w": jnp.zeros(3)}
    for decay, expected in ((0.0, 0.0), (0.5, -0.5)):  # lr 1, no gradient: only the decay moves
        tx = make_optimizer("sgd", 1.0, weight_decay=decay, momentum=0.0)
        updates, _ = tx.update(zero, tx.init(params), params)
        assert updates["w"].tolist() == [expected] * 3


# --- each recipe key's bounds -------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected, hint",
    [
        ("label_smoothing = 1.0", "a number in [0, 1)", "label_smoothing = 0.0"),
        ("label_smoothing = -0.1", "a number in [0, 1)", "label_smoothing = 0.0"),
        ("mixup = -1.0", "a number in [0, 100] (0: off)", "mixup = 0.0"),
        ("mixup = true", "a number in [0, 100] (0: off)", "mixup = 0.0"),
        ("cutmix = 1e9", "a number in [0, 100] (0: off)", "cutmix = 0.0"),
        ("cutmix = nan", "a number in [0, 100] (0: off)", "cutmix = 0.0"),
        ("warmup_epochs = -1", "an int in [0, 1000000)", "warmup_epochs = 0"),
        ("warmup_epochs = 0.5", "an int in [0, 1000000)", "warmup_epochs = 0"),
        ("ema_decay = 1.0", "0 (off) or a number in (0, 1)", "ema_decay = 0.0"),
        ("ema_decay = -0.5", "0 (off) or a number in (0, 1)", "ema_decay = 0.0"),
        ("freeze_epochs = -2", "an int in [0, 1000000)", "freeze_epochs = 0"),
    ],
)
def test_each_recipe_key_is_bounded_with_the_default_as_the_fix(line, expected, hint):
    text = f"[train]\nepochs = 3\n{line}\n"
    diagnostic = fault(text)
    key = line.split(" =")[0]
    assert diagnostic.message.startswith(f"c.toml:3: [train] {key} must be {expected}")
    assert diagnostic.hint == f"{hint} under [train] (the default)"
    parse_config(fixed(text, diagnostic.hint))


@pytest.mark.parametrize("value", [0.0, 1.5, -1.0])
def test_backbone_lr_mult_is_in_0_1_when_fine_tuning(value):
    text = f"[train]\nepochs = 3\nfreeze_epochs = 1\nbackbone_lr_mult = {value}\n"
    diagnostic = fault(text)
    assert diagnostic.message == "c.toml:4: [train] backbone_lr_mult must be a number in (0, 1]"
    assert diagnostic.hint == "backbone_lr_mult = 0.1 under [train] (the default)"
    assert parse_config(fixed(text, diagnostic.hint)).train.backbone_lr_mult == 0.1


def test_backbone_lr_mult_without_a_freeze_would_be_ignored():
    text = "[train]\nepochs = 3\nbackbone_lr_mult = 0.5\n"
    diagnostic = fault(text)
    assert diagnostic.message.startswith(
        "c.toml:3: [train] backbone_lr_mult is read only when fine-tuning (freeze_epochs > 0)"
    )
    assert diagnostic.hint.startswith("freeze_epochs = 1 under [train]")
    config = parse_config(fixed(text, diagnostic.hint))
    assert (config.train.freeze_epochs, config.train.backbone_lr_mult) == (1, 0.5)


@pytest.mark.parametrize("key", ["warmup_epochs", "freeze_epochs"])
def test_warmup_and_freeze_end_before_training_does(key):
    text = f"[train]\nepochs = 3\n{key} = 3\n"
    diagnostic = fault(text)
    assert diagnostic.message == f"c.toml:3: [train] {key} must be < epochs"
    assert diagnostic.expected == f"{key} < epochs = 3"
    assert diagnostic.hint == (
        f"{key} = 2 under [train] (fewer than the 3 epochs), or epochs = 4 under [train]"
    )
    assert getattr(parse_config(fixed(text, diagnostic.hint)).train, key) == 2


def test_a_freeze_needs_a_head():
    text = (
        '[model]\nname = "sequential"\ninput = [8, 8, 1]\n'
        'layers = [{type = "conv", features = 10}, {type = "gap"}]\n'
        "[train]\nepochs = 3\nfreeze_epochs = 1\n"
    )
    diagnostic = fault(text)
    assert diagnostic.message.startswith(
        "c.toml:7: [train] freeze_epochs needs a head to train alone, and model 'sequential'"
    )
    assert diagnostic.hint.startswith("freeze_epochs = 0 under [train]")
    parse_config(fixed(text, diagnostic.hint))


def test_make_train_holds_a_config_changed_after_loading_to_the_same_rules():
    """`train --epochs 2` on a config with warmup_epochs = 2: refused by check, not run."""
    import dataclasses

    from typedpipe import make_train

    config = parse_config("[train]\nepochs = 5\nwarmup_epochs = 2\n")
    shorter = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=2))
    with pytest.raises(ConfigError) as info:
        make_train(shorter, "int", steps_per_epoch=4)
    assert info.value.diagnostic.expected == "warmup_epochs < epochs = 2"
