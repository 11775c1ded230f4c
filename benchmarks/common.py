"""Shared plumbing for benchmark scripts: data, timing, and writing JSON + a markdown table."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from avae.io import write_json, write_text
from avae.report.provenance import provenance
from avae.report.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def default_data_dir() -> str:
    return os.environ.get("AVAE_DATA_DIR") or str(REPO.parent / "shared" / "data" / "mnist")


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", default=default_data_dir(), help="MNIST IDX dir holding the test set")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return p


def parse(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, then apply --threads (recorded in the results' machine section)."""
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def time_call(fn, repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def forward_pass(model, x: torch.Tensor, batch_size: int = 256) -> None:
    """The unit of cost: one plain forward pass (deterministic loss) of the model on ``x``."""
    for s in range(0, x.shape[0], batch_size):
        model.loss(x[s : s + batch_size], sample=False)


def write_results(name: str, rows: list[dict], out: str, header: str, extra: dict | None = None) -> None:
    meta = provenance(["python", *sys.argv])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", {**meta, **(extra or {}), "rows": rows})
    m = meta["machine"]
    write_text(out / f"{name}.md", "\n".join([
        f"# {header}\n",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; torch {meta['versions']['torch']}; {m['threads']} threads; CPU: {m['cpu']}\n",
        markdown_table(rows),
    ]))
    print(markdown_table(rows))
