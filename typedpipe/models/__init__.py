"""Typed NNX layers, the model registry, and the shape-flow summary."""

from typedpipe.models.layers import LAYERS as LAYERS
from typedpipe.models.layers import Layer as Layer
from typedpipe.models.registry import MODELS as MODELS
from typedpipe.models.registry import Classifier as Classifier
from typedpipe.models.registry import build_model as build_model
from typedpipe.models.registry import split_params as split_params
