"""Typed dataclass configs, saved as JSON beside the weights and checked field by field on load."""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from avae.errors import AvaeError

T = TypeVar("T")


def config_from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build ``cls`` from a dict, rejecting unknown fields and values of the wrong type.

    ``where`` names the file or field the dict came from, for the error message.
    """
    if not isinstance(data, dict):
        raise AvaeError(f"{where}: expected a JSON object of {cls.__name__} fields, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise AvaeError(
            f"{where}: unknown {cls.__name__} field(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(fields)}"
        )
    defaults = cls()
    for key, value in data.items():
        expected = type(getattr(defaults, key))
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
        if isinstance(value, bool) and expected is not bool:
            ok = False
        if expected in (tuple, list):
            ok = isinstance(value, (list, tuple))
        if not ok:
            raise AvaeError(f"{where}: field '{key}' must be {expected.__name__}, got {value!r}")
    config = cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})
    check = getattr(config, "validate", None)
    if check is not None:
        check(where)
    return config


def config_to_dict(config) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
