"""Concentration of the optimised training poses (Bidart & Wong 2019, Figs. 7 and 8)."""
from __future__ import annotations

import numpy as np


def circular_variance(degrees: np.ndarray, harmonic: int = 1) -> float:
    """1 - |mean(exp(i k theta))|: 0 when all angles agree, 1 when spread uniformly.

    ``harmonic=2`` treats angles 180 degrees apart as equal, for classes such as "1" that the paper
    sees settle into two opposite peaks.
    """
    theta = np.deg2rad(np.asarray(degrees, dtype=np.float64)) * harmonic
    theta = theta[np.isfinite(theta)]
    return float(1.0 - np.abs(np.exp(1j * theta).mean())) if theta.size else float("nan")


def concentration_table(angles: np.ndarray, epochs: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Rows (epoch, class, n, circular variance of the angles and of twice the angles)."""
    rows = []
    for e, per_image in zip(epochs, angles):
        for c in np.unique(labels):
            a = per_image[labels == c]
            rows.append({"epoch": int(e), "class": int(c), "n": int(np.isfinite(a).sum()),
                         "circular variance": round(circular_variance(a, 1), 4),
                         "circular variance (2θ)": round(circular_variance(a, 2), 4)})
    return rows
