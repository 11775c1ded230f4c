"""One file per published model; each returns per-sample loss terms (never pre-reduced)."""
from avae.models.autoencoding_vae import AutoencodingVAE, AutoencodingVAEConfig
from avae.models.transformer_vae import (DoubleTransformerVAE, DoubleTransformerVAEConfig, TransformerVAE,
                                         TransformerVAEConfig)
from avae.models.vae import VAE, LatentVariableModel, VAEConfig
from avae.models.wrapped import WrappedConfig, WrappedVAE, from_pythae, wrap

MODELS = {"vae": VAE, "autoencoding-vae": AutoencodingVAE,
          "tvae": TransformerVAE, "dtvae": DoubleTransformerVAE}

__all__ = ["VAE", "VAEConfig", "LatentVariableModel", "AutoencodingVAE", "AutoencodingVAEConfig", "TransformerVAE",
           "TransformerVAEConfig", "DoubleTransformerVAE", "DoubleTransformerVAEConfig", "MODELS",
           "WrappedConfig", "WrappedVAE", "from_pythae", "wrap"]
