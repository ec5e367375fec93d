"""The pipeline config: its schema (dataclasses) and the strict TOML loader."""

from typedpipe.pipeline.config.default import default_config_path as default_config_path
from typedpipe.pipeline.config.loader import Draft as Draft
from typedpipe.pipeline.config.loader import load_config as load_config
from typedpipe.pipeline.config.loader import load_draft as load_draft
from typedpipe.pipeline.config.loader import parse_config as parse_config
from typedpipe.pipeline.config.loader import parse_draft as parse_draft
from typedpipe.pipeline.config.schema import Config as Config
from typedpipe.pipeline.config.schema import DataConfig as DataConfig
from typedpipe.pipeline.config.schema import ModelConfig as ModelConfig
from typedpipe.pipeline.config.schema import TrainConfig as TrainConfig
