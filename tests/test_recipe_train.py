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
