"""Pose-invariant embeddings: a model's codes (posterior means), optionally after aligning each image.

>>> result = embed(vae, x, align="search")        # or align={"method": "amortized", "pose_net": net}
>>> result.codes, result.pose                      # (N, latent), (N, P)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from avae.errors import AvaeError


@dataclass
class Embedding:
    """``codes`` (N, latent): the posterior means of z, on the CPU; with alignment, ``pose`` (N, P) the
    pose each image was encoded at (parameters of ``pose_family``: radians and log-scales) and ``loss``
    (N,) the model's loss there; without, ``pose`` and ``loss`` are None."""

    codes: torch.Tensor
    pose: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    pose_family: str | None = None


@torch.no_grad()
def _codes(model, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    return torch.cat([model.encode(x[s : s + batch_size])[0].cpu() for s in range(0, len(x), batch_size)])


def embed(model, x: torch.Tensor, align: str | dict | None = None, *, pose: str = "rotation", seed: int = 0,
          batch_size: int = 500, progress: bool = False) -> Embedding:
    """The codes of images ``x`` (N, C, S, S) under ``model`` (any model of avae's protocol, foreign ones
    wrapped by :func:`avae.models.wrap` included), batched.

    ``align``: None (encode the images as they are), a method name of :func:`avae.align.align` with its
    defaults (``"search"``, ``"coarse-to-fine"``), or a dict of its options (``{"method": "amortized",
    "pose_net": net, "top_k": 2, "steps": 0}``): each image is first moved to the pose that minimises
    the model's loss (family ``pose``), then encoded, so a turned digit gets the code of its upright self.
    """
    from avae.align import align as align_images

    model.check_input(x)
    if align is None:
        return Embedding(_codes(model, x, batch_size))
    options = {"method": align} if isinstance(align, str) else dict(align)
    if not isinstance(options, dict):
        raise AvaeError(f"align={align!r}: expected None, a method name or a dict of alignment options")
    result = align_images(model, x, pose, seed=seed, progress=progress, batch_size=batch_size, **options)
    return Embedding(_codes(model, result.aligned, batch_size), result.pose.cpu(), result.loss.cpu(),
                     result.pose_family)


__all__ = ["Embedding", "embed"]
