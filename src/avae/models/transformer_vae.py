"""Transformer VAE and Double Transformer VAE (A. Vivé, "Variational generation of images by deep
spatial architectures", 2017).

Both add a pose latent ``u`` beside the content latent ``z``:

* **TVAE**: the encoder gives q(z|x) and q(u|x); the decoder draws a canonical image from z and a
  spatial transformer with pose u moves it into the output: ``x_hat = T_u(decode(z))``.
* **DTVAE**: a localization network gives q(u|x); x is brought to the canonical frame with the
  inverse transform, a VAE encodes and decodes it, and the output is moved back with u:
  ``x_hat = T_u(decode(z))``, ``z ~ q(z | T_u^-1(x))``.

Transformers (all start at the identity: the pose head has zero weights and an identity bias):
``affine`` (the 2x3 sampling matrix, 6 degrees of freedom), ``affine5`` (the thesis's 5 degrees of
freedom: diag(Sx, Sy) [R(psi) | T], with u = (psi, Sx, Sy, Tx, Ty)) and ``tps`` (offsets of
a 3x3 grid of thin-plate-spline control points, 18 degrees of freedom). ``pose(canonical, u)`` moves
the canonical image into the image's frame and ``unpose(x, u)`` undoes it (exactly for the affine
transformers, at the control points for the TPS). The affine poses are sampling matrices, as in a
spatial transformer network (output pixel p reads the canonical image at A p); the TPS pose says
where the canonical content at each control point goes.

Priors on u (thesis section V.iii): ``none`` (u deterministic, no KL term), ``diagonal`` (a normal
prior with a learned mean and variance on the pose parameters, eq. 7; with ``affine5`` this is the
prior on (psi, Sx, Sy, Tx, Ty)) and ``full`` (u ~ N(0, I) of dimension ``rank`` and pose =
W u + b with W, b learned: a full-covariance normal prior on the pose when rank = degrees of freedom).
The loss is the negative ELBO: Bernoulli nll (means clipped to [1e-6, 1 - 1e-6]) + KL(z) + KL(u).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from avae.errors import AvaeError
from avae.models.likelihoods import kl_standard_normal
from avae.models.vae import VAEConfig, LatentVariableModel
from avae.nets import DECODERS, ENCODERS
from avae.nets.localization import LocalizationNet
from avae.transforms import sample_with, tps_unwarp, tps_warp

PRIORS = ("none", "diagonal", "identity", "full")
# Initial standard deviation of q(u|x) and of the prior on u (in pose units: 0.1 = 10 % of a scale,
# 1.4 pixels of translation on 28x28 images), so that the KL on u starts at zero.
INITIAL_POSE_STD = 0.1
_LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------------- transformers
class AffineTransformer:
    """6 degrees of freedom: the 2x3 sampling matrix (affine_grid's convention), row by row."""

    name, dof = "affine", 6

    def identity(self) -> torch.Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def pose(self, canonical: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return sample_with(canonical, params.view(-1, 2, 3))

    def unpose(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        m = params.view(-1, 2, 3)
        a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
        det = a * d - b * c
        det = torch.where(det < 0, -1.0, 1.0) * det.abs().clamp_min(1e-3)  # a collapsed pose stays finite
        inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[:, None, None]
        shift = -(inv @ m[:, :, 2:]).squeeze(-1)
        return sample_with(x, torch.cat([inv, shift.unsqueeze(-1)], -1))


class Affine5Transformer:
    """The thesis's 5 degrees of freedom u = (psi, Sx, Sy, Tx, Ty), as its sampling matrix
    [[Sx cos psi, -Sx sin psi, Sx Tx], [Sy sin psi, Sy cos psi, Sy Ty]] = diag(Sx, Sy) [R(psi) | T]
    (identity at u = (0, 1, 1, 0, 0)): output pixel p reads the canonical image at that matrix times p."""

    name, dof = "affine5", 5

    def identity(self) -> torch.Tensor:
        return torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0])

    @staticmethod
    def matrix(params: torch.Tensor) -> torch.Tensor:
        """(N, 5) -> (N, 2, 3): the thesis's sampling matrix."""
        psi, sx, sy, tx, ty = params.unbind(-1)
        cos, sin = torch.cos(psi), torch.sin(psi)
        return torch.stack([torch.stack([sx * cos, -sx * sin, sx * tx], -1),
                            torch.stack([sy * sin, sy * cos, sy * ty], -1)], -2)

    @staticmethod
    def inverse_matrix(params: torch.Tensor) -> torch.Tensor:
        """(N, 5) -> (N, 2, 3): the inverse map, [R(-psi) diag(1/Sx, 1/Sy) | -R(-psi) T]."""
        psi, sx, sy, tx, ty = params.unbind(-1)
        # a collapsed scale stays finite (as the 6-dof transformer's determinant)
        inv_sx, inv_sy = (1 / torch.where(s < 0, -1.0, 1.0) / s.abs().clamp_min(1e-3) for s in (sx, sy))
        cos, sin = torch.cos(psi), torch.sin(psi)
        return torch.stack([torch.stack([cos * inv_sx, sin * inv_sy, -(cos * tx + sin * ty)], -1),
                            torch.stack([-sin * inv_sx, cos * inv_sy, sin * tx - cos * ty], -1)], -2)

    def pose(self, canonical: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return sample_with(canonical, self.matrix(params))

    def unpose(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return sample_with(x, self.inverse_matrix(params))


class TPSTransformer:
    """Thin-plate spline: the canonical content at each of grid x grid control points moves by (dx, dy)."""

    name = "tps"

    def __init__(self, grid: int = 3):
        self.grid = grid
        self.dof = 2 * grid * grid

    def identity(self) -> torch.Tensor:
        return torch.zeros(self.dof)

    def pose(self, canonical: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return tps_warp(canonical, params, self.grid)

    def unpose(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return tps_unwarp(x, params, self.grid)


TRANSFORMERS = {"affine": AffineTransformer, "affine5": Affine5Transformer, "tps": TPSTransformer}


def make_transformer(name: str, tps_grid: int = 3):
    if name not in TRANSFORMERS:
        raise AvaeError(f"unknown transformer '{name}': expected one of {', '.join(TRANSFORMERS)}")
    return TPSTransformer(tps_grid) if name == "tps" else TRANSFORMERS[name]()


# ----------------------------------------------------------------------------------- pose latent
def normal_log_density(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * (_LOG_2PI + logvar + (x - mean).pow(2) / logvar.exp()).sum(-1)


def kl_diagonal_normals(mu, logvar, prior_mean, prior_logvar) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mean, exp(prior_logvar))), summed over the last dimension."""
    return 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - prior_mean).pow(2)) / prior_logvar.exp() - 1).sum(-1)


class PoseLatent(nn.Module):
    """q(u|x) from a network's raw outputs, the prior p(u), and the pose parameters u gives."""

    def __init__(self, transformer, prior: str, rank: int = 0):
        super().__init__()
        if prior not in PRIORS:
            raise AvaeError(f"unknown prior on u '{prior}': expected one of {', '.join(PRIORS)}")
        self.prior, self.dof = prior, transformer.dof
        self.dim = (rank or self.dof) if prior == "full" else self.dof  # dimension of u
        self.n_outputs = self.dim if prior == "none" else 2 * self.dim
        identity = transformer.identity()
        log_var0 = 2 * math.log(INITIAL_POSE_STD)
        if prior == "diagonal":
            self.prior_mean = nn.Parameter(identity.clone())
            self.prior_logvar = nn.Parameter(torch.full((self.dof,), log_var0))
        elif prior == "identity":  # the thesis's Fig. 10 prior: centred on the identity, a learned variance
            self.register_buffer("prior_mean", identity.clone())
            self.prior_logvar = nn.Parameter(torch.full((self.dof,), log_var0))
        elif prior == "full":  # pose = W u + b, u ~ N(0, I)
            self.weight = nn.Parameter(INITIAL_POSE_STD * torch.eye(self.dof, self.dim))
            self.bias = nn.Parameter(identity.clone())
        # the training digits' mean pose (running average), where samples of prior "none" are posed
        self.register_buffer("pose_mean", identity.clone())
        self._identity, self._log_var0 = identity, log_var0

    def init_head(self, layer: nn.Linear, start: int) -> None:
        """Zero weights and identity bias for the rows ``start:`` of ``layer`` that give u."""
        rows = slice(start, start + self.n_outputs)
        with torch.no_grad():
            layer.weight[rows] = 0.0
            mean = torch.zeros(self.dim) if self.prior == "full" else self._identity
            logvar = torch.full((self.dim,), 0.0 if self.prior == "full" else self._log_var0)
            layer.bias[rows] = mean if self.prior == "none" else torch.cat([mean, logvar])

    def to_pose(self, u: torch.Tensor) -> torch.Tensor:
        return u @ self.weight.T + self.bias if self.prior == "full" else u

    def posterior(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.prior == "none":
            return raw, None
        return raw.chunk(2, dim=-1)

    def forward(self, raw: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs (N, n_outputs) -> pose (N, dof) and KL(q(u|x) || p(u)) (N,)."""
        mu, logvar = self.posterior(raw)
        if self.prior == "none":
            u, kl = mu, mu.new_zeros(mu.shape[0])
        else:
            u = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
            kl = (kl_standard_normal(mu, logvar) if self.prior == "full"
                  else kl_diagonal_normals(mu, logvar, self.prior_mean, self.prior_logvar))
        pose = self.to_pose(u)
        if self.training:
            with torch.no_grad():
                self.pose_mean.lerp_(pose.detach().mean(0), 0.01)
        return pose, kl

    def sample_posterior(self, raw: torch.Tensor, k: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """k draws per image: poses (k, N, dof) and log q(u|x) - log p(u) (k, N); both deterministic
        (and the log ratio zero) for prior ``none``, whose u is a point estimate, not a latent."""
        mu, logvar = self.posterior(raw)
        if self.prior == "none":
            return mu.expand(k, -1, -1), mu.new_zeros(k, mu.shape[0])
        eps = torch.randn(k, *mu.shape, generator=generator).to(mu)
        u = mu + eps * (0.5 * logvar).exp()
        log_q = normal_log_density(u, mu, logvar)
        log_p = (normal_log_density(u, torch.zeros_like(u), torch.zeros_like(u)) if self.prior == "full"
                 else normal_log_density(u, self.prior_mean, self.prior_logvar))
        return self.to_pose(u), log_q - log_p

    def sample_prior(self, n: int, generator=None) -> torch.Tensor:
        """(n, dof) poses from p(u); the mean pose for prior ``none``."""
        if self.prior == "none":
            return self.pose_mean.expand(n, -1).clone()
        eps = torch.randn(n, self.dim, generator=generator).to(self.pose_mean)
        if self.prior == "full":
            return self.to_pose(eps)
        return self.prior_mean + eps * (0.5 * self.prior_logvar).exp()


# ----------------------------------------------------------------------------------- models
@dataclass
class TransformerVAEConfig(VAEConfig):
    """Fields of :class:`TransformerVAE`: the thesis's dense nets, Bernoulli likelihood and 28x28 digits by
    default, the transformer of the pose u (``affine``, ``affine5``, ``tps`` with ``tps_grid``), the prior
    on u (``none``, ``diagonal``, ``identity``, ``full``) and, for ``full``, u's dimension (``rank``)."""

    latent: int = 8  # dimension of z
    image_size: int = 28  # the thesis's 28x28 MNIST
    net: str = "mlp"  # the thesis's dense nets (two hidden layers of 256 ReLU units), or "conv"
    likelihood: str = "bernoulli"
    transformer: str = "affine"  # affine (6 dof), affine5 (5 dof), tps (2 * tps_grid**2 dof)
    prior: str = "none"  # prior on u: none, diagonal, identity, full
    rank: int = 0  # prior "full": dimension of u (0: the transformer's degrees of freedom)
    tps_grid: int = 3

    def validate(self, where: str = "config") -> None:
        super().validate(where)
        for field, allowed in (("transformer", TRANSFORMERS), ("prior", PRIORS)):
            if getattr(self, field) not in allowed:
                raise AvaeError(f"{where}: field '{field}' must be one of {', '.join(allowed)}, got {getattr(self, field)!r}")
        if self.rank < 0 or self.tps_grid < 2:
            raise AvaeError(f"{where}: need rank >= 0 and tps_grid >= 2, got {self.rank} and {self.tps_grid}")

    @property
    def pose_dof(self) -> int:
        return make_transformer(self.transformer, self.tps_grid).dof


@dataclass
class DoubleTransformerVAEConfig(TransformerVAEConfig):
    """:class:`TransformerVAEConfig` plus the width of the DTVAE's localization net."""

    localization_hidden: int = 128  # the thesis's localization net: one dense layer of 128 units

    def validate(self, where: str = "config") -> None:
        super().validate(where)
        if self.localization_hidden < 1:
            raise AvaeError(f"{where}: field 'localization_hidden' must be positive, got {self.localization_hidden}")


class _PosedModel(LatentVariableModel):
    """What TVAE and DTVAE share: the canonical decoder, the transformer and the pose latent.

    Each subclass defines ``_pose_raw(x)``, the raw pose-head output: the TVAE's encoder head, the
    DTVAE's localization net."""

    def _build_common(self, c: TransformerVAEConfig) -> None:
        self.transformer = make_transformer(c.transformer, c.tps_grid)
        self.pose_latent = PoseLatent(self.transformer, c.prior, c.rank)
        self.decoder = DECODERS[c.net](c.latent, c.channels, c.image_size)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent) -> (N, C, S, S) canonical image (likelihood means before the transformer)."""
        out = self.decoder(z)
        return torch.sigmoid(out) if self.config.output == "sigmoid" else out

    def pose_of(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) -> (N, dof) posterior-mean pose of each image."""
        mu, _ = self.pose_latent.posterior(self._pose_raw(x))
        return self.pose_latent.to_pose(mu)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, pose: torch.Tensor | None = None) -> torch.Tensor:
        """n images: z ~ N(0, I), posed by ``pose`` ((dof,) or (n, dof)) or by u ~ p(u)
        (the training digits' mean pose for prior ``none``)."""
        z = torch.randn(n, self.config.latent, generator=generator).to(self.pose_latent.pose_mean)
        pose = self.pose_latent.sample_prior(n, generator) if pose is None else pose.to(z).expand(n, -1)
        return self.transformer.pose(self.decode(z), pose)

    def _outputs(self, mu, logvar, pose, kl_u, sample: bool) -> dict:
        """The protocol's outputs from q(z|.)'s parameters and the pose: decode z, pose the canonical image."""
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        canonical = self.decode(z)
        kl_z = kl_standard_normal(mu, logvar)
        return {"reconstruction": self.transformer.pose(canonical, pose), "kl": kl_z + kl_u, "kl_z": kl_z,
                "kl_u": kl_u, "mu": mu, "logvar": logvar, "pose": pose, "canonical": canonical}

    def _log_weights_given(self, x, z_mu, z_logvar, poses, log_ratio_u, generator):
        """log p(x, z, u) - log q(z, u | x) for one batch of draws: z_mu, z_logvar (k, N, L) or
        (N, L); poses (k, N, dof) -> (k, N)."""
        k, n = poses.shape[:2]
        eps = torch.randn(k, n, self.config.latent, generator=generator).to(x)
        z = z_mu + eps * (0.5 * z_logvar).exp()
        log_ratio_z = normal_log_density(z, z_mu, z_logvar) - normal_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
        canonical = self.decode(z.flatten(0, 1))
        recon = self.transformer.pose(canonical, poses.flatten(0, 1))
        xs = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)
        log_px = self.log_likelihood(xs, recon).view(k, n)
        return log_px - log_ratio_z - log_ratio_u


class TransformerVAE(_PosedModel):
    """TVAE: encoder -> (z, u); x_hat = T_u(decode(z))."""

    name = "tvae"
    Config = TransformerVAEConfig

    def __init__(self, config: TransformerVAEConfig | None = None):
        super().__init__()
        self.config = c = config or TransformerVAEConfig()
        self._build_common(c)
        self.encoder = ENCODERS[c.net](c.channels, c.image_size, 2 * c.latent + self.pose_latent.n_outputs)
        last = [m for m in self.encoder.modules() if isinstance(m, nn.Linear)][-1]
        self.pose_latent.init_head(last, 2 * c.latent)

    def _split(self, x: torch.Tensor):
        h = self.encoder(x)
        mu, logvar = h[:, : 2 * self.config.latent].chunk(2, dim=1)
        return mu, logvar, h[:, 2 * self.config.latent :]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, S, S) -> posterior mean and log-variance of the content latent z, each (N, latent)."""
        mu, logvar, _ = self._split(x)
        return mu, logvar

    def _pose_raw(self, x: torch.Tensor) -> torch.Tensor:
        return self._split(x)[2]

    def reconstruct(self, x: torch.Tensor, sample: bool = True) -> dict:
        mu, logvar, raw = self._split(x)
        pose, kl_u = self.pose_latent(raw, sample)
        return self._outputs(mu, logvar, pose, kl_u, sample)

    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, k) log importance weights log p(x, z, u) - log q(z, u | x), z and u drawn from q."""
        mu, logvar, raw = self._split(x)
        poses, log_ratio_u = self.pose_latent.sample_posterior(raw, k, generator)
        return self._log_weights_given(x, mu, logvar, poses, log_ratio_u, generator).T


class DoubleTransformerVAE(_PosedModel):
    """DTVAE: localization net -> u; z ~ q(z | T_u^-1(x)); x_hat = T_u(decode(z))."""

    name = "dtvae"
    Config = DoubleTransformerVAEConfig

    def __init__(self, config: DoubleTransformerVAEConfig | None = None):
        super().__init__()
        self.config = c = config or DoubleTransformerVAEConfig()
        self._build_common(c)
        self.localizer = LocalizationNet(c.channels, c.image_size, self.pose_latent.n_outputs, c.localization_hidden)
        self.pose_latent.init_head(self.localizer.head, 0)
        self.encoder = ENCODERS[c.net](c.channels, c.image_size, 2 * c.latent)

    def _pose_raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.localizer(x)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, S, S) -> posterior mean and log-variance of z for x brought to its mean canonical pose."""
        mu, logvar = self.encoder(self.transformer.unpose(x, self.pose_of(x))).chunk(2, dim=1)
        return mu, logvar

    def reconstruct(self, x: torch.Tensor, sample: bool = True) -> dict:
        pose, kl_u = self.pose_latent(self.localizer(x), sample)
        aligned = self.transformer.unpose(x, pose)
        mu, logvar = self.encoder(aligned).chunk(2, dim=1)
        return {**self._outputs(mu, logvar, pose, kl_u, sample), "canonical_input": aligned}

    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, k) log importance weights with the proposal q(u|x) q(z | T_u^-1(x))."""
        poses, log_ratio_u = self.pose_latent.sample_posterior(self.localizer(x), k, generator)
        n = x.shape[0]
        xs = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)
        mu, logvar = self.encoder(self.transformer.unpose(xs, poses.flatten(0, 1))).chunk(2, dim=1)
        return self._log_weights_given(x, mu.view(k, n, -1), logvar.view(k, n, -1), poses, log_ratio_u, generator).T


