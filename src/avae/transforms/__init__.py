"""Poses and warps as pure, batched, differentiable functions (see :mod:`avae.transforms.poses`)."""
from avae.transforms.poses import POSE_FAMILIES, PoseFamily, homogeneous, pose_family
from avae.transforms.warp import inverse_warp, sample_with, warp

__all__ = ["POSE_FAMILIES", "PoseFamily", "homogeneous", "pose_family", "warp", "inverse_warp", "sample_with"]
