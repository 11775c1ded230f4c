import math

import pytest
import torch

from avae.errors import AvaeError
from avae.models import VAE, VAEConfig
from avae.models.likelihoods import bernoulli_nll, gaussian_nll, kl_standard_normal


def test_gaussian_variance_half_is_summed_squared_error():
    x = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]]]])
    mean = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]]])
    # (0.25 + 0.25 + 0 + 0.0625) by hand
    assert gaussian_nll(x, mean, 0.5).item() == pytest.approx(0.5625)
    assert gaussian_nll(x, mean, 2.0).item() == pytest.approx(0.5625 / 4)


def test_bernoulli_nll_by_hand_and_clipped():
    x = torch.tensor([[1.0, 0.0, 1.0]])
    p = torch.tensor([[0.8, 0.3, 1.0]])
    expected = -(math.log(0.8) + math.log(0.7) + math.log(1 - 1e-6))
    assert bernoulli_nll(x, p).item() == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(bernoulli_nll(torch.tensor([[1.0]]), torch.tensor([[0.0]]))).all()


def test_kl_by_hand():
    mu = torch.tensor([[1.0, -2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    expected = 0.5 * ((1 + 1 - 1 - 0) + (4 + 4 - 1 - math.log(4)))
    assert kl_standard_normal(mu, logvar).item() == pytest.approx(expected)


@pytest.mark.parametrize("size", [28, 32, 40])
def test_conv_vae_any_size_divisible_by_4(size):
    model = VAE(VAEConfig(image_size=size, latent=4))
    x = torch.rand(3, 1, size, size)
    out = model.loss(x)
    assert out["reconstruction"].shape == x.shape
    assert out["loss"].shape == (3,)
    assert torch.allclose(out["loss"], out["nll"] + out["kl"])


def test_conv_needs_size_divisible_by_4():
    with pytest.raises(AvaeError, match="divisible by 4"):
        VAEConfig(image_size=30).validate()


def test_deterministic_path_is_deterministic_and_sampled_path_is_not():
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent=4)).eval()
    x = torch.rand(2, 1, 40, 40)
    assert torch.equal(model.loss(x, sample=False)["loss"], model.loss(x, sample=False)["loss"])
    assert not torch.equal(model.loss(x, sample=True)["loss"], model.loss(x, sample=True)["loss"])


def test_per_sample_loss_matches_hand_computation_through_the_model():
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent=3, net="mlp", image_size=8)).eval()
    x = torch.rand(4, 1, 8, 8)
    mu, logvar = model.encode(x)
    recon = model.decode(mu)
    by_hand = ((x - recon) ** 2).sum((1, 2, 3)) + 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
    assert torch.allclose(model.loss(x, sample=False)["loss"], by_hand, atol=1e-5)


def test_bernoulli_vae_and_samples():
    model = VAE(VAEConfig(likelihood="bernoulli", latent=2, net="mlp", image_size=12))
    out = model.loss(torch.rand(2, 1, 12, 12).round())
    assert (out["nll"] > 0).all()
    assert model.sample(5, torch.Generator().manual_seed(0)).shape == (5, 1, 12, 12)
