"""resmlp-suite: ResMLP for image classification (timm) and machine translation (fairseq).

Importing the package registers the vision models in timm's registry.
"""
from .affine import Affine, LayerScale
from .block import ResMLPBlock
from .token_mixers import TOKEN_MIXERS, CrossTokenLinear, TokenMixer, create_token_mixer, register_token_mixer
from . import vision  # noqa: F401  (registers resmlp_* in timm)

__all__ = [
    "Affine", "LayerScale", "CrossTokenLinear", "ResMLPBlock", "TOKEN_MIXERS", "TokenMixer", "create_token_mixer",
    "register_token_mixer",
]
__version__ = "0.1.0"
