"""Warps: move image content by a pose, with bilinear resampling and zero (black) padding.

Images are ``(N, C, H, W)``; poses are ``(N, P)`` parameters of a :class:`PoseFamily`.
``warp(inverse_warp(x, p), p)`` equals ``x`` up to resampling blur.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from avae.transforms.poses import PoseFamily, pose_family


def sample_with(images: torch.Tensor, sampling_matrix: torch.Tensor, supersample: int = 1) -> torch.Tensor:
    """Output pixel p takes the input at ``sampling_matrix @ p`` (affine_grid's convention).

    images (N, C, H, W), sampling_matrix (N, 2, 3) -> (N, C, H, W); the matrix is moved to the
    images' device and dtype. ``supersample`` s > 1 samples the bilinear interpolant on an s x s
    grid inside every output pixel and averages it (area resampling): the blur is then nearly the
    same at every angle, 0 included, instead of none at multiples of 90 degrees and the most at 45.
    """
    n, c, h, w = images.shape
    grid = F.affine_grid(sampling_matrix.to(device=images.device, dtype=images.dtype),
                         [n, c, h * supersample, w * supersample], align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(out, supersample) if supersample > 1 else out


def warp(images: torch.Tensor, params: torch.Tensor, pose: str | PoseFamily, supersample: int = 1) -> torch.Tensor:
    """Move the content of ``images`` by the pose ``params``: content at p goes to M(params) p.
    ``supersample``: see :func:`sample_with`."""
    return sample_with(images, pose_family(pose).inverse_matrix(params), supersample)


def inverse_warp(images: torch.Tensor, params: torch.Tensor, pose: str | PoseFamily) -> torch.Tensor:
    """Undo :func:`warp` with the same ``params`` (analytic inverse)."""
    return sample_with(images, pose_family(pose).matrix(params))
