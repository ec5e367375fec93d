"""ResNet-50 and ViT-S/16 in PyTorch, built as its users build them: torchvision's and timm's
models, torch.optim's AdamW, eager or under `torch.compile` (mode default).

The PyTorch peers (`torch_eager`, `torch_compile`) of the ImageNet-sized workloads.
ResNet-50 runs channels-last, as PyTorch's CPU performance guide advises for CNNs
(oneDNN's convolutions are fastest on NHWC); ViT-S/16 stays contiguous, since
channels-last changes only the 4D input of its patch convolution.
"""

import os
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.peers.imagenet import CLIP_GLOBAL_NORM, EPSILON, LEARNING_RATE, WEIGHT_DECAY, rate


def _resnet50(num_classes: int) -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None, num_classes=num_classes)


def _vit_s_16(num_classes: int) -> nn.Module:
    import timm

    return timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=num_classes)


MODELS: dict[str, Callable[[int], nn.Module]] = {"resnet50": _resnet50, "vit_s_16": _vit_s_16}
CHANNELS_LAST = frozenset({"resnet50"})


def _setup(model_name: str, shape, batch_size: int, num_classes: int, train: bool):
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    height, width, channels = shape
    model = MODELS[model_name](num_classes)
    model.train(train)
    images = torch.rand(batch_size, channels, height, width)
    if model_name in CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
        images = images.to(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch_size,))
    return model, images, labels


def train_images_per_second(
    model_name: str, shape, batch_size: int, steps: int, num_classes: int, compile: bool = False
) -> dict:
    model, images, labels = _setup(model_name, shape, batch_size, num_classes, train=True)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, eps=EPSILON
    )
    forward = torch.compile(model) if compile else model
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward(images), labels)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP_GLOBAL_NORM)
        optimizer.step()
        return loss.item()  # the host reads the loss, as a training loop does

    return rate(step, batch_size, steps, compiled=compile)


def inference_images_per_second(
    model_name: str, shape, batch_size: int, steps: int, num_classes: int, compile: bool = False
) -> dict:
    model, images, _ = _setup(model_name, shape, batch_size, num_classes, train=False)
    forward = torch.compile(model) if compile else model

    @torch.inference_mode()
    def predict():
        return forward(images).argmax(-1)

    return rate(predict, batch_size, steps, compiled=compile)
