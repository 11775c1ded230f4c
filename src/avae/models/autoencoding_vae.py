"""The Autoencoding VAE and smooth encoders (Cemgil, Ghaisas, Dvijotham, Gowal, Kohli; NeurIPS 2020
and ICLR 2020), one model with switches.

* **VAE**: Gaussian likelihood with fixed variance nu (``variance``, 0.5 by default: summed squared
  error) and a diagonal Gaussian encoder q(z|x) = N(mu(x), diag sigma(x)^2).
* **AVAE** (``avae=True``): for z ~ q(z|x), decode the mean x~ = g(z) *without gradient* and re-encode
  it to q(z~|x~); the loss subtracts

      coupling = E_{q(z|x) q(z~|x~)} [log N(z~; rho z, (1 - rho^2) I)]   (closed form, both Gaussians)
      entropy  = H[q(z~|x~)]

  from the negative ELBO. x~ is detached, so these two terms train the encoder only: the encoder
  learns to map its own decodings back near the code they came from (self-consistency).
* **SE**, smooth encoder (``smooth=True``, Cemgil et al. ICLR 2020, Algorithm 1): Select, L =
  ``se_steps`` PGD iterations, finds x_b in the L-infinity ball of radius ``se_epsilon`` around x
  (inside [0, 1]) that maximises the entropy-regularised Wasserstein divergence WD between q(z|x) and
  q(z|x_b) (:func:`se_divergence`, closed form for Gaussians); the loss is the reconstruction error of
  x, the prior fidelity 1/2 (|mu|^2 + |mu_b|^2 + tr(S + S_b)) of both posteriors, and WD.
  ``se_objective="w2"`` keeps our earlier simplification (negative ELBO + ``se_weight`` times the plain
  squared W2) for comparison. The search computes gradients with respect to x_b only; the final
  evaluation at x_b is the one that reaches the weights.
* **SE-AVAE**: both.

The added terms are used while the model trains (``self.training``); in evaluation mode ``loss``
is the plain negative ELBO, so validation and test losses of every variant are comparable.
Noise is scaled by the standard deviation sigma in every sample (the released JAX code scales it
by the variance; see the docs). Nets: the released code's MLPs (4 dense layers of 200 ReLU units,
sigmoid output) or the library's conv nets (``net="conv"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from avae.attacks import pgd_linf
from avae.errors import AvaeError
from avae.models.gaussians import entropic_w2, gaussian_entropy, w2_squared
from avae.models.likelihoods import kl_standard_normal
from avae.models.vae import VAE, LatentVariableModel
from avae.nets import DECODERS, ENCODERS

MLP_HIDDEN = (200, 200, 200, 200)  # Cemgil et al.'s released MLPs
INITS = ("released", "torch")
SE_OBJECTIVES = ("published", "w2")
AVAE_TARGETS = ("mean", "sample")


def released_init_(module: torch.nn.Module) -> torch.nn.Module:
    """Re-initialise every Linear/Conv layer of ``module`` as Haiku does by default (the released
    code's framework): weights ~ N(0, 1/fan_in) truncated at 2 s.d., biases 0."""
    for layer in module.modules():
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            fan_in = layer.weight[0].numel() if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)) \
                else layer.weight.shape[0] * layer.weight[0, 0].numel()
            std = fan_in ** -0.5
            torch.nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
            if layer.bias is not None:
                torch.nn.init.zeros_(layer.bias)
    return module


