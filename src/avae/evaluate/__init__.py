"""Experiments as functions of (model(s), dataset, options) -> tidy results (rows of dicts)."""
from avae.evaluate.affine import affine_perturbation, loss_summary, oracle_loss, parse_degrees, rotation_sweep

__all__ = ["affine_perturbation", "loss_summary", "oracle_loss", "parse_degrees", "rotation_sweep"]
