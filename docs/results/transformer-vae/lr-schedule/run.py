"""Does a decaying learning rate change the Fig. 5 comparison? (issue 6; README.md beside this file)

Trains the named models exactly as the transformer `standard` preset does (avae.evaluate.transformer:
same data, split, seed, nets, batch, lr, epochs) except for ``--lr-schedule``, in ``--out/models``
(reused when run again), and appends one JSON line per model to ``--results``: reconstruction error
(Bernoulli nll, posterior-mean latents) on all 10,000 MNIST test digits, mean and standard error.

    python docs/results/transformer-vae/lr-schedule/run.py --lr-schedule cosine --out /tmp/lr-cosine \
        vae:14 tvae-affine:8 vae:20 tvae-affine:14 vae:26 tvae-affine:20

A model is KIND:Z[:PRIOR] with KIND from avae.evaluate.transformer.KINDS.
"""
import argparse
import dataclasses
import json
from pathlib import Path

import torch

from avae.evaluate.transformer import PRESETS, ModelSpec, preset_data, reconstruction_rows, train_models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="cosine")
    p.add_argument("--epochs", type=int, default=PRESETS["standard"].epochs)
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--results", default=str(Path(__file__).with_name("runs.jsonl")))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    preset = dataclasses.replace(PRESETS["standard"], lr_schedule=args.lr_schedule, epochs=args.epochs)
    train, val, test = preset_data(preset, args.data_dir)
    specs = [ModelSpec.parse(text) for text in args.models]
    models = train_models(specs, train, val, Path(args.out), preset, progress=False)
    with open(args.results, "a") as f:
        for row in reconstruction_rows(models, test):
            line = {"lr_schedule": args.lr_schedule, "epochs": args.epochs, "model": row["name"],
                    "total latent": row["total latent"], "nll": round(row["nll"], 2), "nll sem": round(row["nll sem"], 2),
                    "test digits": row["n"]}
            f.write(json.dumps(line) + "\n")
            print(json.dumps(line))


if __name__ == "__main__":
    main()
