"""Sample quality without downloaded weights: the Fréchet distance between a model's samples and real
test digits in the penultimate features of a small digit classifier trained here ("FD-MNISTnet",
:class:`avae.nets.classifier.MNISTNet`). Shared by the Transformer VAE and Autoencoding VAE reports."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avae.io import atomic_path
from avae.nets.classifier import MNISTNet, train_classifier


@torch.no_grad()
def net_features(net: MNISTNet, images: torch.Tensor, batch_size: int = 2000) -> np.ndarray:
    """(N, 128) penultimate activations of ``net`` (float64, for the covariances)."""
    net.eval()
    return torch.cat([net.features(x) for x in images.split(batch_size)]).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples):
    |m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2), by symmetric eigendecompositions
    (stable when dead ReLU features make a covariance singular)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(w.clip(min=0))) @ v.T
    cross = np.sqrt(np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def mnistnet(train, path: Path, *, epochs: int, seed: int = 0) -> MNISTNet:
    """The classifier trained on ``train``'s digits, saved at ``path`` (reused when it is there)."""
    path = Path(path)
    net = MNISTNet(train.images.shape[1], train.images.shape[-1])
    if path.exists():
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net.eval()
    net = train_classifier(train.images, train.labels, epochs=epochs, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(net.state_dict(), tmp)
    return net


__all__ = ["net_features", "frechet_distance", "mnistnet"]
