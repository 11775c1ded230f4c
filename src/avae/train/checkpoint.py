"""Checkpoints: state dicts plus the JSON config, never pickled modules, written atomically.

A checkpoint is one file, ``checkpoint.pt`` in a run directory, read with
``torch.load(weights_only=True)``. ``config.json`` beside it repeats the model config for people.
"""
from __future__ import annotations

from pathlib import Path

import torch

from avae.config import config_from_dict, config_to_dict
from avae.errors import AvaeError
from avae.io import atomic_path, write_json

FORMAT = "avae-checkpoint"
FORMAT_VERSION = 1
FILENAME = "checkpoint.pt"
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def pretrained(name: str = "vae-L8") -> Path:
    """Run directory of a model that ships with avae (see ``avae/pretrained/README.md``)."""
    path = PRETRAINED_DIR / name
    if not (path / FILENAME).is_file():
        shipped = sorted(p.name for p in PRETRAINED_DIR.glob("*") if (p / FILENAME).is_file())
        raise AvaeError(f"no pretrained model '{name}' in {PRETRAINED_DIR}; shipped: {', '.join(shipped) or 'none'}")
    return path


def checkpoint_path(path: str | Path) -> Path:
    """Accept a run directory, ``.../checkpoint`` or the file itself."""
    path = Path(path)
    if path.is_dir():
        return path / FILENAME
    if not path.exists() and path.with_suffix(".pt").exists():
        return path.with_suffix(".pt")
    return path


def save(model, path: str | Path, **state) -> Path:
    """Write ``model`` (name, config, weights) plus any extra training ``state`` atomically."""
    path = checkpoint_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "config": config_to_dict(model.config),
        "state_dict": model.state_dict(),
        **state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    if path.name == FILENAME:  # a run's main model; networks saved beside it keep their config inside
        write_json(path.parent / "config.json", {"model": model.name, "config": payload["config"]})
    return path


def _kinds() -> dict:
    """Everything a checkpoint can hold: the models, and networks that serve them."""
    from avae.models import MODELS
    from avae.nets.pose import PoseNet

    return {**MODELS, PoseNet.name: PoseNet}


def read(path: str | Path) -> dict:
    """Read and validate a checkpoint's payload (not yet a model)."""
    kinds = _kinds()
    path = checkpoint_path(path)
    if not path.is_file():
        raise AvaeError(f"{path}: no checkpoint there (expected a run directory or a {FILENAME} file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise AvaeError(f"{path}: not a readable avae checkpoint ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AvaeError(f"{path}: not an avae checkpoint (no '{FORMAT}' format marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise AvaeError(f"{path}: checkpoint format version {payload.get('format_version')}, expected {FORMAT_VERSION}")
    if payload.get("model") not in kinds:
        raise AvaeError(f"{path}: unknown model '{payload.get('model')}', expected one of {', '.join(kinds)}")
    payload["path"] = str(path)
    return payload


def build(name: str, config: dict, where: str):
    """A fresh model of kind ``name`` from a config dict, validated field by field."""
    kinds = _kinds()
    if name not in kinds:
        raise AvaeError(f"{where}: unknown model '{name}', expected one of {', '.join(kinds)}")
    cls = kinds[name]
    return cls(config_from_dict(cls.Config, config, f"{where} config"))


def model_from_payload(payload: dict):
    where = payload["path"]
    model = build(payload["model"], payload["config"], where)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0]
        raise AvaeError(f"{where}: weights do not fit the {payload['model']} its config describes ({first})") from None
    return model.eval()


def load(path: str | Path, expect: str | None = None):
    """Rebuild a trained model from a checkpoint, in eval mode.

    ``expect`` names the model kind the caller needs; another kind is an error.
    """
    payload = read(path)
    if expect is not None and payload["model"] != expect:
        raise AvaeError(f"{payload['path']}: holds a '{payload['model']}' model, expected '{expect}'")
    return model_from_payload(payload)

