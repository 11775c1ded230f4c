"""A small localization network (spatial-transformer style) that predicts a pose from an image.

The angle is predicted as a classification over ``bins`` sectors of the circle plus an offset
within each sector, so that two equally good angles 180 degrees apart (a "1", a "0") stay two
peaks instead of averaging to a wrong angle; the remaining parameters are regressed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from avae.errors import AvaeError
from avae.transforms import POSE_FAMILIES, pose_family, wrap_angle


@dataclass
class PoseNetConfig:
    pose: str = "rotation"
    channels: int = 1
    image_size: int = 40
    bins: int = 36
    hidden: int = 256
    width: int = 32  # channels of the first convolution; the next two have twice as many
    label_sigma: float = 0.0  # degrees: spread the sector target as a circular Gaussian (0: one sector)

    def validate(self, where: str = "config") -> None:
        if self.pose not in POSE_FAMILIES:
            raise AvaeError(f"{where}: field 'pose' must be one of {', '.join(POSE_FAMILIES)}, got {self.pose!r}")
        if self.bins < 2 or self.hidden < 1 or self.width < 1 or self.image_size < 8:
            raise AvaeError(f"{where}: need bins >= 2, hidden >= 1, width >= 1 and image_size >= 8")
        if not self.label_sigma >= 0:
            raise AvaeError(f"{where}: field 'label_sigma' must be >= 0 degrees, got {self.label_sigma!r}")


class PoseNet(nn.Module):
    name = "pose-net"
    Config = PoseNetConfig

    def __init__(self, config: PoseNetConfig | None = None):
        super().__init__()
        self.config = c = config or PoseNetConfig()
        self.family = pose_family(c.pose)
        c.validate("pose network")
        side = c.image_size
        for _ in range(3):  # three stride-2 convolutions (padded): 40 -> 5, 28 -> 4
            side = (side + 1) // 2
        self.features = nn.Sequential(
            nn.Conv2d(c.channels, c.width, 5, stride=2, padding=2), nn.ELU(),
            nn.Conv2d(c.width, 2 * c.width, 3, stride=2, padding=1), nn.ELU(),
            nn.Conv2d(2 * c.width, 2 * c.width, 3, stride=2, padding=1), nn.ELU(),
            nn.Flatten(),
            nn.Linear(2 * c.width * side**2, c.hidden), nn.ELU(),
        )
        self.angle_logits = nn.Linear(c.hidden, c.bins)
        self.angle_offsets = nn.Linear(c.hidden, c.bins)
        # the parameters after the angle (none for rotation), regressed
        self.others = nn.Linear(c.hidden, self.family.n_params - 1) if self.family.n_params > 1 else None
        for head in (self.angle_offsets, self.others):  # start at the sector centre / identity
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    @property
    def bin_width(self) -> float:
        return 2 * math.pi / self.config.bins

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # channels-last input: oneDNN's convolutions (and their backward) run 2x faster here
        h = self.features(x.contiguous(memory_format=torch.channels_last))
        others = self.others(h) if self.others is not None else h.new_zeros(h.shape[0], 0)
        return {"logits": self.angle_logits(h), "offsets": self.angle_offsets(h), "others": others}

    def predict(self, x: torch.Tensor, k: int = 1, turns: int = 1) -> torch.Tensor:
        """(N, C, H, W) -> (N, k, P): the k most likely poses, best first.

        ``turns`` (1, 2 or 4; pose 'rotation' only) is a test-time ensemble at ``turns`` network passes:
        the image is also shown turned by quarter turns (``torch.rot90``: exact, no resampling), and
        each view's sector log-probabilities and offsets, shifted back by its turn, are added up
        (offsets averaged). A turn by q quarters moves the wanted angle by -q quarters."""
        if turns not in (1, 2, 4):
            raise AvaeError(f"pose network: turns must be 1, 2 or 4 (quarter turns of the image), got {turns!r}")
        if turns > 1 and (self.family.name != "rotation" or self.config.bins % 4 or x.shape[-1] != x.shape[-2]):
            raise AvaeError("pose network: turns > 1 needs pose 'rotation', bins divisible by 4 and square images, "
                            f"got pose '{self.family.name}', {self.config.bins} bins, images {tuple(x.shape[-2:])}")
        log_p = offsets = others = 0
        for view in range(turns):
            quarters = view * (4 // turns)
            out = self(torch.rot90(x, quarters, dims=(-2, -1)) if quarters else x)
            shift = quarters * self.config.bins // 4
            log_p = log_p + out["logits"].log_softmax(1).roll(shift, 1)
            offsets = offsets + out["offsets"].clamp(-0.5, 0.5).roll(shift, 1) / turns
            others = others + out["others"] / turns
        top = log_p.topk(k, dim=1).indices  # (N, k)
        offset = offsets.gather(1, top)
        angle = (top.to(offset.dtype) + 0.5 + offset) * self.bin_width
        angle = wrap_angle(angle)
        return torch.cat([angle.unsqueeze(-1), others.unsqueeze(1).expand(-1, k, -1)], -1)

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss against target poses (N, P): sector cross-entropy, offset and the rest."""
        out = self(x)
        position = torch.remainder(target[:, 0], 2 * math.pi) / self.bin_width
        sector = position.floor().long().clamp(0, self.config.bins - 1)
        offset = position - sector - 0.5
        if self.config.label_sigma > 0:
            # neighbouring sectors share the credit: an angle near a border is not "wrong" one sector over
            centres = (torch.arange(self.config.bins, device=x.device, dtype=target.dtype) + 0.5) * self.bin_width
            gap = wrap_angle(centres[None] - target[:, :1])
            soft = torch.softmax(-0.5 * (gap / math.radians(self.config.label_sigma)) ** 2, dim=1)
            ce = -(soft * out["logits"].log_softmax(1)).sum(1)
        else:
            ce = nn.functional.cross_entropy(out["logits"], sector, reduction="none")
        off = nn.functional.smooth_l1_loss(out["offsets"].gather(1, sector[:, None])[:, 0], offset, reduction="none", beta=0.1)
        rest = (out["others"] - target[:, 1:]).pow(2).sum(1)
        return ce + 4 * off + 10 * rest
