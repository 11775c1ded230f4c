"""Test-time pose search (Bidart & Wong 2019, section 3.2), batched and honest per image.

For every image: K candidate poses (random restarts, or for rotation an evenly spaced grid)
scored in batched forward passes without gradients; the best kept; then Adam refinement of all
images at once, keeping each image's best loss seen (the original code tracks a batch total).
The identity pose is always one of the candidates, so an image's aligned loss is never above its
identity-pose loss. The candidate set is drawn once from ``seed`` and shared by all images, so
an image's result does not depend on which other images share its batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from avae.errors import AvaeError
from avae.models.affine_vae import AffineVAE
from avae.transforms import PoseFamily

# Ranges of the random restarts, per parameter (uniform). Angles cover the full circle.
RESTART_RANGES = {
    "angle": (-math.pi, math.pi),
    "shear": (-math.radians(55), math.radians(55)),
    "log_scale": (math.log(0.5), math.log(1.5)),
    "log_sx": (math.log(0.5), math.log(1.5)),
    "log_sy": (math.log(0.5), math.log(1.5)),
    "tx": (-0.2, 0.2),
    "ty": (-0.2, 0.2),
}


@dataclass
class AlignResult:
    loss: torch.Tensor  # (N,) best per-image loss found
    pose: torch.Tensor  # (N, P) pose parameters that reached it
    aligned: torch.Tensor  # (N, C, H, W) the input moved by the pose (what the model encodes)
    reconstruction: torch.Tensor  # (N, C, H, W) reconstruction in the input's frame
    identity_loss: torch.Tensor  # (N,) loss at the identity pose
    pose_family: str

    @property
    def degrees(self) -> torch.Tensor:
        return torch.rad2deg(self.pose[:, 0])


def candidate_poses(family: PoseFamily, restarts: int, *, grid: bool = False, seed: int = 0) -> torch.Tensor:
    """(K, P) candidate poses; row 0 is the identity.

    ``grid`` (rotation only): K angles evenly spaced over the circle. Otherwise the identity plus
    K - 1 random poses drawn from :data:`RESTART_RANGES` with ``seed``.
    """
    if restarts < 1:
        raise AvaeError(f"restarts must be >= 1, got {restarts}")
    if grid:
        if family.name != "rotation":
            raise AvaeError(f"a grid of candidates needs pose 'rotation', got '{family.name}'")
        return (torch.arange(restarts, dtype=torch.float32) * (2 * math.pi / restarts)).unsqueeze(1)
    g = torch.Generator().manual_seed(int(seed))
    low = torch.tensor([RESTART_RANGES[n][0] for n in family.param_names])
    high = torch.tensor([RESTART_RANGES[n][1] for n in family.param_names])
    random = low + (high - low) * torch.rand(restarts - 1, family.n_params, generator=g)
    return torch.cat([family.identity(1), random])


@torch.no_grad()
def score_candidates(avae: AffineVAE, x: torch.Tensor, candidates: torch.Tensor, chunk: int = 4096):
    """Losses (N, K) of every image under every candidate pose, in batched no-grad passes."""
    n, k = x.shape[0], candidates.shape[0]
    losses = torch.empty(n, k)
    per_chunk = max(1, chunk // max(n, 1))  # candidates per pass
    for start in range(0, k, per_chunk):
        cand = candidates[start : start + per_chunk]
        xs = x.repeat(cand.shape[0], 1, 1, 1)
        ps = cand.repeat_interleave(n, dim=0)
        losses[:, start : start + cand.shape[0]] = avae.loss(xs, ps)["loss"].view(cand.shape[0], n).T
    return losses


def refine(avae: AffineVAE, x: torch.Tensor, init: torch.Tensor, init_loss: torch.Tensor, steps: int, lr: float):
    """Adam on the poses of all images at once; returns each image's best (loss, pose)."""
    best_loss, best_pose = init_loss.clone(), init.clone()
    if steps <= 0:
        return best_loss, best_pose
    params = init.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([params], lr=lr)
    for _ in range(steps):
        loss = avae.loss(x, params)["loss"]
        with torch.no_grad():
            better = loss < best_loss
            best_loss = torch.where(better, loss, best_loss)
            best_pose[better] = params[better]
        (grad,) = torch.autograd.grad(loss.sum(), params)
        params.grad = grad
        optimizer.step()
    with torch.no_grad():  # the pose after the last step has not been scored yet
        loss = avae.loss(x, params)["loss"]
        better = loss < best_loss
        best_loss = torch.where(better, loss, best_loss)
        best_pose[better] = params[better]
    return best_loss, best_pose.detach()


def align(
    model,
    x: torch.Tensor,
    pose: str | PoseFamily = "rotation",
    *,
    restarts: int = 30,
    steps: int = 20,
    lr: float = 0.01,
    grid: bool = False,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> AlignResult:
    """Find, per image, the pose that minimises the model's loss (paper defaults: 30 restarts,
    20 Adam steps at lr 0.01, deterministic encoding). ``model`` is any :mod:`avae.models` model
    (or an :class:`AffineVAE`); its weights are not changed.
    """
    avae = model if isinstance(model, AffineVAE) else AffineVAE(model, pose)
    family = avae.family
    inner = avae.model
    inner.check_input(x)
    was_training = inner.training
    inner.eval()
    requires = [p.requires_grad for p in inner.parameters()]
    for p in inner.parameters():
        p.requires_grad_(False)
    candidates = candidate_poses(family, restarts, grid=grid, seed=seed)
    parts = []
    try:
        for start in tqdm(range(0, x.shape[0], batch_size), desc="aligning", unit="batch",
                          disable=None if progress else True, leave=False):
            xb = x[start : start + batch_size]
            scores = score_candidates(avae, xb, candidates)
            best_loss, best_k = scores.min(dim=1)
            loss, params = refine(avae, xb, candidates[best_k], best_loss, steps, lr)
            with torch.no_grad():
                final = avae.loss(xb, params)
            parts.append((loss, params, final["aligned"], final["reconstruction"], scores[:, 0]))
    finally:
        for p, r in zip(inner.parameters(), requires):
            p.requires_grad_(r)
        inner.train(was_training)
    loss, params, aligned, reconstruction, identity = (torch.cat(t) for t in zip(*parts))
    return AlignResult(loss, params, aligned, reconstruction, identity, family.name)


__all__ = ["AlignResult", "align", "candidate_poses", "score_candidates", "refine", "RESTART_RANGES"]
