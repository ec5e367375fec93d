"""Typed NNX layers, one module per family, and the registry a config names them from."""

from typedpipe.models.layers.base import ACTIVATIONS as ACTIVATIONS
from typedpipe.models.layers.base import LAYERS as LAYERS
from typedpipe.models.layers.base import Layer as Layer
from typedpipe.models.layers.base import Shape as Shape
from typedpipe.models.layers.base import register_layer as register_layer
from typedpipe.models.layers.conv import Conv as Conv
from typedpipe.models.layers.convnext import ConvNeXtBlock as ConvNeXtBlock
from typedpipe.models.layers.core import Dense as Dense
from typedpipe.models.layers.core import Dropout as Dropout
from typedpipe.models.layers.core import Flatten as Flatten
from typedpipe.models.layers.norm import BatchNorm as BatchNorm
from typedpipe.models.layers.norm import LayerNorm as LayerNorm
from typedpipe.models.layers.pooling import AvgPool as AvgPool
from typedpipe.models.layers.pooling import GlobalAvgPool as GlobalAvgPool
from typedpipe.models.layers.pooling import MaxPool as MaxPool
from typedpipe.models.layers.residual import Residual as Residual
from typedpipe.models.layers.resnet import BasicBlock as BasicBlock
from typedpipe.models.layers.resnet import Bottleneck as Bottleneck
from typedpipe.models.layers.transformer import ClassToken as ClassToken
from typedpipe.models.layers.transformer import EncoderBlock as EncoderBlock
from typedpipe.models.layers.transformer import PatchEmbedding as PatchEmbedding
from typedpipe.models.layers.transformer import PositionEmbedding as PositionEmbedding
from typedpipe.models.layers.transformer import TokenPool as TokenPool

for _builtin in (
    Conv,
    MaxPool,
    AvgPool,
    GlobalAvgPool,
    Flatten,
    Dense,
    BatchNorm,
    Dropout,
    Residual,
    BasicBlock,
    Bottleneck,
    LayerNorm,
    ConvNeXtBlock,
    PatchEmbedding,
    ClassToken,
    PositionEmbedding,
    EncoderBlock,
    TokenPool,
):
    register_layer(_builtin)
