import numpy as np

from avae.evaluate.poses import circular_variance, concentration_table


def test_circular_variance_limits_and_two_peaks():
    rng = np.random.default_rng(0)
    assert circular_variance(np.full(50, 123.0)) < 1e-9
    assert circular_variance(rng.uniform(0, 360, 20000)) > 0.97
    two_peaks = np.r_[np.full(50, 10.0), np.full(50, 190.0)]
    assert circular_variance(two_peaks) > 0.99  # opposite peaks cancel ...
    assert circular_variance(two_peaks, harmonic=2) < 1e-9  # ... but agree modulo 180 degrees
    assert circular_variance(np.r_[359.0, 1.0]) < 1e-3  # wraps around 0


def test_concentration_table_has_one_row_per_epoch_and_class():
    angles = np.array([[0.0, 90, 180, 270], [5.0, 5, 185, 185]])
    rows = concentration_table(angles, np.array([1, 2]), np.array([1, 1, 7, 7]))
    assert [(r["epoch"], r["class"]) for r in rows] == [(1, 1), (1, 7), (2, 1), (2, 7)]
    assert rows[2]["circular variance"] < 1e-9 and rows[3]["circular variance"] < 1e-9
