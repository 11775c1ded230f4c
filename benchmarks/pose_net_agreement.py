"""How often a shipped pose network's angle agrees with the paper search's, on rotated test digits.

For N asymmetric real MNIST test digits (classes 2 to 7 and 9; 0, 1 and 8 look alike turned by 180
degrees), each turned by a uniform random angle: the share whose angle is within 15 and 30 degrees
of the paper search's (30 restarts, 20 Adam steps), for the pose network's top guess alone and for
amortized alignment (the identity and the network's top 2 or top 3 guesses, scored by the model; no
gradient steps); per class as well. Two searches give the
reference's own repeatability, the ceiling of any agreement with it: the paper search again with
another seed of its random restarts, and a dense search (a 36-angle grid, then 4 and 4 finer angles,
then 20 Adam steps), which finds the lowest losses of the three.

    python benchmarks/pose_net_agreement.py --images 200 --threads 1
"""
from __future__ import annotations

import math

import torch

from avae.align import align
from avae.data import load, rotated
from avae.train import checkpoint
from common import base_parser, parse, write_results

ASYMMETRIC = (2, 3, 4, 5, 6, 7, 9)


def gap_degrees(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi).abs()


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(images=200)
    args = parse(p)
    data = load("mnist", "test", data_dir=args.data_dir, limit=1000, seed=args.seed)
    keep = torch.isin(data.labels, torch.tensor(ASYMMETRIC))
    labels = data.labels[keep][: args.images]
    x = rotated(data.images[keep][: args.images], seed=args.seed + 1)[0]
    rows = []
    for name in ("vae-L8", "vae-L8-trans-opt"):
        path = checkpoint.pretrained(name)
        model = checkpoint.load(path)
        net = checkpoint.load(path / "pose-net-rotation.pt", expect="pose-net")
        search = align(model, x, "rotation", restarts=30, steps=20, seed=args.seed).pose[:, 0]
        with torch.no_grad():
            alone = net.predict(x, 1)[:, 0, 0]
        amortized = {k: align(model, x, "rotation", method="amortized", pose_net=net, top_k=k, steps=0).pose[:, 0]
                     for k in (2, 3)}
        again = align(model, x, "rotation", restarts=30, steps=20, seed=args.seed + 1).pose[:, 0]
        dense = align(model, x, "rotation", method="coarse-to-fine", levels=(36, 4, 4), steps=20).pose[:, 0]
        for method, angle in (("pose network, top guess", alone), ("amortized: identity + top-2", amortized[2]),
                              ("amortized: identity + top-3", amortized[3]),
                              ("paper search, another seed", again), ("dense search (36,4,4 + 20 steps)", dense)):
            gap = gap_degrees(angle, search)
            row = {"model": name, "angle from": method, "digits": len(labels),
                   "within 15 deg": f"{100 * (gap <= 15).float().mean():.1f} %",
                   "within 30 deg": f"{100 * (gap <= 30).float().mean():.1f} %",
                   "within 15 deg of the dense search": f"{100 * (gap_degrees(angle, dense) <= 15).float().mean():.1f} %"}
            row.update({f"class {c} (15 deg)": f"{100 * (gap[labels == c] <= 15).float().mean():.0f} %" for c in ASYMMETRIC})
            rows.append(row)
    write_results("pose_net_agreement", rows, args.out, "Pose network vs paper search: agreement on the angle",
                  {"data": data.describe(), "classes": list(ASYMMETRIC), "seed": args.seed})


if __name__ == "__main__":
    main()
