"""Multi-head token mixing: ``heads`` matrices, each over its own group of ``C / heads`` channels."""
from __future__ import annotations

import torch
from torch import nn

from .base import TokenMixer, register_token_mixer


@register_token_mixer("multihead")
class MultiHeadTokenMixer(TokenMixer):
    """``heads`` independent ``max_tokens x max_tokens`` matrices (and biases); channel group ``h``
    (channels ``h*C/heads .. (h+1)*C/heads - 1``) is mixed by matrix ``h``. ``heads=1`` computes
    what :class:`~resmlp_suite.token_mixers.CrossTokenLinear` does."""

    def __init__(self, max_tokens: int, dim: int, causal: bool = False, bias: bool = True,
                 init: str = "trunc_normal", heads: int = 4) -> None:
        super().__init__(max_tokens, causal, init)
        if heads < 1 or dim % heads:
            raise ValueError(f"multi-head token mixing needs a number of heads that divides the width {dim}; got {heads}")
        self.heads = heads
        self.weight = nn.Parameter(torch.empty(heads, max_tokens, max_tokens))
        self.bias = nn.Parameter(torch.empty(heads, max_tokens)) if bias else None
        self.reset_parameters()
