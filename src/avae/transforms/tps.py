"""Thin-plate-spline warps on a regular grid of control points, through kornia's TPS functions.

Control points live in the normalised frame of :func:`torch.nn.functional.grid_sample` with
``align_corners=False`` (x to the right, y downwards, both in [-1, 1] at the image's outer edges),
as (x, y) pairs. A TPS pose is the (N, 2 K) tensor of displacements of the K control points, flattened as
(dx_0, dy_0, dx_1, dy_1, ...): the content at control point i moves by (dx_i, dy_i). Zero offsets
are the identity.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from avae.errors import AvaeError


def control_grid(n: int = 3, dtype=torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n * n, 2) control points (x, y) on an n x n grid spanning [-1, 1], row by row."""
    if n < 2:
        raise AvaeError(f"a thin-plate-spline grid needs at least 2 x 2 control points, got {n}")
    g = torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], -1)


def tps_sample(images: torch.Tensor, output_points: torch.Tensor, input_points: torch.Tensor) -> torch.Tensor:
    """Resample ``images`` so that the output pixel at ``output_points[i]`` reads the input at
    ``input_points[i]``, smoothly in between (bilinear, zero padding).

    images (N, C, H, W); points (N, K, 2), or (K, 2) shared by all images, normalised (x, y)
    -> (N, C, H, W). The spline is kornia's (``get_tps_transform``, which puts the kernel centres
    at ``input_points``); equal point sets give the identity up to solver round-off. Points are
    moved to the images' device and dtype.
    """
    try:  # imported here: importing kornia would slow every avae command
        from kornia.geometry.transform import get_tps_transform
    except ImportError:
        raise AvaeError("thin-plate-spline warps need kornia: pip install kornia") from None

    n, _, h, w = images.shape
    output_points = output_points.to(device=images.device, dtype=images.dtype)
    input_points = input_points.to(device=images.device, dtype=images.dtype)
    out_pts = output_points.expand(n, -1, -1) if output_points.ndim == 2 else output_points
    in_pts = input_points.expand(n, -1, -1) if input_points.ndim == 2 else input_points
    kernel_weights, affine_weights = get_tps_transform(out_pts, in_pts)
    # kornia's warp_image_tps evaluates the spline by a broadcast multiply-and-sum, about 4x slower on
    # CPU (forward and backward) than these matrix products; centres shared by the batch: one kernel
    coords = _pixel_centres(h, w, images.dtype, images.device)  # (H * W, 2)
    centres = input_points if input_points.ndim == 2 else in_pts
    kernel = _tps_kernel(coords, centres)  # (H * W, K) or (N, H * W, K)
    grid = kernel @ kernel_weights + coords @ affine_weights[:, 1:] + affine_weights[:, :1]
    return F.grid_sample(images, grid.view(n, h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=False)


def tps_warp(images: torch.Tensor, offsets: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """Move image content smoothly: the content at control point i moves to point i plus its
    offset. images (N, C, H, W), offsets (N, 2 * grid**2) -> (N, C, H, W)."""
    points = control_grid(grid, images.dtype, images.device)
    return tps_sample(images, points + _as_points(offsets, grid), points)


def tps_unwarp(images: torch.Tensor, offsets: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """Approximately undo :func:`tps_warp`: the spline that moves the displaced control points back
    to the grid (a TPS has no closed-form inverse; this one agrees with it at the control points)."""
    points = control_grid(grid, images.dtype, images.device)
    return tps_sample(images, points, points + _as_points(offsets, grid))


def _pixel_centres(h: int, w: int, dtype, device) -> torch.Tensor:
    """(H * W, 2) normalised (x, y) of the pixel centres, row by row (align_corners=False)."""
    ys = (2 * torch.arange(h, dtype=dtype, device=device) + 1) / h - 1
    xs = (2 * torch.arange(w, dtype=dtype, device=device) + 1) / w - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], -1)


def _tps_kernel(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """U(r) = r^2 log r between points (P, 2) and centres (K, 2) or (N, K, 2), kornia's kernel."""
    cross = points @ centres.transpose(-1, -2)  # matrix products, not a broadcast (P, K, 2) tensor
    d2 = (points.pow(2).sum(-1, keepdim=True) + centres.pow(2).sum(-1).unsqueeze(-2) - 2 * cross).clamp_min(0)
    safe = torch.where(d2 > 0, d2, torch.ones_like(d2))
    return 0.5 * d2 * safe.log()


def _as_points(offsets: torch.Tensor, grid: int) -> torch.Tensor:
    if offsets.ndim != 2 or offsets.shape[1] != 2 * grid * grid:
        raise AvaeError(f"TPS offsets must have shape (N, {2 * grid * grid}) for a {grid}x{grid} grid, "
                        f"got {tuple(offsets.shape)}")
    return offsets.view(offsets.shape[0], grid * grid, 2)


__all__ = ["control_grid", "tps_sample", "tps_warp", "tps_unwarp"]
