import math

import pytest
import torch

from avae.data.perturb import random_affine, rotated
from avae.transforms import POSE_FAMILIES, inverse_warp, pose_family, warp


def homogeneous(m):
    bottom = torch.tensor([0.0, 0.0, 1.0]).expand(m.shape[0], 1, 3)
    return torch.cat([m, bottom], 1)


@pytest.mark.parametrize("name", sorted(POSE_FAMILIES))
def test_analytic_inverse_composes_to_identity(name):
    family = pose_family(name)
    params = torch.randn(64, family.n_params, generator=torch.Generator().manual_seed(1)) * 0.6
    product = homogeneous(family.matrix(params)) @ homogeneous(family.inverse_matrix(params))
    assert torch.allclose(product, torch.eye(3).expand(64, 3, 3), atol=1e-5)
    assert torch.all(torch.linalg.det(family.matrix(params)[:, :, :2]) > 0)


def smooth_blob(n=4, size=40):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    centres = torch.tensor([[0.1, -0.2], [-0.15, 0.1], [0.0, 0.25], [0.2, 0.2]])[:n]
    return torch.stack([torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05) for cx, cy in centres]).unsqueeze(1)


@pytest.mark.parametrize("name", sorted(POSE_FAMILIES))
def test_warp_then_inverse_warp_is_identity_up_to_resampling(name):
    family = pose_family(name)
    x = smooth_blob()
    params = torch.randn(4, family.n_params, generator=torch.Generator().manual_seed(2)) * 0.3
    back = inverse_warp(warp(x, params, family), params, family)
    assert (back - x).abs().max() < 0.1  # bilinear blur on a smooth image
    assert (back - x).abs().mean() < 0.005
    assert (warp(x, params, family) - x).abs().max() > 0.1  # the warp itself did something


def test_rotating_by_90_degrees_equals_rot90_on_a_padded_digit(embedded_digits):
    x = embedded_digits[:8]
    turned, truth = rotated(x, 90, resampling="paper")  # plain bilinear sampling is exact at quarter turns
    assert torch.allclose(turned, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)
    # fair resampling blurs a quarter turn exactly as it blurs the upright digit
    assert torch.allclose(rotated(x, 90)[0], torch.rot90(rotated(x, 0)[0], 1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(truth.degrees, torch.full((8,), 90.0))


def test_random_rotation_parameters_match_images_and_are_seeded(embedded_digits):
    x = embedded_digits[:16]
    a, truth_a = rotated(x, seed=3)
    b, truth_b = rotated(x, seed=3)
    c, truth_c = rotated(x, seed=4)
    assert torch.equal(a, b) and torch.equal(truth_a.params, truth_b.params)
    assert not torch.equal(truth_a.params, truth_c.params)
    assert truth_a.degrees.min() >= 0 and truth_a.degrees.max() < 360
    assert torch.allclose(a, warp(x, truth_a.params, "rotation", supersample=2))  # fair: 2x2 area sampling
    # the inverse parameters undo it (up to resampling)
    back = warp(a, truth_a.inverse_params(), "rotation")
    assert (back - x).abs().mean() < 0.03


def test_random_affine_ranges_and_ground_truth(embedded_digits):
    x = embedded_digits[:200]
    out, truth = random_affine(x, seed=0)
    assert truth.pose == "affine" and truth.params.shape == (200, 4)
    angle, shear, log_sx, log_sy = truth.params.T
    assert angle.abs().max() <= math.pi and shear.abs().max() <= math.radians(55) + 1e-6
    assert log_sx.exp().min() >= 0.5 - 1e-6 and log_sy.exp().max() <= 1.5 + 1e-6
    assert shear.abs().max() > math.radians(45)  # the range is really used
    assert torch.allclose(out, warp(x, truth.params, "affine", supersample=2))
    assert torch.allclose(random_affine(x, seed=0, resampling="paper")[0], warp(x, truth.params, "affine"))
    moved, truth_t = random_affine(x, seed=0, max_translation=0.2)
    assert truth_t.pose == "affine-translation" and truth_t.params[:, 4:].abs().max() <= 0.2


def test_extreme_shear_stays_finite():
    family = pose_family("affine")
    params = torch.tensor([[0.0, math.radians(90), 0.0, 0.0]])
    assert torch.isfinite(family.matrix(params)).all() and torch.isfinite(family.inverse_matrix(params)).all()


def test_wrong_parameter_shape_is_a_clear_error():
    from avae.errors import AvaeError

    with pytest.raises(AvaeError, match="expects parameters of shape"):
        pose_family("similarity").matrix(torch.zeros(3, 1))
    with pytest.raises(AvaeError, match="unknown pose"):
        pose_family("projective")
