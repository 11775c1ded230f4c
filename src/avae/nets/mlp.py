"""Dense networks on flattened images (Vivé 2017: two hidden layers of 256 ReLU units;
Cemgil et al. 2020: four layers of 200)."""
from __future__ import annotations

import math

import torch
from torch import nn


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """(N, C, S, S) -> (N, out_features)."""

    def __init__(self, channels: int, image_size: int, out_features: int, hidden=(256, 256)):
        super().__init__()
        self.net = mlp([channels * image_size**2, *hidden, out_features])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """(N, in_features) -> (N, C, S, S) pre-activation outputs."""

    def __init__(self, in_features: int, channels: int, image_size: int, hidden=(256, 256)):
        super().__init__()
        self.shape = (channels, image_size, image_size)
        self.net = mlp([in_features, *hidden, math.prod(self.shape)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)
