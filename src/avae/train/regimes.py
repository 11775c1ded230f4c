"""Training regimes: what each batch looks like before the gradient step.

One loop (:func:`avae.train.loop.fit`) serves them all; a regime only rewrites the batch.
"""
from __future__ import annotations

import math

import torch

from avae.errors import AvaeError
from avae.transforms import warp


class Plain:
    """Single orientation (the paper's X_sub): train on the digits as they are."""

    name = "plain"

    def prepare(self, model, x, index, epoch, generator):
        return x


class RandomRotation:
    """Random perturbations (X_full): each image turned by a fresh uniform angle in [0, 360)."""

    name = "random-rotation"

    def prepare(self, model, x, index, epoch, generator):
        angles = torch.rand(x.shape[0], 1, generator=generator) * (2 * math.pi)
        return warp(x, angles.to(x.device), "rotation")


REGIMES = {"plain": Plain, "random-rotation": RandomRotation}


def make_regime(name: str, **options):
    if name not in REGIMES:
        raise AvaeError(f"unknown training regime '{name}': expected one of {', '.join(REGIMES)}")
    return REGIMES[name](**options)
