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


SHIPPED_STATE = ("epoch", "history", "train_config", "data")  # what an exported model keeps besides its weights


def export(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy a finished run to ``dest`` as a model to ship: its weights, config and training record,
    without the optimizer or regime state that only resuming needs; ``metrics.json``, the loss curve
    and the pose networks (``pose-net-*.pt`` and ``.json``) beside it are copied as they are."""
    import shutil

    run_dir, dest = Path(run_dir), Path(dest)
    payload = read(run_dir)
    model = model_from_payload(payload)
    save(model, dest / FILENAME, **{k: payload[k] for k in SHIPPED_STATE if k in payload})
    for pattern in ("metrics.json", "loss_curve.png", "pose-net-*.pt", "pose-net-*.json"):
        for file in sorted(run_dir.glob(pattern)):
            shutil.copyfile(file, dest / file.name)
    return dest


def _kinds() -> dict:
    """Everything a checkpoint can hold: the models, and networks that serve them."""
    from avae.models import MODELS
    from avae.nets.pose import PoseNet

    return {**MODELS, PoseNet.name: PoseNet}


ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of every torch.save file since torch 1.6


def read(path: str | Path) -> dict:
    """Read and validate a checkpoint's payload (not yet a model)."""
    kinds = _kinds()
    path = checkpoint_path(path)
    if not path.is_file():
        raise AvaeError(f"{path}: no checkpoint there (expected a run directory or a {FILENAME} file)")
    # torch.save writes a zip archive; anything else torch.load would read as a legacy pickle, whose
    # length fields are allocated before they are checked (a 4-byte claim in a 1 KB file: 4 GiB)
    with open(path, "rb") as f:
        if f.read(4) != ZIP_MAGIC:
            raise AvaeError(f"{path}: not a readable avae checkpoint (not the zip archive torch.save writes)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise AvaeError(f"{path}: not a readable avae checkpoint ({type(err).__name__})") from None
    # exact types first: a hostile file may hold tensors or lists where strings belong
    if not isinstance(payload, dict) or not isinstance(payload.get("format"), str) or payload["format"] != FORMAT:
        raise AvaeError(f"{path}: not an avae checkpoint (no '{FORMAT}' format marker)")
    if type(payload.get("format_version")) is not int or payload["format_version"] != FORMAT_VERSION:
        raise AvaeError(f"{path}: checkpoint format version {str(payload.get('format_version'))[:40]}, expected {FORMAT_VERSION}")
    if not isinstance(payload.get("model"), str) or payload["model"] not in kinds:
        raise AvaeError(f"{path}: unknown model '{str(payload.get('model'))[:40]}', expected one of {', '.join(kinds)}")
    payload["path"] = str(path)
    return payload


def build(name: str, config: dict, where: str):
    """A fresh model of kind ``name`` from a config dict, validated field by field."""
    kinds = _kinds()
    if name not in kinds:
        raise AvaeError(f"{where}: unknown model '{name}', expected one of {', '.join(kinds)}")
    cls = kinds[name]
    return cls(config_from_dict(cls.Config, config, f"{where} config"))


def _weights_misfit(name: str, config, state, where: str) -> str | None:
    """Why ``state`` cannot be the weights of the model ``config`` describes, or None. The model is
    built on the meta device (shapes, no memory), so a config claiming a huge model costs nothing;
    every model must therefore be constructible there (all of avae's are)."""
    try:
        with torch.device("meta"):
            skeleton = build(name, config, where)
    except AvaeError:
        raise
    except Exception as err:  # noqa: BLE001 - e.g. sizes that overflow: the config is the file's fault
        return f"its config describes no buildable model: {type(err).__name__}: {' '.join(str(err).split())[:120]}"
    if not isinstance(state, dict):
        return f"the weights are a {type(state).__name__}, not a dict of tensors"
    expected = skeleton.state_dict()
    for key, tensor in expected.items():
        if not isinstance(tensor, torch.Tensor):  # a module's extra state is checked when loaded
            continue
        if not isinstance(state.get(key), torch.Tensor):
            return f"no tensor '{key}'"
        if state[key].shape != tensor.shape:
            return f"'{key}' has shape {tuple(state[key].shape)}, the config needs {tuple(tensor.shape)}"
    unexpected = [str(k)[:40] for k in state if k not in expected]
    return f"unexpected weights {', '.join(unexpected[:3])}" if unexpected else None


def model_from_payload(payload: dict):
    where = payload["path"]
    misfit = _weights_misfit(payload["model"], payload.get("config"), payload.get("state_dict"), where)
    if misfit:
        raise AvaeError(f"{where}: weights do not fit the {payload['model']} its config describes ({misfit})")
    model = build(payload["model"], payload.get("config"), where)
    try:
        model.load_state_dict(payload.get("state_dict"))
    except (RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0]
        raise AvaeError(f"{where}: weights do not fit the {payload['model']} its config describes ({first})") from None
    return model.eval()


PYTHAE_FILES = ("model_config.json", "model.pt")  # what pythae's ``model.save(dir)`` writes (and environment.json)


def is_pythae_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder a pythae model was saved to (and not an avae run)."""
    path = Path(path)
    return path.is_dir() and not (path / FILENAME).exists() and all((path / f).is_file() for f in PYTHAE_FILES)


def model_home(path: str | Path) -> Path:
    """Where avae keeps what it makes for a model (its pose networks): an avae run's own folder, and
    for a foreign model folder (pythae's) the folder ``NAME.avae`` beside it, never the user's folder."""
    path = Path(path)
    if is_pythae_folder(path):
        return path.parent / f"{path.name}.avae"
    return checkpoint_path(path).parent


def _load_pythae(path: Path):
    try:
        from pythae.models import AutoModel
    except ImportError:
        raise AvaeError(f"{path}: a pythae model folder; reading it needs pythae: pip install 'avae[pythae]'") from None
    from avae.models.wrapped import from_pythae

    try:
        model = AutoModel.load_from_folder(str(path))
    except Exception as err:  # noqa: BLE001 - pythae fails in many ways on a damaged folder
        raise AvaeError(f"{path}: pythae could not load this model folder ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]})") from None
    return from_pythae(model.eval())


def load(path: str | Path, expect: str | None = None):
    """Rebuild a trained model from a checkpoint, in eval mode; a pythae model folder becomes a wrapped
    model (:func:`avae.models.from_pythae`, needs the ``pythae`` extra).

    ``expect`` names the model kind the caller needs; another kind is an error.
    """
    if is_pythae_folder(path):
        model = _load_pythae(Path(path))
        if expect is not None and model.name != expect:
            raise AvaeError(f"{path}: holds a pythae model, expected an avae '{expect}'")
        return model
    payload = read(path)
    if expect is not None and payload["model"] != expect:
        raise AvaeError(f"{payload['path']}: holds a '{payload['model']}' model, expected '{expect}'")
    return model_from_payload(payload)

