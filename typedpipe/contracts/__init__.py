"""Typed contracts: specs, diagnostics, errors, and their enforcement."""

from typedpipe.contracts.diagnostics import CODES as CODES
from typedpipe.contracts.diagnostics import ConfigError as ConfigError
from typedpipe.contracts.diagnostics import ContractError as ContractError
from typedpipe.contracts.diagnostics import Diagnostic as Diagnostic
from typedpipe.contracts.diagnostics import TrainingStopped as TrainingStopped
from typedpipe.contracts.enforce import contract as contract
from typedpipe.contracts.keys import suggest as suggest
from typedpipe.contracts.keys import unknown_keys as unknown_keys
from typedpipe.contracts.specs import ImageSpec as ImageSpec
from typedpipe.contracts.specs import LabelSpec as LabelSpec
