"""Epoch time of the paper's VAE with 1 and 2 CPU processes on the same data and the same global
batch, measured in one run: 1 process x 1 thread, 1 process x 2 threads, 2 processes
(torchrun, gloo) x 1 thread each with half the batch each.

    python benchmarks/distributed.py --images 2000
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(args) -> None:
    """One training run (under torchrun: one rank of it)."""
    import torch

    from avae.data import load
    from avae.train import TrainConfig, fit

    torch.set_num_threads(args.threads)
    train = load("mnist-embedded", "train", seed=args.seed, limit=args.images)
    val = load("mnist-embedded", "val", seed=args.seed, limit=200)
    fit("vae", {"latent": 8}, train, val, TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed),
        args.rundir, progress=False, device="cpu")


def main() -> None:
    sys.path.insert(0, str(HERE.parent))
    from common import base_parser, write_results

    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(images=2000)
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is timed")
    p.add_argument("--batch", type=int, default=256, help="global batch (2 processes take half each)")
    p.add_argument("--worker", action="store_true", help=argparse_hidden())
    p.set_defaults(threads=1)  # workers get theirs on the command line
    p.add_argument("--batch-size", type=int, default=256, help=argparse_hidden())
    p.add_argument("--rundir", default=None, help=argparse_hidden())
    args = p.parse_args()
    if args.worker:
        return worker(args)

    setups = [("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread (gloo)", 2, 1)]
    rows, root = [], Path(tempfile.mkdtemp(prefix="avae-ddp-bench-"))
    load_before = os.getloadavg()[0]
    try:
        for name, processes, threads in setups:
            run = root / name.split(" (")[0].replace(" ", "_")
            command = [str(HERE), "--worker", "--threads", str(threads), "--images", str(args.images),
                       "--epochs", str(args.epochs), "--seed", str(args.seed), "--rundir", str(run),
                       "--batch-size", str(args.batch // processes)]
            if processes > 1:
                command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", *command]
            else:
                command = [sys.executable, *command]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            cpu_before = _children_cpu_seconds()
            subprocess.run(command, check=True, env=env)
            cpu = _children_cpu_seconds() - cpu_before
            history = json.loads((run / "metrics.json").read_text())["history"]
            rows.append({"setup": name, "processes": processes, "threads each": threads,
                         "batch each": args.batch // processes, "epoch (s)": round(history[-1]["seconds"], 2),
                         "val loss": round(history[-1]["val_loss"]["mean"], 2),
                         "CPU s, whole run": round(cpu, 1), "load average (1 min)": round(os.getloadavg()[0], 1)})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = rows[0]["epoch (s)"]
    for row in rows:
        row["speed-up vs 1x1"] = round(base / row["epoch (s)"], 2)
    write_results("distributed", rows, args.out, "Epoch time with 1 and 2 CPU processes", {
        "data": f"mnist-embedded train, {args.images} digits (seed {args.seed}); 200 validation digits",
        "model": "vae, conv net (paper), latent 8, plain regime",
        "global_batch": args.batch, "timed_epoch": args.epochs, "seed": args.seed,
        "load_average_before": load_before, "note": NOTE,
    })
    _append_note(Path(args.out) / "distributed.md")


NOTE = ("Epoch seconds include validation (timed epoch: the last). 'CPU s, whole run' is the CPU time of all the "
        "run's processes, start-up and every epoch included: the total work. On a machine shared with other jobs "
        "(a 1-minute load average above its cores) the scheduler gives each runnable process its share, so two "
        "processes get more of the CPU than one and the wall-time speed-up can exceed the number of processes; "
        "compare wall times only at a load average below the core count, and the CPU column at any load.")


def _append_note(md: Path) -> None:
    from avae.io import write_text

    write_text(md, md.read_text().rstrip("\n") + "\n\n" + NOTE + "\n")


def _children_cpu_seconds() -> float:
    """User + system CPU time of finished child processes (all ranks, start-up and both epochs included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
