"""ColorMNIST (Cemgil et al. 2020): each grey digit multiplied by one of the 7 non-black corners of
the RGB cube, chosen per image with a seed.

Colour id c in 1..7: red = c mod 2, green = (c // 2) mod 2, blue = c // 4 (1 red, 2 green,
3 yellow, 4 blue, 5 magenta, 6 cyan, 7 white).

>>> grey = load("mnist", split="test", data_dir="../shared/data/mnist", pad_to=None)
>>> test = color_mnist(grey, seed=0)        # images (N, 3, 28, 28) in [0, 1], labels, colors
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
        return {**super().describe(), "colored": f"ColorMNIST, 7 colours, colour seed {self.color_seed}"}


def color_mnist(data: Dataset, seed: int = 0) -> ColorMNIST:
    """Colour every grey image of ``data`` with a colour id drawn uniformly from 1..7 (seeded).

    ``data`` must hold single-channel images in [0, 1] (load MNIST with ``pad_to=None`` for the
    paper's 28 x 28).
    """
    if data.images.shape[1] != 1:
        raise AvaeError(f"{data.name} ({data.split}): ColorMNIST colours grey digits, got {data.images.shape[1]} channels")
    if data.normalization is not None:
        raise AvaeError(f"{data.name} ({data.split}): ColorMNIST needs pixels in [0, 1], not normalised ones")
    colors = torch.randint(1, 8, (len(data),), generator=torch.Generator().manual_seed(seed))
    images = data.images * color_rgb(colors)[:, :, None, None]
    fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(Dataset)}
    return ColorMNIST(**{**fields, "images": images}, colors=colors, color_seed=seed)
