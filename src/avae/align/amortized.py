"""Amortized pose initialisation: train a :class:`~avae.nets.pose.PoseNet` to predict the pose that
the full search would find, from the model's own alignments.

The search runs once per training digit, upright, giving each digit's *canonical* pose c_i under
the model (which also straightens its slant). For any perturbation q of that digit, the pose that
brings it to the same canonical image is M(c_i) M(q)^-1, so one search per digit yields unlimited
exact targets: every training step perturbs digits afresh and composes the target.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from avae.data.perturb import random_affine, rotated
from avae.errors import AvaeError
from avae.nets.pose import PoseNet, PoseNetConfig
from avae.transforms import homogeneous, pose_family

# The search run once per upright training digit for its canonical pose. Upright digits sit near
# the identity, so a cheaper search than the paper's finds the same poses.
CANONICAL_SEARCH = {
    "rotation": {"method": "coarse-to-fine", "levels": (8, 4, 4), "steps": 5, "lr": 0.01},
    "affine": {"restarts": 10, "steps": 10, "lr": 0.01},
    "affine-translation": {"restarts": 10, "steps": 10, "lr": 0.01},
}


def perturb(x: torch.Tensor, pose: str, seed: int):
    """Random perturbations the pose network learns to undo: uniform rotations for 'rotation', the
    section 4.4 affine set for 'affine' (plus shifts up to 0.2 for 'affine-translation')."""
    if pose == "rotation":
        return rotated(x, seed=seed)
    if pose in ("affine", "affine-translation"):
        return random_affine(x, seed=seed, max_translation=0.2 if pose == "affine-translation" else 0.0)
    raise AvaeError(f"pose networks are trained for poses rotation, affine and affine-translation, not '{pose}'")


def train_pose_net(model, images: torch.Tensor, pose: str = "rotation", *, iterations: int = 6000,
                   batch_size: int = 128, lr: float = 2e-3, seed: int = 0, search: dict | None = None,
                   net_options: dict | None = None, augment=None, progress: bool = True) -> tuple[PoseNet, dict]:
    """Fit a pose network to ``model``'s own alignments of ``images`` (upright training digits), on
    their device (the model's too); the network is returned there. ``net_options``: PoseNetConfig
    fields (``width``, ``hidden``, ``bins``); ``augment(x, step)``: a change applied to each perturbed
    batch that must keep the target pose (for experiments)."""
    from avae.align import align

    family = pose_family(pose)
    perturb(images[:1], pose, seed)  # rejects unsupported poses before the expensive search
    search = search or CANONICAL_SEARCH[pose]
    canonical = align(model, images, pose, seed=seed, progress=progress, **search).pose
    canonical_matrix = homogeneous(family.matrix(canonical))
    torch.manual_seed(seed)
    net = PoseNet(PoseNetConfig(pose=pose, channels=images.shape[1], image_size=images.shape[-1],
                                **(net_options or {}))).to(images.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for it in tqdm(range(iterations), desc="pose network", disable=None if progress else True, leave=False):
        index = torch.randint(0, images.shape[0], (batch_size,), generator=g).to(images.device)
        x, truth = perturb(images[index], pose, seed * 1_000_003 + it)
        if augment is not None:
            x = augment(x, it)
        inverse = homogeneous(pose_family(truth.pose).inverse_matrix(truth.params))
        target = family.params_from_matrix((canonical_matrix[index] @ inverse)[:, :2])
        loss = net.loss(x, target).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    info = {"pose": pose, "digits": images.shape[0], "iterations": iterations, "batch_size": batch_size, "seed": seed,
            "search": {k: list(v) if isinstance(v, tuple) else v for k, v in search.items()}, "final_loss": sum(losses[-50:]) / min(50, len(losses))}
    return net.eval(), info


def fit_pose_net(model, data, pose: str, path: str | Path, *, iterations: int = 6000, seed: int = 0,
                 progress: bool = True, served: str | None = None, retrain: bool = False) -> tuple[PoseNet, dict]:
    """The pose network at ``path`` (``pose-net-POSE.pt`` beside a model): loaded when it was trained
    with these settings on this many digits, else trained on ``data`` (a dataset of upright training
    digits) and written atomically, with a ``.json`` beside it recording settings, data and seconds.
    ``retrain`` trains afresh even when a matching network is there (the old one stays until the new
    one is written)."""
    from avae.io import write_json
    from avae.report.provenance import provenance
    from avae.train import checkpoint

    path = Path(path)
    wanted = {"pose": pose, "digits": len(data), "iterations": iterations, "seed": seed}
    if path.is_file() and not retrain:
        training = checkpoint.read(path).get("training", {})
        if all(training.get(k) == v for k, v in wanted.items()):
            return checkpoint.load(path, expect="pose-net"), training
    start = time.perf_counter()
    net, info = train_pose_net(model, data.images, pose, iterations=iterations, seed=seed, progress=progress)
    info["seconds"] = round(time.perf_counter() - start, 1)
    checkpoint.save(net, path, training=info, data=data.describe())
    write_json(path.with_suffix(".json"), {**provenance(), **info, "data": data.describe(),
                                           **({"checkpoint": served} if served else {})})
    return net, info
