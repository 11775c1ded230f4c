"""Inference copies of models: batch norm folded into the convolution before it, channels-last.

In evaluation mode a batch norm is an affine map per channel, so it can be absorbed into the
weights of the preceding (transposed) convolution; the copy computes the same function with
fewer passes over memory, and oneDNN's convolutions run faster on channels-last tensors. Used by
alignment, which runs the model many times per image (benchmarks/results/alignment.md).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``module`` with every conv -> batch-norm pair fused."""
    folded = copy.deepcopy(module).eval()
    for parent in folded.modules():
        children = list(parent.named_children())
        for (name_a, a), (name_b, b) in zip(children, children[1:]):
            if isinstance(b, nn.BatchNorm2d) and isinstance(a, (nn.Conv2d, nn.ConvTranspose2d)):
                setattr(parent, name_a, fuse_conv_bn_eval(a, b, transpose=isinstance(a, nn.ConvTranspose2d)))
                setattr(parent, name_b, nn.Identity())
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


class InferenceCopy(nn.Module):
    """A frozen, batch-norm-folded, channels-last copy of a model, with the same loss protocol
    (``reconstruct``, ``nll``, ``check_input``); gradients still flow to the *input*."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = fold_batch_norm(model).to(memory_format=torch.channels_last)
        self.name, self.config = model.name, model.config

    def check_input(self, x, where: str = "images") -> None:
        self.inner.check_input(x, where)

    def reconstruct(self, x: torch.Tensor, sample: bool = True) -> dict:
        return self.inner.reconstruct(x.contiguous(memory_format=torch.channels_last), sample=sample)

    def nll(self, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        return self.inner.nll(x, reconstruction)
