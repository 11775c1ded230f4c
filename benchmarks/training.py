"""Transformation-optimized training: the cost of an epoch as a multiple of a plain epoch (same data,
same process, side by side) and the Table 1 average loss of the resulting model, for the paper's
per-batch search and for the fast one.

Every model trains for the same epochs on the same embedded training digits (seed fixed), then is
evaluated the same way: the rotation sweep of Table 1 (0 to 180 degrees, step 20) on real MNIST
test digits, each aligned with one fixed method, so the models differ only in how they trained.

    python benchmarks/training.py --images 1000 --epochs 5 --test-images 300 --threads 1

Wall times are per epoch (from the training history); the CPU time of the process per epoch
(training plus validation) is also recorded, since on a shared machine it is the steadier ratio.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from avae.data import load
from avae.evaluate.affine import parse_degrees, rotation_sweep
from avae.train import TrainConfig, fit
from common import base_parser, parse, write_results

SEARCHES = {
    "20 restarts, 10 steps": {"pose_restarts": 20, "pose_steps": 10},
    "fast: warm start + 2 restarts, polish 1": {"pose_restarts": 2, "pose_steps": 0, "pose_polish": 1,
                                               "pose_warm_start": True},
    "fast: warm start + 2 restarts, polish 2": {"pose_restarts": 2, "pose_steps": 0, "pose_polish": 2,
                                               "pose_warm_start": True},
}
# how every trained model is evaluated (the same for all, so only the training differs)
EVALUATION = {"method": "coarse-to-fine", "levels": (8, 4, 4), "steps": 0, "polish": 2}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(images=1000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--test-images", type=int, default=300)
    args = parse(p)
    torch.manual_seed(args.seed)
    train = load("mnist-embedded", "train", seed=args.seed, limit=args.images)
    val = load("mnist-embedded", "val", seed=args.seed, limit=100)
    test = load("mnist", "test", data_dir=args.data_dir, seed=args.seed, limit=args.test_images)
    degrees = parse_degrees("0:180:20")
    runs = {("plain", "-"): {}} | {("transform-optimized", name): {"regime": "transform-optimized", **options}
                                  for name, options in SEARCHES.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for (regime, search), options in runs.items():
            folder = Path(tmp) / f"run{len(rows)}"
            cpu = time.process_time()
            model = fit("vae", {"latent": 8}, train, val, TrainConfig(epochs=args.epochs, seed=args.seed, **options),
                        folder, progress=False)
            cpu = time.process_time() - cpu
            seconds = [h["seconds"] for h in json.loads((folder / "metrics.json").read_text())["history"]]
            sweep = rotation_sweep(model, test, degrees, align_options=EVALUATION, seed=args.seed, progress=False)
            rows.append({"regime": regime, "search": search, "epoch 1 (s)": round(seconds[0], 1),
                         "later epochs (s)": round(sum(seconds[1:]) / len(seconds[1:]), 1),
                         "CPU time per epoch (s)": round(cpu / args.epochs, 1),
                         "Table 1 average loss (aligned)": round(sweep["summary"]["average_loss"]["avae"], 2)})
    plain = rows[0]
    for row in rows:
        row["epoch 1 x plain"] = round(row["epoch 1 (s)"] / plain["epoch 1 (s)"], 2)
        row["later epochs x plain"] = round(row["later epochs (s)"] / plain["later epochs (s)"], 2)
        row["CPU time x plain"] = round(row["CPU time per epoch (s)"] / plain["CPU time per epoch (s)"], 2)
    write_results("training", rows, args.out, "Transformation-optimized training: cost of an epoch and quality",
                  {"data": train.describe(), "test_data": test.describe(), "epochs": args.epochs, "seed": args.seed,
                   "evaluation": {**EVALUATION, "degrees": degrees},
                   "note": "later epochs: the mean of epochs 2..E, where warm starts are in effect"})


if __name__ == "__main__":
    main()