@dataclass
class AutoencodingVAEConfig:
    """Fields of :class:`AutoencodingVAE`: the released code's settings by default (MLP nets, latent 64,
    Gaussian likelihood of variance 0.5, rho 0.975), the switches and the smooth encoder's search."""

    latent: int = 64  # the released code's README command (its flag default is 32)
    channels: int = 3
    image_size: int = 28
    net: str = "mlp"  # "mlp": 4 x 200 ReLU (the released code's); "conv": the library's conv nets
    # conv nets only: the decoder's channel counts times this (a NeurIPS reviewer describes the paper's appendix
    # nets as a decoder much smaller than the encoder; 0.25 has a tenth of the encoder's weights)
    decoder_width: float = 1.0
    encoder_width: float = 1.0  # conv nets only: the encoder's channel counts times this (a larger encoder)
    likelihood: str = "gaussian"
    variance: float = 0.5  # nu
    output: str = "sigmoid"
    avae: bool = False
    rho: float = 0.975  # the released code's README command (flag default 0.8)
    avae_weight: float = 1.0
    smooth: bool = False
    se_epsilon: float = 0.2
    se_steps: int = 5  # L, Select's PGD iterations after a random start (the slides' SE^5)
    se_step_size: float = 0.5  # PGD step, as a fraction of se_epsilon
    se_weight: float = 1.0  # se_objective "w2" only: the penalty's weight
    # "published": the SE paper's objective (reconstruction of x_a, prior fidelity on both posteriors, the
    # entropy-regularised Wasserstein divergence of :func:`se_divergence` coupling them through se_rho, which
    # Select maximises); "w2": the negative ELBO plus se_weight times the plain squared W2 (our earlier
    # simplification, kept for comparison)
    se_objective: str = "published"
    se_rho: float = 0.975  # correlation of the coupled prior p(z_a, z_b) (the paper's value is not in our sources)
    # x~ that the AVAE re-encodes: "mean", the decoder's mean g(z) for z ~ q(z|x) (what the released code does:
    # its aux_images are the decoder's output at the same sample, stop_gradient), or "sample", a draw
    # g(z) + sqrt(variance) * noise from the likelihood (the slides' wording, "a sample generated by the decoder")
    avae_target: str = "mean"
    # "torch": PyTorch's default (uniform, a third of Haiku's weight variance; the standard preset's models);
    # "released": every dense/conv layer's weights from a normal truncated at 2 s.d., s.d. 1/sqrt(fan_in),
    # zero biases (Haiku's default, so the released code's). "released" gets a plain autoencoder of these
    # deep MLPs off the mean image faster, but a 60-epoch VAE ends as collapsed with either (see the docs)
    init: str = "torch"

    def validate(self, where: str = "config") -> None:
        if self.net not in ENCODERS:
            raise AvaeError(f"{where}: field 'net' must be one of {', '.join(ENCODERS)}, got {self.net!r}")
        if self.likelihood != "gaussian" or self.output != "sigmoid":
            raise AvaeError(f"{where}: the autoencoding VAE uses likelihood 'gaussian' and output 'sigmoid'")
        if self.latent < 1 or self.channels < 1 or self.variance <= 0:
            raise AvaeError(f"{where}: 'latent' and 'channels' must be positive and 'variance' > 0")
        if self.net == "conv" and (self.image_size < 4 or self.image_size % 4):
            raise AvaeError(f"{where}: the conv net needs 'image_size' divisible by 4, got {self.image_size}")
        for field in ("decoder_width", "encoder_width"):
            width = getattr(self, field)
            if width <= 0 or (self.net != "conv" and width != 1):
                raise AvaeError(f"{where}: field '{field}' must be > 0 and scales the conv nets only "
                                f"(net 'conv'), got {width} with net {self.net!r}")
        if self.init not in INITS:
            raise AvaeError(f"{where}: field 'init' must be one of {', '.join(INITS)}, got {self.init!r}")
        if not 0 <= self.rho < 1:
            raise AvaeError(f"{where}: 'rho' must lie in [0, 1), got {self.rho}")
        if self.se_objective not in SE_OBJECTIVES:
            raise AvaeError(f"{where}: field 'se_objective' must be one of {', '.join(SE_OBJECTIVES)}, got {self.se_objective!r}")
        if self.avae_target not in AVAE_TARGETS:
            raise AvaeError(f"{where}: field 'avae_target' must be one of {', '.join(AVAE_TARGETS)}, got {self.avae_target!r}")
        if self.se_objective == "published" and self.se_weight != 1:
            raise AvaeError(f"{where}: 'se_weight' weighs the plain W2 penalty (se_objective 'w2'); the published "
                            f"objective has no weight, got {self.se_weight}")
        if not 0 < self.se_rho < 1:
            raise AvaeError(f"{where}: 'se_rho' must lie in (0, 1), got {self.se_rho}")
        if self.se_epsilon < 0 or self.se_steps < 1 or self.se_step_size <= 0 or self.se_weight < 0 or self.avae_weight < 0:
            raise AvaeError(f"{where}: need se_epsilon >= 0, se_steps >= 1, se_step_size > 0 and non-negative weights")


