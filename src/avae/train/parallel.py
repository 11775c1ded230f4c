"""Train several models at once in spawned processes, each through the one loop (:func:`avae.train.loop.fit`).

The small dense nets of the Transformer VAE and Autoencoding VAE reports cannot keep two threads busy, so
on a 2-core CPU two one-thread processes train them about 1.2x as fast as one two-thread process
(benchmarks/results/parallel_training.md). Every model checkpoints as usual, so an interrupted run resumes.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from avae.train.loop import TrainConfig, fit

_WORKER: dict = {}


def _init_worker(train, val, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(train=train, val=val)


def _fit_in_worker(model_name: str, model_config: dict, config: TrainConfig, run_dir: Path, device: str) -> str:
    fit(model_name, model_config, _WORKER["train"], _WORKER["val"], config, run_dir, resume=True, progress=False,
        device=device)
    return str(run_dir)


def finished(run_dir: Path, epochs: int) -> bool:
    """Whether the run in ``run_dir`` has trained ``epochs`` epochs (its metrics.json history), so that a
    re-run skips it; False when there is no readable run yet."""
    try:
        return len(json.loads((Path(run_dir) / "metrics.json").read_text())["history"]) >= epochs
    except (OSError, ValueError, KeyError):
        return False


def fit_in_processes(runs: list[tuple[str, dict, TrainConfig, Path]], train, val, jobs: int, *, progress: bool = True,
                     device: str = "cpu") -> None:
    """Train every ``(model name, model config, train config, run folder)`` of ``runs`` on the same data,
    ``jobs`` at a time in spawned processes that share this process's torch threads, with a progress bar
    over the models. A failed model stops the run with its own error. The models stay in their folders:
    load them with :func:`avae.train.loop.fit` (``resume=True`` returns a finished run at once)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    threads = max(1, torch.get_num_threads() // jobs)
    context = multiprocessing.get_context("spawn")  # no fork: the parent's OpenMP threads would not survive it
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(train, val, threads)) as pool:
        futures = [pool.submit(_fit_in_worker, *run, device) for run in runs]
        with tqdm(total=len(futures), desc=f"models ({jobs} at a time)", unit="model", disable=not progress) as shown:
            for future in as_completed(futures):
                future.result()
                shown.update(1)


__all__ = ["fit_in_processes", "finished"]
