"""Poses and warps as pure, batched, differentiable functions (see :mod:`avae.transforms.poses`)."""
from avae.transforms.poses import POSE_FAMILIES, PoseFamily, angle_gap_degrees, homogeneous, pose_family, wrap_angle
from avae.transforms.tps import control_grid, tps_sample, tps_unwarp, tps_warp
from avae.transforms.warp import inverse_warp, sample_with, warp

__all__ = ["POSE_FAMILIES", "PoseFamily", "angle_gap_degrees", "homogeneous", "pose_family", "wrap_angle", "warp", "inverse_warp", "sample_with",
           "control_grid", "tps_sample", "tps_warp", "tps_unwarp"]