def gaussian_coupling(mu: torch.Tensor, logvar: torch.Tensor, mu_t: torch.Tensor, logvar_t: torch.Tensor,
                      rho: float) -> torch.Tensor:
    """E_{z ~ N(mu, e^logvar), z~ ~ N(mu_t, e^logvar_t)} [log N(z~; rho z, (1 - rho^2) I)], (N,).

    With z and z~ independent, E[(z~ - rho z)^2] = (mu_t - rho mu)^2 + var_t + rho^2 var per dimension.
    """
    s2 = 1.0 - rho**2
    square = (mu_t - rho * mu).pow(2) + logvar_t.exp() + rho**2 * logvar.exp()
    return -0.5 * (math.log(2 * math.pi * s2) + square / s2).sum(1)


def se_divergence(mu_a, logvar_a, mu_b, logvar_b, rho: float) -> torch.Tensor:
    """The smooth encoder's entropy-regularised Wasserstein divergence WD_{2,gamma} between
    q(z|x_a) and q(z|x_b), (N,), under our reading of Cemgil et al. (ICLR 2020):

        WD = min over couplings pi of  c E_pi |z_a - z_b|^2 - H(pi),   c = rho / (2 (1 - rho^2)),

    the part of -E_pi[log p(z_a, z_b)] - H(pi) that couples the two codes when p(z_a, z_b) is the
    standard normal pair of correlation ``rho`` (-log p = c |z_a - z_b|^2 + |z_a|^2/(2(1+rho))
    + |z_b|^2/(2(1+rho)) + const). So the regulariser is gamma = 1 / c, and since -H(pi) =
    KL(pi | a x b) - H(a) - H(b),

        WD = c OT_gamma(a, b) - H(a) - H(b)      (:func:`entropic_w2`, :func:`gaussian_entropy`).

    The entropies are what make the paper's prior-fidelity term 1/2 (|mu_a|^2 + |mu_b|^2 + tr(S_a + S_b))
    a proper regulariser: with them each posterior pays 1/2 (|mu|^2 + tr S - log det S), its KL to the
    prior up to a constant. rho in (0, 1).
    """
    if not 0 < rho < 1:
        raise ValueError(f"se_divergence: rho must lie in (0, 1), got {rho}")
    c = rho / (2 * (1 - rho**2))
    return c * entropic_w2(mu_a, logvar_a, mu_b, logvar_b, 1.0 / c) - gaussian_entropy(logvar_a) - gaussian_entropy(logvar_b)


