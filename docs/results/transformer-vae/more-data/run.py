"""Do the TVAEs lose to the VAE because 4,500 training digits are too few? (issue 6; README.md beside this file)

A diagnostic, not a protocol: with no other MNIST training digits reachable here, it adds the first
5,000 digits of the MNIST **test** set to the 4,500 `mnist-embedded` training digits and evaluates on
the last 5,000 test digits only. The MNIST test set's first half comes from NIST SD-3 (Census Bureau
employees), its second half from SD-1 (high-school students), so no writer of an evaluated digit wrote
a training digit. ``--data embedded`` trains on the 4,500 digits alone and evaluates on the same 5,000
digits, for the comparison (copy the standard run's models into ``--out/models`` to reuse them).

Each model KIND:Z[:PRIOR] is trained ``--replicates`` times exactly as the transformer `standard`
preset trains it (avae.evaluate.transformer: nets, batch, lr, 80 epochs; seeds 0, 1, ...), in
``--out/models`` (reused when run again); one JSON line per model goes to ``--results``.

    python docs/results/transformer-vae/more-data/run.py --data embedded+sd3 --out /tmp/more-data vae:14 tvae-affine:8
    python docs/results/transformer-vae/more-data/run.py --table    # the README's comparison table
"""
import argparse
import json
from pathlib import Path

import torch

from avae.data import MNIST_TEST_SD3, borrow_test_writers
from avae.evaluate.transformer import (PRESETS, ModelSpec, preset_data, replicated_reconstruction_rows,
                                       train_models)
from avae.report.transformer import error_difference


def table(results: str) -> str:
    """Markdown: each model against the VAE of the same data and total, by Fig. 5's rule (better only
    beyond 2 s.e. and in every run; the s.e. combines the two models' s.e. over digits)."""
    rows = [json.loads(line) for line in open(results)]
    vae = {(r["data"], r["total latent"]): r for r in rows if r["model"].startswith("vae-")}
    lines = ["| total latent | training digits | model | its error | VAE's error | difference | difference in each run "
             "| better than the VAE? |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["total latent"], r["training digits"])):
        other = vae.get((r["data"], r["total latent"]))
        if r["model"].startswith("vae-") or other is None:
            continue
        d = error_difference({**r, "nll replicates": r["nll per run"]}, {**other, "nll replicates": other["nll per run"]},
                        "VAE's error", "better than the VAE?")
        lines.append(f"| {r['total latent']} | {r['training digits']:,} | {r['model']} | " + " | ".join(d.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*")
    p.add_argument("--data", choices=["embedded", "embedded+sd3"])
    p.add_argument("--table", action="store_true", help="print the comparison table of --results and stop")
    p.add_argument("--replicates", type=int, default=3)
    p.add_argument("--out")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--results", default=str(Path(__file__).with_name("runs.jsonl")))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.table:
        print(table(args.results))
        return
    if not args.models or not args.data or not args.out:
        p.error("give --data, --out and at least one model (or --table)")
    torch.set_num_threads(args.threads)
    preset = PRESETS["standard"]
    train, val, test = preset_data(preset, args.data_dir)
    enlarged, held_out = borrow_test_writers(train, test)
    if args.data == "embedded+sd3":
        train = enlarged
    specs = [ModelSpec.parse(text, k) for text in args.models for k in range(args.replicates)]
    models = train_models(specs, train, val, Path(args.out), preset, progress=False)
    with open(args.results, "a") as f:
        for row in replicated_reconstruction_rows(models, held_out):
            line = {"data": args.data, "training digits": len(train), "model": row["name"],
                    "total latent": row["total latent"], "nll": round(row["nll"], 2), "nll sem": round(row["nll sem"], 2),
                    "nll per run": [round(v, 2) for v in row["nll replicates"]], "test digits": row["n"],
                    "evaluated on": f"MNIST test digits {MNIST_TEST_SD3}-{len(test) - 1} (SD-1 writers)"}
            f.write(json.dumps(line) + "\n")
            print(json.dumps(line))


if __name__ == "__main__":
    main()
