"""Distances and entropies of diagonal Gaussians (posteriors q(z|x) = N(mu, diag e^logvar)), each per
row (N,): shared by the smooth encoder (:mod:`avae.models.autoencoding_vae`) and the representation attack
(:mod:`avae.attacks`)."""
from __future__ import annotations

import math

import torch


def gaussian_entropy(logvar: torch.Tensor) -> torch.Tensor:
    """Entropy of N(., diag e^logvar), summed over dimensions: (N,)."""
    return 0.5 * (1.0 + math.log(2 * math.pi) + logvar).sum(1)


def w2_squared(mu_a, logvar_a, mu_b, logvar_b) -> torch.Tensor:
    """Squared 2-Wasserstein distance between diagonal Gaussians, (N,)."""
    return (mu_a - mu_b).pow(2).sum(1) + ((0.5 * logvar_a).exp() - (0.5 * logvar_b).exp()).pow(2).sum(1)


def entropic_w2(mu_a, logvar_a, mu_b, logvar_b, gamma: float) -> torch.Tensor:
    """Entropy-regularised optimal transport between diagonal Gaussians, (N,):

        OT_gamma(a, b) = min over couplings pi of a and b of  E_pi |z_a - z_b|^2 + gamma KL(pi | a x b)

    in closed form (Janati, Muzellec, Peyre & Cuturi 2020, Theorem 1, with 2 sigma^2 = gamma; Mallasto,
    Gerolin & Minh 2021), per dimension with variances A, B and D = sqrt(4 A B + gamma^2 / 4):

        (m_a - m_b)^2 + A + B - D + gamma/2 (1 - log gamma) + gamma/2 log(D + gamma/2).

    It is what Sinkhorn's algorithm computes on samples, tends to :func:`w2_squared` as gamma -> 0 and
    to E|z_a - z_b|^2 under the independent coupling as gamma -> infinity. gamma > 0.
    """
    if gamma <= 0:
        raise ValueError(f"entropic_w2: gamma must be positive, got {gamma}")
    var_a, var_b = logvar_a.exp(), logvar_b.exp()
    half = 0.5 * gamma
    d = torch.sqrt(4 * var_a * var_b + half**2)
    per_dim = var_a + var_b - d + half * (1 - math.log(gamma)) + half * torch.log(d + half)
    return (mu_a - mu_b).pow(2).sum(1) + per_dim.sum(1)


__all__ = ["gaussian_entropy", "w2_squared", "entropic_w2"]
