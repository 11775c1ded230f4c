"""avae: variational autoencoders that stay robust when images are rotated, sheared, scaled or attacked.

>>> import avae
>>> vae = avae.load("runs/vae-L8")                                   # any trained model
>>> x, truth = avae.data.rotated(avae.data.load("mnist", split="test"), degrees=120)
>>> result = avae.align(vae, x, pose="rotation")                      # per-image best loss and pose
"""
from avae._version import __version__
from avae import data, models, transforms  # noqa: E402
from avae.embedding import Embedding, embed  # noqa: E402
from avae.errors import AvaeError  # noqa: E402
from avae.train import TrainConfig, fit, load, save  # noqa: E402

__all__ = ["AvaeError", "Embedding", "TrainConfig", "data", "embed", "fit", "load", "models", "save", "transforms",
           "__version__"]
