"""Affine VAE experiments (Bidart & Wong 2019, section 4) as functions of (model, data, options)
returning tidy results: rows of dicts plus per-image values.

Every rotation experiment also reports the *oracle*, the loss under the true inverse transform:
resampling alone blurs an image and lowers a squared-error loss, and alignment can beat the
oracle because it also straightens the natural slant of handwriting (GUIDE.md, section 5).
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from avae.align import align
from avae.errors import AvaeError
from avae.data.perturb import Perturbation, random_affine, rotated
from avae.models.affine_vae import AffineVAE
from avae.train.loop import mean_and_sem, per_image_loss
from avae.transforms import pose_family

METHODS = ("vae", "avae", "oracle")


def parse_degrees(text: str) -> list[float]:
    """'0:180:20' (inclusive range) or '0,45,90' -> list of angles in degrees."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            count = int(round((stop - start) / step)) + 1
            return [start + i * step for i in range(count) if start + i * step <= stop + 1e-9]
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise AvaeError(f"--degrees {text!r}: expected START:STOP:STEP (e.g. 0:180:20) or a list like 0,90,180") from None


def describe_options(options: dict) -> dict:
    """Alignment options as JSON: the defaults filled in, a pose network named by its pose."""
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(align).parameters.items()
                if name in ("method", "restarts", "steps", "lr", "grid", "levels", "top_k", "turns", "patience", "polish")}
    described = {**defaults, **options}
    if "pose_net" in described:
        described["pose_net"] = f"pose network for '{described['pose_net'].family.name}'"
    return described


@torch.no_grad()
def oracle_loss(model, x: torch.Tensor, truth: Perturbation, batch_size: int = 500) -> torch.Tensor:
    """Per-image loss when the true inverse of the perturbation brings x back (and the
    reconstruction is moved forward again), with deterministic encoding."""
    model.eval()
    family = pose_family(truth.pose)
    wrapped = AffineVAE(model, family)
    out = []
    for s in range(0, x.shape[0], batch_size):
        q = truth.params[s : s + batch_size]
        out.append(wrapped.loss_with_matrices(x[s : s + batch_size], family.matrix(q), family.inverse_matrix(q))["loss"])
    return torch.cat(out)


def loss_summary(model, data) -> dict:
    terms = per_image_loss(model, data)
    return {name: mean_and_sem(values) for name, values in terms.items()}


def _compare(model, x, truth, pose: str, align_options: dict, seed: int) -> dict[str, torch.Tensor]:
    result = align(model, x, pose, seed=seed, **align_options)
    return {"vae": result.identity_loss, "avae": result.loss, "oracle": oracle_loss(model, x, truth),
            "result": result}


def rotation_sweep(model, data, degrees, *, align_options: dict | None = None, seed: int = 0,
                   progress: bool = True, resampling: str = "fair") -> dict:
    """Loss vs rotation angle (paper Fig. 3): every image turned by each angle in ``degrees``,
    resampled the same way at every angle (``resampling``, :mod:`avae.data.perturb`).

    Returns ``rows`` (angle, method, mean, sem, n), ``per_image`` (angle, image, vae, avae,
    oracle) and ``summary`` (means over all angles and the reduction by alignment).
    """
    align_options = dict(align_options or {})
    rows, per_image = [], []
    for angle in tqdm(list(degrees), desc="rotation sweep", unit="angle", disable=None if progress else True):
        x, truth = rotated(data, float(angle), resampling=resampling)
        losses = _compare(model, x, truth, "rotation", align_options, seed)
        for method in METHODS:
            rows.append({"angle": float(angle), "method": method, **mean_and_sem(losses[method])})
        for i in range(x.shape[0]):
            per_image.append({"angle": float(angle), "image": i,
                              **{m: round(losses[m][i].item(), 4) for m in METHODS}})
    averages = {m: sum(r["mean"] for r in rows if r["method"] == m) / len(list(degrees)) for m in METHODS}
    return {
        "rows": rows,
        "per_image": per_image,
        "summary": {
            "average_loss": averages,
            "reduction_by_alignment": 1 - averages["avae"] / averages["vae"],
            "n_images": len(data),
            "degrees": [float(d) for d in degrees],
            "resampling": resampling,
            "align": describe_options(align_options),
        },
    }


def affine_perturbation(model, data, *, align_options: dict | None = None, seed: int = 0,
                        max_rotation: float = 180.0, max_shear: float = 55.0, max_scale: float = 0.5,
                        resampling: str = "fair") -> dict:
    """Random general affine perturbations (paper section 4.4) and alignment with pose 'affine'."""
    align_options = dict(align_options or {})
    x, truth = random_affine(data, seed=seed, max_rotation=max_rotation, max_shear=max_shear, max_scale=max_scale,
                             resampling=resampling)
    losses = _compare(model, x, truth, "affine", align_options, seed)
    rows = [{"method": m, **mean_and_sem(losses[m])} for m in METHODS]
    means = {r["method"]: r["mean"] for r in rows}
    return {
        "rows": rows,
        "perturbed": x,
        "result": losses["result"],
        "summary": {
            "mean_loss": means,
            "reduction_by_alignment": 1 - means["avae"] / means["vae"],
            "n_images": len(data),
            "perturbation": {"max_rotation_deg": max_rotation, "max_shear_deg": max_shear,
                             "max_scale": max_scale, "seed": seed, "resampling": resampling},
            "align": describe_options(align_options),
        },
    }
