"""The one training loop. Regimes (:mod:`avae.train.regimes`) only say what each batch's loss is.

Reproducible: epoch ``e`` shuffles with a generator seeded by ``(seed, e)``, and batch ``b`` of
rank ``r`` reseeds the global RNG and the regime's generator from ``(seed, e, b, r)``. So a run
resumed from any checkpoint, at an epoch boundary or at the batch where a signal stopped it,
continues exactly as the uninterrupted run would (bit-identical on the same machine, device and
thread count).

Under ``torchrun`` every rank trains on its share of each batch and the gradients are averaged
(:mod:`avae.train.distributed`); rank 0 alone writes checkpoints and metrics.

Faults: SIGINT or SIGTERM stops training at the next batch boundary, after writing a checkpoint
there (:class:`TrainingInterrupted`); a kill -9 loses at most the epoch in progress, since every
file is written atomically. A non-finite loss stops training with an error naming the epoch and
batch, or, with ``skip_nonfinite``, skips that batch and counts it in the metrics.
"""
from __future__ import annotations

import hashlib
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from avae.config import config_to_dict
from avae.errors import AvaeError
from avae.io import write_json
from avae.report.provenance import provenance
from avae.train import checkpoint, distributed
from avae.train.regimes import REGIMES, make_regime

# Training options that may change when a run is resumed.
RESUMABLE_CHANGES = ("epochs", "skip_nonfinite")
LR_SCHEDULES = ("constant", "cosine")
# "adam" (Bidart & Wong's, Cemgil et al.'s) or "adadelta" (Vivé's thesis: "every presented model can
# converge in 50 epochs" with Adadelta; its lr is the usual 1.0 scale of the Adadelta update)
OPTIMIZERS = {"adam": torch.optim.Adam, "adadelta": torch.optim.Adadelta}


def epoch_lr(config: "TrainConfig", epoch: int) -> float:
    """The learning rate of (0-based) ``epoch`` under ``config.lr_schedule``."""
    if config.lr_schedule == "cosine":
        return config.lr * (1 + math.cos(math.pi * epoch / config.epochs)) / 2
    return config.lr


