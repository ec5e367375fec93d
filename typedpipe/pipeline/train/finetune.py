"""Fine-tuning as fastai does it: the head trains alone, then everything, the backbone slower.

The head is the layer whose output is the logits (`models.classifier.logits_layer`):
`Classifier.layers[i]`. During the freeze (`[train] freeze_epochs`), optax's `partition`
masks the backbone's updates (`optimizers.FineTuning`) and its batch statistics stay as
they are: BatchNorm normalises with its running statistics and does not update them,
while dropout still drops. Both switches read the train state's step counter, so a
resumed run is on the same side of the freeze as the run it continues.

The keys apply as written, pretrained weights or not: a freeze over a freshly
initialised backbone is allowed (it trains a linear probe on random features), and
`backbone_lr_mult` is read exactly when `freeze_epochs` is set.
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import PyTree

from typedpipe.models import MODELS
from typedpipe.models.classifier import logits_layer
from typedpipe.pipeline.config import ModelConfig


def head_index(model: ModelConfig) -> int | None:
    """The index in `Classifier.layers` of the model's head; None when it has none."""
    return logits_layer(MODELS.get(model.name)(model.input, model.num_classes, model.layers))


def head_labels(index: int):
    """`labels(params)`: `"head"` for the parameters of `layers[index]`, else `"backbone"`."""

    def label(path, leaf) -> str:
        layer = path[1] if len(path) > 1 and getattr(path[0], "key", None) == "layers" else None
        return "head" if getattr(layer, "key", None) == index else "backbone"

    return lambda params: jax.tree_util.tree_map_with_path(label, params)


def freeze_statistics(model: nnx.Module) -> None:
    """Set a training-mode model's BatchNorm layers to use their running statistics (and so
    leave them as they are); dropout and the rest stay in training mode."""
    model.set_attributes(nnx.BatchNorm, use_running_average=True, raise_if_not_found=False)


def kept_statistics(new: PyTree, old: PyTree) -> PyTree:
    """The rest of a model's state with the batch statistics (its floating leaves) of `old`
    and the rest (dropout's RNG counters) of `new`: bit for bit, whatever the compute dtype."""
    return jax.tree.map(lambda n, o: o if jnp.issubdtype(o.dtype, jnp.floating) else n, new, old)
