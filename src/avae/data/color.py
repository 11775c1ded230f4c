"""ColorMNIST (Cemgil et al. 2020): each grey digit multiplied by one of the 7 non-black corners of
the RGB cube, chosen per image with a seed.

Colour id c in 1..7: red = c mod 2, green = (c // 2) mod 2, blue = c // 4 (1 red, 2 green,
3 yellow, 4 blue, 5 magenta, 6 cyan, 7 white).

>>> grey = load("mnist", split="test", data_dir="../shared/data/mnist", pad_to=None)
>>> test = color_mnist(grey, seed=0)        # images (N, 3, 28, 28) in [0, 1], labels, colors
>>> every = color_mnist(grey, mode="all")   # each digit in all 7 colours (the SE paper's data), 7 N images

Training as the released code does recolours every batch afresh: the ``recolor`` training regime
(:mod:`avae.train.regimes`) calls :func:`recolor` on each batch of grey digits.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from avae.data.sources import Dataset
from avae.errors import AvaeError

COLOR_NAMES = {1: "red", 2: "green", 3: "yellow", 4: "blue", 5: "magenta", 6: "cyan", 7: "white"}


def color_rgb(colors: torch.Tensor) -> torch.Tensor:
    """Colour ids (N,) in 1..7 -> RGB multipliers (N, 3) in {0, 1}."""
    c = colors.long()
    return torch.stack([c % 2, (c // 2) % 2, c // 4], dim=1).float()


@dataclass
class ColorMNIST(Dataset):
    """A :class:`~avae.data.sources.Dataset` of coloured digits: ``labels`` are the digits,
    ``colors`` the colour ids (1..7), one per image."""

    colors: torch.Tensor | None = None  # (N,) int64 in 1..7
    color_seed: int = 0

    def subset(self, index) -> ColorMNIST:
        if not isinstance(index, slice):
            index = torch.as_tensor(index)
        return dataclasses.replace(self, images=self.images[index], labels=self.labels[index],
                                   colors=self.colors[index])

    def describe(self) -> dict:
        how = "every image in all 7 colours" if self.color_seed < 0 else f"7 colours, colour seed {self.color_seed}"
        return {**super().describe(), "colored": f"ColorMNIST, {how}"}


MODES = ("random", "all")


def recolor(grey: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images (N, 1, H, W) -> (coloured (N, 3, H, W), colour ids (N,)), one colour per image drawn
    uniformly from 1..7 with ``generator`` (on the CPU, then moved to the images' device)."""
    colors = torch.randint(1, 8, (grey.shape[0],), generator=generator)
    rgb = color_rgb(colors).to(device=grey.device, dtype=grey.dtype)
    return grey * rgb[:, :, None, None], colors


def color_mnist(data: Dataset, seed: int = 0, mode: str = "random") -> ColorMNIST:
    """Coloured copies of the grey images of ``data``: ``mode="random"``, one colour id per image drawn
    uniformly from 1..7 (seeded: the test set's colours); ``"all"``, every image in all 7 colours (the SE
    paper's data; 7 N images, image-major: image i in colours 1..7 at rows 7 i .. 7 i + 6).

    ``data`` must hold single-channel images in [0, 1] (load MNIST with ``pad_to=None`` for the
    paper's 28 x 28).
    """
    if data.images.shape[1] != 1:
        raise AvaeError(f"{data.name} ({data.split}): ColorMNIST colours grey digits, got {data.images.shape[1]} channels")
    if data.normalization is not None:
        raise AvaeError(f"{data.name} ({data.split}): ColorMNIST needs pixels in [0, 1], not normalised ones")
    if mode not in MODES:
        raise AvaeError(f"ColorMNIST: mode must be one of {', '.join(MODES)}, got {mode!r}")
    fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(Dataset)}
    if mode == "all":
        colors = torch.arange(1, 8).repeat(len(data))
        grey = data.images.repeat_interleave(7, dim=0)
        fields["labels"] = data.labels.repeat_interleave(7, dim=0)
        images = grey * color_rgb(colors)[:, :, None, None]
        return ColorMNIST(**{**fields, "images": images}, colors=colors, color_seed=-1)
    images, colors = recolor(data.images, torch.Generator().manual_seed(seed))
    return ColorMNIST(**{**fields, "images": images}, colors=colors, color_seed=seed)
