"""Test-time pose search (Bidart & Wong 2019, section 3.2): one routine, several methods.

Every method proposes candidate poses per image, scores them in batched no-grad passes, keeps the
best, and refines it with Adam; each image keeps the best loss it has seen (the original code
tracks a batch total). Methods differ only in where candidates come from:

* ``search`` (default, the paper's): the identity plus K-1 random poses (or, with ``grid``, K
  evenly spaced angles), shared by all images;
* ``coarse-to-fine`` (rotation): an even grid, then finer grids around each image's best;
* ``amortized``: the identity plus the top-k poses a trained :class:`~avae.nets.pose.PoseNet`
  predicts for each image;
* ``stn``: the pose network's single best guess, nothing else (a baseline: it can be worse than
  the identity, the failure mode of a bare spatial transformer).

For both pose-network methods, ``turns`` (rotation: 1, 2 or 4) asks the network about the image
turned by quarter turns too and pools its answers (:meth:`~avae.nets.pose.PoseNet.predict`).

Except ``stn``, the identity is always a candidate, so an image's aligned loss is never above its
identity-pose loss; random candidates are drawn once from ``seed`` and shared, so an image's
result does not depend on which other images share its batch. ``init`` adds per-image warm-start
candidates (transformation-optimized training uses the last epoch's poses). ``patience`` stops
refining an image once its loss has not improved for that many steps. ``polish`` rounds of a
derivative-free local search (best pose plus and minus a halving step along each parameter) run
before the Adam steps: per round 2P candidates in one batched no-grad pass, no backward pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from avae.errors import AvaeError
from avae.models.affine_vae import AffineVAE
from avae.nets.fuse import InferenceCopy
from avae.transforms import PoseFamily

METHODS = ("search", "coarse-to-fine", "amortized", "stn")

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
    """What :func:`align` found, one row per image, on the images' device: the best ``loss`` (N,) and
    the ``pose`` (N, P) that reached it (parameters of ``pose_family``, radians and log-scales), the
    input moved by that pose (``aligned``, what the model encodes) and its ``reconstruction`` in the
    input's frame (both (N, C, H, W)), and the loss at the identity pose (``identity_loss``, (N,))."""

    loss: torch.Tensor  # (N,) best per-image loss found
    pose: torch.Tensor  # (N, P) pose parameters that reached it
    aligned: torch.Tensor  # (N, C, H, W) the input moved by the pose (what the model encodes)
    reconstruction: torch.Tensor  # (N, C, H, W) reconstruction in the input's frame
    identity_loss: torch.Tensor  # (N,) loss at the identity pose (NaN for ``stn``, which never scores it)
    pose_family: str

    @property
    def degrees(self) -> torch.Tensor:
        """(N,) the rotation angle of each pose, in degrees."""
        return torch.rad2deg(self.pose[:, 0])


