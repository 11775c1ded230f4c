"""`avae reproduce transformer-vae --jobs`: the thesis's dense models trained one by one at 2 threads
against two at a time at 1 thread each, side by side in one run.

Trains the same ``--models`` (Transformer VAE report specs, ``--epochs`` each on ``--images`` full-MNIST
training digits, batch 100) both ways into temporary folders and reports the wall times (process start-up
included) and their ratio.

    python benchmarks/parallel_training.py --threads 2 --images 55000 --epochs 3
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from avae.data import load
from avae.evaluate.transformer import PRESETS, ModelSpec, train_models
from common import base_parser, parse, write_results


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vae:14", "tvae-affine:8", "tvae-tps:8", "dtvae-affine:8"])
    p.add_argument("--epochs", type=int, default=3)
    p.set_defaults(images=10000, threads=2)
    args = parse(p)
    train = load("mnist", "train", data_dir=args.data_dir, holdout="embedded", pad_to=None).take(args.images, args.seed)
    val = train.take(500, args.seed + 1)
    specs = [ModelSpec.parse(m) for m in args.models]
    preset = replace(PRESETS["standard"], epochs=args.epochs)
    rows = []
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            train_models(specs, train, val, Path(out), preset, seed=args.seed, progress=False, jobs=jobs)
            seconds = time.perf_counter() - start
        rows.append({"how": f"{jobs} at a time, {max(1, args.threads // jobs)} thread(s) each", "models": len(specs),
                     "training digits": len(train), "epochs": args.epochs, "seconds": round(seconds, 1)})
    for r in rows:
        r["vs one at a time"] = round(rows[0]["seconds"] / r["seconds"], 2)
    write_results("parallel_training", rows, args.out,
                  f"Transformer VAE models trained one by one vs two at a time ({', '.join(args.models)})")


if __name__ == "__main__":
    torch.multiprocessing.freeze_support()
    main()
