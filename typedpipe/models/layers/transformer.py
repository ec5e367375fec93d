"""The Vision Transformer's layers (Dosovitskiy et al., 2021): patches to tokens, the class
token and the position embedding, the pre-norm encoder block, and pooling tokens to features.

Tokens are `b n d`: n tokens of d features per image.
"""

import math
import typing
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import ConfigError, contract
from typedpipe.contracts.diagnostics import config_value
from typedpipe.models.layers.base import THIS_LAYER, Layer, Shape, Size, check_choice, dims
from typedpipe.models.layers.norm import layer_norm, layer_norm_tensors, normalised
from typedpipe.models.layouts import TensorMap

# torchvision's initialisation of the encoder's linear layers (timm's is the same family).
_LINEAR_INIT = nnx.initializers.xavier_uniform()

#: Whose names a layer's tensors have in a weights file: torchvision's or timm's.
Naming = Literal["torchvision", "timm"]
NAMINGS: tuple[str, ...] = typing.get_args(Naming)


def _require_tokens(layer: Layer, shape: Shape, features: int) -> None:
    if len(shape) != 2 or shape[-1] != features:
        layer._reject(
            shape,
            f"{layer.name} needs tokens of {features} features (n d), got {dims(shape)}",
            f"b n {features}",
            f'a {{type = "patch_embed", features = {features}}} layer before {THIS_LAYER}',
        )


