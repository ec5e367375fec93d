"""Typed contracts: specs, diagnostics, errors, the mismatch decision, and enforcement."""

from typedpipe.contracts.compare import Accepts as Accepts
from typedpipe.contracts.compare import compare as compare
from typedpipe.contracts.compare import looks_channels_first as looks_channels_first
from typedpipe.contracts.compare import looks_channels_last as looks_channels_last
from typedpipe.contracts.diagnostics import CODES as CODES
from typedpipe.contracts.diagnostics import Diagnostic as Diagnostic
from typedpipe.contracts.enforce import contract as contract
from typedpipe.contracts.enforce import unchecked as unchecked
from typedpipe.contracts.errors import ConfigError as ConfigError
from typedpipe.contracts.errors import ContractError as ContractError
from typedpipe.contracts.errors import TrainingStopped as TrainingStopped
from typedpipe.contracts.keys import suggest as suggest
from typedpipe.contracts.keys import unknown_keys as unknown_keys
from typedpipe.contracts.specs import ImageSpec as ImageSpec
from typedpipe.contracts.specs import LabelSpec as LabelSpec
