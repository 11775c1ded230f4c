"""Pose parametrizations: batched, differentiable, invertible by construction.

A pose is a tensor ``params`` of shape ``(N, P)``. Its family maps it to the 2x3 matrix ``M`` that
moves image *content* in the normalised coordinates of :func:`torch.nn.functional.affine_grid`
(x to the right, y downwards, both in [-1, 1]). A point ``p`` of the input lands at ``M p``.
Every family has an analytic inverse, so no matrix is ever inverted numerically.

Angles are radians; a positive angle turns the content counter-clockwise as displayed, the
same sense as ``torch.rot90(x, 1, dims=(-2, -1))``. Scales are parametrized by their logarithm,
so every pose has a positive determinant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from avae.errors import AvaeError

# Shears beyond this magnitude are clamped: tan() explodes at 90 degrees.
MAX_SHEAR = math.radians(85.0)


def _rotation(theta: torch.Tensor) -> torch.Tensor:
    """(N,) angles -> (N, 2, 2) matrices turning content counter-clockwise on screen (y down)."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Angles (radians, any shape) brought into [-pi, pi)."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


def angle_gap_degrees(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How far apart two angles (radians) are around the circle, in degrees, in [0, 180]."""
    return torch.rad2deg(wrap_angle(a - b)).abs()


def homogeneous(m: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) -> (N, 3, 3), so that poses compose by matrix product."""
    return torch.cat([m, torch.tensor([0.0, 0.0, 1.0], device=m.device, dtype=m.dtype).expand(m.shape[0], 1, 3)], 1)


def _with_translation(linear: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.cat([linear, t.unsqueeze(-1)], dim=-1)


@dataclass(frozen=True)
class PoseFamily:
    """A named parametrization of 2-D poses.

    ``params`` columns follow :attr:`param_names`. ``matrix`` and ``inverse_matrix`` return
    ``(N, 2, 3)``; their composition is the identity for every ``params``.
    """

    name: str
    param_names: tuple[str, ...]

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def identity(self, n: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """(n, P) parameters of the identity pose (all zeros in every family)."""
        return torch.zeros(n, self.n_params, device=device, dtype=dtype)

    def _parts(self, params: torch.Tensor):
        if params.ndim != 2 or params.shape[1] != self.n_params:
            raise AvaeError(
                f"pose '{self.name}' expects parameters of shape (N, {self.n_params}) "
                f"({', '.join(self.param_names)}), got {tuple(params.shape)}"
            )
        cols = dict(zip(self.param_names, params.unbind(-1)))
        zero = torch.zeros_like(params[:, 0])
        theta = cols.get("angle", zero)
        shear = cols.get("shear", zero).clamp(-MAX_SHEAR, MAX_SHEAR)
        log_sx = cols.get("log_scale", cols.get("log_sx", zero))
        log_sy = cols.get("log_scale", cols.get("log_sy", zero))
        t = torch.stack([cols.get("tx", zero), cols.get("ty", zero)], -1)
        return theta, shear, log_sx, log_sy, t

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        """(N, P) -> (N, 2, 3): M = [R(angle) Shear(shear) diag(sx, sy) | t]."""
        theta, shear, log_sx, log_sy, t = self._parts(params)
        one, zero = torch.ones_like(theta), torch.zeros_like(theta)
        shear_m = torch.stack(
            [torch.stack([one, torch.tan(shear)], -1), torch.stack([zero, one], -1)], -2
        )
        scale = torch.diag_embed(torch.stack([log_sx.exp(), log_sy.exp()], -1))
        return _with_translation(_rotation(theta) @ shear_m @ scale, t)

    def inverse_matrix(self, params: torch.Tensor) -> torch.Tensor:
        """(N, P) -> (N, 2, 3): the analytic inverse of :meth:`matrix`."""
        theta, shear, log_sx, log_sy, t = self._parts(params)
        one, zero = torch.ones_like(theta), torch.zeros_like(theta)
        inv_shear = torch.stack(
            [torch.stack([one, -torch.tan(shear)], -1), torch.stack([zero, one], -1)], -2
        )
        inv_scale = torch.diag_embed(torch.stack([(-log_sx).exp(), (-log_sy).exp()], -1))
        linear = inv_scale @ inv_shear @ _rotation(-theta)
        return _with_translation(linear, -(linear @ t.unsqueeze(-1)).squeeze(-1))

    def params_from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        """(N, 2, 3) -> (N, P): the parameters whose :meth:`matrix` is ``matrix``.

        The linear part is split as R(angle) @ U by a QR decomposition with U upper-triangular
        with a positive diagonal, U = Shear(shear) @ diag(sx, sy); the determinant must be
        positive. Families with fewer parameters keep the part they can express (the angle of
        the rotation factor, the mean log-scale), so this is a projection for them.
        """
        q, r = torch.linalg.qr(matrix[:, :, :2])
        signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
        signs = torch.where(signs == 0, torch.ones_like(signs), signs)
        q = q * signs.unsqueeze(-2)
        r = r * signs.unsqueeze(-1)
        cols = {
            "angle": torch.atan2(q[:, 0, 1], q[:, 0, 0]),
            "shear": torch.atan2(r[:, 0, 1], r[:, 1, 1]),
            "log_sx": r[:, 0, 0].log(),
            "log_sy": r[:, 1, 1].log(),
            "log_scale": 0.5 * (r[:, 0, 0].log() + r[:, 1, 1].log()),
            "tx": matrix[:, 0, 2],
            "ty": matrix[:, 1, 2],
        }
        return torch.stack([cols[n] for n in self.param_names], -1)

    def compose(self, first: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
        """Parameters of moving content by ``first`` and then by ``then`` (matrix product)."""
        return self.params_from_matrix((homogeneous(self.matrix(then)) @ homogeneous(self.matrix(first)))[:, :2])

    def inverse(self, params: torch.Tensor) -> torch.Tensor | None:
        """Parameters of the inverse pose where the family is closed under inversion, else None."""
        if self.name == "rotation" or self.name == "similarity":
            return -params
        return None


POSE_FAMILIES = {
    "rotation": PoseFamily("rotation", ("angle",)),
    "similarity": PoseFamily("similarity", ("angle", "log_scale")),
    "affine": PoseFamily("affine", ("angle", "shear", "log_sx", "log_sy")),
    "affine-translation": PoseFamily(
        "affine-translation", ("angle", "shear", "log_sx", "log_sy", "tx", "ty")
    ),
}


def pose_family(pose: str | PoseFamily) -> PoseFamily:
    """Look up a family by name: rotation, similarity, affine, affine-translation."""
    if isinstance(pose, PoseFamily):
        return pose
    try:
        return POSE_FAMILIES[pose]
    except KeyError:
        raise AvaeError(
            f"unknown pose '{pose}': expected one of {', '.join(POSE_FAMILIES)}"
        ) from None
