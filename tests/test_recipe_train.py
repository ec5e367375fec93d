"""The training recipe: optimizer keys, label smoothing, warmup, mixup and cutmix, EMA,
and fine-tuning (a frozen backbone, then a scaled one), each key bounded and resumable."""

import dataclasses
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tomli_w
from flax import nnx

from typedpipe import ConfigError, make_train, parse_config, train_run
from typedpipe.pipeline.sources import Batch
from typedpipe.pipeline.train.losses import CrossEntropy, SoftCrossEntropy, soft_targets
from typedpipe.pipeline.train.mixing import Mixing


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
    one_epoch = "[train]\nepochs = 1\nbackbone_lr_mult = 0.5\n"  # no room for a freeze
    assert fault(one_epoch).hint == "remove backbone_lr_mult from [train]"
    parse_config(fixed(one_epoch, fault(one_epoch).hint))


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
    config = parse_config("[train]\nepochs = 5\nwarmup_epochs = 2\n")
    shorter = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=2))
    with pytest.raises(ConfigError) as info:
        make_train(shorter, "int", steps_per_epoch=4)
    assert info.value.diagnostic.expected == "warmup_epochs < epochs = 2"


# --- the recipe in the train step ---------------------------------------------------------------

# A network that compiles in seconds, with batch statistics and dropout to get right.
TINY = """
[[preprocess]]
op = "to_float"

[model]
name = "sequential"
input = [8, 8, 1]
num_classes = 4
layers = [{type = "conv", features = 4}, {type = "batchnorm"}, {type = "dropout", rate = 0.1},
          {type = "flatten"}, {type = "dense", features = 4}]

[train]
epochs = 4
optimizer = "sgd"
momentum = 0.0
weight_decay = 0.0
learning_rate = 0.1
schedule = "constant"
"""
# The same without batch statistics or dropout: its training logits are its eval logits.
LINEAR = TINY.replace(
    TINY[TINY.index("layers = [") : TINY.index("[train]")],
    ('layers = [{type = "flatten"}, {type = "dense", features = 4}]\n\n'),
)


def configured(text: str = TINY, **train):
    config = parse_config(text)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **train))


def batch_of(step: int, size: int = 8) -> Batch:
    rng = np.random.default_rng(step)
    images = rng.integers(0, 256, (size, 8, 8, 1), dtype=np.uint8)
    return Batch(images, rng.integers(0, 4, size).astype(np.int32), np.ones(size, bool))


def trained(config, steps: int, steps_per_epoch: int = 2, label_format: str = "int"):
    """The make_train functions and the state before each step and after the last."""
    train = make_train(config, label_format, steps_per_epoch=steps_per_epoch)
    state = jax.jit(train.init_state)(jax.random.key(0))
    step = jax.jit(train.train_step)
    states = [state]
    for index in range(steps):
        state, _ = step(state, batch_of(index), jax.random.key(1))
        states.append(state)
    return train, [jax.device_get(s) for s in states]


def layer(tree, index: int) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree["layers"][index])]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_mixup_blends_images_and_targets_by_one_lambda(run):
    images = jax.random.uniform(jax.random.key(0), (4, 6, 6, 2))
    targets = soft_targets(jnp.array([0, 1, 2, 3]), 4)
    mixed, soft, lam = run(Mixing(mixup=0.4), images, targets, jax.random.key(3))
    assert 0.0 <= float(lam) <= 1.0
    np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[::-1], rtol=1e-6)
    np.testing.assert_allclose(soft, lam * targets + (1 - lam) * targets[::-1], rtol=1e-6)
    np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)


def test_cutmix_pastes_a_box_and_lambda_is_the_share_kept(run):
    images = jnp.arange(4 * 8 * 8 * 1, dtype=jnp.float32).reshape(4, 8, 8, 1)
    targets = soft_targets(jnp.array([3, 1, 0, 2]), 4)
    pasted = 0
    for seed in range(6):
        mixed, soft, lam = run(Mixing(cutmix=1.0), images, targets, jax.random.key(seed))
        from_other = np.asarray(mixed == images[::-1])[..., 0]
        assert np.all(from_other | np.asarray(mixed == images)[..., 0])  # each pixel from one
        assert np.all(from_other == from_other[:1])  # one box for the whole batch
        np.testing.assert_allclose(1 - from_other[0].mean(), lam, rtol=1e-6)
        np.testing.assert_allclose(soft, lam * targets + (1 - lam) * targets[::-1], rtol=1e-6)
        np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
        pasted += bool(from_other.any())
    assert pasted  # some keys cut a box


