"""Affine VAE (Bidart & Wong 2019): an affine layer before the encoder, its inverse after the decoder.

``AffineVAE(model)`` wraps any model of :mod:`avae.models` (trained or new). For a pose ``p``:

    output = A_p^-1( decode( encode( A_p(x) ) ) ),   loss = nll(x, output) + KL   (paper eq. 2)

so the loss is always measured against the image as given. Encoding is deterministic (the
posterior mean) by default, as in the paper's alignment.
"""
from __future__ import annotations

import torch
from torch import nn

from avae.transforms import PoseFamily, pose_family, sample_with


class AffineVAE(nn.Module):
    """Any model of avae's protocol with an affine layer before its encoder and the inverse after its
    decoder (Bidart & Wong 2019, eq. 2): at pose p, the loss of image x is
    nll(x, A_p^-1(decode(encode(A_p x)))) + KL, always against x as given. ``pose``: a family of
    :mod:`avae.transforms` (rotation, similarity, affine, affine-translation). :func:`avae.align.align`
    searches p per image."""

    def __init__(self, model: nn.Module, pose: str | PoseFamily = "rotation"):
        super().__init__()
        self.model = model
        self.family = pose_family(pose)

    def loss_with_matrices(self, x, to_canonical, from_canonical, sample: bool = False) -> dict:
        """Per-sample terms with explicit sampling matrices (affine_grid convention, (N, 2, 3)).

        ``to_canonical`` resamples x into the frame the model sees; ``from_canonical`` maps the
        reconstruction back. Used directly for the oracle (the true inverse perturbation).
        """
        aligned = sample_with(x, to_canonical)
        out = self.model.reconstruct(aligned, sample=sample)
        reconstruction = sample_with(out["reconstruction"], from_canonical)
        nll = self.model.nll(x, reconstruction)
        return {"loss": nll + out["kl"], "nll": nll, "kl": out["kl"], "aligned": aligned,
                "reconstruction": reconstruction, "canonical_reconstruction": out["reconstruction"]}

    def loss(self, x: torch.Tensor, params: torch.Tensor, sample: bool = False) -> dict:
        """Per-sample terms with the content of x moved by pose ``params`` (N, P) before encoding."""
        f = self.family
        return self.loss_with_matrices(x, f.inverse_matrix(params), f.matrix(params), sample=sample)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.loss(x, params)["reconstruction"]
