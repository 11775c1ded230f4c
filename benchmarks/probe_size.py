"""Does the probe's training set explain the Autoencoding VAE's clean-accuracy gap to the slides?

The conv report fits its linear probes (logistic regression, C = 1, standardised) on 10,000 training
digits; the slides do not say on how many. This fits the same probe on the encoder means of 10,000 and
of all 55,000 training digits of the conv run's trained models and scores both on the report's test
digits (1,000 ColorMNIST test digits, seed 0). ``--models`` names other trained runs instead (a folder
holding ``checkpoint.pt``: a health-run row's, ``runs/autoencoding-health/<row>``), ``--test-images 0`` scores
on all 10,000 test digits, ``--C`` adds probes of other L2 strengths (scikit-learn's C sums the loss over the
digits, so C = 5.5 on 10,000 digits weighs the penalty as C = 1 on 55,000 does: more data, or less
regularisation?), ``--name`` keeps the results apart.

    cd benchmarks && python probe_size.py --threads 1   # after the conv run has trained its VAE and AVAE
    cd benchmarks && python probe_size.py --threads 2 --test-images 0 --C 1 5.5 --name probe_size_latent128 \
        --models ../runs/autoencoding-health/se-avae-0-1-conv-nets-latent-128 \
                 ../runs/autoencoding-health/avae-sampled-conv-nets-latent-128
"""
from __future__ import annotations

import time
from dataclasses import replace
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
    p.add_argument("--C", type=float, nargs="+", default=[1.0], help="the probes' inverse L2 strengths")
    p.add_argument("--models", nargs="+", default=None, metavar="DIR",
                   help="trained runs' folders (each holding checkpoint.pt) instead of the conv run's VAE and AVAE")
    p.add_argument("--test-images", type=int, default=None, help="test digits scored (default: the conv preset's "
                   "1,000; 0: all 10,000)")
    p.add_argument("--name", default="probe_size", help="results file name (JSON and markdown) under --out")
    args = parse(p)
    preset = PRESETS["conv"]
    if args.test_images is not None:
        preset = replace(preset, test_images=args.test_images or None)
    runs = ({Path(d).name: Path(d) for d in args.models} if args.models
            else {name: model_dir(Path(args.run), name) for name in SLIDES})
    for run in runs.values():
        if not (run / checkpoint.FILENAME).is_file():
            p.error(f"{run}: no {checkpoint.FILENAME} (expected a trained run's folder)")
    train, _, test, _ = datasets(preset, args.data_dir, args.seed, "mnist")
    rows = []
    for name, run in runs.items():
        model = checkpoint.model_from_payload(checkpoint.read(run / checkpoint.FILENAME))
        mu, test_mu = encoder_means(model, train.images), encoder_means(model, test.images)
        for n in args.sizes:
            pick = torch.randperm(len(mu), generator=torch.Generator().manual_seed(args.seed))[:n]
            for C in args.C:
                start = time.perf_counter()
                head = linear_probe(mu[pick], train.labels[pick], args.seed, C=C)
                seconds = time.perf_counter() - start
                with torch.no_grad():
                    acc = mean_and_sem((head(test_mu).argmax(1) == test.labels).float() * 100)
                    fit = 100 * (head(mu[pick]).argmax(1) == train.labels[pick]).float().mean().item()
                rows.append({"model": name, "probe digits": n, "C": C, "clean digit acc. (%)": round(acc["mean"], 1),
                             "s.e.": round(acc["sem"], 1), "on its training digits (%)": round(fit, 1),
                             "slides (%)": SLIDES.get(name, "-"), "converged": head.converged,
                             "fit seconds": round(seconds, 1)})
    which = ", ".join(runs) if args.models else "conv preset's VAE and AVAE"
    write_results(args.name, rows, args.out, f"Clean digit probe against its training digits ({which}, "
                  f"{len(test.labels)} ColorMNIST test digits, seed 0)")


if __name__ == "__main__":
    main()
