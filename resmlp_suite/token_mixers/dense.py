"""The cross-token linear layer: ResMLP's token-mixing matrix ``A`` (the paper's, and the default mixer)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .base import TokenMixer, register_token_mixer


@register_token_mixer("dense")
class CrossTokenLinear(TokenMixer):
    """One ``max_tokens x max_tokens`` matrix shared by all channels, applied along the token axis.

    ``out[b, i, c] = sum_j weight[i, j] * x[b, j, c] + bias[i]`` for an input of shape ``(B, T, C)``.
    A shorter sequence (``T < max_tokens``) uses the ``T x T`` top-left sub-matrix of ``weight``:
    the paper's "pad with zeros and extract the sub-matrix" without materialising the padding.

    ``causal=True`` makes ``A`` lower-triangular: token ``t`` only sees tokens ``<= t``. The mask is
    applied inside the forward pass, so the weights above the diagonal never act and get zero gradient.
    ``key_padding_mask`` (``(B, T)``, True at padding) removes padded tokens from every mixture.
    ``dim`` is accepted for the mixer interface and unused: the matrix is shared by all channels.
    """

    def __init__(self, max_tokens: int, causal: bool = False, bias: bool = True, init: str = "trunc_normal",
                 dim: Optional[int] = None) -> None:
        super().__init__(max_tokens, causal, init)
        self.weight = nn.Parameter(torch.empty(max_tokens, max_tokens))
        self.bias = nn.Parameter(torch.empty(max_tokens)) if bias else None
        self.reset_parameters()
