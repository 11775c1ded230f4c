"""Seeded perturbations that return the images **and** the pose applied to each (ground truth).

``truth.params`` are parameters of ``truth.pose`` (a :mod:`avae.transforms` family); the
perturbed image is ``warp(x, truth.params, truth.pose)``, so ``truth.inverse_params()`` (or
``inverse_warp``) is the oracle that undoes it.

Resampling: a perturbed image is resampled, and resampling blurs, which by itself lowers a
squared-error loss. ``resampling="fair"`` (the default) resamples every pose the same way, the
identity included: the bilinear interpolant averaged over a 2 x 2 grid inside each output pixel
(``warp(..., supersample=2)``), so the oracle's loss is flat across angles (max / min 1.008 over 0
to 180 degrees on the shipped VAE, against 1.21 for plain bilinear sampling; 2x was flatter than 4x
or 8x, ``benchmarks/resampling.py``). ``resampling="paper"`` is plain bilinear sampling, as the
paper's code did: no blur at multiples of 90 degrees, the most at 45.

Random parameters are drawn on the CPU generator (the same draws on every device) and moved once
to the images' device; ``truth.params`` live there, in the images' dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from avae.errors import AvaeError
from avae.transforms import pose_family, warp

# resampling protocol -> supersampling factor of the warp (see the module docstring)
RESAMPLING = {"fair": 2, "paper": 1}


@dataclass
class Perturbation:
    """The ground truth of a perturbation: ``params`` (N, P) of the pose family ``pose`` applied to each
    image (radians and log-scales), so that ``inverse_params()`` or ``inverse_warp`` undo it."""

    pose: str
    params: torch.Tensor  # (N, P), radians and log-scales

    @property
    def degrees(self) -> torch.Tensor:
        """Rotation angle of each image in degrees, (N,)."""
        return torch.rad2deg(self.params[:, 0])

    def inverse_params(self) -> torch.Tensor | None:
        return pose_family(self.pose).inverse(self.params)


def _images(data) -> torch.Tensor:
    return data.images if hasattr(data, "images") else data


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _supersample(resampling: str) -> int:
    if resampling not in RESAMPLING:
        raise AvaeError(f"resampling={resampling!r}: expected one of {', '.join(RESAMPLING)}")
    return RESAMPLING[resampling]


def _param_dtype(x: torch.Tensor) -> torch.dtype:
    """Pose parameters in the images' floating-point dtype (float32 for integer images)."""
    return x.dtype if x.is_floating_point() else torch.float32


# Digit classes whose rotations are told apart by their shape: 0, 1 and 8 look alike turned by 180
# degrees, so a found angle for them is right up to a half turn. Rotation experiments score on these.
ASYMMETRIC_DIGITS = (2, 3, 4, 5, 6, 7, 9)


def rotated(data, degrees=None, *, seed: int = 0, resampling: str = "fair"):
    """Rotate every image counter-clockwise.

    degrees: a number (every image by that angle), a ``(low, high)`` range sampled uniformly per
    image, or None for uniform in [0, 360). ``resampling``: "fair" or "paper" (module docstring).
    Returns ``(images, Perturbation)``.
    """
    supersample = _supersample(resampling)
    x = _images(data)
    n = x.shape[0]
    if degrees is None:
        degrees = (0.0, 360.0)
    if isinstance(degrees, (tuple, list)):
        low, high = map(float, degrees)
        angles = low + (high - low) * torch.rand(n, generator=_generator(seed), dtype=torch.float64).to(x.device)
    else:
        angles = torch.full((n,), float(degrees), dtype=torch.float64, device=x.device)
    params = torch.deg2rad(angles).to(_param_dtype(x)).unsqueeze(1)
    return warp(x, params, "rotation", supersample), Perturbation("rotation", params)


def random_affine(
    data,
    *,
    seed: int = 0,
    max_rotation: float = 180.0,
    max_shear: float = 55.0,
    max_scale: float = 0.5,
    max_translation: float = 0.0,
    resampling: str = "fair",
):
    """Random general affine perturbation, as section 4.4 of Bidart & Wong (2019).

    Per image, uniformly: rotation in [-max_rotation, max_rotation] degrees, shear in
    [-max_shear, max_shear] degrees, x- and y-scale each in [1 - max_scale, 1 + max_scale], and,
    if ``max_translation`` > 0, a translation in [-t, t] (normalised units, 2 = image width).
    ``resampling``: "fair" or "paper" (module docstring).
    Returns ``(images, Perturbation)`` with pose "affine" or "affine-translation".
    """
    supersample = _supersample(resampling)
    x = _images(data)
    n = x.shape[0]
    g = _generator(seed)

    def uniform(half_width):
        return (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1) * half_width

    cols = [
        uniform(math.radians(max_rotation)),
        uniform(math.radians(max_shear)),
        torch.log1p(uniform(max_scale)),
        torch.log1p(uniform(max_scale)),
    ]
    pose = "affine"
    if max_translation > 0:
        cols += [uniform(max_translation), uniform(max_translation)]
        pose = "affine-translation"
    params = torch.stack(cols, 1).to(device=x.device, dtype=_param_dtype(x))
    return warp(x, params, pose, supersample), Perturbation(pose, params)
