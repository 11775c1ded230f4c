"""The one training loop. Regimes (:mod:`avae.train.regimes`) only say what each batch's loss is.

Reproducible: epoch ``e`` shuffles with a generator seeded by ``(seed, e)`` and reseeds the
global RNG the same way, so a run resumed from the checkpoint of epoch ``e`` continues exactly
as the uninterrupted run would (bit-identical on the same machine and thread count).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from avae.config import config_to_dict
from avae.errors import AvaeError
from avae.io import write_json
from avae.report.provenance import provenance
from avae.train import checkpoint
from avae.train.regimes import REGIMES, make_regime


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256  # the paper's
    lr: float = 1e-3
    weight_decay: float = 5e-4
    seed: int = 0
    regime: str = "plain"
    # Pose search of the transform-optimized regime (paper: 20 restarts, 10 Adam steps at lr 0.01).
    pose_restarts: int = 20
    pose_steps: int = 10
    pose_lr: float = 0.01
    # Start each image's search from its pose of the previous epoch, next to the fresh candidates.
    pose_warm_start: bool = False

    def validate(self, where: str = "train config") -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise AvaeError(f"{where}: epochs and batch_size must be >= 1, lr > 0, weight_decay >= 0")
        if self.regime not in REGIMES:
            raise AvaeError(f"{where}: field 'regime' must be one of {', '.join(REGIMES)}, got {self.regime!r}")


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


@torch.no_grad()
def per_image_loss(model, data, batch_size: int = 500, sample: bool = False) -> dict[str, torch.Tensor]:
    """Per-image loss terms of ``model`` on ``data`` (deterministic encoding by default)."""
    model.eval()
    model.check_input(data.images, f"{data.name} ({data.split})")
    terms: dict[str, list] = {"loss": [], "nll": [], "kl": []}
    for start in range(0, len(data), batch_size):
        out = model.loss(data.images[start : start + batch_size], sample=sample)
        for key in terms:
            terms[key].append(out[key])
    return {key: torch.cat(values) for key, values in terms.items()}


def mean_and_sem(values: torch.Tensor) -> dict[str, float]:
    values = values.double()
    n = values.numel()
    sem = values.std(unbiased=True) / n**0.5 if n > 1 else torch.tensor(float("nan"))
    return {"mean": values.mean().item(), "sem": sem.item(), "n": n}


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
):
    """Train a model, checkpointing atomically each epoch into ``out``; returns the model.

    ``resume=True`` continues from ``out/checkpoint.pt``; its model and training config must
    match (only ``epochs`` may grow). Writes ``metrics.json`` and ``loss_curve.png``.
    """
    out = Path(out)
    ckpt_file = out / checkpoint.FILENAME
    torch.manual_seed(config.seed)
    model = checkpoint.build(model_name, model_config, "model")
    model.check_input(train_data.images, f"{train_data.name} ({train_data.split})")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    regime = make_regime(config, n_images=len(train_data))
    history: list[dict] = []
    start_epoch = 0
    if ckpt_file.exists():
        if not resume:
            raise AvaeError(f"{ckpt_file}: a run is already there; pass --resume to continue it or choose another --out")
        payload = checkpoint.read(ckpt_file)
        saved = payload.get("train_config", {})
        mismatch = [k for k, v in config_to_dict(config).items() if k != "epochs" and saved.get(k) != v]
        if payload["model"] != model_name or payload["config"] != config_to_dict(model.config) or mismatch:
            raise AvaeError(
                f"{ckpt_file}: --resume with different settings (checkpoint: {payload['model']} "
                f"{payload['config']}, training {saved}); rerun with the same options"
            )
        # Into the model the optimizer already holds: a new model object would leave the
        # optimizer stepping the discarded one's parameters, and the resumed run would not learn.
        model.load_state_dict(checkpoint.model_from_payload(payload).state_dict())
        optimizer.load_state_dict(payload["optimizer"])
        history = list(payload["history"])
        start_epoch = int(payload["epoch"])
        if hasattr(regime, "load_state_dict") and "regime_state" in payload:
            regime.load_state_dict(payload["regime_state"])
    out.mkdir(parents=True, exist_ok=True)

    meta = {
        **provenance(),
        "model": model_name,
        "model_config": config_to_dict(model.config),
        "train_config": config_to_dict(config),
        "data": train_data.describe(),
        "validation_data": val_data.describe(),
        "seed": config.seed,
    }
    n = len(train_data)
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        generator = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
        torch.manual_seed(_epoch_seed(config.seed, epoch))
        order = torch.randperm(n, generator=generator)
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(range(0, n, config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=None if progress else True, leave=False, unit="batch")
        for start in bar:
            index = order[start : start + config.batch_size]
            model.train()
            loss = regime.loss(model, train_data.images[index], index, epoch, generator)
            if not torch.isfinite(loss).all():
                raise AvaeError(
                    f"non-finite loss at epoch {epoch + 1}, batch starting at {start}; "
                    f"the last good checkpoint is {ckpt_file}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.mean().backward()
            optimizer.step()
            total += loss.detach().sum().item()
            seen += len(index)
            bar.set_postfix(loss=f"{total / seen:.2f}")
        val = per_image_loss(model, val_data)
        record = {
            "epoch": epoch + 1,
            "train_loss": total / seen,
            "val_loss": mean_and_sem(val["loss"]),
            "val_nll": val["nll"].mean().item(),
            "val_kl": val["kl"].mean().item(),
            "seconds": time.perf_counter() - began,
        }
        history.append(record)
        state = {"optimizer": optimizer.state_dict(), "epoch": epoch + 1, "history": history,
                 "train_config": config_to_dict(config), "data": train_data.describe()}
        if hasattr(regime, "state_dict"):
            state["regime_state"] = regime.state_dict()
        checkpoint.save(model, ckpt_file, **state)
        write_json(out / "metrics.json", {**meta, "history": history})
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}/{config.epochs}: train loss {record['train_loss']:.2f}, "
                f"val loss {record['val_loss']['mean']:.2f} ± {record['val_loss']['sem']:.2f} "
                f"({record['seconds']:.1f} s)"
            )
    if hasattr(regime, "write_artifacts"):
        regime.write_artifacts(out, train_data)
    from avae.report.figures import loss_curve

    loss_curve(history, out / "loss_curve.png", title=f"{model_name} on {train_data.name}")
    return model.eval()
