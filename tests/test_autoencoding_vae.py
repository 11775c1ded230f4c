"""The Autoencoding VAE, smooth encoders, PGD attacks and ColorMNIST (issue 7)."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import avae
from avae.attacks import (accuracy, art_available, art_pgd, attack_classifier,
                          attack_representation, fgsm, margin, pgd_linf)
from avae.data import ColorMNIST, color_mnist, load
from avae.data.color import color_rgb
from avae.errors import AvaeError
from avae.models.autoencoding_vae import (AutoencodingVAE, AutoencodingVAEConfig, gaussian_coupling,
                                          gaussian_entropy, post_process_encoder, w2_squared)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small MLPs run faster on one thread, most of all on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def colored():
    """64 real ColorMNIST digits (mnist-embedded val split, 28 x 28)."""
    return color_mnist(load("mnist-embedded", "val", pad_to=None, limit=64), seed=3)


def small_model(**kw) -> AutoencodingVAE:
    torch.manual_seed(0)
    return AutoencodingVAE(AutoencodingVAEConfig(latent=8, **kw))


@pytest.fixture(scope="module")
def probed(colored):
    """A logistic regression on the pixels and its own clean predictions as labels (clean
    accuracy 100 %, so any drop is the attack's): (classifier, labels)."""
    from avae.evaluate.autoencoding import linear_probe

    classifier = torch.nn.Sequential(torch.nn.Flatten(), linear_probe(colored.images.flatten(1), colored.labels))
    with torch.no_grad():
        labels = classifier(colored.images).argmax(1)
    return classifier, labels


# ----------------------------------------------------------------------------- ColorMNIST
def test_color_mnist_colours_and_labels_agree(colored):
    grey = load("mnist-embedded", "val", pad_to=None, limit=64)
    assert colored.images.shape == (64, 3, 28, 28) and torch.equal(colored.labels, grey.labels)
    assert colored.colors.min() >= 1 and colored.colors.max() <= 7
    rgb = color_rgb(colored.colors)
    # every channel is the grey digit where the colour has it, black where it has not
    assert torch.equal(colored.images, grey.images * rgb[:, :, None, None])
    lit = colored.images.flatten(2).amax(2) > 0
    assert torch.equal(lit, rgb.bool())
    assert color_rgb(torch.tensor([1, 2, 4, 7])).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]


def test_color_mnist_is_seeded_and_subsets_keep_colours(colored):
    grey = load("mnist-embedded", "val", pad_to=None, limit=64)
    assert torch.equal(color_mnist(grey, seed=3).colors, colored.colors)
    assert not torch.equal(color_mnist(grey, seed=4).colors, colored.colors)
    part = colored.take(10, seed=1)
    assert isinstance(part, ColorMNIST) and len(part.colors) == 10
    rgb = color_rgb(part.colors)
    assert torch.equal(part.images.flatten(2).amax(2) > 0, rgb.bool())
    with pytest.raises(AvaeError, match="grey"):
        color_mnist(colored)


# ----------------------------------------------------------------------------- objective
def test_coupling_closed_form_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g) * 0.5
    mu_t, logvar_t = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g) * 0.5
    rho = 0.8
    closed = gaussian_coupling(mu, logvar, mu_t, logvar_t, rho)
    n = 200_000
    z = mu + (0.5 * logvar).exp() * torch.randn(n, 3, 4, generator=g, dtype=torch.float64)
    zt = mu_t + (0.5 * logvar_t).exp() * torch.randn(n, 3, 4, generator=g, dtype=torch.float64)
    log_p = torch.distributions.Normal(rho * z, (1 - rho**2) ** 0.5).log_prob(zt).sum(-1)
    mc, se = log_p.mean(0), log_p.std(0) / n**0.5
    assert closed.shape == (3,)
    assert torch.all((closed.double() - mc).abs() < 4 * se + 1e-3)
    expected = torch.distributions.Normal(mu_t, (0.5 * logvar_t).exp()).entropy().sum(1)
    assert torch.allclose(gaussian_entropy(logvar_t), expected, atol=1e-5)