def candidate_poses(family: PoseFamily, restarts: int, *, grid: bool = False, seed: int = 0,
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(K, P) candidate poses on ``device``; row 0 is the identity.

    ``grid`` (rotation only): K angles evenly spaced over the circle. Otherwise the identity plus
    K - 1 random poses drawn from :data:`RESTART_RANGES` with ``seed``, on the CPU generator (the
    same candidates on every device), then moved to ``device``.
    """
    if restarts < 1:
        raise AvaeError(f"restarts must be >= 1, got {restarts}")
    if grid:
        if family.name != "rotation":
            raise AvaeError(f"a grid of candidates needs pose 'rotation', got '{family.name}'")
        return (torch.arange(restarts, device=device, dtype=dtype) * (2 * math.pi / restarts)).unsqueeze(1)
    g = torch.Generator().manual_seed(int(seed))
    low = torch.tensor([RESTART_RANGES[n][0] for n in family.param_names], device=device, dtype=dtype)
    high = torch.tensor([RESTART_RANGES[n][1] for n in family.param_names], device=device, dtype=dtype)
    unit = torch.rand(restarts - 1, family.n_params, generator=g).to(device=device, dtype=dtype)
    return torch.cat([family.identity(1, device=device, dtype=dtype), low + (high - low) * unit])


class _Best:
    """Each image's best loss so far, with its pose and outputs (so no pass is spent re-computing them),
    on the device and in the dtype of the images ``x``."""

    def __init__(self, x: torch.Tensor, n_params: int):
        n = x.shape[0]
        self.loss = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
        self.pose = torch.zeros(n, n_params, device=x.device, dtype=x.dtype)
        self.aligned = torch.zeros_like(x)
        self.reconstruction = torch.zeros_like(x)

    def offer(self, rows: torch.Tensor, loss, pose, aligned, reconstruction) -> None:
        better = loss < self.loss[rows]
        idx = rows[better]
        self.loss[idx] = loss[better]
        self.pose[idx] = pose[better]
        self.aligned[idx] = aligned[better]
        self.reconstruction[idx] = reconstruction[better]


@torch.no_grad()
def score_candidates(avae: AffineVAE, x: torch.Tensor, candidates: torch.Tensor, best: _Best | None = None,
                     chunk: int = 4096) -> torch.Tensor:
    """Losses (N, K) of every image under every candidate: ``candidates`` is (K, P), shared, or
    (N, K, P), per image, moved to the device and dtype of ``x``. Offers every scored pose to ``best``."""
    n = x.shape[0]
    candidates = candidates.to(device=x.device, dtype=x.dtype)
    if candidates.ndim == 2:
        candidates = candidates.unsqueeze(0).expand(n, -1, -1)
    k = candidates.shape[1]
    losses = torch.empty(n, k, device=x.device, dtype=x.dtype)
    per_chunk = max(1, chunk // max(n, 1))
    rows = torch.arange(n, device=x.device)
    for start in range(0, k, per_chunk):
        cand = candidates[:, start : start + per_chunk]  # (N, c, P)
        c = cand.shape[1]
        ps = cand.transpose(0, 1).reshape(c * n, -1)
        out = avae.loss(x.repeat(c, 1, 1, 1), ps)
        grid = out["loss"].view(c, n)
        losses[:, start : start + c] = grid.T
        if best is not None:  # one offer per image: its best candidate of this chunk
            chosen = grid.argmin(0) * n + rows
            best.offer(rows, out["loss"][chosen], ps[chosen], out["aligned"][chosen], out["reconstruction"][chosen])
    return losses


def refine(avae: AffineVAE, x: torch.Tensor, best: _Best, steps: int, lr: float, patience: int | None = None) -> None:
    """Adam on the poses of all images at once, starting from each image's best; updates ``best``.

    Adam is written out so that images whose loss stopped improving (``patience`` steps) can leave
    the batch and cost nothing more; its update is torch.optim.Adam's, element by element.
    """
    if steps <= 0:
        return
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    active = torch.arange(x.shape[0], device=x.device)
    params = best.pose.clone()
    m, v = torch.zeros_like(params), torch.zeros_like(params)
    stale = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for t in range(1, steps + 2):
        p = params[active].requires_grad_(True)
        out = avae.loss(x[active], p)
        loss = out["loss"]
        with torch.no_grad():
            improved = loss < best.loss[active] * (1 - 1e-4)
            best.offer(active, loss.detach(), p.detach(), out["aligned"], out["reconstruction"])
            stale[active] = torch.where(improved, 0, stale[active] + 1)
        if t == steps + 1:  # the last update has been scored
            break
        (grad,) = torch.autograd.grad(loss.sum(), p)
        with torch.no_grad():
            m[active] = beta1 * m[active] + (1 - beta1) * grad
            v[active] = beta2 * v[active] + (1 - beta2) * grad.pow(2)
            step = lr * (m[active] / (1 - beta1**t)) / ((v[active] / (1 - beta2**t)).sqrt() + eps)
            params[active] = params[active] - step
        if patience is not None:
            active = active[stale[active] < patience]
            if active.numel() == 0:
                break


# First step of the derivative-free polish, per parameter; each round halves it.
POLISH_STEPS = {"angle": math.radians(4), "shear": math.radians(4), "log_scale": 0.04, "log_sx": 0.04,
                "log_sy": 0.04, "tx": 0.02, "ty": 0.02}


def _polish(avae: AffineVAE, x: torch.Tensor, best: _Best, rounds: int) -> None:
    """Derivative-free local search: each round scores, per image, its best pose moved by plus and
    minus one step along each parameter (2P candidates, one batched pass), then halves the steps.
    Cheaper than an Adam step (no backward pass) and never worse than where it starts."""
    family = avae.family
    step = torch.tensor([POLISH_STEPS[n] for n in family.param_names], device=x.device, dtype=x.dtype)
    moves = torch.cat([torch.diag(step), -torch.diag(step)])  # (2P, P)
    for r in range(rounds):
        score_candidates(avae, x, best.pose.unsqueeze(1) + moves / 2**r, best)


def _coarse_to_fine(avae: AffineVAE, x: torch.Tensor, levels: tuple[int, ...], best: _Best) -> None:
    """Rotation: an even grid of ``levels[0]`` angles, then ``levels[j]`` angles inside the sector
    around each image's best, each level narrowing the sector."""
    spacing = 2 * math.pi / levels[0]
    score_candidates(avae, x, candidate_poses(avae.family, levels[0], grid=True, device=x.device, dtype=x.dtype), best)
    for count in levels[1:]:
        offsets = torch.linspace(-spacing / 2, spacing / 2, count + 2, device=x.device, dtype=x.dtype)[1:-1]
        score_candidates(avae, x, (best.pose[:, :1] + offsets).unsqueeze(-1), best)
        spacing = spacing / (count + 1)


def align(
    model,
    x: torch.Tensor,
    pose: str | PoseFamily = "rotation",
    *,
    method: str = "search",
    restarts: int = 30,
    steps: int = 20,
    lr: float = 0.01,
    grid: bool = False,
    levels: tuple[int, ...] = (8, 4, 4),
    pose_net=None,
    top_k: int = 2,
    turns: int = 1,
    init: torch.Tensor | None = None,
    patience: int | None = None,
    polish: int = 0,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> AlignResult:
    """Find, per image, the pose that minimises the model's loss. Defaults are the original
    code's evaluation setting (30 restarts, 20 Adam steps at lr 0.01, deterministic encoding: Adam at lr
    0.01 in its model/model.py, the counts in its figures' names, `sgd20_r30`; the paper gives no numbers). ``model``
    is any :mod:`avae.models` model (or an :class:`AffineVAE`); its weights are not changed.
    ``x`` must be on the model's device: the search makes every tensor there, in ``x``'s dtype, and
    returns its result there (random candidates are drawn on the CPU, the same on every device, and
    moved once; ``init`` and a ``pose_net`` on another device are moved too).
    """
    if method not in METHODS:
        raise AvaeError(f"unknown alignment method '{method}': expected one of {', '.join(METHODS)}")
    avae = model if isinstance(model, AffineVAE) else AffineVAE(model, pose)
    family = avae.family
    if method in ("amortized", "stn"):
        if pose_net is None:
            raise AvaeError(f"method '{method}' needs a trained pose network (--pose-net, see `avae train-pose-net`)")
        if pose_net.family.name != family.name:
            raise AvaeError(f"the pose network predicts '{pose_net.family.name}' poses, but pose '{family.name}' was asked for")
        pose_net.eval()
    if method == "coarse-to-fine" and family.name != "rotation":
        raise AvaeError(f"method 'coarse-to-fine' needs pose 'rotation', got '{family.name}'")
    avae.model.check_input(x)
    weights = next(avae.model.parameters(), None)
    if weights is not None and weights.device != x.device:
        raise AvaeError(f"align: the model is on {weights.device} but the images are on {x.device}; move one to the other")
    # the search runs on a frozen inference copy (batch norm folded, channels-last): the same
    # function, faster, and the caller's model is never touched
    avae = AffineVAE(InferenceCopy(avae.model), family)
    shared = (candidate_poses(family, restarts, grid=grid, seed=seed, device=x.device, dtype=x.dtype)
              if method == "search" else family.identity(1, device=x.device, dtype=x.dtype))
    net_device = next(pose_net.parameters()).device if pose_net is not None else x.device
    parts = []
    for start in tqdm(range(0, x.shape[0], batch_size), desc="aligning", unit="batch",
                      disable=None if progress else True, leave=False):
        xb = x[start : start + batch_size]
        best = _Best(xb, family.n_params)
        if method == "stn":
            with torch.no_grad():
                score_candidates(avae, xb, pose_net.predict(xb.to(net_device), 1, turns), best)
            identity = torch.full((xb.shape[0],), float("nan"), device=xb.device, dtype=xb.dtype)
        else:
            identity = score_candidates(avae, xb, shared, best)[:, 0]
            if method == "coarse-to-fine":
                _coarse_to_fine(avae, xb, levels, best)
            elif method == "amortized":
                with torch.no_grad():
                    score_candidates(avae, xb, pose_net.predict(xb.to(net_device), top_k, turns), best)
            if init is not None:
                score_candidates(avae, xb, init[start : start + batch_size].unsqueeze(1), best)
            _polish(avae, xb, best, polish)
            refine(avae, xb, best, steps, lr, patience)
        parts.append((best.loss, best.pose, best.aligned, best.reconstruction, identity))
    loss, params, aligned, reconstruction, identity = (torch.cat(t) for t in zip(*parts))
    return AlignResult(loss, params, aligned, reconstruction, identity, family.name)


__all__ = ["METHODS", "AlignResult", "align", "candidate_poses", "score_candidates", "refine", "RESTART_RANGES"]
