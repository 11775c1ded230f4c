"""A small conv digit classifier trained here, whose penultimate features give a sample-quality
distance without downloaded Inception weights ("FD-MNISTnet": the Fréchet distance in its features)."""
from __future__ import annotations

import torch
from torch import nn


class MNISTNet(nn.Module):
    """(N, C, 28, 28) -> 10 logits; ``features`` gives the 128 penultimate activations."""

    def __init__(self, channels: int = 3, image_size: int = 28, n_classes: int = 10, width: int = 128):
        super().__init__()
        self.config = {"channels": channels, "image_size": image_size, "n_classes": n_classes, "width": width}
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * ((image_size + 3) // 4) ** 2, width), nn.ReLU(),
        )
        self.head = nn.Linear(width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 8, batch_size: int = 128,
                     lr: float = 1e-3, seed: int = 0) -> MNISTNet:
    """Adam on cross-entropy; seeded. Returns the net in eval mode."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = MNISTNet(images.shape[1], images.shape[-1])
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            index = order[start:start + batch_size]
            loss = nn.functional.cross_entropy(net(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net.eval()