def test_added_terms_train_the_encoder_only(colored):
    model = small_model(avae=True)
    model.train()
    mu, logvar = model.encode(colored.images)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    terms = model.autoencoding_terms(mu, logvar, model.decode(z))
    assert terms["avae"].shape == (64,)
    terms["avae"].sum().backward()
    decoder_grads = [p.grad for p in model.decoder.parameters()]
    assert all(g is None or not g.any() for g in decoder_grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_loss_terms_per_sample_and_elbo_in_eval_mode(colored):
    x = colored.images[:16]
    model = small_model(avae=True, smooth=True, se_steps=1)
    model.train()
    out = model.loss(x)
    for key in ("loss", "nll", "kl", "coupling", "entropy", "avae", "prior_fidelity", "divergence"):
        assert out[key].shape == (16,), key
    # the SE paper's objective replaces the KL: reconstruction + prior fidelity + divergence (+ the AVAE's terms)
    assert torch.allclose(out["loss"], out["nll"] + out["prior_fidelity"] + out["divergence"] + out["avae"])
    assert "smoothness" not in out
    w2 = small_model(avae=True, smooth=True, se_steps=1, se_objective="w2").train().loss(x)
    assert torch.allclose(w2["loss"], w2["nll"] + w2["kl"] + w2["avae"] + w2["smoothness"])
    assert (w2["smoothness"] >= 0).all()
    assert all(p.grad is None for p in model.parameters())  # the search accumulated nothing
    model.eval()
    plain = model.loss(x, sample=False)
    assert set(plain) >= {"loss", "nll", "kl"} and "avae" not in plain
    assert torch.allclose(plain["loss"], plain["nll"] + plain["kl"])


def test_w2_is_zero_for_equal_gaussians_and_symmetric():
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    assert torch.allclose(w2_squared(mu, logvar, mu, logvar), torch.zeros(5))
    other = torch.randn(5, 3)
    assert torch.allclose(w2_squared(mu, logvar, other, logvar * 0.5), w2_squared(other, logvar * 0.5, mu, logvar))


def test_w2_matches_the_closed_form_on_hand_made_gaussians():
    """W2^2(N(m1, diag s1^2), N(m2, diag s2^2)) = |m1 - m2|^2 + |s1 - s2|^2: standard deviations, not
    variances (with variances this case gives 73, not 10)."""
    mu_a, var_a = torch.tensor([[1.0, 2.0]]), torch.tensor([[4.0, 9.0]])
    mu_b, var_b = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert torch.allclose(w2_squared(mu_a, var_a.log(), mu_b, var_b.log()), torch.tensor([1 + 4 + 1 + 4.0]))


def test_the_smooth_encoders_search_moves_x_b_off_x():
    """For an encoder that is not constant, PGD finds an x_b in the ball whose posterior differs from
    x's: the penalty is positive, and larger than at a random point of the same ball."""
    torch.manual_seed(0)
    for objective in ("w2", "published"):
        model = small_model(smooth=True, se_steps=3, se_objective=objective)
        x = torch.rand(6, 3, 28, 28)
        mu, logvar = model.encode(x)
        penalty = model.smoothness_penalty(x, mu, logvar, generator=torch.Generator().manual_seed(0))
        if objective == "w2":
            assert (penalty > 0).all()
        random_point = (x + model.config.se_epsilon * (2 * torch.rand_like(x) - 1)).clamp(0, 1)
        assert (penalty > model.divergence(mu, logvar, *model.encode(random_point))).all(), objective
        assert (penalty > model.divergence(mu, logvar, mu, logvar)).all(), objective


def test_select_increases_the_divergence_with_its_iterations(colored):
    """Select(x; L, eps): more PGD iterations from the same random start find a larger divergence
    (the best iterate is kept, so it can never fall), and x_b stays in the ball and in [0, 1]."""
    torch.manual_seed(0)
    x = colored.images[:12]
    found = {}
    for steps in (1, 5):
        model = small_model(smooth=True, se_steps=steps)
        with torch.no_grad():
            mu, logvar = model.encode(x)
            x_b = model.select(x, mu, logvar, generator=torch.Generator().manual_seed(1))
            found[steps] = model.divergence(mu, logvar, *model.encode(x_b))
        assert (x_b - x).abs().max() <= model.config.se_epsilon + 1e-6 and x_b.min() >= 0 and x_b.max() <= 1
    assert (found[5] >= found[1] - 1e-4).all() and found[5].mean() > found[1].mean()


def _sinkhorn_cost(x, y, gamma, iters=400):
    """Entropic OT cost E|x - y|^2 + gamma KL(pi | a x b) between two 1-d empirical measures (uniform
    weights), log-domain Sinkhorn: the dual value <f, a> + <g, b> at convergence."""
    import math

    cost = (x[:, None] - y[None, :]) ** 2
    log_a, log_b = -math.log(len(x)), -math.log(len(y))
    f, g = torch.zeros(len(x), dtype=x.dtype), torch.zeros(len(y), dtype=y.dtype)
    for _ in range(iters):
        f = -gamma * torch.logsumexp((g[None, :] - cost) / gamma + log_b, 1)
        g = -gamma * torch.logsumexp((f[:, None] - cost) / gamma + log_a, 0)
    return (f.mean() + g.mean()).item()


def test_entropic_w2_tends_to_w2_and_matches_sinkhorn_on_samples():
    from avae.models.autoencoding_vae import entropic_w2

    mu_a, logvar_a = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.2, -0.7]])
    mu_b, logvar_b = torch.tensor([[-0.2, 0.5]]), torch.tensor([[-1.1, 0.4]])
    plain = w2_squared(mu_a, logvar_a, mu_b, logvar_b)
    assert torch.allclose(entropic_w2(mu_a, logvar_a, mu_b, logvar_b, 1e-7), plain, rtol=1e-4)
    assert (entropic_w2(mu_a, logvar_a, mu_b, logvar_b, 1.0) > plain).all()  # regularising costs
    # gamma -> infinity: the independent coupling, E|z_a - z_b|^2 = |m_a - m_b|^2 + var_a + var_b
    independent = (mu_a - mu_b).pow(2).sum(1) + logvar_a.exp().sum(1) + logvar_b.exp().sum(1)
    wide = entropic_w2(*(t.double() for t in (mu_a, logvar_a, mu_b, logvar_b)), 1e6)  # float64: no cancellation
    assert torch.allclose(wide, independent.double(), rtol=1e-4)
    # one dimension against Sinkhorn on 600 evenly spaced quantiles of each Gaussian
    n = 600
    quantiles = np.sqrt(2) * torch.erfinv(2 * (torch.arange(n, dtype=torch.float64) + 0.5) / n - 1)
    for (ma, sa, mb, sb, gamma) in [(0.0, 1.0, 1.0, 0.5, 1.0), (0.3, 0.7, -0.2, 1.3, 0.5)]:
        estimate = _sinkhorn_cost(ma + sa * quantiles, mb + sb * quantiles, gamma)
        closed = entropic_w2(torch.tensor([[ma]]), torch.tensor([[2 * np.log(sa)]]), torch.tensor([[mb]]),
                             torch.tensor([[2 * np.log(sb)]]), gamma).item()
        assert abs(estimate - closed) < 0.01 * closed + 0.005, (ma, sa, mb, sb, gamma, estimate, closed)


def test_se_divergence_is_the_coupled_prior_s_part_and_its_terms_make_a_kl():
    """WD = c OT_{1/c} - H(a) - H(b), c = rho / (2 (1 - rho^2)); with the prior fidelity it gives each
    posterior |mu|^2 / 2 + (tr S - log det S) / 2: as x_b -> x_a, a KL to the prior plus the coupling's
    value at equal posteriors."""
    from avae.models.autoencoding_vae import entropic_w2, se_divergence

    mu, logvar = torch.randn(4, 3), torch.randn(4, 3) * 0.3
    rho = 0.8
    c = rho / (2 * (1 - rho**2))
    expected = c * entropic_w2(mu, logvar, mu, logvar, 1 / c) - 2 * gaussian_entropy(logvar)
    assert torch.allclose(se_divergence(mu, logvar, mu, logvar, rho), expected)
    # a larger mean gap always costs more, by c |dm|^2 exactly
    shifted = se_divergence(mu, logvar, mu + 1.0, logvar, rho) - se_divergence(mu, logvar, mu, logvar, rho)
    assert torch.allclose(shifted, torch.full((4,), 3 * c), atol=1e-5)
    with pytest.raises(ValueError, match="rho"):
        se_divergence(mu, logvar, mu, logvar, 1.0)


def test_avae_target_sample_reencodes_a_draw_from_the_likelihood(colored):
    x = colored.images[:8]
    model = small_model(avae=True)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        reconstruction = model.decode(mu)
        mean_terms = model.autoencoding_terms(mu, logvar, reconstruction)
        model.config.avae_target = "sample"
        torch.manual_seed(0)
        first = model.autoencoding_terms(mu, logvar, reconstruction)
        torch.manual_seed(0)
        again = model.autoencoding_terms(mu, logvar, reconstruction)
    assert torch.equal(first["avae"], again["avae"]) and not torch.allclose(first["avae"], mean_terms["avae"])
    with pytest.raises(AvaeError, match="avae_target"):
        AutoencodingVAEConfig(avae_target="noise").validate()
    with pytest.raises(AvaeError, match="se_objective"):
        AutoencodingVAEConfig(se_objective="kl").validate()
    with pytest.raises(AvaeError, match="se_weight"):
        AutoencodingVAEConfig(se_weight=2.0).validate()


