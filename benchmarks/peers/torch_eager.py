"""The benchmark networks in PyTorch, eager mode, as its tutorials write them (NCHW, torch.optim);
the ImageNet-sized ones are torchvision's and timm's (`torch_imagenet`).

PyTorch is optional (`pip install '.[bench]'`, the CPU wheel); without it the
harness records the peer as skipped.
"""

import os
import time

import torch
from torch import nn

from benchmarks.peers import torch_imagenet


class SeedCNN(nn.Module):
    def __init__(self, channels: int, num_classes: int, size: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 32, 3)
        self.pool = nn.MaxPool2d(2)
        self.dense = nn.Linear(((size - 2) // 2) ** 2 * 32, num_classes)

    def forward(self, x):
        return self.dense(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


class SmallCNN(nn.Module):
    def __init__(self, channels: int, num_classes: int, size: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(32),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(64),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(64, num_classes),
        )

    def forward(self, x):
        return self.features(x)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, channels: int, num_classes: int, size: int):
        super().__init__()
        layers, cin = [nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()], 16
        for stage, width in enumerate((16, 32, 64)):
            for block in range(3):
                layers.append(Block(cin, width, 2 if stage > 0 and block == 0 else 1))
                cin = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


MODELS = {"seed_cnn": SeedCNN, "small_cnn": SmallCNN, "resnet20": ResNet20}


def _setup(model_name: str, shape, batch_size: int, num_classes: int = 10):
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    height, width, channels = shape
    model = MODELS[model_name](channels, num_classes, height)
    images = torch.rand(batch_size, channels, height, width)
    labels = torch.randint(0, num_classes, (batch_size,))
    return model, images, labels


def _rate(fn, batch_size: int, steps: int) -> float:
    fn()  # warm up (allocator, kernels)
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    return batch_size * steps / (time.perf_counter() - started)


def train_images_per_second(
    model_name: str, shape, batch_size: int, steps: int, num_classes: int = 10
) -> float | dict:
    if model_name in torch_imagenet.MODELS:
        return torch_imagenet.train_images_per_second(
            model_name, shape, batch_size, steps, num_classes
        )
    model, images, labels = _setup(model_name, shape, batch_size, num_classes)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss.item()  # the host reads the loss, as a training loop does

    return _rate(step, batch_size, steps)


def inference_images_per_second(
    model_name: str, shape, batch_size: int, steps: int, num_classes: int = 10
) -> float | dict:
    if model_name in torch_imagenet.MODELS:
        return torch_imagenet.inference_images_per_second(
            model_name, shape, batch_size, steps, num_classes
        )
    model, images, _ = _setup(model_name, shape, batch_size, num_classes)
    model.eval()

    @torch.inference_mode()
    def predict():
        return model(images).argmax(-1)

    return _rate(predict, batch_size, steps)
