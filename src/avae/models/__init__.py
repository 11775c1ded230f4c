"""One file per published model; each returns per-sample loss terms (never pre-reduced)."""
from avae.models.vae import VAE, LatentVariableModel, VAEConfig

MODELS = {"vae": VAE}

__all__ = ["VAE", "VAEConfig", "LatentVariableModel", "MODELS"]