def log_weights(model, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, k) log importance weights log p(x, latents) - log q(latents | x) of any model here (a plain
    :class:`~avae.models.vae.VAE` included; Bernoulli or Gaussian, with its normalising constant, see
    ``log_likelihood``); their mean over k estimates the ELBO and their log-mean-exp log p(x) (thesis
    section VI.i)."""
    if hasattr(model, "log_weights"):
        return model.log_weights(x, k, generator)
    mu, logvar = model.encode(x)
    n = x.shape[0]
    eps = torch.randn(k, n, mu.shape[1], generator=generator).to(x)
    z = mu + eps * (0.5 * logvar).exp()
    log_ratio = normal_log_density(z, mu, logvar) - normal_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
    recon = model.decode(z.flatten(0, 1))
    log_px = model.log_likelihood(x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1), recon).view(k, n)
    return (log_px - log_ratio).T


@torch.no_grad()
def importance_sampled_bounds(model, x: torch.Tensor, k: int, *, chunk: int = 50, batch_size: int = 200,
                              seed: int = 0) -> dict[str, torch.Tensor]:
    """Per image (N,): ``log_px`` = log-mean-exp of k importance weights (a lower bound on log p(x)
    that tightens as k grows) and ``elbo`` = their mean (an unbiased ELBO estimate). Drawn in chunks
    of ``chunk`` samples so memory stays bounded."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    log_px, elbo = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        weights = torch.cat([log_weights(model, xb, min(chunk, k - done), generator)
                             for done in range(0, k, chunk)], dim=1).double()
        log_px.append(torch.logsumexp(weights, 1) - math.log(k))
        elbo.append(weights.mean(1))
    return {"log_px": torch.cat(log_px), "elbo": torch.cat(elbo)}


__all__ = ["TransformerVAE", "TransformerVAEConfig", "DoubleTransformerVAE", "DoubleTransformerVAEConfig",
           "PoseLatent", "PRIORS", "TRANSFORMERS", "make_transformer", "log_weights", "importance_sampled_bounds",
           "kl_diagonal_normals", "normal_log_density"]