class PatchEmbedding(Layer):
    """Cut the image into `patch` x `patch` squares, each projected to `features`: one
    token per patch, in row-major order. `b h w in_features -> b (h/patch)*(w/patch) features`.
    """

    kind = "patch_embed"

    def __init__(
        self,
        in_features: int,
        features: Size,
        patch: Size = 16,
        *,
        name: str = "patch_embed",
        rngs: nnx.Rngs,
    ):
        self.name, self.in_features, self.features, self.patch = name, in_features, features, patch
        self.tokens_of = f"(h//{patch})*(w//{patch})"
        fan_in = in_features * patch * patch
        self.proj = nnx.Conv(
            in_features,
            features,
            (patch, patch),
            strides=patch,
            padding="VALID",
            kernel_init=nnx.initializers.truncated_normal(stddev=math.sqrt(1 / fan_in)),
            rngs=rngs,
        )

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape, self.in_features)
        height, width, _ = shape
        if height % self.patch or width % self.patch:
            fits = [nearest_multiple(size, self.patch) for size in (height, width)]
            self._reject(
                shape,
                f"{self.name} cuts {self.patch}x{self.patch} patches, which do not tile "
                f"{height}x{width}",
                f"b h w {self.in_features} with h and w multiples of {self.patch}",
                f"input = [{fits[0]}, {fits[1]}, {self.in_features}] under [model] (a resize "
                "stage to that size)",
            )
        return ((height // self.patch) * (width // self.patch), self.features)

    def flops(self, shape: Shape) -> int:
        tokens, _ = self.output_shape(shape)
        return 2 * tokens * self.patch**2 * self.in_features * self.features

    def tensors(self) -> list[TensorMap]:
        return [
            TensorMap("weight", ("proj", "kernel"), "oihw_hwio"),
            TensorMap("bias", ("proj", "bias")),
        ]

    @contract
    def __call__(
        self, x: Float[Array, "b h w {self.in_features}"]
    ) -> Float[Array, "b {self.tokens_of} {self.features}"]:
        self.output_shape(x.shape[1:])
        y = self.proj(x)
        return y.reshape(y.shape[0], -1, self.features)


def nearest_multiple(size: int, step: int) -> int:
    """The multiple of `step` nearest `size` (ties up), at least `step`."""
    return max(step, (size + step // 2) // step * step)


class ClassToken(Layer):
    """Prepend a learned class token, the token a classifier head reads.
    `b n in_features -> b n+1 in_features`."""

    kind = "class_token"

    def __init__(self, in_features: int, *, name: str = "class_token", rngs: nnx.Rngs):
        del rngs  # torchvision starts the class token at zero.
        self.name, self.features = name, in_features
        # Held as the reference holds it, one token of a batch of one: `1 1 features`.
        self.token = nnx.Param(jnp.zeros((1, 1, in_features), jnp.float32))

    def output_shape(self, shape: Shape) -> Shape:
        _require_tokens(self, shape, self.features)
        return (shape[0] + 1, self.features)

    def tensors(self) -> list[TensorMap]:
        return [TensorMap("", ("token",))]  # the file's tensor is named as this layer

    @contract
    def __call__(
        self, x: Float[Array, "b n {self.features}"]
    ) -> Float[Array, "b n+1 {self.features}"]:
        token = jnp.broadcast_to(self.token[...].astype(x.dtype), (x.shape[0], 1, self.features))
        return jnp.concatenate([token, x], axis=1)


class PositionEmbedding(Layer):
    """Add a learned embedding per position. `b in_tokens in_features -> b in_tokens
    in_features`.

    The embedding has one row per token of the configured input (`in_tokens`, from the
    previous layer): a model built for another image size has another number of
    positions, and its weights do not fit this one.
    """

    kind = "position_embedding"

    def __init__(
        self,
        in_features: int,
        in_tokens: int,
        *,
        name: str = "position_embedding",
        rngs: nnx.Rngs,
    ):
        self.name, self.features, self.tokens = name, in_features, in_tokens
        # Held as the reference holds it, `1 tokens features`; torchvision and timm start
        # it at N(0, 0.02^2).
        self.embedding = nnx.Param(
            nnx.initializers.normal(stddev=0.02)(rngs.params(), (1, in_tokens, in_features))
        )

    @classmethod
    def params(cls) -> dict[str, tuple[Any, bool]]:
        # The number of tokens comes from the previous layer, as `in_features` does.
        return {k: v for k, v in super().params().items() if k != "in_tokens"}

    @classmethod
    def construct(cls, in_shape: Shape, *, name: str, rngs: nnx.Rngs, **params: Any) -> Layer:
        # Not tokens: one position, and `output_shape` says what is wrong.
        params["in_tokens"] = in_shape[0] if len(in_shape) == 2 else 1
        return super().construct(in_shape, name=name, rngs=rngs, **params)

    def output_shape(self, shape: Shape) -> Shape:
        _require_tokens(self, shape, self.features)
        if shape[0] != self.tokens:
            self._reject(
                shape,
                f"{self.name} embeds {self.tokens} positions, got {shape[0]} tokens",
                f"b {self.tokens} {self.features}",
                "build the model for the image size it is given ([model] input)",
            )
        return shape

    def flops(self, shape: Shape) -> int:
        return math.prod(self.output_shape(shape))

    def tensors(self) -> list[TensorMap]:
        return [TensorMap("", ("embedding",))]  # the file's tensor is named as this layer

    @contract
    def __call__(
        self, x: Float[Array, "b {self.tokens} {self.features}"]
    ) -> Float[Array, "b {self.tokens} {self.features}"]:
        return x + self.embedding[...].astype(x.dtype)


# How torchvision's EncoderBlock and timm's Block name the parts of an encoder block.
_BLOCK_NAMES = {
    "torchvision": {
        "norm1": "ln_1",
        "qkv.weight": "self_attention.in_proj_weight",
        "qkv.bias": "self_attention.in_proj_bias",
        "out": "self_attention.out_proj",
        "norm2": "ln_2",
        "fc1": "mlp.0",
        "fc2": "mlp.3",
    },
    "timm": {
        "norm1": "norm1",
        "qkv.weight": "attn.qkv.weight",
        "qkv.bias": "attn.qkv.bias",
        "out": "attn.proj",
        "norm2": "norm2",
        "fc1": "mlp.fc1",
        "fc2": "mlp.fc2",
    },
}


class EncoderBlock(Layer):
    """The pre-norm transformer encoder block: layer norm, multi-head self-attention and
    the residual, then layer norm, a GELU MLP of `mlp_features` and the residual.

    `b n in_features -> b n in_features`.
    """

    kind = "encoder_block"

    def __init__(
        self,
        in_features: int,
        heads: Size,
        mlp_features: Size,
        naming: Naming = "torchvision",
        *,
        name: str = "encoder_block",
        rngs: nnx.Rngs,
    ):
        check_choice(name, "naming", naming, NAMINGS)
        self.naming = naming
        if in_features % heads:
            divisors = [h for h in range(1, in_features + 1) if in_features % h == 0]
            nearest = min(divisors, key=lambda h: (abs(h - heads), h))
            raise ConfigError(
                config_value(
                    f"{name}: {in_features} features do not split into {heads} heads",
                    stage=name,
                    expected=f"heads dividing {in_features}",
                    got=f"heads = {heads}",
                    hint=f"heads = {nearest}",
                )
            )
        self.name, self.features, self.heads, self.mlp_features = (
            name,
            in_features,
            heads,
            mlp_features,
        )

        def linear(inputs: int, outputs: int) -> nnx.Linear:
            return nnx.Linear(inputs, outputs, kernel_init=_LINEAR_INIT, rngs=rngs)

        self.norm1 = layer_norm(in_features, rngs)
        # Query, key and value from one fused projection, as both torch's
        # MultiheadAttention (in_proj) and timm (qkv) hold them: [q | k | v] along the output.
        self.qkv = linear(in_features, 3 * in_features)
        self.out = linear(in_features, in_features)
        self.norm2 = layer_norm(in_features, rngs)
        self.fc1 = linear(in_features, mlp_features)
        self.fc2 = linear(mlp_features, in_features)

    def output_shape(self, shape: Shape) -> Shape:
        _require_tokens(self, shape, self.features)
        return shape

    def flops(self, shape: Shape) -> int:
        tokens, features = self.output_shape(shape)
        projections = 2 * tokens * features * (3 * features + features)
        # Scores (q k^T) and their weighted sum of values, over all heads.
        attention = 2 * 2 * tokens * tokens * features
        softmax = 3 * self.heads * tokens * tokens
        mlp = 2 * 2 * tokens * features * self.mlp_features
        # Two layer norms (5 per element), GELU (~8 per hidden element), two residuals.
        elementwise = tokens * (2 * 5 * features + 8 * self.mlp_features + 2 * features)
        return projections + attention + softmax + mlp + elementwise

    def tensors(self) -> list[TensorMap]:
        # The fused projection is one linear layer here too, so the file's [q | k | v]
        # rows transpose as any linear weight does.
        names = _BLOCK_NAMES[self.naming]
        linears = [
            TensorMap(f"{names[attribute]}.{kind}", (attribute, target), layout)
            for attribute in ("out", "fc1", "fc2")
            for kind, target, layout in (
                ("weight", "kernel", "linear"),
                ("bias", "bias", "identity"),
            )
        ]
        return [
            *layer_norm_tensors("norm1", f"{names['norm1']}."),
            TensorMap(names["qkv.weight"], ("qkv", "kernel"), "linear"),
            TensorMap(names["qkv.bias"], ("qkv", "bias")),
            *linears,
            *layer_norm_tensors("norm2", f"{names['norm2']}."),
        ]

    def attend(self, x: Float[Array, "b n d"]) -> Float[Array, "b n d"]:
        batch, tokens, features = x.shape
        per_head = features // self.heads
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, per_head)
        # jax's attention takes b n heads per_head and scales the scores by 1/sqrt(per_head),
        # as torch's scaled_dot_product_attention does.
        # It takes the softmax of bfloat16 or float16 scores in float32, promoting the two
        # dtypes as strict promotion refuses; the result has the queries' dtype.
        with jax.numpy_dtype_promotion("standard"):
            mixed = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return self.out(mixed.reshape(batch, tokens, features))

    @contract
    def __call__(
        self, x: Float[Array, "b n {self.features}"]
    ) -> Float[Array, "b n {self.features}"]:
        x = x + self.attend(normalised(self.norm1, x))
        # torch's nn.GELU is the exact (erf) one; jax's default is the tanh approximation.
        return x + self.fc2(jax.nn.gelu(self.fc1(normalised(self.norm2, x)), approximate=False))


class TokenPool(Layer):
    """Tokens to one feature vector: the class token's (`"class"`, the first token) or the
    mean of all tokens (`"mean"`). `b n features -> b features`."""

    kind = "token_pool"

    def __init__(
        self,
        pool: Literal["class", "mean"] = "class",
        *,
        name: str = "token_pool",
        rngs: nnx.Rngs,
    ):
        del rngs  # Pooling has no parameters.
        check_choice(name, "pool", pool, ("class", "mean"))
        self.name, self.pool = name, pool

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 2:
            self._reject(
                shape,
                f"{self.name} pools tokens (n d), got {dims(shape)}",
                "b n d",
                f'{{type = "gap"}} instead of {THIS_LAYER} for an image',
            )
        return (shape[-1],)

    def flops(self, shape: Shape) -> int:
        return math.prod(shape) if self.pool == "mean" else 0

    @contract
    def __call__(self, x: Float[Array, "b n d"]) -> Float[Array, "b d"]:
        return x[:, 0] if self.pool == "class" else x.mean(axis=1)