@dataclass
class TrainConfig:
    """How :func:`fit` trains: epochs, batch size (per process under torchrun), optimizer and learning
    rate (with an optional cosine decay), the seed, the regime (``plain``, ``random-rotation`` or
    ``transform-optimized``, :mod:`avae.train.regimes`) with its per-batch pose search, and how many
    non-finite batches to skip. Saved with every checkpoint; a resumed run must match it."""

    epochs: int = 20
    batch_size: int = 256  # the paper's; per process under torchrun
    lr: float = 1e-3
    weight_decay: float = 5e-4
    # "constant", or "cosine": each epoch e of E runs at lr * (1 + cos(pi * e / E)) / 2, so the last
    # epochs take small steps and settle instead of hovering at the noise level of a constant rate
    lr_schedule: str = "constant"
    optimizer: str = "adam"  # see OPTIMIZERS
    seed: int = 0
    regime: str = "plain"
    # Pose search of the transform-optimized regime: the original code's training config takes 20
    # restarts and 5 Adam steps at lr 0.01 (the paper gives no numbers).
    pose_restarts: int = 20
    pose_steps: int = 5
    pose_lr: float = 0.01
    # Start each image's search from its pose of the previous epoch, next to the fresh candidates.
    pose_warm_start: bool = False
    # Rounds of derivative-free local search around each image's best pose (no backward pass).
    pose_polish: int = 0
    # Batches with a non-finite loss to skip per epoch (counted in the metrics) before stopping; 0: stop at the first.
    skip_nonfinite: int = 0

    def validate(self, where: str = "train config") -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise AvaeError(f"{where}: epochs and batch_size must be >= 1, lr > 0, weight_decay >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise AvaeError(f"{where}: field 'optimizer' must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise AvaeError(f"{where}: field 'lr_schedule' must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.regime not in REGIMES:
            raise AvaeError(f"{where}: field 'regime' must be one of {', '.join(REGIMES)}, got {self.regime!r}")
        for field, least in (("pose_restarts", 1), ("pose_steps", 0), ("pose_polish", 0)):
            if getattr(self, field) < least:
                raise AvaeError(f"{where}: field '{field}' must be >= {least}, got {getattr(self, field)}")
        if self.skip_nonfinite < 0:
            raise AvaeError(f"{where}: field 'skip_nonfinite' must be >= 0, got {self.skip_nonfinite}")


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped :func:`fit` at a batch boundary, after it saved a checkpoint there.

    A ``KeyboardInterrupt``, so code that stops on Ctrl-C still does; ``exit_code`` is the shell's
    convention for the signal (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, where: str, path: Path):
        self.signum, self.exit_code, self.path = signum, 128 + signum, path
        super().__init__(f"{signal.Signals(signum).name}: stopped {where}; checkpoint saved in {path}, "
                         f"continue with --resume")


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def _batch_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{epoch}/{batch}/{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class _StopRequests:
    """SIGINT and SIGTERM become a request to stop at the next batch boundary. A second SIGINT
    stops at once (Ctrl-C twice); SIGTERM never does, since ``torchrun`` forwards one to workers
    that may already be saving after a Ctrl-C."""

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


@torch.no_grad()
def per_image_loss(model, data, batch_size: int = 500, sample: bool = False) -> dict[str, torch.Tensor]:
    """Per-image loss terms of ``model`` on ``data`` (deterministic encoding by default), on the CPU."""
    model.eval()
    model.check_input(data.images, f"{data.name} ({data.split})")
    device = next(model.parameters()).device
    terms: dict[str, list] = {"loss": [torch.empty(0)], "nll": [torch.empty(0)], "kl": [torch.empty(0)]}
    for start in range(0, len(data), batch_size):
        out = model.loss(data.images[start : start + batch_size].to(device), sample=sample)
        for key in terms:
            terms[key].append(out[key].cpu())
    return {key: torch.cat(values) for key, values in terms.items()}


def _validation_losses(model, data, ctx: distributed.Context) -> dict[str, torch.Tensor]:
    """:func:`per_image_loss` on all of ``data``, each rank scoring its share."""
    part = per_image_loss(model, data.subset(distributed.rows_of_rank(len(data), ctx)))
    return {key: distributed.gather_rows(values, len(data), ctx) for key, values in part.items()}


def mean_and_sem(values: torch.Tensor) -> dict[str, float]:
    values = values.double()
    n = values.numel()
    sem = values.std(unbiased=True) / n**0.5 if n > 1 else torch.tensor(float("nan"))
    return {"mean": values.mean().item(), "sem": sem.item(), "n": n}


def _check_same_data(saved: dict | None, now: dict, ckpt_file: Path) -> None:
    """A run resumes only on the data it began with (the same data set, split, size and image shape; the
    folder it was read from may differ): a checkpoint of another data set would otherwise be taken for
    finished or continued on digits it never began with."""
    keys = ("data", "split", "n_images", "image_shape")
    if saved is not None and any(saved.get(k) != now.get(k) for k in keys):
        raise AvaeError(f"{ckpt_file}: trained on {', '.join(f'{k} {saved.get(k)}' for k in keys)}, not on "
                        f"{', '.join(f'{k} {now.get(k)}' for k in keys)}; choose another --out for this data")


def _check_resumable(payload: dict, model_name: str, model, config: TrainConfig, ckpt_file: Path) -> None:
    saved = payload.get("train_config", {})
    defaults = config_to_dict(TrainConfig())
    mismatch = [k for k, v in config_to_dict(config).items()
                if k not in RESUMABLE_CHANGES and saved.get(k, defaults[k]) != v]
    # a field added to the model's config since the checkpoint was written counts as its default, like the
    # training fields above (the model's load() does the same)
    saved_model = {**config_to_dict(type(model.config)()), **payload["config"]}
    if payload["model"] != model_name or saved_model != config_to_dict(model.config) or mismatch:
        raise AvaeError(
            f"{ckpt_file}: --resume with different settings (checkpoint: {payload['model']} "
            f"{payload['config']}, training {saved}); rerun with the same options"
        )


def fit(
    model_name: str,
    model_config: dict,
    train_data,
    val_data,
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    device: str = "cpu",
):
    """Train a model, checkpointing atomically each epoch into ``out``; returns it, on the CPU.

    ``resume=True`` continues from ``out/checkpoint.pt``; its model and training config must
    match (only ``epochs`` and ``skip_nonfinite`` may change). Writes ``metrics.json`` and
    ``loss_curve.png``. ``device``: ``cpu``, ``cuda`` or ``auto`` (a GPU if there is one).
    Under ``torchrun`` (``WORLD_SIZE`` > 1) trains data-parallel; rank 0 writes the files.
    """
    config.validate()
    out = Path(out)
    ckpt_file = out / checkpoint.FILENAME
    ctx = distributed.setup(device)
    torch.manual_seed(config.seed)
    model = checkpoint.build(model_name, model_config, "model")
    regime = make_regime(config, n_images=len(train_data))
    seen_shape = tuple(train_data.images.shape[1:])
    if hasattr(regime, "input_shape"):  # a regime that changes the images (recolor: grey -> RGB)
        seen_shape = regime.input_shape(seen_shape)
    model.check_input(train_data.images.new_empty((0, *seen_shape)), f"{train_data.name} ({train_data.split})")
    model.to(ctx.device)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict] = []
    starts: list[dict] = []  # where each run of this training began: epochs done and the batch inside the next
    start_epoch, position = 0, None
    if ckpt_file.exists():
        if not resume:
            raise AvaeError(f"{ckpt_file}: a run is already there; pass --resume to continue it or choose another --out")
        payload = checkpoint.read(ckpt_file)
        _check_resumable(payload, model_name, model, config, ckpt_file)
        _check_same_data(payload.get("data"), train_data.describe(), ckpt_file)
        # Into the model the optimizer already holds: a new model object would leave the
        # optimizer stepping the discarded one's parameters, and the resumed run would not learn.
        model.load_state_dict(checkpoint.model_from_payload(payload).state_dict())
        optimizer.load_state_dict(payload["optimizer"])
        history = list(payload["history"])
        starts = list(payload.get("starts", []))
        start_epoch = int(payload["epoch"])
        position = payload.get("position")
        if position is not None and position["world"] != ctx.world:
            raise AvaeError(
                f"{ckpt_file}: stopped inside epoch {position['epoch'] + 1} of a run of {position['world']} "
                f"process(es); resume it with {position['world']} (the sharding of the epoch depends on it)"
            )
        if hasattr(regime, "load_state_dict") and "regime_state" in payload:
            regime.load_state_dict(payload["regime_state"])
    starts.append({"epoch": start_epoch, "batch": position["batch"] if position else 0})
    distributed.broadcast_model(model, ctx)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.tmp"):  # left by a process killed while writing atomically
            stale.unlink(missing_ok=True)

    meta = {
        **provenance(),
        "model": model_name,
        "model_config": config_to_dict(model.config),
        "train_config": config_to_dict(config),
        "data": train_data.describe(),
        "validation_data": val_data.describe(),
        "seed": config.seed,
        "processes": ctx.world,
        "device": str(ctx.device),
    }

    def save(epochs_done: int, **extra) -> None:
        if ctx.distributed and hasattr(regime, "merge_ranks"):
            regime.merge_ranks(epoch, lambda record: distributed.merge_records(record, ctx))
        state = {"optimizer": optimizer.state_dict(), "epoch": epochs_done, "history": history, "starts": starts,
                 "train_config": config_to_dict(config), "data": train_data.describe(), **extra}
        if hasattr(regime, "state_dict"):
            state["regime_state"] = regime.state_dict()
        if ctx.is_main:
            checkpoint.save(model, ckpt_file, **state)
            write_json(out / "metrics.json", {**meta, "history": history, "starts": starts, **extra})

    images = train_data.images.to(ctx.device)
    buffers = list(model.buffers())
    with _StopRequests() as stop:
        for epoch in range(start_epoch, config.epochs):
            began = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr(config, epoch)
            order = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(_epoch_seed(config.seed, epoch)))
            mine = distributed.shard(order, ctx)
            n_batches = math.ceil(len(mine) / config.batch_size)
            first, total, seen, skipped, earlier = 0, 0.0, 0, 0, 0.0
            if position is not None:  # resuming inside this epoch
                first, earlier = position["batch"], position["seconds"]
                total, seen, skipped = position["totals"][ctx.rank]
                position = None
            bar = tqdm(range(first, n_batches), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, unit="batch",
                       disable=None if progress and ctx.is_main else True, initial=first, total=n_batches)
            for batch in bar:
                index = mine[batch * config.batch_size : (batch + 1) * config.batch_size]
                seed = _batch_seed(config.seed, epoch, batch, ctx.rank)
                torch.manual_seed(seed)
                before = [b.clone() for b in buffers]  # a discarded batch must leave no trace
                model.train()
                loss = regime.loss(model, images[index.to(ctx.device)], index, epoch, torch.Generator().manual_seed(seed))
                stopping, nonfinite = distributed.any_rank([stop.signum is not None, not torch.isfinite(loss).all()], ctx)
                if stopping or nonfinite:
                    for b, kept in zip(buffers, before):
                        b.copy_(kept)
                if stopping:
                    totals = distributed.gather_values([total, seen, skipped], ctx)
                    seconds = earlier + time.perf_counter() - began
                    save(epoch, position={"epoch": epoch, "batch": batch, "world": ctx.world, "totals": totals,
                                          "seconds": seconds})
                    distributed.barrier(ctx)
                    raise TrainingInterrupted(stop.signum or signal.SIGTERM,
                                              f"in epoch {epoch + 1}, before batch {batch + 1} of {n_batches}", out)
                if nonfinite:
                    skipped += 1
                    if skipped > config.skip_nonfinite:
                        kept = (f"the last good checkpoint is {ckpt_file} (epoch {epoch})" if ckpt_file.exists()
                                else "no checkpoint had been written yet")
                        limit = f" (more than skip_nonfinite={config.skip_nonfinite} this epoch)" if config.skip_nonfinite else ""
                        raise AvaeError(f"non-finite loss at epoch {epoch + 1}, batch {batch + 1} of {n_batches}"
                                        f"{limit}; {kept}")
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss.mean().backward()
                distributed.average_gradients(model, ctx)
                optimizer.step()
                total += loss.detach().sum().item()
                seen += len(index)
                bar.set_postfix(loss=f"{total / seen:.2f}")
            total, seen, skipped = distributed.all_sum([total, seen, skipped], ctx)
            val = _validation_losses(model, val_data, ctx)
            record = {
                "epoch": epoch + 1,
                "train_loss": total / seen if seen else float("nan"),
                "val_loss": mean_and_sem(val["loss"]),
                "val_nll": val["nll"].mean().item(),
                "val_kl": val["kl"].mean().item(),
                "skipped_batches": int(skipped),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": earlier + time.perf_counter() - began,
            }
            history.append(record)
            save(epoch + 1)
            if progress and ctx.is_main:
                tqdm.write(
                    f"epoch {epoch + 1}/{config.epochs}: train loss {record['train_loss']:.2f}, "
                    f"val loss {record['val_loss']['mean']:.2f} ± {record['val_loss']['sem']:.2f} "
                    f"({record['seconds']:.1f} s)"
                )
            if distributed.any_rank([stop.signum is not None], ctx)[0]:
                distributed.barrier(ctx)
                raise TrainingInterrupted(stop.signum or signal.SIGTERM, f"after epoch {epoch + 1}", out)
    if ctx.is_main:
        if hasattr(regime, "write_artifacts"):
            regime.write_artifacts(out, train_data)
        from avae.report.figures import loss_curve

        loss_curve(history, out / "loss_curve.png", title=f"{model_name} on {train_data.name}")
    return model.cpu().eval()
