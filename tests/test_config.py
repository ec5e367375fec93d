import dataclasses

import pytest

from typedpipe import ConfigError, parse_config
from typedpipe.pipeline.config import default_config_path, load_config
from typedpipe.pipeline.stages import Resize, ToFloat


def codes(err: ConfigError) -> list[str]:
    return [d.code for d in err.diagnostics]


def test_default_config_loads_with_its_stages():
    config = load_config(default_config_path())
    assert config.name == "digits-cnn"
    assert config.model.input == (8, 8, 1)
    assert config.preprocess == (ToFloat(scale=1 / 255),)


def test_resolved_config_round_trips():
    config = load_config(default_config_path())
    config = dataclasses.replace(config, preprocess=(*config.preprocess, Resize(16, 16)))
    assert parse_config(config.to_toml()) == config


def test_unknown_key_names_key_line_and_suggestion():
    text = 'name = "x"\n\n[train]\nepochs = 3\nlearning_rat = 0.1\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="my.toml")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "config.unknown_key"
    assert diagnostic.got == "learning_rat"
    assert diagnostic.hint == "rename learning_rat to learning_rate under [train]"
    assert diagnostic.message.startswith("my.toml:5: unknown key 'learning_rat' in [train]")


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError) as info:
        parse_config('[train]\nepochs = "ten"\n', source="c.toml")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "config.value"
    assert "c.toml:2: [train] epochs must be an int in [1, 1000000]" in diagnostic.message
    assert diagnostic.got == "epochs = 'ten'"


def test_literal_choices_are_listed():
    with pytest.raises(ConfigError) as info:
        parse_config('[train]\nprecision = "float64"\n')
    assert "'float32' | 'bfloat16' | 'float16'" in info.value.diagnostic.expected


def test_registered_names_are_listed_with_the_closest_one():
    with pytest.raises(ConfigError) as info:
        parse_config('[train]\noptimizer = "adamm"\n', source="c.toml")
    diagnostic = info.value.diagnostic
    assert diagnostic.code == "config.unknown_name"
    assert diagnostic.message == "c.toml:2: no optimizer named 'adamm'"
    assert diagnostic.expected == "adam | adamw | sgd"
    assert diagnostic.hint == "optimizer = \"adam\" under [train] (did you mean 'adam'?)"


@pytest.mark.parametrize(
    "text, key",
    [
        ("[train]\nepochs = true\n", "epochs"),
        ("[train]\nlearning_rate = inf\n", "learning_rate"),
        ('[train]\noptimizer = "sgd"\nmomentum = nan\n', "momentum"),
        ('[[preprocess]]\nop = "normalize"\nmean = [nan]\nstd = [1.0]\n', "mean"),
        ("seed = -1\n", "seed"),
        ('name = "../elsewhere"\n', "name"),
    ],
)
def test_bools_non_finite_numbers_and_paths_are_refused(text, key):
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert codes(info.value) == ["config.value"]
    assert key in info.value.diagnostic.message


def test_int_accepted_where_float_declared():
    assert parse_config("[train]\nlearning_rate = 1\n").train.learning_rate == 1.0


def test_all_faults_reported_at_once():
    text = (
        '[data]\nsorce = "digits"\n'
        '[[preprocess]]\nop = "resise"\n'
        '[[preprocess]]\nop = "resize"\nheight = 8\n'
        '[model]\nname = "small_cnn"\nnum_clases = 3\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert sorted(codes(info.value)) == sorted(
        ["config.unknown_key", "config.unknown_op", "config.value", "config.unknown_key"]
    )
    unknown_op = next(d for d in info.value.diagnostics if d.code == "config.unknown_op")
    assert "did you mean 'resize'?" in unknown_op.hint
    missing = next(d for d in info.value.diagnostics if d.code == "config.value")
    assert missing.expected == "width = an int in [1, 65536]"


def test_syntax_error_is_a_diagnostic():
    with pytest.raises(ConfigError) as info:
        parse_config("[train\nepochs = 3\n", source="broken.toml")
    assert codes(info.value) == ["config.syntax"]
    assert "broken.toml" in info.value.diagnostic.message


@pytest.mark.parametrize(
    "text, key",
    [
        ("[train]\nbatch_size = 0\n", "batch_size"),
        ("[data]\nval_fraction = 0.6\ntest_fraction = 0.5\n", "test_fraction"),
        ("[model]\ninput_range = [1.0, 0.0]\n", "input_range"),
        ('[data]\nsource = "npz"\n', "path"),
    ],
)
def test_out_of_range_values(text, key):
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.diagnostic.code == "config.value"
    assert key in info.value.diagnostic.message


def test_stage_parameters_are_validated_by_the_stage():
    with pytest.raises(ConfigError) as info:
        parse_config('[[preprocess]]\nop = "normalize"\nmean = [0.5, 0.5]\nstd = [0.5, 0.0]\n')
    assert info.value.diagnostic.code == "config.value"
    assert "std[1] must be > 0" in info.value.diagnostic.message
