"""The benchmark networks in hand-written Flax NNX + optax, trained with `nnx.jit`.

Written the way the Flax NNX guide writes a CNN: `nnx.Conv`, `nnx.max_pool`,
`nnx.BatchNorm`, an `nnx.Optimizer`, and a jitted step on the model objects.
"""

import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class SeedCNN(nnx.Module):
    def __init__(self, channels: int, num_classes: int, size: int, rngs: nnx.Rngs):
        self.conv = nnx.Conv(channels, 32, (3, 3), padding="VALID", rngs=rngs)
        flat = ((size - 2) // 2) ** 2 * 32
        self.dense = nnx.Linear(flat, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(nnx.relu(self.conv(x)), (2, 2), (2, 2))
        return self.dense(x.reshape(x.shape[0], -1))


class SmallCNN(nnx.Module):
    def __init__(self, channels: int, num_classes: int, size: int, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(channels, 32, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(32, rngs=rngs)
        self.conv2 = nnx.Conv(32, 32, (3, 3), rngs=rngs)
        self.conv3 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
        self.bn3 = nnx.BatchNorm(64, rngs=rngs)
        self.conv4 = nnx.Conv(64, 64, (3, 3), rngs=rngs)
        self.dropout = nnx.Dropout(0.2, rngs=rngs)
        self.dense = nnx.Linear(64, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv2(self.bn1(nnx.relu(self.conv1(x)))))
        x = nnx.max_pool(x, (2, 2), (2, 2))
        x = nnx.relu(self.conv4(self.bn3(nnx.relu(self.conv3(x)))))
        return self.dense(self.dropout(x.mean(axis=(1, 2))))


class Block(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(cout, rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(cout, rngs=rngs)
        shortcut = None
        if stride != 1 or cin != cout:
            shortcut = nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs)
        self.shortcut = nnx.data(shortcut)

    def __call__(self, x):
        y = self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x)))))
        return nnx.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet20(nnx.Module):
    def __init__(self, channels: int, num_classes: int, size: int, rngs: nnx.Rngs):
        self.stem = nnx.Conv(channels, 16, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        blocks, cin = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for block in range(3):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(Block(cin, width, stride, rngs))
                cin = width
        self.blocks = nnx.List(blocks)
        self.dense = nnx.Linear(64, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.dense(x.mean(axis=(1, 2)))


MODELS = {"seed_cnn": SeedCNN, "small_cnn": SmallCNN, "resnet20": ResNet20}


def _setup(model_name: str, shape, batch_size: int, num_classes: int = 10):
    height, _, channels = shape
    model = MODELS[model_name](channels, num_classes, height, rngs=nnx.Rngs(0))
    keys = jax.random.split(jax.random.key(1), 2)
    images = jax.random.uniform(keys[0], (batch_size, *shape), jnp.float32)
    labels = jax.random.randint(keys[1], (batch_size,), 0, num_classes)
    return model, images, labels


@nnx.jit
def _train_step(model, optimizer, images, labels):
    def loss_fn(model):
        logits = model(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def _predict(model, images):
    return model(images).argmax(-1)


def _rate(fn, batch_size: int, steps: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    started = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return batch_size * steps / (time.perf_counter() - started)


def train_images_per_second(
    model_name: str, shape, batch_size: int, steps: int, num_classes: int = 10
) -> float:
    model, images, labels = _setup(model_name, shape, batch_size, num_classes)
    model.train()
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    return _rate(lambda: _train_step(model, optimizer, images, labels), batch_size, steps)


def inference_images_per_second(
    model_name: str, shape, batch_size: int, steps: int, num_classes: int = 10
) -> float:
    model, images, _ = _setup(model_name, shape, batch_size, num_classes)
    model.eval()
    return _rate(lambda: _predict(model, images), batch_size, steps)
