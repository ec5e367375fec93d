"""typedpipe: typed, declarative image-classification pipelines on JAX.

Every boundary carries a jaxtyping contract enforced by beartype while JAX
traces, so a wrong size, channel count, dtype or label format is reported
before the first step, with the stage, what was expected, what arrived and
the config line that fixes it.

Extension points: a name registered through `register_stage`, `register_layer`,
`register_model` or `register_source` is usable from a config file at once.
"""

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
