"""Encoders and decoders. They know nothing about objectives."""
from avae.nets.conv import ConvDecoder, ConvEncoder
from avae.nets.mlp import MLPDecoder, MLPEncoder, mlp

ENCODERS = {"conv": ConvEncoder, "mlp": MLPEncoder}
DECODERS = {"conv": ConvDecoder, "mlp": MLPDecoder}

__all__ = ["ConvEncoder", "ConvDecoder", "MLPEncoder", "MLPDecoder", "mlp", "ENCODERS", "DECODERS"]
