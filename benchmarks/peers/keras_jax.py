"""ResNet-50 and ViT-S/16 in Keras 3 on its JAX backend, as Keras users write them.

ResNet-50 is `keras.applications.ResNet50(weights=None)`. Keras ships no ViT, so
ViT-S/16 is written with Keras layers the way its ViT example builds one, at
timm's `vit_small_patch16_224` sizes: 16x16 patches, a class token and learned
positions, 12 pre-norm blocks 384 wide with 6 heads and an MLP of 1536.
Training is `model.compile` + `train_on_batch` (the step `fit` runs, jitted by
Keras), inference `predict_on_batch`.

Both heads give logits (`classifier_activation=None`, a loss `from_logits`), as
the other frameworks' do, so that every framework computes the same softmax.
"""

import os

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported: it reads it once

import keras
import numpy as np
from keras import layers, ops

from benchmarks.peers.imagenet import (
    CLIP_GLOBAL_NORM,
    EPSILON,
    LEARNING_RATE,
    WEIGHT_DECAY,
    rate,
)

PATCH, WIDTH, DEPTH, HEADS, MLP = 16, 384, 12, 6, 1536
LAYER_NORM_EPSILON = 1e-6  # timm's


class ClassTokenAndPositions(layers.Layer):
    """A learned class token before the patch tokens, then a learned position added to each:
    (batch, tokens, width) -> (batch, tokens + 1, width)."""

    def build(self, input_shape):
        tokens, width = input_shape[1], input_shape[2]
        normal = keras.initializers.TruncatedNormal(stddev=0.02)
        self.class_token = self.add_weight(
            shape=(1, 1, width), initializer=keras.initializers.RandomNormal(stddev=1e-6)
        )
        self.positions = self.add_weight(shape=(1, tokens + 1, width), initializer=normal)

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        token = ops.broadcast_to(self.class_token, (batch, 1, tokens.shape[-1]))
        return ops.concatenate([token, tokens], axis=1) + self.positions


def vit_s_16(shape, num_classes: int) -> keras.Model:
    """timm's ViT-S/16 in Keras layers: 22.05M parameters at 224 px and 1000 classes."""
    inputs = keras.Input(shape)
    x = layers.Conv2D(WIDTH, PATCH, strides=PATCH)(inputs)
    x = layers.Reshape((-1, WIDTH))(x)
    x = ClassTokenAndPositions()(x)
    for _ in range(DEPTH):
        y = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON)(x)
        x = x + layers.MultiHeadAttention(HEADS, key_dim=WIDTH // HEADS)(y, y)
        y = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON)(x)
        y = layers.Dense(MLP, activation="gelu")(y)  # exact GELU, as timm's nn.GELU
        x = x + layers.Dense(WIDTH)(y)
    x = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON)(x)
    outputs = layers.Dense(num_classes)(x[:, 0])  # the class token's features
    return keras.Model(inputs, outputs, name="vit_s_16")


def resnet50(shape, num_classes: int) -> keras.Model:
    return keras.applications.ResNet50(
        weights=None, input_shape=shape, classes=num_classes, classifier_activation=None
    )


MODELS = {"resnet50": resnet50, "vit_s_16": vit_s_16}


def _setup(model_name: str, shape, batch_size: int, num_classes: int):
    keras.utils.set_random_seed(0)
    model = MODELS[model_name](tuple(shape), num_classes)
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(batch_size, *shape)).astype(np.float32)
    labels = rng.integers(0, num_classes, batch_size).astype(np.int32)
    return model, images, labels


def train_images_per_second(
    model_name: str, shape, batch_size: int, steps: int, num_classes: int
) -> dict:
    model, images, labels = _setup(model_name, shape, batch_size, num_classes)
    optimizer = keras.optimizers.AdamW(
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        epsilon=EPSILON,
        global_clipnorm=CLIP_GLOBAL_NORM,
    )
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    # train_on_batch returns the loss on the host: each step ends when its work is done.
    return rate(lambda: model.train_on_batch(images, labels), batch_size, steps, compiled=True)


def inference_images_per_second(
    model_name: str, shape, batch_size: int, steps: int, num_classes: int
) -> dict:
    model, images, _ = _setup(model_name, shape, batch_size, num_classes)

    def predict():
        return model.predict_on_batch(images).argmax(-1)

    return rate(predict, batch_size, steps, compiled=True)
