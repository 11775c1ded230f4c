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


def pose_mode(degrees: np.ndarray, bins: int = 72, smooth: int = 1) -> float:
    """The most common angle (degrees, in [-180, 180)): the centre of the fullest of ``bins`` equal
    sectors after a circular moving sum over ``2 * smooth + 1`` sectors. Unlike a circular mean it
    stays on a peak when a class settles into two opposite orientations."""
    theta = np.asarray(degrees, dtype=np.float64)
    theta = theta[np.isfinite(theta)]
    if not theta.size:
        return float("nan")
    width = 360.0 / bins
    counts = np.bincount(((np.mod(theta + 180.0, 360.0)) // width).astype(int) % bins, minlength=bins)
    window = sum(np.roll(counts, k) for k in range(-smooth, smooth + 1))
    return float(-180.0 + (np.argmax(window) + 0.5) * width)


def mode_gap_table(angles: np.ndarray, epochs: np.ndarray, labels: np.ndarray, a: int = 6, b: int = 9) -> list[dict]:
    """Per epoch: the pose mode of class ``a``, of class ``b``, and the angle between them (degrees,
    in [0, 180]). The paper says 6 and 9 end "as 180 degree rotations of one another"."""
    rows = []
    for e, per_image in zip(epochs, angles):
        mode_a, mode_b = pose_mode(per_image[labels == a]), pose_mode(per_image[labels == b])
        gap = abs((mode_a - mode_b + 180.0) % 360.0 - 180.0)
        rows.append({"epoch": int(e), f"mode {a} (deg)": round(mode_a, 1), f"mode {b} (deg)": round(mode_b, 1),
                     "angle between (deg)": round(gap, 1)})
    return rows
