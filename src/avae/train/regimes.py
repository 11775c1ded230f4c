"""Training regimes: strategies that say what loss each batch contributes.

One loop (:func:`avae.train.loop.fit`) serves them all (Bidart & Wong 2019, section 4.3):

* ``plain``: single orientation (X_sub), the digits as they are;
* ``random-rotation``: random perturbations (X_full), each image turned by a fresh uniform angle;
* ``transform-optimized``: X_full, and before each gradient step the pose of every image is
  optimised with :func:`avae.align.align` (section 3.3); the step then minimises the Affine VAE
  loss at those poses, so the model only has to learn a canonical subset of poses.
* ``recolor``: ColorMNIST as the Autoencoding VAE's released code trains on it: the grey training
  digits get a fresh colour per image in every batch (:func:`avae.data.color.recolor`), so a model
  sees each digit in many colours over the run.

Every regime runs on the device of its batch (``--device cuda``): random angles are drawn on the
CPU generator the loop reseeds per batch (so a run draws the same angles on every device) and
moved to the batch's device once; the per-image pose record stays on the CPU, where checkpoints,
the distributed merge and ``pose_angles.npz`` read it.
"""
from __future__ import annotations

import math

import torch

from avae.errors import AvaeError
from avae.transforms import warp


def _random_angles(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(N, 1) uniform angles in [0, 2 pi), one per image of ``x``, on its device and in its dtype."""
    return (torch.rand(x.shape[0], 1, generator=generator) * (2 * math.pi)).to(device=x.device, dtype=x.dtype)


class Plain:
    name = "plain"

    def loss(self, model, x, index, epoch, generator):
        return model.loss(x, sample=True)["loss"]


class RandomRotation:
    name = "random-rotation"

    def loss(self, model, x, index, epoch, generator):
        return model.loss(warp(x, _random_angles(x, generator), "rotation"), sample=True)["loss"]


class TransformOptimized:
    """Pose search on every batch (the original code: 20 restarts, 5 Adam steps), then a step on the weights.

    Records, per epoch, the canonical angle of every training image: the random rotation it was
    given plus the optimised pose, in degrees [0, 360), for the per-class histograms (Figs. 7, 8).
    With ``warm_start``, an image's canonical angle from the previous epoch, moved by this epoch's
    rotation, joins its candidates, so a few fresh restarts and steps suffice.
    """

    name = "transform-optimized"

    def __init__(self, n_images: int, restarts: int = 20, steps: int = 5, lr: float = 0.01,
                 warm_start: bool = False, polish: int = 0):
        self.restarts, self.steps, self.lr, self.warm_start = restarts, steps, lr, warm_start
        self.polish = polish
        self.angles: dict[int, torch.Tensor] = {}
        self.n_images = n_images

    def loss(self, model, x, index, epoch, generator):
        from avae.align import align
        from avae.models.affine_vae import AffineVAE

        index = index.cpu()  # rows of the pose record, which lives on the CPU
        shift = _random_angles(x, generator)
        shifted = warp(x, shift, "rotation")
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        init = None
        previous = self.angles.get(epoch - 1)
        if self.warm_start and previous is not None and torch.isfinite(previous[index]).all():
            init = torch.deg2rad(previous[index]).to(device=x.device, dtype=x.dtype).unsqueeze(1) - shift
        found = align(model, shifted, "rotation", restarts=self.restarts, steps=self.steps, lr=self.lr, seed=seed,
                      init=init, polish=self.polish)
        record = self.angles.setdefault(epoch, self._empty_record())
        record[index] = torch.rad2deg(shift[:, 0] + found.pose[:, 0]).remainder(360.0).to(record)
        return AffineVAE(model, "rotation").loss(shifted, found.pose, sample=True)["loss"]

    def merge_ranks(self, epoch: int, merge) -> None:
        """Distributed training: each rank recorded only its own images of ``epoch``; ``merge``
        (:func:`avae.train.distributed.merge_records`, collective) completes every rank's record."""
        self.angles[epoch] = merge(self.angles.get(epoch, self._empty_record()))

    def _empty_record(self) -> torch.Tensor:
        return torch.full((self.n_images,), float("nan"), device="cpu")

    def state_dict(self) -> dict:
        return {"angles": {str(k): v for k, v in self.angles.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.angles = {int(k): v.cpu() for k, v in state["angles"].items()}

    def write_artifacts(self, out, train_data) -> None:
        """``pose_angles.npz``: ``angles`` (epochs x images, degrees), ``epochs``, ``labels``."""
        import numpy as np

        from avae.io import atomic_path

        epochs = sorted(self.angles)
        with atomic_path(out / "pose_angles.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, angles=torch.stack([self.angles[e] for e in epochs]).numpy(),
                                epochs=np.array(epochs) + 1, labels=train_data.labels.numpy())


class Recolor:
    """Per-batch recolouring: each grey image (N, 1, H, W) of a batch is multiplied by a colour drawn
    afresh from the batch's generator, so the colours differ across batches and epochs and repeat
    under the same seed. The model sees (N, 3, H, W)."""

    name = "recolor"

    def input_shape(self, shape: tuple) -> tuple:
        """The shape of one image as the model receives it, for the loop's input check."""
        if shape[0] != 1:
            from avae.errors import AvaeError

            raise AvaeError(f"training regime 'recolor' colours grey digits: got images of {shape[0]} channels")
        return (3, *shape[1:])

    def loss(self, model, x, index, epoch, generator):
        from avae.data.color import recolor

        return model.loss(recolor(x, generator)[0], sample=True)["loss"]


REGIMES = {"plain": Plain, "random-rotation": RandomRotation, "transform-optimized": TransformOptimized,
           "recolor": Recolor}


def make_regime(config, n_images: int = 0):
    """The regime a :class:`~avae.train.loop.TrainConfig` names."""
    if config.regime not in REGIMES:
        raise AvaeError(f"unknown training regime '{config.regime}': expected one of {', '.join(REGIMES)}")
    if config.regime == "transform-optimized":
        return TransformOptimized(n_images, config.pose_restarts, config.pose_steps, config.pose_lr,
                                  config.pose_warm_start, config.pose_polish)
    return REGIMES[config.regime]()
