"""The ResMLP residual block, shared by the image classifier and the translation model."""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
from torch import nn
from timm.layers import DropPath, Mlp, trunc_normal_

from .affine import Affine, LayerScale
from .token_mixers import TokenMixer, TokenMixerSpec, create_token_mixer

# Normalisation of every sublayer's input: ResMLP's Affine, or the transformer's LayerNorm (ahead of
# Affine in the paper's vision ablation, Table 3: 77.7 vs 76.6, but not foldable into the next map).
NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {"affine": Affine, "layernorm": nn.LayerNorm}
NormSpec = Union[str, Callable[[int], nn.Module]]


def create_norm(spec: NormSpec, dim: int) -> nn.Module:
    if isinstance(spec, str):
        if spec not in NORM_LAYERS:
            raise ValueError(f"unknown normalisation {spec!r}; expected one of {sorted(NORM_LAYERS)}")
        spec = NORM_LAYERS[spec]
    return spec(dim)


def init_resmlp_weights(module: nn.Module) -> None:
    """The official ResMLP init, for ``Module.apply``: truncated normal 0.02 on every linear map, zero
    biases; token mixers re-run their own init (truncated normal 0.02 unless built with another)."""
    if isinstance(module, TokenMixer):
        module.reset_parameters()
    elif isinstance(module, nn.Linear):
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
    ``token_mixer`` (a name in :data:`~resmlp_suite.token_mixers.TOKEN_MIXERS` or a class, built with
    ``token_mixer_kwargs``) and ``norm_layer`` (``"affine"``, ``"layernorm"`` or a class) are
    injected the way timm's blocks take ``mlp_layer``; the defaults are the paper's.
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
        token_mixer: TokenMixerSpec = "dense",
        token_mixer_kwargs: Optional[dict[str, Any]] = None,
        norm_layer: NormSpec = "affine",
    ) -> None:
        super().__init__()
        self.norm1 = create_norm(norm_layer, dim)
        self.linear_tokens = create_token_mixer(token_mixer, num_tokens, dim, causal=causal, **(token_mixer_kwargs or {}))
        self.drop_tokens = nn.Dropout(drop)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = create_norm(norm_layer, dim)
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
