"""The ResMLP residual block, shared by the image classifier and the translation model."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from timm.layers import DropPath, Mlp, trunc_normal_

from .affine import Affine, LayerScale
from .cross_token import CrossTokenLinear


def init_resmlp_weights(module: nn.Module) -> None:
    """The official ResMLP init, for ``Module.apply``: truncated normal 0.02 on every linear map (the
    token-mixing matrix included), zero biases; other modules keep their own."""
    if isinstance(module, (nn.Linear, CrossTokenLinear)):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ResMLPBlock(nn.Module):
    """``x + LS(A(Aff(x)))`` then ``x + LS(MLP(Aff(x)))``, the MLP with GELU and ``mlp_ratio`` x hidden.

    The two residual sublayers are also exposed separately (:meth:`token_mixing`,
    :meth:`channel_mixing`) so the translation decoder can put cross-attention between them.
    ``drop`` is dropout on both branches (and inside the MLP), ``drop_path`` stochastic depth.
    ``act_drop`` (default ``drop``) is the MLP's dropout after the activation and ``mlp_hidden_dim``
    (default ``int(dim * mlp_ratio)``) its width, for models configured by explicit sizes (fairseq).
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
        act_drop: Optional[float] = None,
        mlp_hidden_dim: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.norm1 = Affine(dim)
        self.linear_tokens = CrossTokenLinear(num_tokens, causal=causal)
        self.drop_tokens = nn.Dropout(drop)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = Affine(dim)
        hidden = mlp_hidden_dim or int(dim * mlp_ratio)
        self.mlp_channels = Mlp(dim, hidden, act_layer=act_layer, drop=(drop if act_drop is None else act_drop, drop))
        self.ls2 = LayerScale(dim, init_values)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def _residual(self, x: torch.Tensor, branch: torch.Tensor, scale: LayerScale) -> torch.Tensor:
        """``x + drop_path(gamma * branch)``."""
        if self.training and isinstance(self.drop_path, DropPath):
            return x + self.drop_path(scale(branch))
        # No path can be dropped: scale and add in one pass instead of two.
        return torch.addcmul(x, branch, scale.gamma)

    def token_mixing(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self._residual(x, self.drop_tokens(self.linear_tokens(self.norm1(x), key_padding_mask)), self.ls1)

    def channel_mixing(self, x: torch.Tensor) -> torch.Tensor:
        return self._residual(x, self.mlp_channels(self.norm2(x)), self.ls2)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.channel_mixing(self.token_mixing(x, key_padding_mask))
