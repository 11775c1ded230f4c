"""The Double Transformer VAE's localization network (Vivé 2017): one dense hidden layer of 128 ReLU
units from the image to the parameters of its pose."""
from __future__ import annotations

import torch
from torch import nn


class LocalizationNet(nn.Module):
    """(N, C, S, S) -> (N, out_features). ``head`` is the last layer, for identity initialisation."""

    def __init__(self, channels: int, image_size: int, out_features: int, hidden: int = 128):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size**2, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