def test_bad_config_is_one_clear_error():
    with pytest.raises(AvaeError, match="rho"):
        AutoencodingVAEConfig(rho=1.0).validate()
    with pytest.raises(AvaeError, match="net"):
        AutoencodingVAEConfig(net="resnet").validate()
    with pytest.raises(AvaeError, match="decoder_width"):
        AutoencodingVAEConfig(decoder_width=0.5).validate()  # the MLP nets have no width switch
    with pytest.raises(AvaeError, match="decoder_width"):
        AutoencodingVAEConfig(net="conv", decoder_width=0.0).validate()
    with pytest.raises(AvaeError, match="encoder_width"):
        AutoencodingVAEConfig(encoder_width=2.0).validate()


def test_net_widths_scale_one_conv_net_each_and_round_trip(tmp_path, colored):
    full, small = small_model(net="conv"), small_model(net="conv", decoder_width=0.25)
    wide = small_model(net="conv", encoder_width=2.0)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(small.encoder) == count(full.encoder)
    assert count(small.decoder) < count(full.decoder) / 4
    assert count(wide.decoder) == count(full.decoder)
    assert count(wide.encoder) > 3 * count(full.encoder)  # conv weights grow with the square of the width
    x = colored.images[:4]
    assert wide.encode(x)[0].shape == (4, full.config.latent)
    assert small.decode(small.encode(x)[0]).shape == x.shape
    avae.save(small, tmp_path / "run")
    loaded = avae.load(tmp_path / "run")
    assert loaded.config.decoder_width == 0.25
    small.eval()
    loaded.eval()
    assert torch.allclose(loaded.loss(x, sample=False)["loss"], small.loss(x, sample=False)["loss"])


# ----------------------------------------------------------------------------- attacks
def test_pgd_stays_in_the_ball_and_pixel_range_and_raises_its_objective(colored):
    model = small_model()
    model.eval()
    x = colored.images[:32]
    with torch.no_grad():
        clean = model.encode(x)[0]

    def objective(a):
        return (model.encode(a)[0] - clean).pow(2).sum(1)

    for eps in (0.05, 0.2):
        adv = pgd_linf(objective, x, eps, steps=5, step_size=eps / 4, generator=torch.Generator().manual_seed(0))
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        start = pgd_linf(objective, x, eps, steps=0, step_size=eps / 4, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert (objective(adv) >= objective(start) - 1e-6).all()
            assert objective(adv).mean() > 1.5 * objective(start).mean()
    assert torch.equal(pgd_linf(objective, x, 0.0, steps=3, step_size=0.1), x)
    assert all(p.grad is None for p in model.parameters())


def test_margin_is_positive_exactly_when_misclassified():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 2])
    assert margin(logits, labels).tolist() == [-1.0, 2.0]


def test_attacks_lower_accuracy_and_move_the_representation(colored, probed):
    from avae.evaluate.autoencoding import encoder_means

    classifier, labels = probed
    model = small_model()
    assert accuracy(classifier, colored.images, labels).mean() == 1
    adv = attack_classifier(classifier, colored.images, labels, 0.2, steps=10, step_size=0.05)
    assert (adv - colored.images).abs().max() <= 0.2 + 1e-6
    assert accuracy(classifier, adv, labels).mean() < 0.5
    moved = attack_representation(model, colored.images, 0.1, steps=5, step_size=0.025)
    shift = (encoder_means(model, moved) - encoder_means(model, colored.images)).norm(dim=1)
    noise = (colored.images + 0.1 * torch.randn_like(colored.images).sign()).clamp(0, 1)
    assert shift.mean() > (encoder_means(model, noise) - encoder_means(model, colored.images)).norm(dim=1).mean()


def test_fgsm_is_one_step_inside_the_ball_and_weaker_than_pgd(colored, probed):
    classifier, labels = probed
    adv = fgsm(classifier, colored.images, labels, 0.05)
    moved = (adv - colored.images).abs().flatten(1).amax(1)
    assert moved.max() <= 0.05 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    # one step of the full radius (where the pixel range allows): every changed image moved by exactly epsilon
    assert torch.allclose(moved[moved > 0], torch.full_like(moved[moved > 0], 0.05), atol=1e-6)
    fooled_once = 1 - accuracy(classifier, adv, labels).mean()
    pgd = attack_classifier(classifier, colored.images, labels, 0.05, steps=10, step_size=0.05 / 4)
    assert 0 < fooled_once <= 1 - accuracy(classifier, pgd, labels).mean()


@pytest.mark.skipif(not art_available(), reason="adversarial-robustness-toolbox not installed")
def test_our_pgd_is_at_least_as_strong_as_art(colored, probed):
    """Summed over random starts (seeds), since on 64 digits one start can differ by an image or two."""
    classifier, labels = probed
    for eps in (0.15, 0.2):
        ours = theirs = 0.0
        for seed in range(3):
            adv = attack_classifier(classifier, colored.images, labels, eps, steps=10, step_size=eps / 4, seed=seed)
            art_adv = art_pgd(classifier, colored.images, labels, eps, steps=10, step_size=eps / 4, seed=seed)
            assert (art_adv - colored.images).abs().max() <= eps + 1e-5
            ours += accuracy(classifier, adv, labels).sum().item()
            theirs += accuracy(classifier, art_adv, labels).sum().item()
        assert ours <= theirs < 3 * len(labels)  # both attacks work, ours at least as well


# ----------------------------------------------------------------------------- training and evaluation
def test_trains_through_the_one_loop_and_reloads(colored, tmp_path):
    from avae.train.loop import TrainConfig, fit

    train, val = colored.take(48), colored.take(16, seed=1)
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-4, weight_decay=0.0)
    model = fit("autoencoding-vae", {"latent": 8, "avae": True, "smooth": True, "se_steps": 1}, train, val, config,
                tmp_path / "run", progress=False)
    loaded = avae.load(tmp_path / "run")
    assert loaded.variant == "SE-AVAE" and loaded.config.latent == 8
    x = colored.images[:4]
    assert torch.allclose(loaded.loss(x, sample=False)["loss"], model.loss(x, sample=False)["loss"])


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_post_processing_fine_tunes_the_encoder_only(net):
    """The encoder's weights move; the decoder's state, batch-norm statistics included, and the encoder's
    batch-norm statistics (those of the training data) stay."""
    model = small_model(net=net)
    decoder = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    post_process_encoder(model, steps=3, batch_size=8, lr=1e-3)
    assert model.config.avae and not model.training
    assert all(torch.equal(decoder[k], v) for k, v in model.decoder.state_dict().items())
    assert any(not torch.equal(encoder[k], v) for k, v in model.encoder.state_dict().items())
    statistics = [k for k in encoder if "running" in k]
    assert bool(statistics) == (net == "conv")
    assert all(torch.equal(encoder[k], model.encoder.state_dict()[k]) for k in statistics)
    assert all(p.requires_grad for p in model.parameters())


