"""Which resampling makes rotation experiments fair: the oracle's loss (true inverse rotation applied)
across angles, for plain bilinear sampling (the paper's protocol) and for area resampling at 2x, 4x
and 8x (the bilinear interpolant averaged over an s x s grid inside each output pixel, applied at
every angle, 0 included). A fair protocol leaves the oracle flat: max over angles / min over angles
near 1. Also the shipped VAE's plain loss and the cost of each warp, timed side by side.

    python benchmarks/resampling.py --images 1000 --threads 2
"""
from __future__ import annotations

import os
import time

import torch

from avae.data import load
from avae.data.perturb import Perturbation
from avae.evaluate.affine import oracle_loss
from avae.train import checkpoint
from avae.transforms import warp
from common import REPO, base_parser, parse, write_results

FACTORS = {"paper (plain bilinear)": 1, "area 2x (fair, the default)": 2, "area 4x": 4, "area 8x": 8}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(checkpoint.pretrained("vae-L8")))
    p.add_argument("--step", type=float, default=15.0, help="angle step in degrees, 0 to 180")
    args = parse(p)
    model = checkpoint.load(args.checkpoint).eval()
    x = load("mnist", "test", data_dir=args.data_dir).take(args.images, args.seed).images
    angles = [i * args.step for i in range(int(180 / args.step) + 1)]
    rows = []
    for name, factor in FACTORS.items():
        oracle, plain, seconds = [], [], 0.0
        for angle in angles:
            params = torch.full((x.shape[0], 1), torch.deg2rad(torch.tensor(angle)).item())
            start = time.perf_counter()
            turned = warp(x, params, "rotation", factor)
            seconds += time.perf_counter() - start
            oracle.append(oracle_loss(model, turned, Perturbation("rotation", params)).mean().item())
            with torch.no_grad():
                plain.append(model.loss(turned, sample=False)["loss"].mean().item())
        rows.append({"resampling": name, "factor": factor, "oracle max / min": max(oracle) / min(oracle),
                     "oracle at 0": oracle[0], "oracle at 45": oracle[angles.index(45.0)] if 45.0 in angles else None,
                     "oracle min": min(oracle), "oracle max": max(oracle), "VAE at 0": plain[0],
                     "VAE mean over angles": sum(plain) / len(plain),
                     "warp ms per 1,000 images": 1000 * seconds / len(angles) * 1000 / x.shape[0]})
    write_results("resampling", rows, args.out,
                  f"Resampling of rotated test digits: the oracle's flatness over 0 to 180 degrees (step {args.step:g}), "
                  f"{x.shape[0]} real MNIST test digits (seed {args.seed}), checkpoint "
                  f"{os.path.relpath(args.checkpoint, REPO)}",
                  extra={"angles": angles})


if __name__ == "__main__":
    main()
