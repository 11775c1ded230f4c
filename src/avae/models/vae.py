"""The plain VAE: conv (the Affine VAE paper's) or dense nets, Gaussian or Bernoulli likelihood.

Every model in :mod:`avae.models` follows the same small protocol, which is all that training,
alignment and evaluation rely on:

* ``reconstruct(x, sample) -> dict`` with ``reconstruction`` (the likelihood's mean, shaped like
  ``x``) and ``kl`` (N,); ``sample=False`` encodes deterministically (the posterior mean);
* ``nll(x, reconstruction) -> (N,)``;
* ``loss(x, sample) -> dict`` of per-sample terms ``loss = nll + kl`` (never pre-reduced).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from avae.errors import AvaeError
from avae.models.likelihoods import bernoulli_nll, gaussian_nll, kl_standard_normal
from avae.nets import DECODERS, ENCODERS


@dataclass
class VAEConfig:
    """Fields of :class:`VAE`: latent size, image channels and size (square), the nets (``conv``: the
    Affine VAE paper's; ``mlp``: dense), the likelihood (``gaussian`` of fixed ``variance``: 0.5 gives the
    paper's summed squared error; or ``bernoulli``) and the decoder's output (``sigmoid`` for [0, 1]
    pixels, ``linear`` for normalised ones)."""

    latent: int = 8
    channels: int = 1
    image_size: int = 40
    net: str = "conv"  # "conv" (the paper's) or "mlp"
    likelihood: str = "gaussian"  # "gaussian" (fixed variance) or "bernoulli"
    variance: float = 0.5  # 0.5 reproduces the paper's summed squared error
    output: str = "sigmoid"  # "sigmoid" for [0, 1] pixels, "linear" for normalised pixels

    def validate(self, where: str = "config") -> None:
        choices = {"net": ENCODERS, "likelihood": ("gaussian", "bernoulli"), "output": ("sigmoid", "linear")}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise AvaeError(f"{where}: field '{field}' must be one of {', '.join(allowed)}, got {getattr(self, field)!r}")
        if self.latent < 1 or self.channels < 1:
            raise AvaeError(f"{where}: 'latent' and 'channels' must be positive")
        if self.net == "conv" and (self.image_size < 4 or self.image_size % 4):
            raise AvaeError(f"{where}: the conv net needs 'image_size' divisible by 4, got {self.image_size}")
        if self.variance <= 0:
            raise AvaeError(f"{where}: 'variance' must be positive, got {self.variance}")
        if self.likelihood == "bernoulli" and self.output != "sigmoid":
            raise AvaeError(f"{where}: a bernoulli likelihood needs output 'sigmoid'")


class LatentVariableModel(nn.Module):
    """Shared plumbing: input checks and ``loss`` from ``reconstruct`` + ``nll``."""

    name = "model"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c = self.config
        return (c.channels, c.image_size, c.image_size)

    def check_input(self, x: torch.Tensor, where: str = "images") -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise AvaeError(
                f"{where}: images of shape {tuple(x.shape[1:])} (C, H, W), but this {self.name} "
                f"checkpoint expects {self.input_shape}"
            )

    def nll(self, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        if self.config.likelihood == "bernoulli":
            return bernoulli_nll(x, reconstruction)
        return gaussian_nll(x, reconstruction, self.config.variance)

    def log_likelihood(self, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """log p(x | latents) per image (N,), normalised: ``-nll``, less for a Gaussian the constant
        0.5 D log(2 pi variance) that :meth:`nll` omits (D pixels per image)."""
        out = -self.nll(x, reconstruction)
        if self.config.likelihood == "gaussian":
            out = out - 0.5 * x[0].numel() * math.log(2 * math.pi * self.config.variance)
        return out

    def loss(self, x: torch.Tensor, sample: bool = True) -> dict:
        out = self.reconstruct(x, sample=sample)
        nll = self.nll(x, out["reconstruction"])
        return {**out, "nll": nll, "loss": nll + out["kl"]}


class VAE(LatentVariableModel):
    """The plain VAE: images (N, C, S, S) -> q(z|x) = N(mu, diag(exp(logvar))), z (N, latent) ->
    likelihood means (N, C, S, S). ``loss(x)`` gives per-image terms (N,): ``nll``, ``kl`` and ``loss``
    = nll + kl, with z sampled (training) or at the posterior mean (``sample=False``)."""

    name = "vae"
    Config = VAEConfig

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        c = self.config
        self.encoder = ENCODERS[c.net](c.channels, c.image_size, 2 * c.latent)
        self.decoder = DECODERS[c.net](c.latent, c.channels, c.image_size)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, S, S) -> posterior mean and log-variance, each (N, latent)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent) -> (N, C, S, S) likelihood means."""
        out = self.decoder(z)
        return torch.sigmoid(out) if self.config.output == "sigmoid" else out

    def reconstruct(self, x: torch.Tensor, sample: bool = True) -> dict:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        return {"reconstruction": self.decode(z), "kl": kl_standard_normal(mu, logvar), "mu": mu, "logvar": logvar}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.config.latent, generator=generator)
        return self.decode(z.to(next(self.parameters()).device))
