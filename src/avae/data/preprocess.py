"""Turn raw arrays into the library's image tensors: (N, C, H, W) float32 in [0, 1]."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from avae.errors import AvaeError

CHANNELS = (1, 3)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def to_unit_float(array, source: str) -> torch.Tensor:
    """Images as an (N, C, H, W) float32 tensor with pixels in [0, 1].

    Accepts (N, H, W), (N, H, W, C), (N, C, H, W) with C in {1, 3}, and flat (N, 784) rows of
    28x28 digits. uint8 pixels, and any pixels whose maximum exceeds 1, are divided by 255.
    ``source`` (a file path or dataset name) is named in every error.
    """
    x = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise AvaeError(f"{source}: images must hold numbers, found dtype {x.dtype}")
    if x.size == 0:
        raise AvaeError(f"{source}: no images (array shape {x.shape})")
    x = _to_nchw(x, source)

    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if not finite.all():
            first = int(np.argmin(finite))
            raise AvaeError(f"{source}: image {first} has NaN or infinite pixels")
    low, high = x.min().item(), x.max().item()
    on_255_scale = x.dtype == np.uint8 or high > 1
    x = x.astype(np.float32)
    if on_255_scale:
        x /= 255.0
    if low < 0 or x.max() > 1:
        per_image = x.reshape(len(x), -1)
        first = int(np.argmax((per_image < 0).any(axis=1) | (per_image > 1).any(axis=1)))
        raise AvaeError(
            f"{source}: pixels must lie in [0, 1] or [0, 255], found values from {low:g} to {high:g} "
            f"(first bad image: {first})"
        )
    return torch.from_numpy(np.ascontiguousarray(x))


def _to_nchw(x: np.ndarray, source: str) -> np.ndarray:
    if x.ndim == 2 and x.shape[1] == 28 * 28:
        return x.reshape(len(x), 1, 28, 28)
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] in CHANNELS:
        return x
    if x.ndim == 4 and x.shape[3] in CHANNELS:
        return x.transpose(0, 3, 1, 2)
    raise AvaeError(
        f"{source}: cannot read images of shape {x.shape}; expected (N, H, W), (N, H, W, C), "
        f"(N, C, H, W) with C = 1 or 3, or (N, 784)"
    )


def pad_to(images: torch.Tensor, size: int | None, source: str | None = None) -> torch.Tensor:
    """Zero-pad (N, C, H, W) images symmetrically to size x size; ``None`` leaves them as they are.

    The paper pads 28x28 digits to 40x40 so that a rotated digit keeps its corners. An odd
    margin puts the extra row or column at the bottom or right. ``source`` (a file path or
    dataset name), if given, is named in the error.
    """
    if size is None:
        return images
    height, width = images.shape[-2:]
    if height > size or width > size:
        where = f"{source}: " if source else ""
        raise AvaeError(f"{where}pad_to={size}: images are {height}x{width}, larger than the size to pad to")
    top, left = (size - height) // 2, (size - width) // 2
    return F.pad(images, (left, size - width - left, top, size - height - top))


def normalize(images: torch.Tensor, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> torch.Tensor:
    """(images - mean) / std, MNIST's statistics by default; pixels then leave [0, 1]."""
    if not std > 0:
        raise AvaeError(f"std={std}: the normalization standard deviation must be positive")
    return (images - mean) / std