class AutoencodingVAE(VAE):
    """The VAE of Cemgil et al. (2020) with its switches (:class:`AutoencodingVAEConfig`): ``avae``
    adds the self-consistency term (the encoder must map its decoder's own samples back near the code
    they came from, coupled through ``rho``), ``smooth`` the smooth encoder's penalty (the posterior
    may move little within an L-infinity ball of radius ``se_epsilon``). Images (N, 3, 28, 28) in [0, 1];
    every loss term per image (N,)."""

    name = "autoencoding-vae"
    Config = AutoencodingVAEConfig

    def __init__(self, config: AutoencodingVAEConfig | None = None):
        LatentVariableModel.__init__(self)
        self.config = c = config or AutoencodingVAEConfig()
        hidden = {"hidden": MLP_HIDDEN} if c.net == "mlp" else {}
        conv = c.net == "conv"
        self.encoder = ENCODERS[c.net](c.channels, c.image_size, 2 * c.latent, **hidden,
                                       **({"width": c.encoder_width} if conv else {}))
        self.decoder = DECODERS[c.net](c.latent, c.channels, c.image_size, **hidden,
                                       **({"width": c.decoder_width} if conv else {}))
        if c.init == "released":
            released_init_(self)

    @property
    def variant(self) -> str:
        c = self.config
        return {(False, False): "VAE", (True, False): "AVAE", (False, True): "SE", (True, True): "SE-AVAE"}[(c.avae, c.smooth)]

    def autoencoding_terms(self, mu, logvar, reconstruction) -> dict:
        """The AVAE's added terms for z ~ N(mu, e^logvar) decoded to ``reconstruction`` (detached
        here): ``coupling`` and ``entropy`` (N,), and ``avae`` = -(coupling + entropy), the loss.
        With ``avae_target = "sample"`` the re-encoded x~ is a draw from the likelihood around the
        reconstruction instead of the reconstruction itself."""
        target = reconstruction.detach()
        if self.config.avae_target == "sample":
            target = target + math.sqrt(self.config.variance) * torch.randn_like(target)
        mu_t, logvar_t = self.encode(target)
        coupling = gaussian_coupling(mu, logvar, mu_t, logvar_t, self.config.rho)
        entropy = gaussian_entropy(logvar_t)
        return {"coupling": coupling, "entropy": entropy, "avae": -(coupling + entropy)}

    def divergence(self, mu_a, logvar_a, mu_b, logvar_b) -> torch.Tensor:
        """The divergence between q(z|x_a) and q(z|x_b) that the smooth encoder's Select maximises
        and its objective penalises, (N,): :func:`se_divergence` (``se_objective = "published"``) or
        :func:`w2_squared` (``"w2"``)."""
        if self.config.se_objective == "published":
            return se_divergence(mu_a, logvar_a, mu_b, logvar_b, self.config.se_rho)
        return w2_squared(mu_a, logvar_a, mu_b, logvar_b)

    def select(self, x, mu=None, logvar=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Select(x_a; L, epsilon) of the SE paper: the x_b in the L-infinity ball of radius ``se_epsilon``
        around ``x`` (inside [0, 1]) found by L = ``se_steps`` PGD iterations after a uniform random start
        that maximises :meth:`divergence` from q(z|x_a) (held fixed); the best iterate per image. The
        search moves no weights and, for the conv nets, no batch-norm statistics."""
        c = self.config
        was_training = self.training
        self.eval()
        try:
            if mu is None:
                with torch.no_grad():
                    mu, logvar = self.encode(x)
            clean_mu, clean_logvar = mu.detach(), logvar.detach()
            return pgd_linf(lambda x_b: self.divergence(clean_mu, clean_logvar, *self.encode(x_b)), x, c.se_epsilon,
                            c.se_steps, c.se_step_size * c.se_epsilon, generator=generator)
        finally:
            self.train(was_training)

    def smoothness_penalty(self, x, mu, logvar, generator: torch.Generator | None = None) -> torch.Tensor:
        """:meth:`divergence` between q(z|x) and q(z|x_b) at x_b = :meth:`select` (N,), with gradients
        for both posteriors."""
        return self.divergence(mu, logvar, *self.encode(self.select(x, mu, logvar, generator)))

    def smooth_terms(self, x, mu, logvar, generator: torch.Generator | None = None) -> dict:
        """The smooth encoder's terms for a batch x_a with posterior (mu, logvar), each (N,):
        ``prior_fidelity`` = 1/2 (|mu_a|^2 + |mu_b|^2 + tr(S_a + S_b)) and ``divergence`` =
        :func:`se_divergence` (the SE paper's Algorithm 1, ``se_objective = "published"``), or
        ``smoothness`` = W2^2 (``"w2"``). ``x_b`` is Select's point."""
        x_b = self.select(x, mu, logvar, generator)
        mu_b, logvar_b = self.encode(x_b)
        divergence = self.divergence(mu, logvar, mu_b, logvar_b)
        if self.config.se_objective == "w2":
            return {"x_b": x_b, "smoothness": divergence}
        prior = 0.5 * (mu.pow(2).sum(1) + mu_b.pow(2).sum(1) + logvar.exp().sum(1) + logvar_b.exp().sum(1))
        return {"x_b": x_b, "prior_fidelity": prior, "divergence": divergence}

    def loss(self, x: torch.Tensor, sample: bool = True) -> dict:
        """Per-image terms; ``loss`` is the negative ELBO in evaluation mode and the variant's training
        objective in training mode: + the AVAE terms; for SE, either the paper's objective (the
        reconstruction error of x_a + prior fidelity + divergence: it replaces the KL) or the negative
        ELBO + se_weight * W2^2."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        reconstruction = self.decode(z)
        nll, kl = self.nll(x, reconstruction), kl_standard_normal(mu, logvar)
        out = {"reconstruction": reconstruction, "mu": mu, "logvar": logvar, "nll": nll, "kl": kl, "loss": nll + kl}
        if self.training and torch.is_grad_enabled():
            c = self.config
            if c.smooth:
                terms = self.smooth_terms(x, mu, logvar)
                out.update({k: v for k, v in terms.items() if k != "x_b"})
                if c.se_objective == "published":
                    out["loss"] = nll + terms["prior_fidelity"] + terms["divergence"]
                else:
                    out["loss"] = out["loss"] + c.se_weight * terms["smoothness"]
            if c.avae:
                terms = self.autoencoding_terms(mu, logvar, reconstruction)
                out.update(terms)
                out["loss"] = out["loss"] + c.avae_weight * terms["avae"]
        return out


def post_process_encoder(model: AutoencodingVAE, steps: int, *, batch_size: int = 64, lr: float = 1e-4,
                         seed: int = 0, progress: bool = False) -> AutoencodingVAE:
    """AVAE as post-processing: fine-tune the encoder of a trained model (decoder frozen) on the
    model's own samples, never on training data (Cemgil et al. 2020).

    Each step draws fresh z0 ~ N(0, I), decodes the means x = g(z0) (no observation noise) and
    minimises the encoder's negative ELBO on x plus the AVAE terms. Batch norm keeps the statistics
    of the training data (its layers stay in eval mode): updated on the model's own, blurrier samples
    they would shift the encoder's inputs on real images and change the frozen decoder itself (measured
    on the conv nets: summed squared error 13 -> 49 and colour kept after one reconstruction 42 %).
    Returns ``model`` with ``avae=True`` in its config, in eval mode. Separate from
    :func:`avae.train.loop.fit` because the data is drawn from the model at every step, not from a dataset.
    """
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.config.avae = True
    model.decoder.requires_grad_(False)
    optimizer = torch.optim.Adam(model.encoder.parameters(), lr=lr)
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    for _ in tqdm(range(steps), desc="AVAE post-processing", disable=None if progress else True, leave=False):
        with torch.no_grad():
            x = model.decode(torch.randn(batch_size, model.config.latent, generator=generator))
        loss = model.loss(x, sample=True)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()
    model.decoder.requires_grad_(True)
    return model.eval()


__all__ = ["AutoencodingVAE", "AutoencodingVAEConfig", "released_init_", "gaussian_coupling", "gaussian_entropy", "w2_squared",
           "entropic_w2", "se_divergence", "post_process_encoder"]
