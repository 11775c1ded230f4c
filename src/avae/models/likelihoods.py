"""Per-sample negative log-likelihoods and KL terms, shape (N,), summed over pixels / latents."""
from __future__ import annotations

import torch

# Vivé (2017) clips Bernoulli means to keep log() finite.
BERNOULLI_EPS = 1e-6


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, variance: float) -> torch.Tensor:
    """sum((x - mean)^2) / (2 variance); the constant 0.5 D log(2 pi variance) is omitted, so
    variance 0.5 gives the Affine VAE paper's summed squared error."""
    return (x - mean).pow(2).flatten(1).sum(1) / (2.0 * variance)


def bernoulli_nll(x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    p = probs.clamp(BERNOULLI_EPS, 1 - BERNOULLI_EPS)
    return -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dimensions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
