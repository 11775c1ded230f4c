"""Cost and quality of test-time alignment, per method, in units of one plain forward pass.

On N real MNIST test digits, once under uniform random rotations in [0, 360) and once under the
general affine set (rotation, shear up to 55 degrees, scale up to 50 %), for the VAE trained on
upright digits and for the transformation-optimized model (both shipped in ``avae.pretrained``,
each with its pose networks), for each method of :func:`avae.align.align`:

* mean loss at the identity pose and after alignment;
* the fraction of the paper method's loss reduction achieved, (identity - method) / (identity -
  paper), where "paper" is 30 restarts and 20 Adam steps (the identity loss is the unaligned VAE's);
* cost = alignment wall time / wall time of one plain forward pass of the same model on the same
  images, both measured in this process; and images per second.

    python benchmarks/alignment.py --images 1000 --threads 1
"""
from __future__ import annotations

import time

import torch

from avae.align import align
from avae.data import load, random_affine, rotated
from avae.models.affine_vae import AffineVAE
from avae.nets.fuse import InferenceCopy
from avae.train import checkpoint
from common import base_parser, forward_pass, parse, time_call, write_results

MODELS = {"VAE (upright)": "vae-L8", "trans-opt VAE": "vae-L8-trans-opt"}
PAPER = "paper search (30 restarts, 20 steps)"


def methods(pose: str) -> dict[str, dict]:
    """Method name -> options of avae.align.align; the paper's search comes first."""
    table = {
        PAPER: {"restarts": 30, "steps": 20},
        "search, 8 restarts, no steps": {"restarts": 8, "steps": 0},
    }
    if pose == "rotation":
        table["coarse-to-fine 8,4,4, no steps"] = {"method": "coarse-to-fine", "levels": (8, 4, 4), "steps": 0}
    table["STN alone (pose net, no search)"] = {"method": "stn", "steps": 0}
    if pose == "rotation":  # the net also sees the image turned by 90, 180, 270 degrees (four passes of it)
        table["STN alone, pooled over 4 quarter turns"] = {"method": "stn", "steps": 0, "turns": 4}
    table["amortized: identity + top-2"] = {"method": "amortized", "top_k": 2, "steps": 0}
    if pose != "rotation":  # the affine nets' lower guesses still carry gain: more of them, instead of a polish
        table["amortized: identity + top-3"] = {"method": "amortized", "top_k": 3, "steps": 0}
        table["amortized: identity + top-4"] = {"method": "amortized", "top_k": 4, "steps": 0}
    table["amortized: identity + top-2, polish 1"] = {"method": "amortized", "top_k": 2, "steps": 0, "polish": 1}
    if pose == "rotation":
        table["amortized: identity + top-2, polish 2"] = {"method": "amortized", "top_k": 2, "steps": 0, "polish": 2}
    return table


def scoring_rows(model, x, name: str) -> list[dict]:
    """Scoring one candidate pose for every image, with the model as trained and with the frozen
    inference copy alignment uses (batch norm folded, channels-last), in plain forward passes."""
    forward = time_call(lambda: forward_pass(model, x))
    pose = torch.zeros(x.shape[0], 1)
    rows = []
    for label, net in (("model as trained (eval mode)", model), ("inference copy (BN folded, channels-last)",
                                                                InferenceCopy(model))):
        wrapped = AffineVAE(net, "rotation")

        @torch.no_grad()
        def score():
            for s in range(0, x.shape[0], 256):
                wrapped.loss(x[s : s + 256], pose[s : s + 256])

        rows.append({"model": name, "scoring one candidate with": label,
                     "cost (forward passes)": round(time_call(score) / forward, 2)})
    return rows


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS.values()),
                   help="pretrained names or checkpoint paths, comma separated (each needs pose-net-POSE.pt beside it)")
    args = parse(p)
    torch.manual_seed(args.seed)
    data = load("mnist", "test", data_dir=args.data_dir, limit=args.images, seed=args.seed)
    sets = {
        "rotation U[0,360)": (rotated(data, seed=args.seed)[0], "rotation"),
        "general affine": (random_affine(data, seed=args.seed)[0], "affine"),
    }
    names = {v: k for k, v in MODELS.items()}
    rows, scoring = [], []
    for spec in args.models.split(","):
        path = checkpoint.checkpoint_path(spec if "/" in spec else checkpoint.pretrained(spec))
        model = checkpoint.load(path)
        scoring += scoring_rows(model, sets["rotation U[0,360)"][0], names.get(spec, spec))
        for set_name, (x, pose) in sets.items():
            pose_net = checkpoint.load(path.parent / f"pose-net-{pose}.pt", expect="pose-net")
            forward = time_call(lambda: forward_pass(model, x))
            paper_reduction = None
            for method, options in methods(pose).items():
                if options.get("method") in ("amortized", "stn"):
                    options = {**options, "pose_net": pose_net}
                start = time.perf_counter()
                result = align(model, x, pose, seed=args.seed, **options)
                seconds = time.perf_counter() - start
                identity = result.identity_loss.mean().item() if method == PAPER else rows[-1]["identity loss"]
                reduction = identity - result.loss.mean().item()
                paper_reduction = reduction if method == PAPER else paper_reduction
                rows.append({
                    "model": names.get(spec, spec), "perturbation": set_name, "method": method,
                    "images": len(data), "identity loss": round(identity, 2),
                    "aligned loss": round(result.loss.mean().item(), 2),
                    "± sem": round(result.loss.std().item() / len(data) ** 0.5, 2),
                    "of paper reduction": f"{100 * reduction / paper_reduction:.1f} %",
                    "cost (forward passes)": round(seconds / forward, 2),
                    "images/s": round(len(data) / seconds, 1),
                })
    write_results("alignment", rows, args.out, "Alignment cost and quality, per method",
                  {"data": data.describe(), "seed": args.seed,
                   "note": "cost = alignment wall time / one plain forward pass of the same model on the same images"})
    write_results("alignment-scoring", scoring, args.out, "Cost of scoring one candidate pose",
                  {"data": data.describe(), "seed": args.seed})


if __name__ == "__main__":
    main()
