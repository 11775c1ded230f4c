"""Wall time of one transformation-optimized epoch as a multiple of one plain epoch, same data,
same process, side by side; for the paper's per-batch search and for cheaper searches.

    python benchmarks/training.py --images 1000
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from avae.data import load
from avae.train import TrainConfig, fit
from common import base_parser, write_results

SEARCHES = {
    "paper (20 restarts, 10 steps)": {"pose_restarts": 20, "pose_steps": 10},
    "warm start + 4 restarts, 3 steps": {"pose_restarts": 4, "pose_steps": 3, "pose_warm_start": True},
    "warm start + 2 restarts, 1 step": {"pose_restarts": 2, "pose_steps": 1, "pose_warm_start": True},
}


def epoch_seconds(train, val, tmp, **config) -> list[float]:
    """Seconds of each of 2 epochs (the second shows the warm start's effect)."""
    fit("vae", {"latent": 8}, train, val, TrainConfig(epochs=2, **config), tmp, progress=False)
    return [h["seconds"] for h in json.loads((tmp / "metrics.json").read_text())["history"]]


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(images=1000)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    train = load("mnist-embedded", "train", seed=args.seed, limit=args.images)
    val = load("mnist-embedded", "val", seed=args.seed, limit=100)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain = epoch_seconds(train, val, Path(tmp) / "plain")
        rows.append({"regime": "plain", "search": "-", "epoch 2 (s)": round(plain[1], 1), "x plain": 1.0})
        for name, options in SEARCHES.items():
            seconds = epoch_seconds(train, val, Path(tmp) / name.replace(" ", "_"), regime="transform-optimized", **options)
            rows.append({"regime": "transform-optimized", "search": name, "epoch 2 (s)": round(seconds[1], 1),
                         "x plain": round(seconds[1] / plain[1], 1)})
    write_results("training", rows, args.out, "Cost of a transformation-optimized epoch",
                  {"data": train.describe(), "seed": args.seed, "note": "epoch 2 of 2, so warm starts are in effect"})


if __name__ == "__main__":
    main()
