"""`[model] weights` held against the configured model, from the file's header alone.

The model is built abstractly (`nnx.eval_shape`): nothing is allocated and no
tensor is read. A file that does not fit is one `weights.mismatch`; a head of
another class count is a `weights.new_head` note, and training goes on with it.
"""

from flax import nnx

from typedpipe.contracts import ConfigError, ContractError, Diagnostic
from typedpipe.models import Classifier, build_model
from typedpipe.models.weights import weights_diagnostics
from typedpipe.pipeline.config import Config


def abstract_model(config: Config) -> Classifier:
    """The configured model on shapes alone (its weights' file not read)."""
    m = config.model
    return nnx.eval_shape(
        lambda: build_model(m.name, m.input, m.num_classes, m.layers, rngs=nnx.Rngs(0))
    )


def check_weights(config: Config) -> list[Diagnostic]:
    """The faults of `[model] weights` (none when unset); a model that cannot be built is
    `check_model`'s to report."""
    weights = config.model.weights
    if weights is None:
        return []
    try:
        model = abstract_model(config)
    except (ContractError, ConfigError):
        return []
    return weights_diagnostics(model, weights, what=f"model {config.model.name!r}")


def weights_line(config: Config, model: Classifier) -> str:
    """What `summary` says of the weights: that the head is new, or that every tensor loads.

    Raises:
        ContractError: the file cannot be read or does not fit.
    """
    weights = config.model.weights
    assert weights is not None
    found = weights_diagnostics(model, weights, what=f"model {config.model.name!r}")
    errors = [d for d in found if d.is_error]
    if errors:
        raise ContractError(errors)
    heads = [d.message for d in found if d.code == "weights.new_head"]
    return heads[0] if heads else f"every tensor loaded from {weights}"
