"""The Affine VAE paper's convolutional encoder and decoder (Bidart & Wong 2019, appendix A.2,
after Schott et al. 2018).

Encoder: conv 32 (5x5) -> 32 (4x4, stride 2) -> 64 (3x3, stride 2) -> 16 (5x5), ELU and batch
norm after the first three, then a linear layer to the posterior mean and log-variance.
Decoder: linear -> transposed conv 32 (5x5) -> 16 (4x4, stride 2) -> 16 (4x4, stride 2) -> C (5x5),
ELU and batch norm after the first three. Paddings keep any image size divisible by 4. Each net's
``width`` scales its channel counts (1: the Affine VAE paper's), for a decoder smaller than the encoder
or an encoder larger than the decoder.
"""
from __future__ import annotations

import torch
from torch import nn


def _block(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ELU())


class ConvEncoder(nn.Module):
    """(N, C, S, S) -> (N, out_features); every channel count times ``width``."""

    def __init__(self, channels: int, image_size: int, out_features: int, width: float = 1.0):
        super().__init__()
        c32, c64, last = (max(1, round(n * width)) for n in (32, 64, 16))
        self.body = nn.Sequential(
            _block(nn.Conv2d(channels, c32, 5, padding=2), c32),
            _block(nn.Conv2d(c32, c32, 4, stride=2, padding=1), c32),
            _block(nn.Conv2d(c32, c64, 3, stride=2, padding=1), c64),
            nn.Conv2d(c64, last, 5, padding=2),
            nn.Flatten(),
        )
        self.head = nn.Linear(last * (image_size // 4) ** 2, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ConvDecoder(nn.Module):
    """(N, in_features) -> (N, C, S, S) pre-activation outputs; every channel count times ``width``."""

    def __init__(self, in_features: int, channels: int, image_size: int, width: float = 1.0):
        super().__init__()
        self.side = image_size // 4
        self.first, c32, c16 = (max(1, round(n * width)) for n in (16, 32, 16))
        self.head = nn.Linear(in_features, self.first * self.side**2)
        self.body = nn.Sequential(
            _block(nn.ConvTranspose2d(self.first, c32, 5, padding=2), c32),
            _block(nn.ConvTranspose2d(c32, c16, 4, stride=2, padding=1), c16),
            _block(nn.ConvTranspose2d(c16, c16, 4, stride=2, padding=1), c16),
            nn.ConvTranspose2d(c16, channels, 5, padding=2),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.head(z).view(-1, self.first, self.side, self.side))