def test_frechet_distance_and_chains():
    from avae.evaluate.autoencoding import label_kept, reconstruction_chain
    from avae.evaluate.sample_quality import frechet_distance
    from avae.nets.classifier import MNISTNet

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 6)), rng.normal(size=(400, 6)) * 2 + 1
    assert abs(frechet_distance(a, a)) < 1e-8
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # diagonal-ish check against the formula with scipy's matrix square root
    from scipy import linalg

    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert abs(frechet_distance(a, b) - expected) < 1e-6
    model = small_model()
    x = torch.rand(5, 3, 28, 28)
    chain = reconstruction_chain(model, x, steps=3)
    assert chain.shape == (4, 5, 3, 28, 28) and torch.equal(chain[0], x)
    kept = label_kept(MNISTNet().eval(), chain)
    assert kept.shape == (5,) and ((kept >= 0) & (kept <= 1)).all()
    # a known case: a "classifier" that reads the class off an image's brightness, and chains of 4 steps
    # after x whose class stays for 4, 2 and 0 of them
    def by_brightness(images):
        return -(images.mean((1, 2, 3))[:, None] - torch.arange(3.0)).pow(2)

    level = torch.tensor([[0, 0, 1], [0, 2, 2], [0, 2, 0], [0, 0, 2], [0, 0, 0]], dtype=torch.float32)
    chain = level[:, :, None, None, None].expand(5, 3, 1, 2, 2)
    assert torch.equal(label_kept(by_brightness, chain), torch.tensor([1.0, 0.5, 0.0]))


@pytest.mark.slow
def test_reproduce_tiny_preset_end_to_end(mnist_test_dir, tmp_path):
    from avae.evaluate.autoencoding import PRESETS, reproduce_autoencoding_vae

    preset = replace(PRESETS["quick"], name="tiny", train_images=100, epochs=1, post_steps=2, test_images=40,
                     attack_steps=2, art_images=10, fd_samples=40, chain_images=4, chain_steps=2, classifier_epochs=1,
                     latent=8, se_steps=1)
    reproduce_autoencoding_vae(preset, tmp_path, data_dir=mnist_test_dir, progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    names = [r["model"] for r in metrics["rows"]]
    assert names == ["VAE", "AVAE", "SE_0.2", "SE-AVAE_0.2", "VAE+AVAE post"]
    assert metrics["preset"]["regime"] == "recolor" and set(metrics["protocols"]) == set("ABCD")
    for row in metrics["rows"]:
        assert len(row["attack_panel"]) == 4 * 2 * 5 and [c["pass"] for c in row["self_consistency"]] == [1]
        assert {"latent", "summed_squared_error", "mse_0_255", "clean"} <= set(row)
        assert row["mse_0_255"]["mean"] == pytest.approx(row["summed_squared_error"]["mean"] * 255**2 / (3 * 28 * 28))
        assert [a["epsilon"] for a in row["pixel_attack"]] == [0.0, 0.1, 0.2]
        assert all(a["max_perturbation"] <= a["epsilon"] + 1e-6 for a in row["pixel_attack"])
        assert [a["epsilon"] for a in row["small_epsilon"]] == [0.02, 0.05]
        assert all(0 <= a["fgsm"]["accuracy"] <= 100 for a in row["pixel_attack"][1:] + row["small_epsilon"])
    report = (tmp_path / "report.md").read_text()
    assert "VAE+AVAE post" in report and "88.1" in report and "one-step FGSM" in report
    assert "## The attack panel" in report and "## Self-consistency" in report and "## Health before attacks" in report
    assert "recoloured afresh in every batch" in report and "entropy-regularised Wasserstein divergence" in report
    assert "**Calibration with SE**" in report and "**The slides' headline**" in report and "slides' cost" in report
    assert (tmp_path / "iterated_reconstruction.png").stat().st_size > 0
    assert (tmp_path / "robustness_vs_epsilon.png").stat().st_size > 0 and "robustness_vs_epsilon.png" in report
    # a second run reuses every model and every model's evaluation
    before = (tmp_path / "models" / "VAE" / "checkpoint.pt").stat().st_mtime_ns
    kept = (tmp_path / "evaluation" / "SE_0.2.json").stat().st_mtime_ns
    reproduce_autoencoding_vae(preset, tmp_path, data_dir=mnist_test_dir, progress=False)
    assert (tmp_path / "models" / "VAE" / "checkpoint.pt").stat().st_mtime_ns == before
    assert (tmp_path / "evaluation" / "SE_0.2.json").stat().st_mtime_ns == kept
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["attack_panel"] for r in again["rows"]] == [r["attack_panel"] for r in metrics["rows"]]
    # a model added to the preset and not trained: --finished-only reports the others, reusing their evaluations
    more = replace(preset, variants=preset.variants + ("AVAE-sampled",))
    reproduce_autoencoding_vae(more, tmp_path, data_dir=mnist_test_dir, progress=False, finished_only=True)
    partial = json.loads((tmp_path / "metrics.json").read_text())
    assert partial["pending_models"] == ["AVAE-sampled"] and not (tmp_path / "models" / "AVAE-sampled").exists()
    assert [r["attack_panel"] for r in partial["rows"]] == [r["attack_panel"] for r in metrics["rows"]]
    assert (tmp_path / "evaluation" / "SE_0.2.json").stat().st_mtime_ns == kept
    assert "**Partial report**" in (tmp_path / "report.md").read_text()


