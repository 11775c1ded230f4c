"""One training loop; regimes are strategies; checkpoints are atomic and resumable."""
from avae.train.checkpoint import load, save
from avae.train.loop import TrainConfig, fit, mean_and_sem, per_image_loss
from avae.train.regimes import REGIMES, make_regime

__all__ = ["TrainConfig", "fit", "per_image_loss", "mean_and_sem", "load", "save", "REGIMES", "make_regime"]
