"""Cost and quality of test-time alignment, in units of one plain forward pass.

On N real MNIST test digits, once under uniform random rotations in [0, 360) and once under the
general affine set (rotation, shear up to 55 degrees, scale up to 50 %), for each method: mean
loss before and after alignment, cost = alignment wall time / plain forward wall time (both
measured in this process on the same images), and images per second.

    python benchmarks/alignment.py --images 1000
"""
from __future__ import annotations

import time

import torch

from avae.align import align
from avae.data import load, random_affine, rotated
from avae.train import checkpoint
from common import base_parser, forward_pass, time_call, write_results

# The paper's evaluation setting (Bidart & Wong 2019): 30 random restarts, 20 Adam steps.
METHODS = {"paper (30 restarts, 20 steps)": {"restarts": 30, "steps": 20}}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(checkpoint.pretrained("vae-L8")))
    args = p.parse_args()
    torch.manual_seed(args.seed)
    model = checkpoint.load(args.checkpoint)
    data = load("mnist", "test", data_dir=args.data_dir, limit=args.images, seed=args.seed)
    sets = {
        "rotation U[0,360)": (rotated(data, seed=args.seed)[0], "rotation"),
        "general affine": (random_affine(data, seed=args.seed)[0], "affine"),
    }
    rows = []
    for set_name, (x, pose) in sets.items():
        forward = time_call(lambda: forward_pass(model, x))
        for method, options in METHODS.items():
            start = time.perf_counter()
            result = align(model, x, pose, seed=args.seed, **options)
            seconds = time.perf_counter() - start
            rows.append({
                "perturbation": set_name, "method": method, "images": len(data),
                "identity loss": round(result.identity_loss.mean().item(), 2),
                "aligned loss": round(result.loss.mean().item(), 2),
                "cost (forward passes)": round(seconds / forward, 1),
                "images/s": round(len(data) / seconds, 1),
                "forward pass (s)": round(forward, 3),
            })
    write_results("alignment", rows, args.out, "Alignment cost and quality",
                  {"checkpoint": args.checkpoint, "data": data.describe(), "seed": args.seed})


if __name__ == "__main__":
    main()
