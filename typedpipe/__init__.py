"""typedpipe: typed, declarative image-classification pipelines on JAX.

Every boundary carries a jaxtyping contract enforced by beartype while JAX
traces, so a wrong size, channel count, dtype or label format is reported
before the first step, with the stage, what was expected, what arrived and
the config line that fixes it.

Extension points: a name registered through `register_stage`, `register_layer`,
`register_model` or `register_source` is usable from a config file at once.

Importing the package is cheap: each name loads its module on first use (PEP 562),
so `typedpipe --version`, `typedpipe.launch` and a caller that needs one name do
not pay for JAX.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Contracts and diagnostics.
    from typedpipe.contracts import CODES as CODES
    from typedpipe.contracts import ConfigError as ConfigError
    from typedpipe.contracts import ContractError as ContractError
    from typedpipe.contracts import Diagnostic as Diagnostic
    from typedpipe.contracts import ImageSpec as ImageSpec
    from typedpipe.contracts import LabelSpec as LabelSpec
    from typedpipe.contracts import TrainingStopped as TrainingStopped
    from typedpipe.contracts import contract as contract

    # Models and layers.
    from typedpipe.models import LAYERS as LAYERS
    from typedpipe.models import MODELS as MODELS
    from typedpipe.models import Classifier as Classifier
    from typedpipe.models import Layer as Layer
    from typedpipe.models import build_model as build_model
    from typedpipe.models import register_layer as register_layer
    from typedpipe.models import register_model as register_model
    from typedpipe.models.weights import TensorMap as TensorMap

    # The pipeline: config, stages, sources, check, training, export.
    from typedpipe.pipeline.check import check_pipeline as check_pipeline
    from typedpipe.pipeline.config import Config as Config
    from typedpipe.pipeline.config import load_config as load_config
    from typedpipe.pipeline.config import parse_config as parse_config
    from typedpipe.pipeline.export import ExportedModel as ExportedModel
    from typedpipe.pipeline.run import train_run as train_run
    from typedpipe.pipeline.sources import SOURCES as SOURCES
    from typedpipe.pipeline.sources import ArraySource as ArraySource
    from typedpipe.pipeline.sources import Batch as Batch
    from typedpipe.pipeline.sources import Source as Source
    from typedpipe.pipeline.sources import Survey as Survey
    from typedpipe.pipeline.sources import register_source as register_source
    from typedpipe.pipeline.stages import STAGES as STAGES
    from typedpipe.pipeline.stages import Preprocess as Preprocess
    from typedpipe.pipeline.stages import Stage as Stage
    from typedpipe.pipeline.stages import make_stage as make_stage
    from typedpipe.pipeline.stages import register_stage as register_stage
    from typedpipe.pipeline.train.loop import Callback as Callback
    from typedpipe.pipeline.train.loop import fit as fit
    from typedpipe.pipeline.train.state import TrainState as TrainState
    from typedpipe.pipeline.train.step import make_train as make_train
    from typedpipe.registry import Registry as Registry

# Where each public name lives.
_HOMES = {
    "CODES": "typedpipe.contracts",
    "ConfigError": "typedpipe.contracts",
    "ContractError": "typedpipe.contracts",
    "Diagnostic": "typedpipe.contracts",
    "ImageSpec": "typedpipe.contracts",
    "LabelSpec": "typedpipe.contracts",
    "TrainingStopped": "typedpipe.contracts",
    "contract": "typedpipe.contracts",
    "LAYERS": "typedpipe.models",
    "MODELS": "typedpipe.models",
    "Classifier": "typedpipe.models",
    "Layer": "typedpipe.models",
    "TensorMap": "typedpipe.models.weights",
    "build_model": "typedpipe.models",
    "register_layer": "typedpipe.models",
    "register_model": "typedpipe.models",
    "check_pipeline": "typedpipe.pipeline.check",
    "Config": "typedpipe.pipeline.config",
    "load_config": "typedpipe.pipeline.config",
    "parse_config": "typedpipe.pipeline.config",
    "ExportedModel": "typedpipe.pipeline.export",
    "train_run": "typedpipe.pipeline.run",
    "SOURCES": "typedpipe.pipeline.sources",
    "ArraySource": "typedpipe.pipeline.sources",
    "Batch": "typedpipe.pipeline.sources",
    "Source": "typedpipe.pipeline.sources",
    "Survey": "typedpipe.pipeline.sources",
    "register_source": "typedpipe.pipeline.sources",
    "STAGES": "typedpipe.pipeline.stages",
    "Preprocess": "typedpipe.pipeline.stages",
    "Stage": "typedpipe.pipeline.stages",
    "make_stage": "typedpipe.pipeline.stages",
    "register_stage": "typedpipe.pipeline.stages",
    "Callback": "typedpipe.pipeline.train.loop",
    "fit": "typedpipe.pipeline.train.loop",
    "TrainState": "typedpipe.pipeline.train.state",
    "make_train": "typedpipe.pipeline.train.step",
    "Registry": "typedpipe.registry",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    try:
        home = _HOMES[name]
    except KeyError:
        raise AttributeError(f"module 'typedpipe' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