def test_attack_curves_merge_both_attack_sets_by_epsilon(tmp_path):
    """The accuracy-vs-ε figure's data: the main attacks (ε 0, 0.1, 0.2 with FGSM beside PGD) and the
    small-ε ones interleaved in ε order, ε = 0 the clean accuracy for both attacks."""
    from avae.report.autoencoding import attack_curves, robustness_figure

    def acc(a, s=1.0):
        return {"accuracy": a, "sem": s, "n": 10}

    row = {"model": "AVAE", "paper_accuracy": [97.3, 88.1, 54.8],
           "pixel_attack": [{"epsilon": 0.0, **acc(75.0)}, {"epsilon": 0.1, **acc(2.0), "fgsm": acc(8.0)},
                            {"epsilon": 0.2, **acc(0.5), "fgsm": acc(10.0)}],
           "small_epsilon": [{"epsilon": 0.05, "pgd": acc(9.0), "fgsm": acc(19.0)},
                             {"epsilon": 0.02, "pgd": acc(39.0, 2.0), "fgsm": acc(47.0)}]}
    curves = attack_curves(row)
    assert curves["PGD"] == [(0.0, 75.0, 1.0), (0.02, 39.0, 2.0), (0.05, 9.0, 1.0), (0.1, 2.0, 1.0), (0.2, 0.5, 1.0)]
    assert [a for _, a, _ in curves["FGSM"]] == [75.0, 47.0, 19.0, 8.0, 10.0]
    path = robustness_figure({"rows": [row, {**row, "model": "VAE", "paper_accuracy": None}]}, tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_a_preset_the_experiment_lacks(mnist_test_dir, tmp_path, capsys):
    from avae.cli import main

    code = main(["reproduce", "autoencoding-vae", "--preset", "paper", "--data-dir", str(mnist_test_dir),
                 "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2 and "presets quick, standard" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_finished_only_names_what_is_missing_and_only_for_autoencoding(mnist_test_dir, tmp_path, capsys):
    """--finished-only reports a run while it trains: with no VAE trained yet it says so in one line (and
    trains nothing); the other papers reject the flag before making --out."""
    from avae.cli import main

    args = ["--preset", "quick", "--data-dir", str(mnist_test_dir), "--quiet", "--finished-only"]
    code = main(["reproduce", "transformer-vae", *args, "--out", str(tmp_path / "t")])
    assert code == 2 and "only autoencoding-vae" in capsys.readouterr().err and not (tmp_path / "t").exists()
    code = main(["reproduce", "autoencoding-vae", *args, "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and "VAE and AVAE not trained for 3 epochs" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a" / "models").exists()


def test_conv_option_gives_per_sample_terms(colored):
    model = small_model(net="conv", avae=True)
    model.train()
    out = model.loss(colored.images[:8])
    assert out["loss"].shape == out["avae"].shape == (8,)
    assert model.reconstruct(colored.images[:8], sample=False)["reconstruction"].shape == (8, 3, 28, 28)


# ----------------------------------------------------------------------------- probe sanity (pipeline bugs)
def test_probe_on_pixels_reads_digits_and_colours_of_held_out_images():
    """The probe pipeline on real coloured digits: PCA features through the same probe must read
    held-out digits far above chance (labels aligned with images after colouring and subsetting).
    (Raw pixels too in the reproduction; skipped here for time.)"""
    from avae.evaluate.autoencoding import pixel_baselines

    train = color_mnist(load("mnist-embedded", "train", pad_to=None, limit=500, seed=0), seed=0)
    test = color_mnist(load("mnist-embedded", "val", pad_to=None, limit=200, seed=0), seed=1).take(150, seed=2)
    result = pixel_baselines(train, test, components=32, raw=False)
    for features in ("PCA-32",):
        assert result[features]["digit"]["accuracy"] > 50, result  # about 75 % from 500 digits; chance 10 %
        assert result[features]["color"]["accuracy"] > 90, result
        assert result[features]["digit"]["converged"]


def test_probe_folds_its_standardisation_into_the_torch_layer():
    from sklearn.linear_model import LogisticRegression

    from avae.evaluate.autoencoding import linear_probe

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    # features on wildly different scales, one constant
    features = torch.randn(60, 4, generator=g) * torch.tensor([1e-3, 1.0, 100.0, 0.0]) + labels[:, None] * torch.tensor(
        [2e-3, 0.5, 0.0, 0.0])
    head = linear_probe(features, labels)
    assert head.converged and head.weight.shape == (3, 4)
    x = features.double()
    std = x.std(0).where(x.std(0) > 0, torch.ones(4, dtype=torch.float64))
    fitted = LogisticRegression(max_iter=5000).fit(((x - x.mean(0)) / std).numpy(), labels.numpy())
    expected = fitted.predict_proba(((x - x.mean(0)) / std).numpy())
    assert np.allclose(torch.softmax(head(features).double(), 1).numpy(), expected, atol=1e-4)
    # C is the inverse L2 strength: a stronger penalty shrinks the standardised weights
    strong, weak = linear_probe(features, labels, C=0.01), linear_probe(features, labels, C=100.0)
    assert (strong.weight * std.float()).norm() < 0.5 * (head.weight * std.float()).norm() < (weak.weight * std.float()).norm()


def test_released_init_is_haiku_default_and_usage_counts_active_dims(colored):
    from avae.evaluate.autoencoding import latent_usage

    model = small_model(init="released")
    first = model.encoder.net[0]
    assert torch.all(first.bias == 0) and first.weight.abs().max() <= 2 / 2352 ** 0.5 + 1e-7
    assert 0.8 / 2352 ** 0.5 < first.weight.std() < 1 / 2352 ** 0.5
    torch_init = small_model(init="torch")
    assert torch_init.encoder.net[0].bias.abs().sum() > 0
    usage = latent_usage(model, colored.images)
    assert 0 <= usage["active_dims"] <= 8 and len(usage["kl_per_dim"]) == 8 and usage["kl"]["n"] == 64


def test_latent_usage_counts_the_dimensions_whose_means_vary():
    """A known case: an encoder whose means vary over the images in dimensions 0 and 2 only (s.d. 1 and
    0.5), and whose posterior equals the prior elsewhere: 2 active dimensions, KL only where it varies."""
    from avae.evaluate.autoencoding import latent_usage

    class Known(torch.nn.Module):
        def encode(self, x):
            t = x.flatten(1)[:, 0]
            mu = torch.zeros(len(x), 4)
            mu[:, 0], mu[:, 2] = t, 0.5 * t
            return mu, torch.zeros(len(x), 4)

    images = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    usage = latent_usage(Known(), images)
    assert usage["active_dims"] == 2
    kl = usage["kl_per_dim"]  # 0.5 * E[mu^2] with unit variances: 0.5, 0, 0.125, 0
    assert abs(kl[0] - 0.5) < 0.05 and abs(kl[2] - 0.125) < 0.015 and kl[1] == kl[3] == 0


# ----------------------------------------------------------------------------- ColorMNIST training, self-consistency
def test_recolor_regime_draws_new_colours_per_batch_and_repeats_under_a_seed():
    from avae.data import recolor
    from avae.train.regimes import make_regime
    from avae.train.loop import TrainConfig

    grey = load("mnist-embedded", "val", pad_to=None, limit=32).images
    first, colors_1 = recolor(grey, torch.Generator().manual_seed(0))
    again, colors_again = recolor(grey, torch.Generator().manual_seed(0))
    _, colors_2 = recolor(grey, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and torch.equal(colors_1, colors_again)
    assert not torch.equal(colors_1, colors_2)
    assert torch.equal(first, grey * color_rgb(colors_1)[:, :, None, None])
    regime = make_regime(TrainConfig(regime="recolor"))
    assert regime.input_shape((1, 28, 28)) == (3, 28, 28)
    with pytest.raises(AvaeError, match="grey"):
        regime.input_shape((3, 28, 28))


def test_recolor_trains_a_colour_model_on_grey_digits_through_the_one_loop(tmp_path):
    """fit with the recolor regime: a 3-channel model trains on 1-channel digits, a different colour
    per image and batch; the same seed gives the same weights."""
    from avae.train.loop import TrainConfig, fit

    grey = load("mnist-embedded", "val", pad_to=None, limit=48)
    val = color_mnist(load("mnist-embedded", "val", pad_to=None, limit=16), seed=1)
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-3, weight_decay=0.0, regime="recolor")
    runs = [fit("autoencoding-vae", {"latent": 4}, grey, val, config, tmp_path / f"run{k}", progress=False)
            for k in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()))
    with pytest.raises(AvaeError, match="channels"):
        fit("autoencoding-vae", {"latent": 4}, val, val, config, tmp_path / "coloured", progress=False)


def test_color_mnist_all_mode_shows_every_digit_in_all_seven_colours():
    grey = load("mnist-embedded", "val", pad_to=None, limit=5)
    every = color_mnist(grey, mode="all")
    assert len(every) == 35 and torch.equal(every.colors[:7], torch.arange(1, 8))
    assert torch.equal(every.labels, grey.labels.repeat_interleave(7))
    assert torch.equal(every.images[7 * 2 + 6], grey.images[2] * color_rgb(torch.tensor([7]))[0, :, None, None])
    assert "all 7 colours" in every.describe()["colored"]
    with pytest.raises(AvaeError, match="mode"):
        color_mnist(grey, mode="some")


class _Identity(torch.nn.Module):
    """A 'VAE' that reconstructs perfectly: its code is the image, its posterior a point."""

    def encode(self, x):
        return x.flatten(1), torch.full((x.shape[0], x[0].numel()), -60.0)

    def decode(self, z):
        return z.view(-1, 3, 28, 28)


def test_self_consistency_of_a_perfect_reconstructor_is_total_and_colours_read_exactly(colored):
    from avae.evaluate.autoencoding import read_colors, self_consistency

    assert torch.equal(read_colors(colored.images), colored.colors)
    assert torch.equal(read_colors(torch.zeros(2, 3, 28, 28)), torch.zeros(2, dtype=torch.long))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 28 * 28, 10))
    result = self_consistency(_Identity(), colored.images[:20], net, passes=(1, 5), seed=0)
    assert [r["pass"] for r in result["rows"]] == [1, 5] and result["chain"].shape[0] == 6
    for row in result["rows"]:
        assert row["digit_kept"]["accuracy"] == 100 and row["color_kept"]["accuracy"] == 100
        assert row["code_distance"]["mean"] < 1e-6
    # a model that returns a blank image keeps no colour
    blank = _Identity()
    blank.decode = lambda z: torch.zeros(z.shape[0], 3, 28, 28)
    assert self_consistency(blank, colored.images[:20], net, passes=(1,))["rows"][0]["color_kept"]["accuracy"] == 0


def test_chain_fed_likelihood_samples_encodes_noisy_means_and_records_the_means():
    """feed="sample": each pass's encoder reads the previous decoder mean plus noise of the likelihood's
    s.d. (what a sampled-x~ AVAE re-encodes in training), the chain keeps the means; "mean" reads them as
    they are."""
    from avae.evaluate.autoencoding import reconstruction_chain

    class Spy(_Identity):
        config = AutoencodingVAEConfig(variance=0.5)

        def __init__(self):
            super().__init__()
            self.seen = []

        def encode(self, x):
            self.seen.append(x.clone())
            return super().encode(x)

    x = torch.rand(50, 3, 28, 28)
    for feed in ("mean", "sample"):
        spy = Spy()
        chain = reconstruction_chain(spy, x, steps=2, feed=feed)
        assert torch.equal(spy.seen[0], x) and len(spy.seen) == 2
        noise = spy.seen[1] - chain[1]
        if feed == "mean":
            assert torch.equal(noise, torch.zeros_like(noise))
        else:
            assert abs(noise.std().item() - 0.5 ** 0.5) < 0.01 and abs(noise.mean().item()) < 0.01
            assert torch.allclose(chain[2], spy.seen[1], atol=1e-5)  # the identity decodes what it read
    with pytest.raises(AvaeError, match="feed"):
        reconstruction_chain(Spy(), x, steps=1, feed="noisy")


def test_attack_panel_rows_clean_accuracies_and_attacks_that_hurt(colored):
    """Four protocols x two tasks x each epsilon; at epsilon 0 every row is its probe's clean accuracy on
    unmoved images; at 0.3 the end-to-end attacks (A, D) lower accuracy and B's images move every code."""
    from avae.evaluate.autoencoding import PROTOCOLS, attack_panel, encoder_means, panel_probes

    torch.manual_seed(0)
    model = small_model()
    train, test = colored.take(48), colored.take(16, seed=1)
    rows = attack_panel(model, train, test, epsilons=(0.0, 0.3), steps=5, seed=0)
    assert len(rows) == len(PROTOCOLS) * 2 * 2
    table = {(r["protocol"], r["task"], r["epsilon"]): r["accuracy"] for r in rows}
    heads = panel_probes(model, train, seed=0)
    clean_digit = (heads["mean"]["digit"](encoder_means(model, test.images)).argmax(1) == test.labels).float().mean()
    assert table["A", "digit", 0.0] == table["B", "digit", 0.0] == pytest.approx(100 * clean_digit.item())
    for protocol in ("A", "D"):
        for task in ("digit", "color"):
            assert table[protocol, task, 0.3] <= table[protocol, task, 0.0]
    assert sum(table[p, t, 0.3] for p in "AD" for t in ("digit", "color")) < sum(
        table[p, t, 0.0] for p in "AD" for t in ("digit", "color"))
    assert all(p.requires_grad for p in model.parameters())


def test_w2_representation_attack_moves_the_posterior_more_than_noise(colored):
    model = small_model()
    x = colored.images[:16]
    moved = attack_representation(model, x, 0.1, steps=5, step_size=0.025, objective="w2")
    noise = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    with torch.no_grad():
        clean = model.encode(x)
        assert w2_squared(*clean, *model.encode(moved)).mean() > w2_squared(*clean, *model.encode(noise)).mean()
    with pytest.raises(AvaeError, match="objective"):
        attack_representation(model, x, 0.1, steps=1, step_size=0.1, objective="kl")


def test_models_trained_in_parallel_processes_equal_those_trained_one_by_one(tmp_path):
    """--jobs 2 for autoencoding-vae: per-batch recolouring and all, the same weights in any process."""
    from avae.evaluate.autoencoding import PRESETS, train_models

    preset = replace(PRESETS["quick"], name="tiny", epochs=1, post_steps=1, latent=4, variants=("VAE", "AVAE"),
                     batch_size=32)
    grey = load("mnist-embedded", "val", pad_to=None, limit=64)
    val = color_mnist(load("mnist-embedded", "val", pad_to=None, limit=16), seed=1)
    one, _ = train_models(preset, grey, val, tmp_path / "one", progress=False)
    two, _ = train_models(preset, grey, val, tmp_path / "two", progress=False, jobs=2)
    for name in ("VAE", "AVAE", "VAE+AVAE post"):
        for a, b in zip(one[name].state_dict().values(), two[name].state_dict().values()):
            assert torch.equal(a, b), name


def test_variant_names_map_to_model_switches():
    from avae.evaluate.autoencoding import PRESETS, variant_config

    assert variant_config("VAE") == {} and variant_config("AVAE") == {"avae": True}
    assert variant_config("SE_0.1") == {"smooth": True, "se_epsilon": 0.1}
    assert variant_config("SE-AVAE_0.2-sampled") == {"avae": True, "smooth": True, "se_epsilon": 0.2,
                                                     "avae_target": "sample"}
    for bad in ("SE", "AVAE_0.1", "VAE-sampled", "SE_0.1-sampled", "GAN"):
        with pytest.raises(AvaeError, match="variant"):
            variant_config(bad)
    standard = PRESETS["standard"]
    assert standard.train_data == "full" and standard.regime == "recolor" and standard.lr == 1e-4
    assert standard.epochs * -(-55_000 // standard.batch_size) >= 102_000  # the released code's steps
    for variant in standard.variants:
        AutoencodingVAEConfig(**variant_config(variant)).validate()


def test_conv_preset_trains_every_variant_on_the_conv_nets_and_says_so(colored):
    """The `conv` preset is the standard one with the conv nets: every variant's config names them, a
    published-SE training step on them gives finite per-sample terms, and the report's setting paragraph
    names the nets it ran."""
    from avae.evaluate.autoencoding import PRESETS, model_config
    from avae.report.autoencoding import _setting

    conv, standard = PRESETS["conv"], PRESETS["standard"]
    # the slides' headline models (radius 0.2) and the sampled-X~ AVAE; the radius-0.1 pair is the standard run's
    assert set(conv.variants) < set(standard.variants) and {"VAE", "AVAE", "SE_0.2", "SE-AVAE_0.2"} <= set(conv.variants)
    assert conv.train_data == "full" and conv.regime == "recolor"
    assert all(model_config(conv, v)["net"] == "conv" for v in conv.variants)
    model = AutoencodingVAE(AutoencodingVAEConfig(**{**model_config(conv, "SE-AVAE_0.2"), "latent": 8, "se_steps": 2}))
    model.train()
    out = model.loss(colored.images[:8])
    assert out["loss"].shape == (8,) and torch.isfinite(out["loss"]).all()
    meta = {"preset": {**vars(conv), "name": "conv"}, "seed": 0, "train_data": {"n_images": 55000, "data": "mnist"},
            "validation_data": {"n_images": 5000}, "test_data": {"n_images": 2000, "source": "t10k"}}
    assert "conv nets" in _setting(meta) and "4 x 200" not in _setting(meta)
    assert "4 x 200" in _setting({**meta, "preset": {**vars(standard)}})


def test_an_evaluation_is_computed_once_per_weights_and_redone_when_they_change(tmp_path):
    """The standard report's per-model evaluation resumes: kept beside the run, reused while the weights
    file, preset and seed are unchanged, recomputed when the weights are rewritten (names with dots too)."""
    import os

    from avae.evaluate.autoencoding import PRESETS, evaluated_once

    weights = tmp_path / "models" / "SE_0.2" / "checkpoint.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    calls = []

    def evaluate():
        calls.append(1)
        return {"model": "SE_0.2", "accuracy": 0.5 * len(calls)}, torch.full((2, 1, 3, 28, 28), float(len(calls)))

    stem = tmp_path / "evaluation" / "SE_0.2"
    first = evaluated_once(stem, weights, PRESETS["quick"], 0, evaluate)
    again = evaluated_once(stem, weights, PRESETS["quick"], 0, evaluate)
    assert len(calls) == 1 and again[0] == first[0] and torch.equal(again[1], first[1])
    assert (tmp_path / "evaluation" / "SE_0.2.json").exists()
    evaluated_once(stem, weights, PRESETS["quick"], 1, evaluate)  # another seed
    assert len(calls) == 2
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # retrained
    row, figure = evaluated_once(stem, weights, PRESETS["quick"], 1, evaluate)
    assert len(calls) == 3 and row["accuracy"] == 1.5 and figure[0, 0, 0, 0, 0].item() == 3.0
    from dataclasses import replace

    evaluated_once(stem, weights, replace(PRESETS["quick"], variants=("SE_0.2",)), 1, evaluate)  # a model fewer
    assert len(calls) == 3
    evaluated_once(stem, weights, replace(PRESETS["quick"], attack_steps=11), 1, evaluate)  # another setting
    assert len(calls) == 4


def test_report_calls_a_vae_collapsed_only_when_few_latent_dimensions_are_active():
    from avae.report.autoencoding import _collapse

    def metrics(clean, kl, dims):
        vae = {"model": "VAE", "probe": {"digit": {"accuracy": clean}}, "paper_accuracy": (93.8, 5.8, 0.0),
               "latent": {"kl": {"mean": kl}, "active_dims": dims, "kl_per_dim": [kl / dims] * dims + [0.0] * (64 - dims)}}
        return {"rows": [vae], "probe_baselines": {"raw pixels": {"digit": {"accuracy": 89.1}}}, "preset": {"latent": 64}}

    healthy, collapsed = _collapse(metrics(92.5, 21.5, 35)), _collapse(metrics(56.8, 7.7, 3))
    assert "not collapsed" in healthy and "nearly" not in healthy and "35 of 64" in healthy and "92.5" in healthy
    assert "nearly collapsed" in collapsed and "3 of 64" in collapsed


def test_diagnosis_paragraph_follows_the_runs_own_calibration():
    """The report's diagnosis names the AVAE's best lead and lets SE decide where the gap lies."""
    from avae.report.autoencoding import _diagnosis

    def row(name, a, b, dims=30):
        cells = [{"protocol": p, "task": "digit", "epsilon": 0.1, "accuracy": acc} for p, acc in (("A", a), ("B", b))]
        return {"model": name, "attack_panel": cells, "latent": {"active_dims": dims}}

    def text(se_a, se_b, vae_dims=30, sampled=None):
        rows = [row("VAE", 2.0, 30.0, vae_dims), row("AVAE", 1.0, 40.0)]
        if sampled is not None:
            rows.append(row("AVAE-sampled", 5.0, sampled))
        if se_a is not None:
            rows.append(row("SE_0.2", se_a, se_b))
        return _diagnosis({"rows": rows, "train_data": {"n_images": 55_000}})

    pending = text(None, None)
    assert "+10.0 points (AVAE, x~ the decoder's mean" in pending and "protocol B: 40.0 % vs 30.0 %" in pending
    assert "not calibrated" in pending
    # the sampled reading's lead is named when it is the larger, and a lead of 50 points says it has robustness
    robust = text(2.0, 85.0, sampled=90.0)
    assert "+60.0 points (AVAE-sampled" in robust and "sampled x~ has it" in robust
    assert "sampled x~ has it" not in text(2.0, 85.0, sampled=45.0)
    assert "the VAE is not collapsed (30 active" in pending
    assert "nearly collapsed (3 active" in text(None, None, vae_dims=3)
    assert "the attack can show robustness" in text(2.0, 85.0) and "+55.0 points" in text(2.0, 85.0)
    weak = text(3.0, 45.0)
    assert "cannot be put on its training alone" in weak and "the attack can show" not in weak


def test_closest_protocol_to_the_slides_row():
    from avae.report.autoencoding import _closest_protocols

    def row(paper, **protocols):
        cells = [{"protocol": p, "task": "digit", "epsilon": e, "accuracy": a}
                 for p, accs in protocols.items() for e, a in zip((0.0, 0.1, 0.2), accs)]
        return {"attack_panel": cells, "paper_accuracy": paper}

    by = {"VAE": row((93.8, 5.8, 0.0), A=(93, 0, 0), B=(93, 33, 19)),
          "SE_0.2": row((95.7, 92.6, 87.3), A=(94, 36, 0), B=(94, 93, 89))}
    text = _closest_protocols(by, "SE_0.2")
    assert "VAE's nearest is A (93.0 / 0.0 / 0.0" in text and "SE_0.2's nearest is B (94.0 / 93.0 / 89.0" in text


def test_headline_and_self_consistency_verdicts_weigh_both_avae_readings():
    """The slides' AVAE read two ways (x~ the decoder's mean, as released; a decoder sample, as the slides say):
    the headline is met when either leads the VAE by 50 points under some protocol, and each is named."""
    from avae.evaluate.autoencoding import paper_row
    from avae.report.autoencoding import panel_verdicts

    def row(name, b, kept):
        cells = [{"protocol": p, "task": "digit", "epsilon": e, "accuracy": acc}
                 for p, acc in (("A", 0.0), ("B", b)) for e in (0.0, 0.1)]
        return {"model": name, "attack_panel": cells, "clean": {"A digit": 93.0}, **paper_row(name),
                "self_consistency": [{"pass": 20, "both_kept": {"accuracy": kept, "n": 1000}}],
                "summed_squared_error": {"mean": 10.0}, "fd_mnistnet": 400.0}

    assert paper_row("AVAE-sampled") == paper_row("AVAE") and paper_row("AVAE")["paper_accuracy"][1] == 88.1
    assert paper_row("SE-AVAE_0.2")["paper_time"] == 4.7 and paper_row("VAE+AVAE post")["paper_accuracy"] is None
    lines = "".join(panel_verdicts({"rows": [row("VAE", 33.0, 30.0), row("AVAE", 25.0, 47.0)]}))
    assert "not met under any protocol" in lines and "AVAE-sampled" not in lines
    assert "no AVAE keeps far more" in lines
    lines = "".join(panel_verdicts({"rows": [row("VAE", 33.0, 30.0), row("AVAE", 25.0, 47.0),
                                             row("AVAE-sampled", 91.0, 55.0)]}))
    assert "met for AVAE-sampled under B" in lines and "AVAE under B" not in lines
    assert "AVAE-sampled keeps far more" in lines and "AVAE-sampled 55.0 %" in lines


def test_an_unhealthy_smooth_encoder_does_not_calibrate_the_attack():
    """SE far below the slides' clean accuracy (a collapsed MLP SE) says so instead of judging the attack."""
    from avae.report.autoencoding import _diagnosis, panel_verdicts

    def row(name, a, b, clean, paper):
        cells = [{"protocol": p, "task": "digit", "epsilon": e, "accuracy": acc}
                 for p, acc in (("A", a), ("B", b)) for e in (0.0, 0.1)]
        return {"model": name, "attack_panel": cells, "clean": {"A digit": clean}, "paper_accuracy": paper,
                "latent": {"active_dims": 30}, "summed_squared_error": {"mean": 10.0}, "fd_mnistnet": 400.0,
                "self_consistency": [{"pass": 20, "both_kept": {"accuracy": 30.0, "n": 1000}}]}

    def metrics(se_clean, se_b):
        return {"rows": [row("VAE", 0.0, 24.0, 93.0, (93.8, 5.8, 0.0)), row("AVAE", 0.0, 19.0, 93.0, (97.3, 88.1, 54.8)),
                         row("SE_0.2", 5.0, se_b, se_clean, (95.7, 92.6, 87.3))], "train_data": {"n_images": 55_000}}

    sick = metrics(72.3, 45.8)
    assert "SE_0.2 is not healthy (best clean digit probe 23.4 points" in "".join(panel_verdicts(sick))
    assert "not healthy" in _diagnosis(sick) and "our attack (or our SE)" not in _diagnosis(sick)
    well = metrics(94.5, 93.3)
    assert "not healthy" not in "".join(panel_verdicts(well)) and "SE is far above the VAE under B" in "".join(panel_verdicts(well))
