"""Equivalence against PyTorch: a torch model's state dict, imported, gives the same logits.

For the zoo's tests: build the reference in torchvision or timm (random weights,
nothing downloaded), hand it here with the typedpipe model's name. Use it
through the `reference` fixture (tests/conftest.py), which skips without torch:

    def test_resnet18_matches_torchvision(reference):
        import torchvision
        reference.assert_same_logits(torchvision.models.resnet18(num_classes=10),
                                     "resnet18", (64, 64, 3), 10)
"""

import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from typedpipe.models import build_model

#: The tolerance the issue sets: eval-mode logits within 1e-4, relative to their scale.
RTOL = 1e-4


def randomize_norms(torch_model, seed: int = 0) -> None:
    """Give every batch norm running statistics and an affine transform that are not
    the identity, so that a wrong mapping of them shows in the logits."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in torch_model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                size = module.num_features
                module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                if module.affine:
                    module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                    module.bias.copy_(torch.rand(size, generator=generator) - 0.5)


def save_state_dict(torch_model, path: Path) -> Path:
    """The model's state dict as a safetensors file, as torchvision and timm save theirs."""
    import safetensors.torch

    state = {k: v.detach().contiguous() for k, v in torch_model.state_dict().items()}
    safetensors.torch.save_file(state, str(path))
    return path


def logits_pair(
    torch_model,
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    layers=(),
    batch: int = 2,
    seed: int = 0,
    jit: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(PyTorch's logits, typedpipe's) in eval mode on the same random images
    (NCHW for torch, NHWC for typedpipe), typedpipe's built from the torch state dict."""
    import torch

    torch_model.eval()
    randomize_norms(torch_model, seed)
    images = np.random.default_rng(seed).normal(size=(batch, *input_shape)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    with tempfile.TemporaryDirectory() as folder:
        path = save_state_dict(torch_model, Path(folder) / "reference.safetensors")
        model = build_model(
            name, input_shape, num_classes, layers, weights=path, rngs=nnx.Rngs(seed)
        )
    model.eval()
    forward = jax.jit(lambda m, x: m(x)) if jit else (lambda m, x: m(x))
    got = np.asarray(forward(model, jnp.asarray(images)))
    return expected, got


def assert_same_logits(
    torch_model,
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    layers=(),
    rtol: float = RTOL,
    batch: int = 2,
    seed: int = 0,
    jit: bool = False,
) -> None:
    """Assert typedpipe's eval-mode logits equal the torch model's within `rtol`,
    relative to the largest logit (a logit near 0 has no relative error of its own)."""
    expected, got = logits_pair(
        torch_model,
        name,
        input_shape,
        num_classes,
        layers=layers,
        batch=batch,
        seed=seed,
        jit=jit,
    )
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = max(float(np.abs(expected).max()), 1e-12)
    error = float(np.abs(got - expected).max()) / scale
    assert error <= rtol, f"{name}: logits differ by {error:.2e} of their scale (rtol {rtol:g})"
