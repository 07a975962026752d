"""ResMLP's token mixing as one family: an interface, a registry and its variants.

``ResMLPBlock(token_mixer=...)`` takes a registry name or a class, so a new variant is one class
with ``@register_token_mixer(name)``; the image models (``model.kwargs.token_mixer`` in hydra) and
the translation model (``--token-mixer``) then both reach it.
"""
from .base import INIT_SCHEMES, TOKEN_MIXERS, TokenMixer, TokenMixerSpec, create_token_mixer, register_token_mixer
from .dense import CrossTokenLinear
from .multihead import MultiHeadTokenMixer
from .toeplitz import ToeplitzTokenMixer

__all__ = [
    "INIT_SCHEMES", "TOKEN_MIXERS", "TokenMixer", "TokenMixerSpec", "create_token_mixer", "register_token_mixer",
    "CrossTokenLinear", "MultiHeadTokenMixer", "ToeplitzTokenMixer",
]
