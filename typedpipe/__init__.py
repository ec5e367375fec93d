"""typedpipe: typed, declarative image-classification pipelines on JAX.

Every boundary carries a jaxtyping contract enforced by beartype while JAX
traces, so a wrong size, channel count, dtype or label format is reported
before the first step, with the stage, what was expected, what arrived and
the config line that fixes it.
"""

from typedpipe.contracts import CODES as CODES
from typedpipe.contracts import ConfigError as ConfigError
from typedpipe.contracts import ContractError as ContractError
from typedpipe.contracts import Diagnostic as Diagnostic
from typedpipe.contracts import ImageSpec as ImageSpec
from typedpipe.contracts import LabelSpec as LabelSpec
from typedpipe.contracts import TrainingStopped as TrainingStopped
from typedpipe.contracts import contract as contract
from typedpipe.models import MODELS as MODELS
from typedpipe.models import Classifier as Classifier
from typedpipe.models import build_model as build_model
from typedpipe.pipeline.check import check_pipeline as check_pipeline
from typedpipe.pipeline.config import Config as Config
from typedpipe.pipeline.config import load_config as load_config
from typedpipe.pipeline.config import parse_config as parse_config
from typedpipe.pipeline.run import train_run as train_run
from typedpipe.pipeline.stages import STAGES as STAGES
from typedpipe.pipeline.stages import Preprocess as Preprocess
from typedpipe.pipeline.stages import make_stage as make_stage
