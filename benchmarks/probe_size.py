"""Does the probe's training set explain the Autoencoding VAE's clean-accuracy gap to the slides?

The conv report fits its linear probes (logistic regression, C = 1, standardised) on 10,000 training
digits; the slides do not say on how many. This fits the same probe on the encoder means of 10,000 and
of all 55,000 training digits of the conv run's trained models and scores both on the report's test
digits (1,000 ColorMNIST test digits, seed 0).

    cd benchmarks && python probe_size.py --threads 1   # after the conv run has trained its VAE and AVAE
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from avae.evaluate.autoencoding import PRESETS, datasets, encoder_means, linear_probe, model_dir
from avae.train import checkpoint
from avae.train.loop import mean_and_sem
from common import REPO, base_parser, parse, write_results

SLIDES = {"VAE": 93.8, "AVAE": 97.3}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--run", default=str(REPO / "docs/results/autoencoding-vae/conv"), help="the conv run's output folder")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 55_000])
    args = parse(p)
    preset = PRESETS["conv"]
    train, _, test, _ = datasets(preset, args.data_dir, args.seed, "mnist")
    rows = []
    for name in SLIDES:
        model = checkpoint.model_from_payload(checkpoint.read(model_dir(Path(args.run), name) / checkpoint.FILENAME))
        mu, test_mu = encoder_means(model, train.images), encoder_means(model, test.images)
        for n in args.sizes:
            pick = torch.randperm(len(mu), generator=torch.Generator().manual_seed(args.seed))[:n]
            start = time.perf_counter()
            head = linear_probe(mu[pick], train.labels[pick], args.seed)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                acc = mean_and_sem((head(test_mu).argmax(1) == test.labels).float() * 100)
            rows.append({"model": name, "probe digits": n, "clean digit acc. (%)": round(acc["mean"], 1),
                         "s.e.": round(acc["sem"], 1), "slides (%)": SLIDES[name],
                         "converged": head.converged, "fit seconds": round(seconds, 1)})
    write_results("probe_size", rows, args.out,
                  f"Clean digit probe against its training digits (conv preset's VAE and AVAE, {len(test.labels)} "
                  "ColorMNIST test digits, seed 0)")


if __name__ == "__main__":
    main()