def test_with_both_on_each_batch_takes_one_of_them():
    images = jnp.arange(4 * 8 * 8 * 1, dtype=jnp.float32).reshape(4, 8, 8, 1)
    targets = soft_targets(jnp.array([3, 1, 0, 2]), 4)
    mix = jax.jit(Mixing(mixup=1.0, cutmix=1.0))
    kinds = set()
    for seed in range(16):
        mixed, _, lam = mix(images, targets, jax.random.key(seed))
        whole_pixels = np.asarray((mixed == images) | (mixed == images[::-1]))
        blended = np.allclose(mixed, lam * images + (1 - lam) * images[::-1], rtol=1e-6)
        assert whole_pixels.all() or blended
        kinds.add("cutmix" if whole_pixels.all() and not blended else "mixup")
    assert kinds == {"cutmix", "mixup"}


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_label_smoothing_is_the_closed_form_for_int_and_one_hot_labels(smoothing):
    logits = jax.random.normal(jax.random.key(0), (5, 4))
    labels = jnp.array([0, 3, 1, 2, 3])
    loss = SoftCrossEntropy(4, smoothing)
    from_ints = loss(logits, soft_targets(labels, 4))
    from_rows = loss(logits, soft_targets(jax.nn.one_hot(labels, 4), 4))
    log_p = jax.nn.log_softmax(logits)
    expected = -(1 - smoothing) * log_p[jnp.arange(5), labels] - smoothing * log_p.mean(-1)
    np.testing.assert_allclose(from_ints, expected, rtol=1e-6)
    np.testing.assert_array_equal(from_ints, from_rows)
    if smoothing == 0.0:
        np.testing.assert_allclose(from_ints, CrossEntropy(4)(logits, labels), rtol=1e-6)


def test_the_step_trains_on_the_smoothed_loss():
    """The first step's loss, with and without smoothing, from the same logits."""
    losses = {}
    for smoothing in (0.0, 0.2):
        config = configured(LINEAR, label_smoothing=smoothing)
        train = make_train(config, "int", steps_per_epoch=2)
        state = jax.jit(train.init_state)(jax.random.key(0))
        _, metrics = jax.jit(train.train_step)(state, batch_of(0), jax.random.key(1))
        losses[smoothing] = float(metrics["loss"])
    batch = batch_of(0)
    logits = train.model(state)(train.preprocess(jnp.asarray(batch.images)))
    log_p = jax.nn.log_softmax(logits)
    plain = -log_p[jnp.arange(8), batch.labels].mean()
    np.testing.assert_allclose(losses[0.0], plain, rtol=1e-5)
    np.testing.assert_allclose(losses[0.2], 0.8 * plain - 0.2 * log_p.mean(-1).mean(), rtol=1e-5)


def test_warmup_rises_linearly_then_the_schedule_takes_over():
    from typedpipe.pipeline.train.optimizers import learning_rate_schedule

    constant = learning_rate_schedule(0.1, total_steps=100, warmup_steps=4)
    rates = [float(constant(step)) for step in range(7)]
    np.testing.assert_allclose(rates, [0.0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1], rtol=1e-6)
    cosine = learning_rate_schedule(0.1, schedule="cosine", total_steps=100, warmup_steps=4)
    np.testing.assert_allclose([float(cosine(s)) for s in (0, 2, 4, 100)], [0, 0.05, 0.1, 0])
    assert float(cosine(50)) < 0.1
    without = learning_rate_schedule(0.1, schedule="cosine", total_steps=100)
    assert float(without(0)) == pytest.approx(0.1)


