"""Poses and warps as pure, batched, differentiable functions (see :mod:`avae.transforms.poses`)."""
from avae.transforms.poses import POSE_FAMILIES, PoseFamily, homogeneous, pose_family
from avae.transforms.tps import control_grid, tps_sample, tps_unwarp, tps_warp
from avae.transforms.warp import inverse_warp, sample_with, warp

__all__ = ["POSE_FAMILIES", "PoseFamily", "homogeneous", "pose_family", "warp", "inverse_warp", "sample_with",
           "control_grid", "tps_sample", "tps_warp", "tps_unwarp"]
