"""How often a shipped pose network's angle agrees with the paper search's, on rotated test digits.

For N asymmetric real MNIST test digits (classes 2 to 7 and 9; 0, 1 and 8 look alike turned by 180
degrees), each turned by a uniform random angle: the share whose angle is within 15 and 30 degrees
of the paper search's (30 restarts, 20 Adam steps), with its 95 % Wilson interval, for the pose
network's top guess alone, the same network pooled over the four quarter turns of each image
(``turns=4``), and amortized alignment (the identity and the network's top 2 or top 3 guesses, scored
by the model; no gradient steps); per class as well. Two searches give the reference's own
repeatability, the ceiling of any agreement with it: the paper search again with another seed of its
random restarts, and a dense search (a 36-angle grid, then 4 and 4 finer angles, then 20 Adam steps),
which finds the lowest losses of the three.

The share is also split by how clearly the model prefers the search's angle: the *margin* is the
lowest loss at any angle more than 30 degrees away from the search's (a 2-degree grid) minus the
search's loss. A small margin means a second orientation (a "6" read as a "9") is nearly as good for
the model, and the reference's angle there is close to a coin toss.

    python benchmarks/pose_net_agreement.py --images 1000 --threads 1
"""
from __future__ import annotations

import math

import torch

from avae.align import align, score_candidates
from avae.data import ASYMMETRIC_DIGITS, load, rotated
from avae.models.affine_vae import AffineVAE
from avae.train import checkpoint
from avae.transforms import angle_gap_degrees
from common import base_parser, parse, write_results

MARGINS = ((-math.inf, 1.0, "margin <= 1 nat"), (1.0, 4.0, "margin 1-4 nats"), (4.0, math.inf, "margin > 4 nats"))


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion, in percent."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * (centre - half), 100 * (centre + half)


def margin_to_second_orientation(model, x: torch.Tensor, angle: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """Per image: lowest loss more than 30 degrees from ``angle`` (2-degree grid) minus ``loss``."""
    grid = torch.deg2rad(torch.arange(0.0, 360.0, 2.0))
    losses = score_candidates(AffineVAE(model, "rotation"), x, grid[:, None])
    far = angle_gap_degrees(grid[None, :], angle[:, None]) > 30
    return torch.where(far, losses, torch.full_like(losses, math.inf)).min(1).values - loss


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(images=1000)
    args = parse(p)
    data = load("mnist", "test", data_dir=args.data_dir, seed=args.seed)
    keep = torch.isin(data.labels, torch.tensor(ASYMMETRIC_DIGITS))
    labels = data.labels[keep][: args.images]
    x = rotated(data.images[keep][: args.images], seed=args.seed + 1)[0]
    rows = []
    for name in ("vae-L8", "vae-L8-trans-opt"):
        path = checkpoint.pretrained(name)
        model = checkpoint.load(path)
        net = checkpoint.load(path / "pose-net-rotation.pt", expect="pose-net")
        reference = align(model, x, "rotation", restarts=30, steps=20, seed=args.seed)
        search = reference.pose[:, 0]
        margin = margin_to_second_orientation(model, x, search, reference.loss)
        with torch.no_grad():
            alone = net.predict(x, 1)[:, 0, 0]
            pooled = net.predict(x, 1, turns=4)[:, 0, 0]
        amortized = {k: align(model, x, "rotation", method="amortized", pose_net=net, top_k=k, steps=0).pose[:, 0]
                     for k in (2, 3)}
        again = align(model, x, "rotation", restarts=30, steps=20, seed=args.seed + 1).pose[:, 0]
        dense = align(model, x, "rotation", method="coarse-to-fine", levels=(36, 4, 4), steps=20).pose[:, 0]
        for method, angle in (("pose network, top guess", alone),
                              ("pose network, top guess pooled over 4 quarter turns", pooled),
                              ("amortized: identity + top-2", amortized[2]),
                              ("amortized: identity + top-3", amortized[3]),
                              ("paper search, another seed", again), ("dense search (36,4,4 + 20 steps)", dense)):
            gap = angle_gap_degrees(angle, search)
            hits = int((gap <= 15).sum())
            low, high = wilson(hits, len(gap))
            row = {"model": name, "angle from": method, "digits": len(labels),
                   "within 15 deg": f"{100 * hits / len(gap):.1f} %", "95 % interval": f"{low:.1f}-{high:.1f} %",
                   "within 30 deg": f"{100 * (gap <= 30).float().mean():.1f} %",
                   "within 15 deg of the dense search": f"{100 * (angle_gap_degrees(angle, dense) <= 15).float().mean():.1f} %"}
            for lo, hi, label in MARGINS:
                band = (margin > lo) & (margin <= hi)
                row[f"{label} (15 deg)"] = f"{100 * (gap[band] <= 15).float().mean():.1f} % of {int(band.sum())}"
            row.update({f"class {c} (15 deg)": f"{100 * (gap[labels == c] <= 15).float().mean():.0f} %" for c in ASYMMETRIC_DIGITS})
            rows.append(row)
    write_results("pose_net_agreement", rows, args.out, "Pose network vs paper search: agreement on the angle",
                  {"data": data.describe(), "classes": list(ASYMMETRIC_DIGITS), "seed": args.seed,
                   "margin": "lowest loss more than 30 deg from the paper search's angle (2-deg grid) minus its loss"})


if __name__ == "__main__":
    main()
