"""The ResMLP residual block, shared by the image classifier and the translation model."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from timm.layers import DropPath, Mlp

from .affine import Affine, LayerScale
from .cross_token import CrossTokenLinear


class ResMLPBlock(nn.Module):
    """``x + LS(A(Aff(x)))`` then ``x + LS(MLP(Aff(x)))``, the MLP with GELU and ``mlp_ratio`` x hidden.

    The two residual sublayers are also exposed separately (:meth:`token_mixing`,
    :meth:`channel_mixing`) so the translation decoder can put cross-attention between them.
    ``drop`` is dropout on both branches (and inside the MLP), ``drop_path`` stochastic depth.
    """

    def __init__(
        self,
        dim: int,
        num_tokens: int,
        mlp_ratio: float = 4.0,
        init_values: float = 1e-4,
        drop: float = 0.0,
        drop_path: float = 0.0,
        causal: bool = False,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.norm1 = Affine(dim)
        self.linear_tokens = CrossTokenLinear(num_tokens, causal=causal)
        self.drop_tokens = nn.Dropout(drop)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = Affine(dim)
        self.mlp_channels = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.ls2 = LayerScale(dim, init_values)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def token_mixing(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return x + self.drop_path(self.ls1(self.drop_tokens(self.linear_tokens(self.norm1(x), key_padding_mask))))

    def channel_mixing(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.ls2(self.mlp_channels(self.norm2(x))))

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.channel_mixing(self.token_mixing(x, key_padding_mask))
