"""Warps: move image content by a pose, with bilinear resampling and zero (black) padding.

Images are ``(N, C, H, W)``; poses are ``(N, P)`` parameters of a :class:`PoseFamily`.
``warp(inverse_warp(x, p), p)`` equals ``x`` up to resampling blur.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from avae.transforms.poses import PoseFamily, pose_family


def sample_with(images: torch.Tensor, sampling_matrix: torch.Tensor) -> torch.Tensor:
    """Output pixel p takes the input at ``sampling_matrix @ p`` (affine_grid's convention).

    images (N, C, H, W), sampling_matrix (N, 2, 3) -> (N, C, H, W); the matrix is moved to the
    images' device and dtype.
    """
    grid = F.affine_grid(sampling_matrix.to(device=images.device, dtype=images.dtype), list(images.shape),
                         align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def warp(images: torch.Tensor, params: torch.Tensor, pose: str | PoseFamily) -> torch.Tensor:
    """Move the content of ``images`` by the pose ``params``: content at p goes to M(params) p."""
    return sample_with(images, pose_family(pose).inverse_matrix(params))


def inverse_warp(images: torch.Tensor, params: torch.Tensor, pose: str | PoseFamily) -> torch.Tensor:
    """Undo :func:`warp` with the same ``params`` (analytic inverse)."""
    return sample_with(images, pose_family(pose).matrix(params))
