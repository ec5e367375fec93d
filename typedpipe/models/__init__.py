"""Typed NNX layers, the classifier built from them, named architectures, and the summary."""

from typedpipe.models.classifier import Classifier as Classifier
from typedpipe.models.classifier import build_model as build_model
from typedpipe.models.classifier import split_params as split_params
from typedpipe.models.classifier import validate_entry as validate_entry
from typedpipe.models.layers import LAYERS as LAYERS
from typedpipe.models.layers import Layer as Layer
from typedpipe.models.layers import register_layer as register_layer
from typedpipe.models.zoo import MODELS as MODELS
from typedpipe.models.zoo import register_model as register_model