def test_warmup_epochs_count_steps_per_epoch_in_the_step():
    """The rate each step applied, read off its update (plain SGD: update = -rate * gradient)."""
    config = configured(LINEAR, warmup_epochs=1, clip_global_norm=None)
    train, states = trained(config, 6, steps_per_epoch=4)
    rates = []
    for index in range(6):
        before, after = states[index], states[index + 1]
        model = train.model(before)
        graph, params, rest = nnx.split(model, nnx.Param, ...)
        batch = batch_of(index)
        images = train.preprocess(jnp.asarray(batch.images))

        def loss(p, graph=graph, rest=rest, images=images, labels=batch.labels):
            logits = nnx.merge(graph, p, rest)(images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        grads = jax.tree.leaves(jax.grad(loss)(params))
        deltas = [
            a - b
            for a, b in zip(
                jax.tree.leaves(after.params), jax.tree.leaves(before.params), strict=True
            )
        ]
        dot = sum(float((d * g).sum()) for d, g in zip(deltas, grads, strict=True))
        rates.append(-dot / sum(float((g * g).sum()) for g in grads))
    np.testing.assert_allclose(rates, [0.0, 0.025, 0.05, 0.075, 0.1, 0.1], rtol=1e-4, atol=1e-7)


def test_ema_is_the_closed_form_average_and_is_what_is_evaluated():
    decay, steps = 0.6, 3
    train, states = trained(configured(ema_decay=decay), steps)
    expected = jax.tree.map(
        lambda *history: (
            decay**steps * history[0]
            + sum((1 - decay) * decay ** (steps - i) * history[i] for i in range(1, steps + 1))
        ),
        *[s.params for s in states],
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        states[-1].ema.params,
        expected,
    )
    stats = [layer(s.rest, 1) for s in states]  # the batch statistics, averaged the same way
    for index, got in enumerate(layer(states[-1].ema.rest, 1)):
        closed = decay**steps * stats[0][index] + sum(
            (1 - decay) * decay ** (steps - i) * stats[i][index] for i in range(1, steps + 1)
        )
        np.testing.assert_allclose(got, closed, rtol=1e-5, atol=1e-7)
    assert not same(layer(states[-1].ema.params, 4), layer(states[-1].params, 4))
    final = states[-1]
    params, rest = train.weights(final)
    assert same(layer(params, 4), layer(final.ema.params, 4))
    assert same(layer(rest, 1), layer(final.ema.rest, 1))
    as_ema = dataclasses.replace(final, params=final.ema.params, rest=final.ema.rest, ema=None)
    batch = batch_of(9)
    evaluated = jax.jit(train.eval_step)(final, batch)["loss_sum"]
    assert float(evaluated) == pytest.approx(
        float(jax.jit(train.eval_step)(as_ema, batch)["loss_sum"]), rel=1e-6
    )
    live = dataclasses.replace(final, ema=None)
    assert float(evaluated) != float(jax.jit(train.eval_step)(live, batch)["loss_sum"])


def test_the_freeze_trains_the_head_alone_then_the_backbone_at_its_multiple():
    """Two steps per epoch, one frozen epoch: steps 0 and 1 move the head only and leave the
    batch statistics as they are; from step 2 on, everything moves, the backbone by
    backbone_lr_mult times what it would at the full rate."""
    runs = {
        mult: trained(configured(freeze_epochs=1, backbone_lr_mult=mult), 4)[1]
        for mult in (0.5, 1.0)
    }
    states = runs[0.5]
    backbone = (0, 1)  # the conv and the batchnorm; layers[4] is the head
    for after in (1, 2):
        for index in backbone:
            assert same(layer(states[after].params, index), layer(states[0].params, index))
        assert same(layer(states[after].rest, 1), layer(states[0].rest, 1))  # batch statistics
        assert not same(layer(states[after].params, 4), layer(states[after - 1].params, 4))
    for index in backbone:
        assert not same(layer(states[3].params, index), layer(states[2].params, index))
    assert not same(layer(states[3].rest, 1), layer(states[2].rest, 1))
    # Until the freeze ends the two runs are one; then the backbone's steps differ by the mult.
    full = runs[1.0]
    jax.tree.map(np.testing.assert_array_equal, full[2].params, states[2].params)
    for index in (*backbone, 4):
        half_step = [
            a - b
            for a, b in zip(
                layer(states[3].params, index), layer(states[2].params, index), strict=True
            )
        ]
        full_step = [
            a - b
            for a, b in zip(layer(full[3].params, index), layer(full[2].params, index), strict=True)
        ]
        scale = 0.5 if index in backbone else 1.0
        for h, f in zip(half_step, full_step, strict=True):
            np.testing.assert_allclose(h, scale * f, rtol=1e-4, atol=1e-7)


# --- exact resume and the export ----------------------------------------------------------------

RECIPE = """
[data]
source = "digits"

[[preprocess]]
op = "to_float"

[[preprocess]]
op = "random_flip"

[model]
name = "sequential"
input = [8, 8, 1]
layers = [{type = "conv", features = 8}, {type = "batchnorm"}, {type = "dropout", rate = 0.1},
          {type = "flatten"}, {type = "dense", features = 10}]

[train]
epochs = 2
batch_size = 64
learning_rate = 0.01
optimizer = "adamw"
mixup = 0.4
cutmix = 1.0
label_smoothing = 0.1
warmup_epochs = 1
ema_decay = 0.9
freeze_epochs = 1
backbone_lr_mult = 0.5
"""


def test_a_run_stopped_before_the_freeze_ends_resumes_bit_identical(
    tmp_path, newest_checkpoint, numpy_tree
):
    """Mixing keys, the freeze's switch, the warmup and the average all live in the state:
    a run stopped in the freeze (step 12 of 19) and resumed through it ends as one that
    never stopped; and its bundle holds the average's weights, not the last step's."""
    from typedpipe.pipeline.export import ExportedModel

    config = parse_config(RECIPE)
    whole = train_run(config, tmp_path / "whole")
    assert train_run(config, tmp_path / "parts", max_steps=12)["steps"] == 12
    resumed = train_run(config, tmp_path / "parts", resume=True)
    assert resumed["steps"] == whole["steps"] == 38
    assert resumed["test_loss"] == whole["test_loss"]
    step, expected = newest_checkpoint(tmp_path / "whole", config, 19)
    resumed_step, got = newest_checkpoint(tmp_path / "parts", config, 19)
    assert resumed_step == step == 38
    jax.tree.map(np.testing.assert_array_equal, got, expected)
    exported = ExportedModel(tmp_path / "whole" / "model")._weights
    jax.tree.map(np.testing.assert_array_equal, numpy_tree(exported["params"]), expected.ema.params)
    assert not same(layer(expected.params, 4), layer(expected.ema.params, 4))
