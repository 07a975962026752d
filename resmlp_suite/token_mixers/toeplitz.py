"""Token mixing tied by relative position: a Toeplitz ``A`` with one weight per offset."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from timm.layers import trunc_normal_

from .base import INIT_STD, TokenMixer, register_token_mixer


@register_token_mixer("toeplitz")
class ToeplitzTokenMixer(TokenMixer):
    """``A[i, j] = w[i - j]``: every position mixes its neighbours with the same weights, so each weight
    is trained by every position (an untied matrix's late rows see few long sentences). ``2N - 1``
    weights (``N`` when causal: offsets ``0..N-1``) instead of ``N^2``, plus a bias per position.

    The ``average`` init is not Toeplitz on causal rows (row ``t`` is ``1/(t+1)``), so it is refused.
    """

    def __init__(self, max_tokens: int, causal: bool = False, bias: bool = True, init: str = "trunc_normal",
                 dim: Optional[int] = None) -> None:
        super().__init__(max_tokens, causal, init)
        if init == "average":
            raise ValueError("the toeplitz token mixer has no 'average' init (a running average is not Toeplitz); "
                             "use 'trunc_normal' or 'identity'")
        self.weight = nn.Parameter(torch.empty(max_tokens if causal else 2 * max_tokens - 1))
        self.bias = nn.Parameter(torch.empty(max_tokens)) if bias else None
        self.reset_parameters()

    @property
    def zero_offset(self) -> int:
        """Index of ``w[0]`` (the diagonal) in ``weight``."""
        return 0 if self.causal else self.max_tokens - 1

    def reset_parameters(self) -> None:
        with torch.no_grad():
            trunc_normal_(self.weight, std=INIT_STD)
            if self.init == "identity":
                self.weight[self.zero_offset] += 1.0
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def mixing_matrix(self, num_tokens: int) -> torch.Tensor:
        self.check_length(num_tokens)
        positions = torch.arange(num_tokens, device=self.weight.device)
        offsets = positions[:, None] - positions[None, :]
        if self.causal:
            return self.weight[offsets.clamp(min=0)].tril()
        return self.weight[offsets + self.zero_offset]

    def mixing_row(self, position: int) -> torch.Tensor:
        # Causal row t over j = 0..t holds offsets t..0.
        return self.weight[: position + 1].flip(0)
