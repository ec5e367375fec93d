"""`torch.compile` (mode default) of the PyTorch peers of the ImageNet-sized workloads: the
eager models of `torch_imagenet`, compiled as PyTorch's tutorial compiles a model.

The compile happens on the first call; it is timed apart from the steps and reported
as `compile_seconds`.
"""

from benchmarks.peers import torch_imagenet


def train_images_per_second(
    model_name: str, shape, batch_size: int, steps: int, num_classes: int
) -> dict:
    return torch_imagenet.train_images_per_second(
        model_name, shape, batch_size, steps, num_classes, compile=True
    )


def inference_images_per_second(
    model_name: str, shape, batch_size: int, steps: int, num_classes: int
) -> dict:
    return torch_imagenet.inference_images_per_second(
        model_name, shape, batch_size, steps, num_classes, compile=True
    )
