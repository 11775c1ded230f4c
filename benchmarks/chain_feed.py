"""Why do the sampled-x~ AVAE's reconstruction chains drift? What its encoder reads along the chain.

The conv run's AVAE-sampled (x~ a draw from the decoder's likelihood, the slides' wording) meets the slides'
robustness headline but keeps class and colour of only 3.0 % of the digits after 20 iterated
reconstructions (VAE 31.7 %, AVAE with the released decoder-mean x~ 47.1 %). The hypothesis in the docs:
its encoder learned to read real digits and *noisy* decoder samples, never its decoder's smooth means,
which the report's chain feeds it. This runs the report's self-consistency measure
(`avae.evaluate.autoencoding.self_consistency`, same 1,000 coloured test digits, seed and MNISTnet) twice
per model: the encoder fed each pass's decoder mean (the report's chain) and fed a draw from the
likelihood around it (mean + sqrt(0.5) * noise, `feed="sample"`); the classes and colours are read off the
means in both. If the hypothesis holds, AVAE-sampled keeps far more digits when fed samples.

    cd benchmarks && python chain_feed.py --threads 2   # after the conv run (its models and MNISTnet)
"""
from __future__ import annotations

from pathlib import Path

from avae.evaluate.autoencoding import PRESETS, SELF_CONSISTENCY_PASSES, datasets, model_dir, self_consistency
from avae.evaluate.sample_quality import mnistnet
from avae.train import checkpoint
from common import REPO, base_parser, parse, write_results

MODELS = ("VAE", "AVAE", "AVAE-sampled")


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--run", default=str(REPO / "docs/results/autoencoding-vae/conv"), help="the conv run's output folder")
    args = parse(p)
    preset, run = PRESETS["conv"], Path(args.run)
    train, _, test, _ = datasets(preset, args.data_dir, args.seed, "mnist")
    net = mnistnet(train, run / "models" / "mnistnet.pt", epochs=preset.classifier_epochs, seed=args.seed)
    images = test.take(preset.chain_images, args.seed).images
    rows = []
    for name in MODELS:
        model = checkpoint.model_from_payload(checkpoint.read(model_dir(run, name) / checkpoint.FILENAME))
        for feed in ("mean", "sample"):
            result = self_consistency(model, images, net, passes=SELF_CONSISTENCY_PASSES, seed=args.seed, feed=feed)
            for r in result["rows"]:
                rows.append({"model": name, "encoder reads": f"decoder {feed}", "pass": r["pass"],
                             "both kept (%)": round(r["both_kept"]["accuracy"], 1),
                             "s.e.": round(r["both_kept"]["sem"], 1),
                             "class kept (%)": round(r["digit_kept"]["accuracy"], 1),
                             "colour kept (%)": round(r["color_kept"]["accuracy"], 1),
                             "code distance / spread": round(r["relative_distance"]["mean"], 3)})
    write_results("chain_feed", rows, args.out,
                  f"Self-consistency of the conv run's models with the encoder fed decoder means or likelihood "
                  f"samples ({len(images)} ColorMNIST test digits, seed {args.seed}, classes by MNISTnet, "
                  "colours read from the means)")


if __name__ == "__main__":
    main()
