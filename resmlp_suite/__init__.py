"""resmlp-suite: ResMLP for image classification (timm) and machine translation (fairseq).

Importing the package registers the vision models in timm's registry.
"""
from .affine import Affine, LayerScale
from .block import ResMLPBlock
from .cross_token import CrossTokenLinear
from . import vision  # noqa: F401  (registers resmlp_* in timm)

__all__ = ["Affine", "LayerScale", "CrossTokenLinear", "ResMLPBlock"]
__version__ = "0.1.0"
