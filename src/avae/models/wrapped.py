"""Bring your own VAE: any encoder/decoder pair, or a pythae model, as a model of avae's protocol.

``wrap(encoder, decoder, ...)`` gives a :class:`WrappedVAE` with ``encode``, ``decode``,
``reconstruct``, ``nll`` and per-image ``loss`` terms, so :func:`avae.align.align`,
:class:`~avae.models.affine_vae.AffineVAE`, the evaluations, the attacks and :func:`avae.embed` take
it unchanged. ``from_pythae(model)`` reads the likelihood and input shape from a pythae model's config.

pythae's ``reconstruction_loss="mse"`` is ``0.5 * sum((x - mean)^2)``: the Gaussian likelihood with
variance 1 without its constant, avae's ``gaussian_nll`` at ``variance=1.0``; ``"bce"`` is the
Bernoulli likelihood. So a wrapped pythae model's loss at the posterior mean equals pythae's own
``recon_loss + KLD`` with z at the mean (tested).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from avae.errors import AvaeError
from avae.models.likelihoods import kl_standard_normal
from avae.models.vae import LatentVariableModel

PYTHAE_LIKELIHOODS = {"mse": ("gaussian", 1.0), "bce": ("bernoulli", 1.0)}


@dataclass
class WrappedConfig:
    """What avae needs to know of a foreign VAE: the latent size, the images it takes (channels and
    square size) and its likelihood (``gaussian`` of fixed ``variance``, or ``bernoulli``)."""

    latent: int
    channels: int
    image_size: int
    likelihood: str = "gaussian"
    variance: float = 0.5
    source: str = ""  # where the networks came from, for reports (e.g. "pythae VAE")

    def validate(self, where: str = "wrap") -> None:
        if self.likelihood not in ("gaussian", "bernoulli"):
            raise AvaeError(f"{where}: likelihood must be gaussian or bernoulli, got {self.likelihood!r}")
        if self.variance <= 0 or self.latent < 1 or self.channels < 1 or self.image_size < 1:
            raise AvaeError(f"{where}: need variance > 0 and positive latent, channels and image_size")


def _posterior(out, latent: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoder's output as (mean, log-variance), each (N, latent): a pair, a pythae ``ModelOutput``
    (``embedding``, ``log_covariance``) or one tensor (N, 2 * latent) of both."""
    if isinstance(out, Mapping):
        if "embedding" not in out or "log_covariance" not in out:
            raise AvaeError(f"the encoder returned {sorted(out)}; expected 'embedding' and 'log_covariance'")
        return out["embedding"], out["log_covariance"]
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return out[0], out[1]
    if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] == 2 * latent:
        return out.chunk(2, dim=1)
    raise AvaeError("the encoder must return (mean, log-variance), a mapping with 'embedding' and "
                    f"'log_covariance', or one (N, {2 * latent}) tensor")


class WrappedVAE(LatentVariableModel):
    """A foreign encoder/decoder pair under avae's protocol. ``encoder(x)`` gives the posterior's mean
    and log-variance (see :func:`wrap`), ``decoder(z)`` the likelihood mean (a tensor, or a mapping with
    ``reconstruction``), reshaped to the images' (N, C, S, S). The networks are used as they are: avae
    never changes their weights (alignment runs on a frozen copy)."""

    name = "wrapped"

    def __init__(self, encoder: nn.Module, decoder: nn.Module, config: WrappedConfig):
        super().__init__()
        config.validate()
        self.encoder, self.decoder, self.config = encoder, decoder, config

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, S, S) -> posterior mean and log-variance, each (N, latent)."""
        return _posterior(self.encoder(x), self.config.latent)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent) -> (N, C, S, S) likelihood means."""
        out = self.decoder(z)
        if isinstance(out, Mapping):
            out = out["reconstruction"]
        c = self.config
        return out.reshape(z.shape[0], c.channels, c.image_size, c.image_size)

    def reconstruct(self, x: torch.Tensor, sample: bool = True) -> dict:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        return {"reconstruction": self.decode(z), "kl": kl_standard_normal(mu, logvar), "mu": mu, "logvar": logvar}


def wrap(encoder: nn.Module, decoder: nn.Module, *, latent: int, image_shape: tuple[int, int, int],
         likelihood: str = "gaussian", variance: float = 0.5, source: str = "") -> WrappedVAE:
    """Any pair of modules as a model of avae's protocol, in eval mode.

    ``encoder``: images (N, C, S, S) -> (mean, log-variance) of q(z|x), each (N, latent) (or a mapping
    with ``embedding`` and ``log_covariance``, or one (N, 2 latent) tensor); ``decoder``: z (N, latent)
    -> likelihood means, any shape with C * S * S values per image (or a mapping with
    ``reconstruction``). ``image_shape``: (C, S, S), square images. ``likelihood``: ``gaussian`` with
    fixed ``variance`` (the loss is summed squared error / (2 variance) + KL, without the constant) or
    ``bernoulli`` (means in (0, 1))."""
    channels, height, width = image_shape
    if height != width:
        raise AvaeError(f"image_shape {tuple(image_shape)}: avae's poses act on square images (C, S, S)")
    config = WrappedConfig(latent=latent, channels=channels, image_size=height, likelihood=likelihood,
                           variance=variance, source=source)
    return WrappedVAE(encoder, decoder, config).eval()


def from_pythae(model) -> WrappedVAE:
    """A pythae model (its ``encoder`` and ``decoder``, e.g. of a ``VAE``, ``BetaVAE`` or ``IWAE``) as a
    model of avae's protocol: the likelihood from its ``reconstruction_loss`` (``mse``: Gaussian with
    variance 1; ``bce``: Bernoulli), the latent size and image shape from its ``model_config``."""
    config = getattr(model, "model_config", None)
    loss = getattr(config, "reconstruction_loss", None)
    if loss not in PYTHAE_LIKELIHOODS:
        raise AvaeError(f"pythae model {type(model).__name__}: reconstruction_loss {loss!r}; avae reads 'mse' and 'bce'")
    input_dim = tuple(getattr(config, "input_dim", None) or ())
    if len(input_dim) != 3:
        raise AvaeError(f"pythae model {type(model).__name__}: input_dim {input_dim}; avae needs images (C, S, S)")
    likelihood, variance = PYTHAE_LIKELIHOODS[loss]
    return wrap(model.encoder, model.decoder, latent=int(config.latent_dim), image_shape=input_dim,
                likelihood=likelihood, variance=variance, source=f"pythae {type(model).__name__}")


__all__ = ["WrappedConfig", "WrappedVAE", "wrap", "from_pythae"]
